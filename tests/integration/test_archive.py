"""Layer tars <-> layer directories (overlayctl.archive.extract and .generate)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from overlayctl.archive.extract import extract_layer
from overlayctl.archive.generate import dir_usage, write_layer_tar
from overlayctl.errors import ArchiveError, UnsafeArchive
from tests.tarbuild import MTIME, Entry, build_tar, patch_header

pytestmark = pytest.mark.root

LONG_DIR = "d" * 120
LONG_FILE = f"{LONG_DIR}/{'f' * 150}"
NON_UTF8 = b"caf\xe9"
BINARY_XATTR = b"\xff\x00\xfe"
BIG = 3 * 1024 * 1024 + 17  # more than one copy chunk


def export(src: Path) -> tuple[bytes, str]:
    buf = io.BytesIO()
    diff_id = write_layer_tar(str(src), buf)
    return buf.getvalue(), diff_id


def extract(data: bytes, dest: Path):
    dest.mkdir()
    return extract_layer(io.BytesIO(data), str(dest))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tar:
        return tar.getmembers()


def _file(path: Path, data: bytes = b"", mode: int = 0o644, owner=(0, 0)) -> None:
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)  # after chown, which clears setuid


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A layer dir in overlay form with every kind of entry the formats carry."""
    root = tmp_path / "tree"
    for d in ["etc/opaque", "bin", "opt/sticky", "home/user", LONG_DIR]:
        (root / d).mkdir(parents=True)
    _file(root / "etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
    _file(root / "etc/opaque/new", b"after the opaque marker")
    _file(root / "bin/su", b"\x7fELF", 0o4755)
    _file(root / "bin/wall", b"\x7fELF", 0o2755, (0, 5))
    _file(root / "home/user/notes", b"mine", 0o640, (1234, 5678))
    _file(root / "home/user/big", os.urandom(BIG))
    _file(root / "empty")
    _file(root / LONG_FILE, b"long")
    _file(root / os.fsdecode(NON_UTF8), b"non-utf8 name")
    os.link(root / "bin/su", root / "bin/su-link")
    os.link(root / "bin/su", root / "su-again")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("../etc", root / "bin/rel-link")
    os.symlink("nowhere", root / "dangling")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.mknod(root / "etc/gone", stat.S_IFCHR, 0)  # a whiteout
    os.link(root / "etc/gone", root / "gone-too")  # overlay links whiteouts to one inode
    os.mknod(root / "sock", stat.S_IFSOCK | 0o755)
    os.setxattr(root / "etc/opaque", "trusted.overlay.opaque", b"y")
    os.setxattr(root / "etc", "trusted.overlay.impure", b"y")  # overlay's own: stripped
    os.setxattr(root / "home/user/notes", "user.note", b"kept")
    os.setxattr(root / "home/user/notes", "user.binary", BINARY_XATTR)
    os.setxattr(root / "home", "user.dir", b"on a dir")
    os.setxattr(root / "abs-link", "trusted.on-link", b"v", follow_symlinks=False)
    os.chmod(root / "opt/sticky", 0o1777)
    for i, path in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        os.utime(path, ns=(0, (MTIME + i) * 10**9 + 123_456_789), follow_symlinks=False)
    return root


def test_round_trip_is_byte_identical(tree, tmp_path):
    data, diff_id = export(tree)
    result = extract(data, tmp_path / "dest")
    again, diff_id2 = export(tmp_path / "dest")
    assert again == data
    assert diff_id == diff_id2 == result.diff_id == sha(data)
    assert (result.size, result.inodes) == dir_usage(str(tree)) == dir_usage(str(tmp_path / "dest"))
    assert result.entries == len(members(data))


def test_export_is_deterministic(tree):
    assert export(tree) == export(tree)


def test_size_counts_hardlinks_once(tree):
    expected = sum(
        len(x)
        for x in [
            b"root:x:0:0::/root:/bin/sh\n",
            b"after the opaque marker",
            b"\x7fELF",
            b"\x7fELF",
            b"mine",
            b"long",
            b"non-utf8 name",
        ]
    )
    assert dir_usage(str(tree))[0] == expected + BIG


def test_export_entries(tree):
    infos = members(export(tree)[0])
    by_name = {m.name: m for m in infos}
    names = [m.name for m in infos]
    gone = by_name["etc/.wh.gone"]
    assert (gone.type, gone.size, gone.mode, gone.mtime) == (tarfile.REGTYPE, 0, 0o600, 0)
    assert by_name[".wh.gone-too"].isreg()  # a whiteout, never a hardlink entry
    assert names.index("etc/opaque/.wh..wh..opq") == names.index("etc/opaque") + 1
    assert by_name["etc/opaque/.wh..wh..opq"].mtime == 0
    assert "sock" not in by_name and "etc/gone" not in by_name
    assert by_name["bin/su"].isreg() and by_name["bin/su"].mode == 0o4755
    assert by_name["bin/su-link"].islnk() and by_name["bin/su-link"].linkname == "bin/su"
    assert by_name["su-again"].linkname == "bin/su"
    assert by_name["home/user/notes"].pax_headers["SCHILY.xattr.user.note"] == "kept"
    assert all("overlay" not in key for m in infos for key in m.pax_headers)
    assert all(m.uname == m.gname == "" and not m.name.startswith("./") for m in infos)
    assert by_name[LONG_FILE].size == 4
    # Siblings in bytewise order of their names on disk (a whiteout sorts as its target).
    on_disk = [[os.fsencode(p.removeprefix(".wh.")) for p in n.split("/")] for n in names]
    assert on_disk == sorted(on_disk)


def test_extract_restores_everything(tree, tmp_path):
    dest = tmp_path / "dest"
    extract(export(tree)[0], dest)
    gone = os.lstat(dest / "etc/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert not (dest / "etc/.wh.gone").exists()
    assert os.getxattr(dest / "etc/opaque", "trusted.overlay.opaque") == b"y"
    assert not (dest / "etc/opaque/.wh..wh..opq").exists()
    assert "trusted.overlay.impure" not in os.listxattr(dest / "etc")
    su, link = os.lstat(dest / "bin/su"), os.lstat(dest / "bin/su-link")
    assert (su.st_ino, su.st_nlink, stat.S_IMODE(su.st_mode)) == (link.st_ino, 3, 0o4755)
    assert stat.S_IMODE(os.lstat(dest / "bin/wall").st_mode) == 0o2755
    assert os.lstat(dest / "bin/wall").st_gid == 5
    notes = os.lstat(dest / "home/user/notes")
    assert (notes.st_uid, notes.st_gid, stat.S_IMODE(notes.st_mode)) == (1234, 5678, 0o640)
    assert os.getxattr(dest / "home/user/notes", "user.binary") == BINARY_XATTR
    assert os.getxattr(dest / "home", "user.dir") == b"on a dir"
    assert os.getxattr(dest / "abs-link", "trusted.on-link", follow_symlinks=False) == b"v"
    assert os.readlink(dest / "abs-link") == "/etc/passwd"
    assert os.readlink(dest / "bin/rel-link") == "../etc"
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    assert os.lstat(dest / "null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(os.lstat(dest / "loop").st_mode)
    assert stat.S_IMODE(os.lstat(dest / "opt/sticky").st_mode) == 0o1777
    assert (dest / "home/user/big").read_bytes() == (tree / "home/user/big").read_bytes()
    assert (dest / LONG_FILE).read_bytes() == b"long"
    assert os.path.exists(os.fsencode(dest) + b"/" + NON_UTF8)
    for rel in ["etc", "etc/passwd", "abs-link", "home/user"]:
        assert os.lstat(dest / rel).st_mtime_ns == os.lstat(tree / rel).st_mtime_ns // 10**9 * 10**9


def test_gzip_input_gives_the_uncompressed_diff_id(tree, tmp_path):
    data, diff_id = export(tree)
    result = extract(gzip.compress(data), tmp_path / "dest")
    assert result.diff_id == diff_id == sha(data)


def test_reads_from_a_pipe(tree, tmp_path):
    data, diff_id = export(tree)
    (tmp_path / "layer.tar.gz").write_bytes(gzip.compress(data))
    (tmp_path / "dest").mkdir()
    with subprocess.Popen(["cat", str(tmp_path / "layer.tar.gz")], stdout=subprocess.PIPE) as cat:
        result = extract_layer(cat.stdout, str(tmp_path / "dest"))
    assert result.diff_id == diff_id


def test_empty_layer(tmp_path):
    """Docker's empty layer: two zero blocks and nothing else."""
    result = extract(b"\0" * 1024, tmp_path / "dest")
    assert result.diff_id == ("sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef")
    assert (result.size, result.entries) == (0, 0)
    assert os.listdir(tmp_path / "dest") == []


def test_diff_id_covers_trailing_zero_padding(tmp_path):
    data = build_tar([("a", "file", b"x")]) + b"\0" * 4096
    assert extract(data, tmp_path / "dest").diff_id == sha(data)


@pytest.mark.parametrize("fmt", ["posix", "gnu"])
def test_imports_gnu_tar_output(tree, tmp_path, fmt):
    src = tmp_path / "tree"
    for path in [tree / "etc/gone", tree / "gone-too", tree / "sock"]:
        path.unlink()  # GNU tar knows no whiteouts; sockets it skips with a warning
    for name in os.listxattr(tree / "etc/opaque"):
        os.removexattr(tree / "etc/opaque", name)
    os.removexattr(tree / "etc", "trusted.overlay.impure")
    xattr_args = ["--xattrs", "--xattrs-include=*"]
    if fmt == "gnu":
        xattr_args = []
        for path in [tree / "home/user/notes", tree / "home"]:
            for name in os.listxattr(path):
                os.removexattr(path, name)
        os.removexattr(tree / "abs-link", "trusted.on-link", follow_symlinks=False)
    layer = tmp_path / "gnu.tar"
    subprocess.run(
        ["tar", f"--format={fmt}", *xattr_args, "--numeric-owner", "-C", str(src), "-cf", str(layer), "."], check=True
    )
    with open(layer, "rb") as f:
        (tmp_path / "dest").mkdir()
        result = extract_layer(f, str(tmp_path / "dest"))
    assert result.diff_id == sha(layer.read_bytes())
    assert export(tmp_path / "dest") == export(src)


def test_gnu_longlink_names(tmp_path):
    target = "t" * 130
    data = build_tar(
        [(LONG_FILE, "file", b"x"), (target, "file"), ("ln" * 60, "symlink", target), ("hl" * 60, "hardlink", target)],
        format="gnu",
    )
    dest = tmp_path / "dest"
    extract(data, dest)
    assert (dest / LONG_FILE).read_bytes() == b"x"
    assert os.readlink(dest / ("ln" * 60)) == target
    assert os.lstat(dest / ("hl" * 60)).st_ino == os.lstat(dest / target).st_ino


def test_oci_whiteouts_and_markers(tmp_path):
    dest = tmp_path / "dest"
    extract(
        build_tar(
            [
                ("./", "dir", b"", 0o711, {}, 7, 8),
                ("./etc/.wh.shadow", "file"),
                ("./etc/keep", "file", b"k"),
                ("./etc/.wh..wh..opq", "file"),  # after a sibling: still applies to the dir
                ("./lib/.wh..wh..opq", "file"),  # dir missing from the tar
                ("./.wh..wh.plnk/123", "file", b"aufs"),
                ("./.wh..wh.aufs", "file"),
                ("./etc", "dir", b"", 0o700, {}, 3, 4),  # fixes the implicit parent
            ]
        ),
        dest,
    )
    assert sorted(os.listdir(dest)) == ["etc", "lib"]
    shadow = os.lstat(dest / "etc/shadow")
    assert stat.S_ISCHR(shadow.st_mode) and shadow.st_rdev == 0 and shadow.st_uid == 0
    for d in ["etc", "lib"]:
        assert os.getxattr(dest / d, "trusted.overlay.opaque") == b"y"
    etc, lib, root = os.lstat(dest / "etc"), os.lstat(dest / "lib"), os.lstat(dest)
    assert (stat.S_IMODE(etc.st_mode), etc.st_uid, etc.st_gid, etc.st_mtime) == (0o700, 3, 4, MTIME)
    assert (stat.S_IMODE(lib.st_mode), lib.st_uid, lib.st_gid, lib.st_mtime) == (0o755, 0, 0, 0)
    assert (stat.S_IMODE(root.st_mode), root.st_uid, root.st_gid) == (0o711, 7, 8)


def test_same_path_twice(tmp_path):
    dest = tmp_path / "dest"
    extract(
        build_tar(
            [
                ("a", "file", b"old"),
                ("a", "file", b"new"),
                ("b", "file", b"file"),
                ("b", "dir"),
                ("b/c", "file"),
                ("d", "dir"),
                ("d/x", "file"),
                ("d", "symlink", "elsewhere"),
                ("e", "dir", b"", 0o755),
                ("e/x", "file"),
                ("e", "dir", b"", 0o700, {}, 9),
                ("f", "symlink", "../canary"),
                ("f", "file", b"not through the link"),
            ]
        ),
        dest,
    )
    assert (dest / "a").read_bytes() == b"new"
    assert (dest / "b/c").exists()
    assert os.readlink(dest / "d") == "elsewhere"
    assert (dest / "e/x").exists() and os.lstat(dest / "e").st_uid == 9
    assert stat.S_IMODE(os.lstat(dest / "e").st_mode) == 0o700
    assert (dest / "f").read_bytes() == b"not through the link"


def test_entries_after_a_directory_was_replaced_or_linked_across(tmp_path):
    """Entries reuse the directory walked last; a directory removed under it, or a hardlink across, still lands right."""
    dest = tmp_path / "dest"
    extract(
        build_tar(
            [
                ("x", "dir"),
                ("x/y", "dir"),
                ("x/y/one", "file", b"1"),
                ("z", "dir"),
                ("z/f", "file", b"f"),
                ("x/y/link", "hardlink", "z/f"),  # the target's dir, then the link's
                ("x/y/two", "file", b"2"),
                ("x", "symlink", "z"),  # removes x/y, walked last
                ("w/y/three", "file", b"3"),
                ("z/g", "file", b"g"),
            ]
        ),
        dest,
    )
    assert os.readlink(dest / "x") == "z" and not (dest / "z/y").exists()
    assert (dest / "w/y/three").read_bytes() == b"3" and (dest / "z/g").read_bytes() == b"g"
    assert os.lstat(dest / "z/f").st_nlink == 1  # the link went with x


def test_a_hardlink_whose_target_goes_with_the_directory_it_replaces(tmp_path):
    with pytest.raises(UnsafeArchive, match="not in this layer"):
        extract(
            build_tar([("a", "dir"), ("a/b", "dir"), ("a/b/f", "file"), ("a", "hardlink", "a/b/f")]), tmp_path / "d"
        )


@pytest.mark.parametrize(
    "entries",
    [
        [("a", "file"), (".wh.a", "file")],
        [(".wh.a", "file"), ("a", "file")],
        [(".wh.a", "file"), ("a", "dir")],
        [("d/.wh.x", "file"), ("d/x", "symlink", "y")],
    ],
    ids=["entry-then-whiteout", "whiteout-then-entry", "whiteout-then-dir", "nested"],
)
def test_whiteout_and_entry_in_one_layer(tmp_path, entries):
    with pytest.raises(ArchiveError, match="this layer also has"):
        extract(build_tar(entries), tmp_path / "dest")


def _truncated_gzip(data: bytes) -> bytes:
    return gzip.compress(data)[:-30]


def _bad_crc(data: bytes) -> bytes:
    packed = bytearray(gzip.compress(data))
    packed[-8] ^= 0xFF
    return bytes(packed)


def _bad_deflate(data: bytes) -> bytes:
    packed = bytearray(gzip.compress(data))
    packed[len(packed) // 2] ^= 0xFF  # zlib fails within the first block of the tar
    return bytes(packed)


def test_a_stream_decompressed_on_the_way_fails_as_an_archive_error(tmp_path):
    """A pulled layer comes already decompressed: zlib's error in the first block is the layer's."""
    (tmp_path / "dest").mkdir()
    with pytest.raises(ArchiveError, match="cannot read the layer"):
        extract_layer(gzip.GzipFile(fileobj=io.BytesIO(_bad_deflate(_two_files()))), str(tmp_path / "dest"))


def _two_files() -> bytes:
    # ustar: header "a" at 0, its data at 512, header "b" at 1024, its data at 1536.
    return build_tar([("a", "file", b"first"), ("b", "file", b"second")], format="ustar")


def _bad_second_checksum() -> bytes:
    data = bytearray(_two_files())
    data[1024] ^= 0x01  # name byte changed, checksum not updated
    return bytes(data)


CORRUPT = {
    "empty": lambda: b"",
    "garbage": lambda: b"this is not a tar archive\n" * 200,
    "zstd": lambda: b"\x28\xb5\x2f\xfd" + b"\0" * 600,
    "bzip2": lambda: b"BZh91AY&SY" + b"\0" * 600,
    "xz": lambda: b"\xfd7zXZ\x00" + b"\0" * 600,
    "truncated-in-data": lambda: _two_files()[:1600],
    "truncated-at-end-blocks": lambda: _two_files()[:2048],
    "truncated-end-block": lambda: _two_files()[: 2048 + 100],
    "truncated-gzip": lambda: _truncated_gzip(_two_files()),
    "gzip-bad-crc": lambda: _bad_crc(_two_files()),
    "gzip-of-nothing": lambda: gzip.compress(b""),
    "bad-checksum-2nd-header": _bad_second_checksum,
    "trailing-garbage": lambda: _two_files() + b"junk",
    "two-archives": lambda: _two_files() + _two_files(),
    "negative-size": lambda: patch_header(_two_files(), 1024, 124, b"\xff" * 12),
    "negative-size-pax": lambda: build_tar([Entry("a", pax={"size": "-1"})]),
    "bad-pax-record": lambda: build_tar([Entry("a", pax={"comment": "x"})]).replace(b"comment=x\n", b"comment=x\r"),
    "sparse-pax": lambda: build_tar([Entry("a", pax={"GNU.sparse.map": "0,0"})]),
    "unknown-type": lambda: patch_header(_two_files(), 1024, 156, b"Z"),
    "too-deep": lambda: build_tar([("a/" * 300 + "f", "file")]),
}


@pytest.mark.parametrize("make", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_input_is_an_archive_error(tmp_path, make):
    with pytest.raises(ArchiveError) as info:
        extract(make(), tmp_path / "dest")
    assert not isinstance(info.value, UnsafeArchive)
    assert "\n" not in info.value.message


def test_bad_checksum_error_names_the_offset(tmp_path):
    with pytest.raises(ArchiveError, match="offset 1024"):
        extract(_bad_second_checksum(), tmp_path / "dest")


def test_crafted_pax_digits_parse_in_linear_time(tmp_path):
    """CVE-2024-6232: 3.11.7's own PAX parser needs about a minute for this."""
    data = build_tar([Entry("a", pax={"comment": "1" * 256 * 1024})])
    start = time.monotonic()
    extract(data, tmp_path / "dest")
    assert time.monotonic() - start < 5


# Each row builds entries from the absolute path of the dir that holds dest and
# the canary; everything tries to write or link outside dest.
HOSTILE = {
    "dotdot": lambda out: [("../escape", "file", b"x")],
    "dotdot-inside": lambda out: [("a/../../escape", "file", b"x")],
    "dotdot-dir": lambda out: [("..", "dir")],
    "absolute": lambda out: [(f"{out}/escape", "file", b"x")],
    "absolute-dir": lambda out: [("/", "dir", b"", 0o777)],
    "nul-in-name": lambda out: [Entry("a", pax={"path": "a\0/../../escape"})],
    "empty-name": lambda out: [Entry("a", pax={"path": ""})],
    "symlink-parent-absolute": lambda out: [("link", "symlink", out), ("link/escape", "file")],
    "symlink-parent-dotdot": lambda out: [("link", "symlink", ".."), ("link/canary", "file", b"x")],
    "symlink-replaces-dir": lambda out: [("d", "dir"), ("d", "symlink", ".."), ("d/canary", "file", b"x")],
    "symlink-chain": lambda out: [("a", "symlink", "b"), ("b", "symlink", ".."), ("a/canary", "file", b"x")],
    "symlink-then-dir-entry": lambda out: [("link", "symlink", ".."), ("link/escape", "dir")],
    "symlink-then-whiteout": lambda out: [("link", "symlink", ".."), ("link/.wh.canary", "file")],
    "symlink-then-opaque": lambda out: [("link", "symlink", out), ("link/.wh..wh..opq", "file")],
    "symlink-then-hardlink": lambda out: [("link", "symlink", ".."), ("stolen", "hardlink", "link/canary")],
    "hardlink-dotdot": lambda out: [("stolen", "hardlink", "../canary")],
    "hardlink-absolute": lambda out: [("stolen", "hardlink", "/etc/passwd")],
    "hardlink-absolute-canary": lambda out: [("stolen", "hardlink", f"{out}/canary")],
    "hardlink-absent": lambda out: [("stolen", "hardlink", "missing")],
    "whiteout-of-dotdot": lambda out: [("a/.wh...", "file")],
    "forged-opaque": lambda out: [("d", "dir", b"", 0o755, {"trusted.overlay.opaque": b"y"})],
    "forged-redirect": lambda out: [("d", "dir", b"", 0o755, {"trusted.overlay.redirect": b"/etc"})],
    "forged-metacopy": lambda out: [("f", "file", b"", 0o644, {"trusted.overlay.metacopy": b""})],
    "forged-user-overlay": lambda out: [("d", "dir", b"", 0o755, {"user.overlay.opaque": b"y"})],
    "forged-on-hardlink": lambda out: [("f", "file"), ("g", "hardlink", "f", 0o644, {"trusted.overlay.opaque": b"y"})],
}


@pytest.mark.parametrize("make", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_archive_is_refused(tmp_path, make):
    canary = tmp_path / "canary"
    canary.write_bytes(b"canary: must not change\n")
    before = os.lstat(canary)
    data = build_tar([("ok", "file", b"fine")] + make(str(tmp_path)))
    with pytest.raises(UnsafeArchive) as info:
        extract(data, tmp_path / "dest")
    assert "\n" not in info.value.message
    assert canary.read_bytes() == b"canary: must not change\n"
    after = os.lstat(canary)
    assert (after.st_nlink, after.st_mtime_ns, after.st_mode) == (before.st_nlink, before.st_mtime_ns, before.st_mode)
    assert sorted(os.listdir(tmp_path)) == ["canary", "dest"]
    assert os.listxattr(canary) == []
    assert not os.path.lexists(tmp_path.parent / "escape")


def test_hostile_error_names_the_entry(tmp_path):
    with pytest.raises(UnsafeArchive, match=r"'link/escape'.*symlink 'link'"):
        extract(build_tar([("link", "symlink", "/"), ("link/escape", "file")]), tmp_path / "d")


INCOMPLETE = ["trusted.overlay.redirect", "trusted.overlay.metacopy"]


@pytest.mark.parametrize("xattr", INCOMPLETE, ids=["redirect", "metacopy"])
def test_export_refuses_incomplete_upper(tmp_path, xattr):
    (tmp_path / "upper/moved").mkdir(parents=True)
    os.setxattr(tmp_path / "upper/moved", xattr, b"/old")
    with pytest.raises(ArchiveError, match=rf"'moved' has {xattr}"):
        export(tmp_path / "upper")


def test_export_alternative_whiteouts(tmp_path):
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"x")
    _file(upper / "d/gone")
    os.setxattr(upper / "d/gone", "trusted.overlay.whiteout", b"")
    _file(upper / "d/kept", b"data")
    _file(upper / "notalt")
    os.setxattr(upper / "notalt", "trusted.overlay.whiteout", b"")  # parent not "x": a file
    names = [m.name for m in members(export(upper)[0])]
    assert names == ["d", "d/.wh.gone", "d/kept", "notalt"]


def test_export_to_a_pipe(tree):
    data, diff_id = export(tree)
    read_fd, write_fd = os.pipe()
    received: list[bytes] = []
    with open(read_fd, "rb") as pipe_out:
        reader = threading.Thread(target=lambda: received.append(pipe_out.read()))
        reader.start()
        with open(write_fd, "wb", buffering=0) as pipe_in:
            assert write_layer_tar(str(tree), pipe_in) == diff_id
        reader.join()
    assert received == [data]
