"""overlayctl image save: the archive formats, the same bytes each time, and a round trip through load."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile

import pytest

from ..cli import store_cmd, with_stderr_on_a_terminal

pytestmark = pytest.mark.root


def _ctl(store, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(store_cmd(store, *args), capture_output=True, text=True)
    if check:
        assert result.returncode == 0, (args, result.stderr)
    return result


@pytest.fixture
def two_images(store, rootfs):
    """app:1 (imported) and app:2 (a commit on it), sharing app:1's layer."""
    _ctl(store, "image", "import", str(rootfs), "--tag", "app:1", "--cmd", "cat /etc/motd")
    ctr = json.loads(_ctl(store, "container", "create", "app:1", "--name", "c", "--json").stdout)
    with open(f"{store.layout.upper(ctr['id'])}/added", "w") as f:
        f.write("new\n")
    _ctl(store, "container", "commit", "c", "app:2")
    return store


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_docker_archive_is_docker_25s_form_and_the_same_bytes_each_time(two_images, tmp_path):
    store = two_images
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    _ctl(store, "image", "save", "app:1", "app:2", "-o", str(first))
    _ctl(store, "image", "save", "app:1", "app:2", "-o", str(second))
    assert first.read_bytes() == second.read_bytes()
    files = _members(first)
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], name
    manifest = json.loads(files["manifest.json"])
    assert [m["RepoTags"] for m in manifest] == [["app:1"], ["app:2"]]
    ids = [json.loads(_ctl(store, "image", "inspect", t, "--json").stdout) for t in ("app:1", "app:2")]
    for entry, image in zip(manifest, ids):
        assert entry["Config"] == f"blobs/sha256/{image['id'][7:]}"
        assert [p.rsplit("/", 1)[1] for p in entry["Layers"]] == [d[7:] for d in image["config"]["rootfs"]["diff_ids"]]
    assert (
        len([n for n in files if n.startswith("blobs/")]) == 2 + 2 + 2
    )  # 2 layers (shared once), 2 configs, 2 manifests
    index = json.loads(files["index.json"])
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["1", "2"]
    assert json.loads(files["repositories"]) == {
        "app": {"1": manifest[0]["Layers"][-1][13:], "2": manifest[1]["Layers"][-1][13:]}
    }


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci-dir"])
def test_a_saved_image_loads_back_with_the_same_id_and_bytes(two_images, tmp_path, fmt):
    from overlayctl import LayerStore

    out = tmp_path / ("layout" if fmt == "oci-dir" else "image.tar")
    _ctl(two_images, "image", "save", "app:2", "--format", fmt, "-o", str(out))
    if fmt != "oci-dir":
        assert ("manifest.json" in _members(out)) == (fmt == "docker-archive")
    other = LayerStore(str(tmp_path / "other"), str(tmp_path / "other-run"))
    report = other.images.load(str(out))
    (image,) = report.images
    assert image.id == two_images.images.get("app:2").id and list(image.tags) == ["app:2"]
    again = tmp_path / "again"
    other.images.save(["app:2"], str(again) if fmt == "oci-dir" else open(tmp_path / "again.tar", "wb"), format=fmt)
    if fmt == "oci-dir":
        for blob in (out / "blobs" / "sha256").iterdir():
            assert (again / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()
    else:
        assert (tmp_path / "again.tar").read_bytes() == out.read_bytes()


def test_an_image_saved_by_id_is_untagged(two_images, tmp_path):
    image_id = two_images.images.get("app:1").id
    out = tmp_path / "image.tar"
    report = json.loads(_ctl(two_images, "image", "save", image_id[7:19], "-o", str(out), "--json").stdout)
    assert report["images"] == [{"id": image_id, "tags": []}] and report["layers"] == 1
    assert json.loads(_members(out)["manifest.json"])[0]["RepoTags"] == []


def test_save_errors_are_one_line_and_leave_no_file(two_images, tmp_path):
    out = tmp_path / "image.tar"
    result = _ctl(two_images, "image", "save", "nope", "-o", str(out), check=False)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: no such image: nope (see 'overlayctl image ls')"
    ]
    assert list(tmp_path.glob("image.tar*")) == []
    layer = two_images.images.get("app:1").layers[0]
    with open(f"{two_images.layout.diff(layer)}/etc/motd", "a") as f:
        f.write("changed behind the store's back\n")
    result = _ctl(two_images, "image", "save", "app:1", "-o", str(out), check=False)
    assert result.returncode == 1 and "changed since" in result.stderr and len(result.stderr.splitlines()) == 1
    assert list(tmp_path.glob("image.tar*")) == []


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-dir"])
def test_a_save_shows_a_progress_bar_on_a_terminal_and_nothing_elsewhere(two_images, tmp_path, fmt):
    store = two_images
    out = tmp_path / "bar"
    result, shown = with_stderr_on_a_terminal(
        store_cmd(store, "image", "save", "app:1", "app:2", "--format", fmt, "-o", str(out))
    )
    assert result.returncode == 0, shown
    assert "\r" in shown and "2/2 layers" in shown and "/s" in shown, shown
    lines = shown.replace("\r\n", "\n").splitlines()
    assert lines[-1].split("\r")[-1].startswith("Saved [") and "image(s)" not in shown  # the summary is on stdout
    result, shown = with_stderr_on_a_terminal(
        store_cmd(store, "image", "save", "app:1", "--format", fmt, "-o", str(tmp_path / "json"), "--json")
    )
    assert result.returncode == 0 and shown == "", shown
    quiet = _ctl(store, "image", "save", "app:1", "app:2", "--format", fmt, "-o", str(tmp_path / "quiet"))
    assert quiet.stderr == ""
    if fmt == "docker-archive":
        assert (tmp_path / "quiet").read_bytes() == out.read_bytes()
