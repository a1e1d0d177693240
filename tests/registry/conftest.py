"""Real registries for the pull/push tests, and a small distribution client to check them with.

Session fixtures, one docker-registry (distribution 2.8) each, on 127.0.0.1
(testkit/registry.py; no root needed; skipped with the reason when
docker-registry, openssl or htpasswd is missing):

- ``registry_plain``: HTTP, no auth.
- ``registry_basic``: HTTP, htpasswd auth: ``.username`` ("tester"), ``.password`` (random).
- ``registry_tls``: HTTPS, no auth; ``.ca_path``, ``.install_ca(certs_dir)``
  (writes ``<certs_dir>/127.0.0.1:PORT/ca.crt``), ``.ssl_context()``.
- ``registry_token``: HTTP, token auth; ``.username``/``.password`` are what
  the token server takes; ``.token_server`` (``.realm``, ``.service``,
  ``.issue()``, ``.requests``).

All have ``.host`` ("127.0.0.1:PORT": a reference is ``f"{reg.host}/repo:tag"``)
and ``.url``.  They live for the session: give each test its own repository
(``repo`` fixture).  ``registry_factory(**options)`` starts a registry for one
test only (e.g. ``auth=Auth.BASIC, tls=True`` or ``auth=Auth.TOKEN,
anonymous_pull=True``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import re
import secrets
import tarfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from testkit.registry import Auth, Registry, RegistryUnavailable

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _start(parent: Path, **options) -> Registry:
    """A started Registry (the caller closes it), or a skip saying why it cannot run."""
    registry = Registry(parent, **options)
    try:
        return registry.__enter__()  # which cleans up after itself when it fails
    except RegistryUnavailable as exc:
        pytest.skip(f"cannot run a {registry.kind} registry: {exc}")


@pytest.fixture(scope="session")
def registries_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("registries")


def _session_registry(parent: Path, **options) -> Iterator[Registry]:
    registry = _start(parent, **options)
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture(scope="session")
def registry_plain(registries_dir) -> Iterator[Registry]:
    yield from _session_registry(registries_dir)


@pytest.fixture(scope="session")
def registry_basic(registries_dir) -> Iterator[Registry]:
    yield from _session_registry(registries_dir, auth=Auth.BASIC)


@pytest.fixture(scope="session")
def registry_tls(registries_dir) -> Iterator[Registry]:
    yield from _session_registry(registries_dir, tls=True)


@pytest.fixture(scope="session")
def registry_token(registries_dir) -> Iterator[Registry]:
    yield from _session_registry(registries_dir, auth=Auth.TOKEN)


@pytest.fixture
def registry_factory(tmp_path) -> Iterator[Callable[..., Registry]]:
    """Start registries with Registry's options for this test; all are stopped and removed after it."""
    started: list[Registry] = []

    def start(**options) -> Registry:
        started.append(_start(tmp_path, **options))
        return started[-1]

    try:
        yield start
    finally:
        for registry in started:
            registry.close()


@pytest.fixture
def fresh(tmp_path):
    """An empty store (beside the ``store`` fixture's): where pulls land."""
    from ..conftest import temporary_store

    with temporary_store(tmp_path / "fresh") as store:
        yield store


@pytest.fixture
def repo(request) -> str:
    """A repository name of this test's own, e.g. ``test/push-blob-3f2a9c1e``."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"test/{name}-{secrets.token_hex(4)}"


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        """The ``code`` of each entry of a distribution error body."""
        return [error["code"] for error in self.json().get("errors", [])]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` as ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, params = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


class Endpoint(Protocol):
    """What V2Client needs of a registry: a Registry, or the compose test's service."""

    def connection(self, timeout: float = ...) -> http.client.HTTPConnection: ...


class V2Client:
    """A minimal distribution client (http.client) for checking the registries.

    Credentials go as Basic auth on every request, or, when the registry
    answers 401 with a Bearer challenge, to the challenge's realm for a token
    (the challenge's service and scope), and the request is sent again with it.
    """

    def __init__(self, registry: Endpoint, credentials: tuple[str, str] | None = None) -> None:
        self.registry = registry
        self.credentials = credentials
        self.token: str | None = None

    def _basic(self) -> dict[str, str]:
        if self.credentials is None:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()}

    def _send(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> Reply:
        conn = self.registry.connection()
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def request(self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        """method on target (a path, or an absolute URL as in a Location header)."""
        url = urllib.parse.urlsplit(target)
        target = url.path + (f"?{url.query}" if url.query else "")
        headers = dict(headers or {})
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else self._basic()
        reply = self._send(method, target, body, {**headers, **auth})
        challenge = reply.headers.get("WWW-Authenticate", "")
        if reply.status == 401 and challenge.lower().startswith("bearer"):
            self.token = self.fetch_token(**parse_challenge(challenge)[1])
            reply = self._send(method, target, body, {**headers, "Authorization": f"Bearer {self.token}"})
        return reply

    def fetch_token(self, realm: str, service: str, scope: str = "", **_) -> str:
        """GET realm?service=..&scope=.. with the credentials; the token (AssertionError when refused)."""
        url = urllib.parse.urlsplit(realm)
        query = urllib.parse.urlencode({"service": service, **({"scope": scope} if scope else {})})
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        try:
            conn.request("GET", f"{url.path}?{query}", headers=self._basic())
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 200, f"token server: {response.status} {body[:200]!r}"
        return json.loads(body)["token"]

    def push_blob(self, repo: str, data: bytes) -> str:
        """POST an upload, then PUT the data with its digest (2.8 ignores data sent with the POST); the digest."""
        digest = sha256(data)
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert start.status == 202, (start.status, start.body)
        location = start.headers["Location"]
        sep = "&" if "?" in location else "?"
        done = self.request(
            "PUT", f"{location}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"}
        )
        assert done.status == 201, (done.status, done.body)
        assert done.headers["Docker-Content-Digest"] == digest
        return digest

    def push_manifest(self, repo: str, ref: str, manifest: bytes, media_type: str = OCI_MANIFEST) -> str:
        reply = self.request("PUT", f"/v2/{repo}/manifests/{ref}", manifest, {"Content-Type": media_type})
        assert reply.status == 201, (reply.status, reply.body)
        return reply.headers["Docker-Content-Digest"]

    def push_image(self, repo: str, tag: str, layer: bytes) -> Image:
        """A one-layer OCI image (its config, its layer, its manifest) pushed as repo:tag."""
        image = make_image(layer)
        self.push_blob(repo, image.layer)
        self.push_blob(repo, image.config)
        assert self.push_manifest(repo, tag, image.manifest) == image.digest
        return image


@dataclass
class Image:
    layer: bytes  # gzip tar
    config: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A gzip tar of regular files (mtime 0, root-owned): a layer."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def make_image(layer: bytes) -> Image:
    """The config and the OCI manifest of a one-layer linux/amd64 image."""
    diff_id = sha256(gzip.decompress(layer))
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
        }
    ).encode()
    return Image(layer, config, manifest)


def write_oci_layout(path: Path, tag: str, image: Image) -> None:
    """An OCI image layout at path holding image as tag (for ``skopeo copy oci:path:tag``)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (image.layer, image.config, image.manifest):
        (blobs / sha256(data).removeprefix("sha256:")).write_bytes(data)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": image.digest,
        "size": len(image.manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
