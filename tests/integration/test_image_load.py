"""overlayctl image load: docker save archives and OCI layouts into the store, checked, in one transaction."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from ..cli import store_cli, store_cmd, with_stderr_on_a_terminal
from ..imagearchive import (
    Img,
    Link,
    blob_name,
    classic_files,
    compress,
    digest,
    dir_tar,
    docker25_files,
    layer_tar,
    multiplatform_files,
    oci_files,
    tar_of,
    write_dir,
)

pytestmark = pytest.mark.root

MOTD = layer_tar({"etc/motd": "loaded from an archive\n", "srv/data.txt": "data\n"})
APP = layer_tar({"app/run.txt": "the app\n"})
CMD = ["sh", "-c", "echo hello from Cmd; cat /etc/motd"]
HOST = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
OTHER = "arm64" if HOST == "amd64" else "amd64"


@pytest.fixture(scope="module")
def base_layer(busybox_rootfs) -> bytes:
    """The busybox root filesystem as a plain layer tar."""
    return dir_tar(busybox_rootfs)


def load(store, *args: str, input: bytes | None = None):
    """overlayctl image load ARGS --json in this process; the result and its JSON (None on failure)."""
    result = store_cli(store, "image", "load", *args, "--json", input=input)
    return result, (json.loads(result.stdout) if result.returncode == 0 else None)


def run_image(store, ref: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        store_cmd(store, "run", "--rm", ref),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def staging_is_empty(store) -> bool:
    return not os.path.isdir(store.layout.staging) or os.listdir(store.layout.staging) == []


def test_classic_docker_archive_runs_its_cmd(store, base_layer, tmp_path):
    image = Img([base_layer, MOTD], tags=["busybox:latest"], cmd=CMD)
    path = tmp_path / "image.tar"
    path.write_bytes(tar_of(classic_files([image])))
    result, report = load(store, "-i", str(path))
    assert result.returncode == 0, result.stderr
    assert report["images"] == [{"id": image.id, "tags": ["busybox:latest"]}]
    assert (report["layers_written"], report["layers_reused"]) == (2, 0)
    assert report["bytes_written"] == sum(layer.size for layer in store.layers.list())
    stored = store.images.get("busybox")
    assert stored.id == image.id and stored.raw == image.config()  # the original bytes: ID = config digest
    assert stored.diff_ids == [digest(base_layer), digest(MOTD)]
    assert stored.runtime["Cmd"] == CMD
    ran = run_image(store, "busybox")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello from Cmd\nloaded from an archive\n"
    assert store.system.check().problems == [] and staging_is_empty(store)


def test_docker25_archive_from_a_pipe_is_spooled(store, base_layer, tmp_path):
    """Docker 25's form, gzip layers, piped into a real process: manifest.json comes last, blobs are spooled."""
    image = Img([base_layer, MOTD], tags=["127.0.0.1:5000/tools/bb:1.36"], cmd=CMD, compression="gzip")
    data = tar_of(docker25_files([image]))
    result = subprocess.run(
        store_cmd(store, "image", "load", "--json"), check=False, input=data, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"] == [{"id": image.id, "tags": ["127.0.0.1:5000/tools/bb:1.36"]}]
    assert store.images.get("127.0.0.1:5000/tools/bb:1.36").id == image.id
    assert staging_is_empty(store)
    ran = run_image(store, "127.0.0.1:5000/tools/bb:1.36")
    assert ran.stdout.startswith("hello from Cmd\n"), ran.stderr


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_oci_layout_as_directory_and_as_tar(store, base_layer, tmp_path, compression):
    image = Img([base_layer, MOTD], tags=["oci/busybox:1"], cmd=CMD, compression=compression)
    files = oci_files([image])
    result, report = load(store, "-i", str(write_dir(files, tmp_path / "layout")))
    assert result.returncode == 0, result.stderr
    assert report["images"] == [{"id": image.id, "tags": ["oci/busybox:1"]}] and report["layers_written"] == 2
    (tmp_path / "layout.tar").write_bytes(tar_of(files))
    result, report = load(store, "-i", str(tmp_path / "layout.tar"))
    assert (report["layers_written"], report["layers_reused"], report["bytes_written"]) == (0, 2, 0)
    assert run_image(store, "oci/busybox:1").stdout == "hello from Cmd\nloaded from an archive\n"


def test_multi_platform_index_picks_the_host_unless_told(store, base_layer, tmp_path):
    host = Img([base_layer, MOTD], arch=HOST, cmd=CMD)
    other = Img([base_layer, APP], arch=OTHER, cmd=["false"])
    path = tmp_path / "multi.tar"
    path.write_bytes(tar_of(multiplatform_files([other, host], "multi:1")))
    result, report = load(store, "-i", str(path))
    assert result.returncode == 0, result.stderr
    assert report["images"] == [{"id": host.id, "tags": ["multi:1"]}]
    result, report = load(store, "-i", str(path), "--platform", f"linux/{OTHER}", "--tag", "multi:other")
    assert report["images"] == [{"id": other.id, "tags": ["multi:1", "multi:other"]}]
    assert (report["layers_written"], report["layers_reused"]) == (1, 1)  # the base was there
    assert store.images.get("multi:other").config["architecture"] == OTHER
    result, _ = load(store, "-i", str(path), "--platform", "linux/s390x")
    assert result.returncode == 1 and "no image for linux/s390x" in result.stderr


def test_two_images_share_their_base_and_a_reload_writes_nothing(store, base_layer, tmp_path):
    base = Img([base_layer], tags=["bb:base"], cmd=["true"])
    app = Img([base_layer, APP], tags=["bb:app"], cmd=["cat", "/app/run.txt"])
    path = tmp_path / "two.tar"
    path.write_bytes(tar_of(classic_files([base, app])))  # the repeated base layer.tar is a symlink
    result, report = load(store, "-i", str(path))
    assert result.returncode == 0, result.stderr
    assert (report["layers_written"], report["layers_reused"]) == (2, 1)
    assert len(store.layers.list()) == 2  # the base once
    tags_before = store.images.tags()
    layers_before = {(r.id, r.created) for r in store.layers.list()}

    result, report = load(store, "-i", str(path))
    assert report == {
        "images": [{"id": base.id, "tags": ["bb:base"]}, {"id": app.id, "tags": ["bb:app"]}],
        "layers_written": 0,
        "layers_reused": 3,
        "bytes_written": 0,
    }
    assert store.images.tags() == tags_before and {(r.id, r.created) for r in store.layers.list()} == layers_before
    assert run_image(store, "bb:app").stdout == "the app\n"
    result = store_cli(store, "image", "load", "-i", str(path), "--tag", "x:1")  # two images: bad usage
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--tag" in result.stderr, result.stderr


def test_tags_move_and_the_report_says_so(store, base_layer, tmp_path):
    first, second = Img([base_layer], tags=["app:1"], cmd=["true"]), Img([base_layer, APP], tags=["app:1"])
    (tmp_path / "1.tar").write_bytes(tar_of(oci_files([first])))
    (tmp_path / "2.tar").write_bytes(tar_of(oci_files([second])))
    assert load(store, "-i", str(tmp_path / "1.tar"))[0].returncode == 0
    result = store_cli(store, "image", "load", "-i", str(tmp_path / "2.tar"), "--tag", "app:2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"Moved tag: app:1 (was {first.id[7:19]})", "Loaded image: app:1", "Loaded image: app:2"]
    assert re.fullmatch(r"Layers: 1 written \([0-9.]+ [kMG]?B\), 1 reused", lines[3]), lines[3]
    assert len(lines) == 4
    assert store.images.tags() == {"app:1": second.id, "app:2": second.id}
    assert store.images.get(first.id[:19]).id == first.id  # the old image stays, untagged
    report = store.images.load(str(tmp_path / "1.tar"))
    assert report.images[0].moved == {"app:1": second.id}


def test_an_untagged_image_is_reported_by_id(store, base_layer, tmp_path):
    image = Img([base_layer, APP])
    (tmp_path / "u.tar").write_bytes(tar_of(oci_files([image])))
    result = store_cli(store, "image", "load", "-i", str(tmp_path / "u.tar"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Loaded image ID: {image.id}"
    assert store.images.tags() == {} and [i.id for i in store.images.list()] == [image.id]


# --- failures: one line, exit 1, the store as it was --------------------------


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _edit_json(files, name: str, change) -> None:
    value = json.loads(files[name])
    change(value)
    files[name] = json.dumps(value).encode()


def _oci_with_manifest(image: Img, change):
    """An OCI layout whose one manifest was changed (index.json re-pointed at the new manifest)."""
    files = oci_files([image])
    index = json.loads(files["index.json"])
    manifest = json.loads(files["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    change(manifest)
    data = json.dumps(manifest).encode()
    files[blob_name(data)] = data
    index["manifests"][0].update(digest=digest(data), size=len(data))
    files["index.json"] = json.dumps(index).encode()
    return files


def failure_cases(base: bytes):
    image = Img([base, MOTD], tags=["bad:1"], compression="gzip")
    plain = Img([base, MOTD], tags=["bad:1"])
    motd_blob = blob_name(compress(MOTD, "gzip"))
    cases = {}

    files = oci_files([image])
    files[motd_blob] = _flip(files[motd_blob], len(files[motd_blob]) // 2)
    cases["flipped byte in a gzip layer"] = (files, f"does not match its digest {digest(compress(MOTD, 'gzip'))}")

    files = classic_files([plain])
    layer_path = json.loads(files["manifest.json"])[0]["Layers"][1]
    files[layer_path] = files[layer_path].replace(b"loaded from an archive", b"LOADED from an archive")
    cases["flipped byte in a classic layer.tar"] = (files, f"its config says diff_id {digest(MOTD)}")

    data = tar_of(classic_files([plain]))
    cases["truncated archive"] = (data[: len(data) - 3000], "truncated")

    files = oci_files([image])
    del files[motd_blob]
    cases["missing blob"] = (files, f"{motd_blob} is not in the archive")

    wrong = Img(
        [base, MOTD], tags=["bad:1"], extra={"rootfs": {"type": "layers", "diff_ids": [digest(base), digest(APP)]}}
    )
    cases["wrong diff_id"] = (oci_files([wrong]), f"the layer is {digest(MOTD)}, its config says diff_id {digest(APP)}")

    files = _oci_with_manifest(image, lambda m: m["layers"][1].update(mediaType="application/vnd.example+bz2"))
    cases["unknown media type"] = (files, "unknown layer media type 'application/vnd.example+bz2'")

    files = classic_files([plain])
    _edit_json(files, "manifest.json", lambda m: m[0]["Layers"].__setitem__(1, "../outside/layer.tar"))
    cases["path outside the archive"] = (files, "manifest.json entry 0: path '../outside/layer.tar' leaves the archive")

    files = oci_files([image])
    files[motd_blob] = Link("/etc/passwd")
    cases["blob symlink"] = (files, f"the blob {motd_blob} is a symlink")

    more = Img(
        [base, MOTD],
        tags=["bad:1"],
        extra={"rootfs": {"type": "layers", "diff_ids": [digest(base), digest(MOTD), digest(APP)]}},
    )
    cases["more diff_ids than layers"] = (
        _oci_with_manifest(more, lambda m: None),
        "the config names 3 diff_ids but the manifest lists 2 layers",
    )
    return cases


CASES = [
    "flipped byte in a gzip layer",
    "flipped byte in a classic layer.tar",
    "truncated archive",
    "missing blob",
    "wrong diff_id",
    "unknown media type",
    "path outside the archive",
    "blob symlink",
    "more diff_ids than layers",
]


def snapshot(store) -> dict[str, tuple[int, int]]:
    """Every path of the store with its type and size (what a failed load must not change)."""
    found = {}
    for d, dirs, files in os.walk(store.layout.root):
        for name in dirs + files:
            path = os.path.join(d, name)
            st = os.lstat(path)
            found[os.path.relpath(path, store.layout.root)] = (st.st_mode, 0 if name in dirs else st.st_size)
    return found


#: Each case read from a tar file, a pipe and a directory; a truncated tar has no directory form.
READS = [
    (case, how) for case in CASES for how in ("file", "pipe", "dir") if (case, how) != ("truncated archive", "dir")
]


@pytest.mark.parametrize(("case", "how"), READS, ids=[f"{how}-{case}" for case, how in READS])
def test_a_bad_archive_changes_nothing(store, base_layer, tmp_path, case, how):
    store.images.import_rootfs(str(tmp_path), tag="before")  # an empty image: the store exists
    files, why = failure_cases(base_layer)[case]
    assert not (how == "dir" and isinstance(files, bytes)), f"{case} has no directory form"
    data = files if isinstance(files, bytes) else tar_of(files)
    before, images_before = snapshot(store), [i.id for i in store.images.list()]
    if how == "pipe":
        result = subprocess.run(
            store_cmd(store, "image", "load"), check=False, input=data, capture_output=True, timeout=120
        )
        code, err = result.returncode, result.stderr.decode()
    else:
        source = tmp_path / "bad.tar"
        if how == "dir":
            write_dir(files, tmp_path / "layout")  # symlinks are real symlinks here
            source = tmp_path / "layout"
        else:
            source.write_bytes(data)
        result = store_cli(store, "image", "load", "-i", str(source))
        code, err = result.returncode, result.stderr
    print(err)
    assert code == 1, (result.stdout, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and why in err, err
    assert store.system.check().problems == []
    assert [i.id for i in store.images.list()] == images_before
    assert store.images.tags() == {"before:latest": images_before[0]}
    assert snapshot(store) == before


def test_stdin_from_a_file_an_empty_layer_and_an_empty_input(store, base_layer, tmp_path):
    """stdin redirected from a file is read in place; a 1024-byte empty layer (Docker writes them) is a layer."""
    empty = b"\0" * 1024
    image = Img([base_layer, empty, MOTD], tags=["bb:empty"], cmd=CMD)
    path = tmp_path / "image.tar"
    path.write_bytes(tar_of(classic_files([image])))
    with open(path, "rb") as stdin:
        result = subprocess.run(store_cmd(store, "image", "load"), check=False, stdin=stdin, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[0] == "Loaded image: bb:empty"
    assert store.images.get("bb:empty").diff_ids[1] == digest(empty)
    assert run_image(store, "bb:empty").stdout == "hello from Cmd\nloaded from an archive\n"
    result = subprocess.run(
        store_cmd(store, "image", "load"), check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    assert result.returncode == 1 and result.stderr == "error: <stdin>: the archive is empty (0 bytes)\n"


def test_a_load_shows_a_progress_bar_on_a_terminal_and_nothing_elsewhere(store, base_layer, tmp_path):
    image = Img([base_layer, MOTD, APP], tags=["bb:progress"], cmd=CMD)
    path = tmp_path / "three.tar"
    path.write_bytes(tar_of(oci_files([image])))
    result, shown = with_stderr_on_a_terminal(store_cmd(store, "image", "load", "-i", str(path)))
    assert result.returncode == 0, shown
    assert "\r" in shown and "layers" in shown and "/s" in shown, shown
    assert "3/3 layers" in shown and shown.endswith("\n"), shown
    assert result.stdout.decode().splitlines()[0] == "Loaded image: bb:progress"
    store.images.remove("bb:progress")
    quiet = subprocess.run(
        store_cmd(store, "image", "load", "-i", str(path)), check=False, capture_output=True, timeout=120
    )
    assert quiet.returncode == 0 and quiet.stderr == b"", quiet.stderr
    with_json, shown = with_stderr_on_a_terminal(store_cmd(store, "image", "load", "-i", str(path), "--json"))
    assert with_json.returncode == 0 and shown == "", shown  # --json: no bar, even on a terminal
    assert json.loads(with_json.stdout)["layers_reused"] == 3


def test_a_failed_load_ends_the_bar_before_its_one_line_error(store, base_layer, tmp_path):
    files, why = failure_cases(base_layer)["flipped byte in a gzip layer"]
    path = tmp_path / "bad.tar"
    path.write_bytes(tar_of(files))
    result, shown = with_stderr_on_a_terminal(store_cmd(store, "image", "load", "-i", str(path)))
    assert result.returncode == 1
    last = shown.replace("\r\n", "\n").rstrip("\n").split("\n")[-1]
    assert last.startswith("error: ") and why in last, shown


@pytest.mark.parametrize("how", ["file", "dir"])
def test_parallel_unpacking_stops_at_a_bad_layer_and_leaves_the_store_as_it_was(store, base_layer, tmp_path, how):
    """Four layers unpacked at once; the third is damaged: the others are discarded, the error is the third's."""
    from overlayctl.api._load import load_archive

    store.images.import_rootfs(str(tmp_path), tag="before")
    extra = [layer_tar({f"more/{n}.txt": f"{n}\n" * 1000}) for n in range(3)]
    image = Img([base_layer, *extra], tags=["bad:4"], compression="gzip")
    files = oci_files([image])
    bad = blob_name(compress(extra[1], "gzip"))
    files[bad] = _flip(files[bad], len(files[bad]) // 2)
    before = snapshot(store)
    source = tmp_path / "bad4.tar"
    if how == "dir":
        write_dir(files, tmp_path / "layout4")
        source = tmp_path / "layout4"
    else:
        source.write_bytes(tar_of(files))
    with pytest.raises(Exception, match="does not match its digest") as caught:
        load_archive(store._ctx, store.layers, str(source), workers=4)
    assert str(caught.value).startswith(f"layer 2 (blob sha256:{bad.rsplit('/', 1)[1]})")
    assert snapshot(store) == before and staging_is_empty(store)
    assert store.system.check().problems == []
