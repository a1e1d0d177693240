"""Faults the real registry does not make on demand, against the in-process fake of ``fake.py``.

A truncated blob body, a registry that ignores Range, a blob redirect to
another host (which must not get the credentials), and 429 with Retry-After.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from ..cli import store_cmd
from .conftest import OCI_MANIFEST, make_image, sha256, tar_gz
from .fake import FakeRegistry

pytestmark = pytest.mark.root  # pulled layers are unpacked with their owners

BLOB_SIZE = 600_000


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    registry = FakeRegistry()
    try:
        yield registry
    finally:
        registry.close()


def _image(registry: FakeRegistry, repo: str = "team/app", tag: str = "1") -> tuple[str, str, str]:
    """A one-layer image of random bytes (so its gzip blob is about BLOB_SIZE): (reference, layer digest, image ID)."""
    image = make_image(tar_gz({"data": os.urandom(BLOB_SIZE)}))
    registry.add(repo, tag, image.config, [image.layer], image.manifest, OCI_MANIFEST)
    return f"{registry.host}/{repo}:{tag}", sha256(image.layer), sha256(image.config)


def _pull(store, ref: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OVERLAYCTL_REGISTRY_RETRY_SECONDS": "3"}
    return subprocess.run(store_cmd(store, "pull", ref, "--json"), capture_output=True, text=True, timeout=120, env=env)


def test_a_broken_download_goes_on_with_a_range_request(fresh, fake):
    ref, layer, image_id = _image(fake)
    fake.truncate[layer] = 200_000
    pulled = _pull(fresh, ref)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["image"]["id"] == image_id
    first, rest = fake.seen("GET", f"/blobs/{layer}")
    assert "Range" not in first.headers
    assert 0 < int(rest.headers["Range"].removeprefix("bytes=").rstrip("-")) <= 200_000  # from the bytes received


def test_a_registry_that_ignores_range_fails_in_one_line_then_starts_over(fresh, fake):
    ref, layer, image_id = _image(fake)
    fake.ignore_range = True
    fake.truncate[layer] = 200_000
    failed = _pull(fresh, ref)
    assert failed.returncode == 1 and "ignores Range" in failed.stderr and len(failed.stderr.splitlines()) == 1
    assert fresh.images.list() == [] and os.listdir(fresh.layout.staging) == []
    partial = f"{fresh.layout.blob_cache}/sha256/{layer.split(':')[1]}.partial"
    received = os.path.getsize(partial)  # kept for a resume
    assert 0 < received <= 200_000

    pulled = _pull(fresh, ref)  # asks for the rest, gets the whole blob: starts over
    assert pulled.returncode == 0, pulled.stderr
    report = json.loads(pulled.stdout)
    assert report["image"]["id"] == image_id and report["layers"][0]["resumed"] == 0
    assert fake.seen("GET", f"/blobs/{layer}")[-1].headers.get("Range") == f"bytes={received}-"
    assert json.loads(subprocess.run(store_cmd(fresh, "check", "--json"), capture_output=True).stdout)["problems"] == []


def test_a_blob_redirected_to_another_host_goes_without_the_credentials(fresh, fake):
    storage = FakeRegistry()
    try:
        ref, layer, image_id = _image(fake)
        storage.blobs = fake.blobs
        fake.auth = ("tester", "s3cret")
        fake.redirect_blobs_to = f"http://localhost:{storage.port}"  # another host name: another origin
        login = subprocess.run(
            store_cmd(fresh, "login", "-u", "tester", "--password-stdin", fake.host),
            input="s3cret",
            capture_output=True,
            text=True,
        )
        assert login.returncode == 0, login.stderr
        pulled = _pull(fresh, ref)
        assert pulled.returncode == 0, pulled.stderr
        assert json.loads(pulled.stdout)["image"]["id"] == image_id
        assert fake.seen("GET", "/manifests/")[-1].headers.get("Authorization", "").startswith("Basic ")
        redirected = storage.seen("GET", f"/blobs/{layer}")
        assert redirected and all("Authorization" not in r.headers for r in redirected)
    finally:
        storage.close()


def test_429_is_waited_out_as_retry_after_asks(fresh, fake):
    ref, _, image_id = _image(fake)
    fake.throttle = ["1"]
    start = time.monotonic()
    pulled = _pull(fresh, ref)
    assert pulled.returncode == 0, pulled.stderr
    assert time.monotonic() - start >= 1.0 and len(fake.seen("GET", "/manifests/")) == 2

    fake.throttle = ["0"] * 8  # many short waits: all within the retry time
    assert _pull(fresh, ref).returncode == 0

    fake.throttle = ["600"]  # longer than the retry time: one line at once, nothing changed
    start = time.monotonic()
    failed = _pull(fresh, f"{fake.host}/team/app:1")
    assert failed.returncode == 1 and "429" in failed.stderr and len(failed.stderr.splitlines()) == 1
    assert time.monotonic() - start < 10
