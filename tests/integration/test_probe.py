"""kernel/probe.py on real filesystems, and the mount -> mountinfo -> decode round trip.

Every mount made here sits under tmp_path and is unmounted in a finally
block, even when the test fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.kernel import _libc, probe
from overlayctl.plan.mountinfo import decode_overlay_options, overlay_mounts, read_mountinfo
from overlayctl.plan.options import escape_lower, escape_path

pytestmark = pytest.mark.root

#: Names that need every kind of escaping: mountinfo octal, classic ":" and ",".
TRICKY = ["sp ace", "t\tab", "new\nline", "back\\slash", "com,ma", "co:lon", "end\\"]


@contextlib.contextmanager
def _unmounting(target: Path) -> Iterator[Path]:
    """Yield target, then unmount it whatever happened (lazily if it is busy)."""
    try:
        yield target
    finally:
        try:
            _libc.umount2(str(target))
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # never got mounted
                return
            _libc.umount2(str(target), _libc.MNT_DETACH)


def _dirs(base: Path, *names: str) -> list[Path]:
    paths = [base / n for n in names]
    for p in paths:
        p.mkdir(parents=True)
    return paths


def _mount_classic(lowers, data, upper, work, target) -> None:
    value = ":".join(escape_lower(str(p)) for p in lowers)
    if data:
        value += "::" + "::".join(escape_lower(str(p)) for p in data)
    opts = f"lowerdir={value},upperdir={escape_path(str(upper))},workdir={escape_path(str(work))}"
    _libc.mount("overlay", str(target), "overlay", 0, opts)


def _mount_new(lowers, data, upper, work, target) -> None:
    fd = _libc.fsopen("overlay")
    try:
        for p in lowers:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "lowerdir+", str(p))
        for p in data:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "datadir+", str(p))
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "upperdir", escape_path(str(upper)))
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "workdir", escape_path(str(work)))
        _libc.fsconfig(fd, _libc.FSCONFIG_CMD_CREATE)
        mfd = _libc.fsmount(fd)
    finally:
        os.close(fd)
    try:
        _libc.move_mount(mfd, "", _libc.AT_FDCWD, str(target), _libc.MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(mfd)


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "tmpfs"
    target.mkdir()
    with _unmounting(target):
        _libc.mount("tmpfs", str(target), "tmpfs", 0, "size=16m")
        yield target


@pytest.fixture
def overlay_dir(tmp_path: Path) -> Iterator[Path]:
    lower1, lower2, upper, work, merged = _dirs(tmp_path, "l1", "l2", "u", "w", "merged")
    with _unmounting(merged):
        _mount_classic([lower1, lower2], [], upper, work, merged)
        yield merged


def test_kernel_probes():
    assert probe.overlay_supported()
    assert probe.has_lowerdir_plus(), "Linux >= 6.8 accepts lowerdir+"
    assert "index" in probe.module_parameters()
    assert probe.kernel_release() == os.uname().release


def test_root_fs_is_usable(tmp_path: Path):
    fs = probe.probe_backing_fs(str(tmp_path))
    assert fs.fs_type_name == "ext4", fs
    assert fs.d_type and fs.trusted_xattr and fs.whiteout
    assert fs.usable, fs.problems
    assert list(tmp_path.iterdir()) == [], "the scratch dir must be removed"


def test_tmpfs_is_usable(tmpfs_dir: Path):
    fs = probe.probe_backing_fs(str(tmpfs_dir))
    assert (fs.fs_type_name, fs.magic) == ("tmpfs", 0x01021994)
    assert fs.usable, fs.problems
    assert list(tmpfs_dir.iterdir()) == []


def test_overlay_is_not_usable(overlay_dir: Path):
    fs = probe.probe_backing_fs(str(overlay_dir))
    assert fs.fs_type_name == "overlay"
    assert not fs.usable
    assert "the store is on an overlay filesystem; an upper layer cannot live on overlayfs" in fs.problems
    assert fs.to_json()["usable"] is False
    assert list(overlay_dir.iterdir()) == []


def test_missing_path_raises_kernel_error(tmp_path: Path):
    from overlayctl.errors import KernelError

    with pytest.raises(KernelError) as info:
        probe.probe_backing_fs(str(tmp_path / "absent"))
    assert info.value.errno == errno.ENOENT


@pytest.mark.parametrize("mount_fn", [_mount_classic, _mount_new], ids=["classic", "new-api"])
def test_mountinfo_round_trip(tmp_path: Path, mount_fn):
    lowers = _dirs(tmp_path / "lower", *TRICKY)
    data = _dirs(tmp_path / "data", "da:ta, x\\y")
    upper, work = _dirs(tmp_path, "up \\,:x", "wo\t\\,:x")
    (target,) = _dirs(tmp_path, "merged here")
    with _unmounting(target):
        mount_fn(lowers, data, upper, work, target)
        found = [i for i in overlay_mounts(read_mountinfo()) if i.mount_point == str(target)]
    assert len(found) == 1, "the overlay must appear once, at its decoded mount point"
    decoded = decode_overlay_options(found[0])
    assert decoded.lowers == tuple(str(p) for p in lowers)
    assert decoded.data_lowers == tuple(str(p) for p in data)
    assert (decoded.upper, decoded.work) == (str(upper), str(work))
    assert not decoded.readonly
