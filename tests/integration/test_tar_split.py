"""A layer imported from a tar exports that tar again, byte for byte (its tar-split).

Tars from GNU tar in each format and from Python's tarfile, with every kind of
entry and the odd bytes real archives carry, go through ``layer create`` and
``layer export`` (the CLI, in-process); the bytes must come back equal.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from overlayctl.archive.generate import write_layer_tar
from overlayctl.archive.tarsplit import FileRef, read_tar_split
from overlayctl.errors import ArchiveError, StoreError
from tests.cli import store_cli
from tests.tarbuild import MTIME, Entry, build_tar

pytestmark = pytest.mark.root

LONG = "long-" + "n" * 120  # more than ustar's 100-byte name field
LONG_TARGET = "/" + "/".join(["t" * 60] * 3)  # more than its 100-byte link field
ODD_NAMES = ["with space", "new\nline", os.fsdecode(b"caf\xe9-latin1")]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_tree(root: Path, *, long_names: bool) -> Path:
    """A directory with every kind of entry GNU tar archives, whiteout markers included."""
    _write(root / "etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
    _write(root / "etc/big", os.urandom(1024 * 1024 + 7))
    _write(root / "etc/empty", b"")
    _write(root / "etc/.wh.shadow", b"")  # an OCI whiteout
    _write(root / "opaque/.wh..wh..opq", b"")  # an opaque marker
    _write(root / "opaque/new", b"after the marker")
    (root / "empty-dir/nested-empty").mkdir(parents=True)
    os.link(root / "etc/passwd", root / "etc/passwd-link")
    os.symlink("passwd", root / "etc/rel-link")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    for name in ODD_NAMES:
        _write(root / "names" / name, name.encode("utf-8", "surrogateescape"))
    os.setxattr(root / "etc/passwd", "user.note", b"kept")
    if long_names:
        _write(root / "deep" / LONG / LONG, b"a long name")
        os.link(root / "deep" / LONG / LONG, root / f"hardlink-{LONG}")
        os.symlink(LONG_TARGET, root / "long-target")
    for i, path in enumerate(sorted(root.rglob("*"))):
        os.utime(path, ns=(0, (MTIME + i) * 10**9 + 123_456_789), follow_symlinks=False)
    return root


def gnu_tar(*options: str, long_names: bool = True) -> Callable[[Path], bytes]:
    def build(tmp: Path) -> bytes:
        tree = make_tree(tmp / "tree", long_names=long_names)
        out = subprocess.run(["tar", *options, "-C", str(tree), "-cf", "-", "."], check=True, capture_output=True)
        return out.stdout

    return build


PY_ENTRIES = [
    ("etc", "dir"),
    ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\n"),
    ("etc/.wh.shadow", "file"),
    ("etc/empty", "file"),
    ("etc/link", "hardlink", "etc/passwd"),
    ("etc/sym", "symlink", "passwd"),
    ("opaque", "dir"),
    ("opaque/.wh..wh..opq", "file"),
    ("dev/null", "char", b"", 0o666, {}, 0, 0, MTIME, (1, 3)),
    ("dev/loop0", "block", b"", 0o660, {}, 0, 0, MTIME, (7, 0)),
    ("fifo", "fifo"),
    ("empty-dir", "dir"),
    Entry("xattrs", "file", b"data", xattrs={"user.note": b"kept", "user.bin": b"\xff\x00"}, uid=1000, gid=1000),
    ("names/with space", "file", b"1"),
    ("names/new\nline", "file", b"2"),
    (b"names/caf\xe9", "file", b"3"),
]
PY_LONG = [
    (f"{LONG}/{LONG}", "file", b"a long name"),
    (f"hardlink-{LONG}", "hardlink", f"{LONG}/{LONG}"),
    ("long-target", "symlink", LONG_TARGET),
]


def py_tar(entries: list, fmt: str = "pax", edit: Callable[[bytes], bytes] = lambda b: b) -> Callable[[Path], bytes]:
    return lambda tmp: edit(build_tar(entries, format=fmt))


def _with_global_header(tmp: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}) as tar:
        info = tarfile.TarInfo("file")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


def _garbage_in_padding(data: bytes) -> bytes:
    """Non-zero bytes between a file's content and the next header, which readers skip."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember("etc/passwd")
    start = member.offset_data + member.size
    return data[:start] + b"\xaa" * (512 - member.size) + data[start + 512 - member.size :]


CASES = [
    ("gnu-tar-gnu", gnu_tar("--format=gnu", "--sort=none")),
    ("gnu-tar-gnu-sorted", gnu_tar("--format=gnu", "--sort=name")),
    ("gnu-tar-posix-xattrs", gnu_tar("--format=posix", "--xattrs", "--sort=none")),
    ("gnu-tar-posix-sorted", gnu_tar("--format=posix", "--sort=name")),
    ("gnu-tar-ustar", gnu_tar("--format=ustar", long_names=False)),
    ("gnu-tar-oldgnu", gnu_tar("--format=oldgnu")),
    ("gnu-tar-blocking-64", gnu_tar("--format=gnu", "--blocking-factor=64")),
    ("gnu-tar-numeric-owner", gnu_tar("--format=posix", "--numeric-owner", "--owner=1234", "--group=5678")),
    ("py-pax", py_tar(PY_ENTRIES + PY_LONG)),
    ("py-gnu", py_tar(PY_ENTRIES + PY_LONG, "gnu")),
    ("py-ustar", py_tar(PY_ENTRIES[:-4], "ustar")),
    ("py-subsecond-mtime", py_tar([Entry("f", data=b"x", pax={"mtime": "1700000000.123456789"})])),
    ("py-global-header", _with_global_header),
    ("py-extra-zero-blocks", py_tar(PY_ENTRIES, edit=lambda b: b + bytes(3 * 10240 + 512))),
    ("py-garbage-in-padding", py_tar(PY_ENTRIES, edit=_garbage_in_padding)),
    ("py-whiteout-with-data", py_tar([("etc", "dir"), ("etc/.wh.gone", "file", b"not kept as a file")])),
    ("py-aufs-meta-with-data", py_tar([(".wh..wh.plnk", "dir"), (".wh..wh.plnk/1.2", "file", b"aufs")])),
    ("py-only-empty-files", py_tar([("a", "file"), ("b", "file")])),
    ("empty-layer", lambda tmp: bytes(1024)),
]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("build", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_export_gives_the_imported_tar_back(store, tmp_path, build, compress):
    tar = build(tmp_path)
    source = tmp_path / "in.tar"
    source.write_bytes(gzip.compress(tar) if compress else tar)
    made = store_cli(store, "layer", "create", "--from", str(source))
    assert made.returncode == 0, made.stderr
    layer_id = made.stdout.strip()
    layer = store.layers.get(layer_id)
    assert layer.diff_id == sha(tar)
    with open(store.layout.tar_split(layer_id), "rb") as f:
        records = list(read_tar_split(f))
    # Every byte of file content in diff/ is referred to, not copied; hardlinks once.
    assert sum(r.size for r in records if isinstance(r, FileRef)) == layer.size
    out = tmp_path / "out.tar"
    exported = store_cli(store, "layer", "export", layer_id, "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr.strip() == sha(tar)
    assert out.read_bytes() == tar


def _sizes(store, layer_id: str, label: str) -> float:
    layer = store.layers.get(layer_id)
    split = os.path.getsize(store.layout.tar_split(layer_id))
    share = split / max(layer.size, 1)
    print(f"\n{label}: tar-split {split} B for {layer.size} B of file data, {layer.inodes} inodes ({share:.2%})")
    return share


def test_tar_split_of_many_small_files_is_small(store, tmp_path):
    tree = tmp_path / "tree"
    for i in range(5000):
        _write(tree / f"d{i % 50}" / f"file-{i}", os.urandom(i * 7919 % 8192))
    tar = tmp_path / "small.tar"
    subprocess.run(["tar", "--format=posix", "-C", str(tree), "-cf", str(tar), "."], check=True)
    layer = store.layers.create(str(tar))
    assert _sizes(store, layer.id, "5000 small files, GNU tar posix") <= 0.05
    out = io.BytesIO()
    store.layers.export(layer.id, out)
    assert out.getvalue() == tar.read_bytes()


def test_tar_split_of_one_big_file_is_tiny(store, tmp_path):
    data = os.urandom(64 * 1024 * 1024 + 3)
    tar = build_tar([("big", "file", data)])
    layer = store.layers.create(io.BytesIO(tar))  # a stream, as `layer create --from -` reads
    assert _sizes(store, layer.id, "one 64 MiB file") <= 0.001
    out = io.BytesIO()
    assert store.layers.export(layer.id, out) == layer.diff_id
    assert out.getvalue() == tar


def _change_content(path: Path) -> None:
    path.write_bytes(b"toor:x:0:0::/root:/bin/sh\n")  # same size


def _change_size(path: Path) -> None:
    path.write_bytes(b"root:x:0:0::/root:/bin/bash\n")


def _to_symlink(path: Path) -> None:
    path.unlink()
    path.symlink_to("/etc/passwd")


CHANGES = [
    ("content-same-size", _change_content, "hash to sha256:"),
    ("size", _change_size, "'etc/passwd' is 28 bytes, it was 26 bytes"),
    ("removed", Path.unlink, "'etc/passwd' cannot be opened"),
    ("made-a-symlink", _to_symlink, "'etc/passwd' cannot be opened"),
]


@pytest.mark.parametrize(("change", "detail"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_files_changed_behind_the_store_fail_the_export(store, tmp_path, change, detail):
    tar = build_tar([("etc", "dir"), ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\n"), ("etc/z", "file", b"z")])
    layer = store.layers.create(io.BytesIO(tar))
    change(Path(store.layout.diff(layer.id)) / "etc/passwd")
    out = tmp_path / "out.tar"
    result = store_cli(store, "layer", "export", layer.id, "-o", str(out))
    assert result.returncode == 1 and not out.exists() and not (tmp_path / "out.tar.part").exists()
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: layer {layer.id[7:19]}'s files changed since import: "), line
    assert detail in line
    with pytest.raises(StoreError, match="files changed since import"):
        store.layers.export(layer.id, io.BytesIO())
    # check --verify-content regenerates the tar too, and says the same.
    (problem,) = store.system.check(verify_content=True).problems
    assert problem.path == store.layout.layer_dir(layer.id) and detail in problem.message


def test_verify_content_of_an_intact_tar_layer_needs_no_second_digest(store):
    """A layer with a tar-split is verified by regenerating its tar: its recorded digest is its diff_id."""
    layer = store.layers.create(io.BytesIO(build_tar(PY_ENTRIES)))
    assert os.path.exists(store.layout.tar_split(layer.id)) and layer.content_digest == layer.diff_id
    assert store.system.check(verify_content=True).problems == []


def test_a_damaged_tar_split_is_an_error_naming_it(store):
    layer = store.layers.create(io.BytesIO(build_tar(PY_ENTRIES)))
    path = store.layout.tar_split(layer.id)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(StoreError, match="tar-split is damaged") as info:
        store.layers.export(layer.id, io.BytesIO())
    assert path in info.value.hint


def test_a_directory_made_layer_exports_its_canonical_tar(store, tmp_path):
    tree = make_tree(tmp_path / "tree", long_names=True)
    for marker in ("etc/.wh.shadow", "opaque/.wh..wh..opq"):  # a root filesystem has none
        (tree / marker).unlink()
    layer = store.layers.create(str(tree))
    assert not os.path.exists(store.layout.tar_split(layer.id))
    out, canonical = io.BytesIO(), io.BytesIO()
    assert store.layers.export(layer.id, out) == layer.diff_id
    write_layer_tar(store.layout.diff(layer.id), canonical)
    assert out.getvalue() == canonical.getvalue() and sha(out.getvalue()) == layer.diff_id


def test_a_tar_that_replaces_its_own_file_exports_canonically(store):
    """The first content of a path named twice is not in diff/: no tar-split, the canonical tar."""
    tar = build_tar([("f", "file", b"first"), ("f", "file", b"second")])
    layer = store.layers.create(io.BytesIO(tar))
    assert layer.diff_id == sha(tar) and not os.path.exists(store.layout.tar_split(layer.id))
    out = io.BytesIO()
    assert store.layers.export(layer.id, out) == layer.content_digest != layer.diff_id
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as exported:
        assert exported.getnames() == ["f"]


def test_a_layer_without_tar_split_gets_one_from_the_same_tar(store):
    """A layer of an older store (no tar-split) adopts the one of a new import of its tar."""
    tar = build_tar(PY_ENTRIES)
    layer = store.layers.create(io.BytesIO(tar))
    os.unlink(store.layout.tar_split(layer.id))
    assert store.layers.create(io.BytesIO(tar)).id == layer.id
    out = io.BytesIO()
    store.layers.export(layer.id, out)
    assert out.getvalue() == tar
    assert os.listdir(store.layout.staging) == []


def test_image_import_of_a_tar_keeps_its_tar_split(store, tmp_path):
    tar = build_tar(PY_ENTRIES, format="gnu")
    (tmp_path / "rootfs.tar").write_bytes(tar)
    image = store.images.import_rootfs(str(tmp_path / "rootfs.tar"), tag="t")
    out = io.BytesIO()
    store.layers.export(image.layers[0], out)
    assert out.getvalue() == tar


def test_sparse_files_are_refused_so_no_tar_split_is_needed(store, tmp_path):
    sparse = tmp_path / "tree/sparse"
    sparse.parent.mkdir()
    with open(sparse, "wb") as f:
        f.seek(8 * 1024 * 1024)
        f.write(b"end")
    tar = subprocess.run(
        ["tar", "--format=gnu", "--sparse", "-C", str(sparse.parent), "-cf", "-", "."], check=True, capture_output=True
    ).stdout
    with pytest.raises(ArchiveError, match="sparse files are not supported"):
        store.layers.create(io.BytesIO(tar))
