"""Feature probes: what this kernel and the store's filesystem can do.

Each kernel probe runs once per process (functools.cache) and names the
kernel behaviour it checks in its docstring.  ``probe_backing_fs`` looks at
one path and is not cached, since the store root is chosen at run time; the
judgement of its findings lives in the pure ``backing_problems``.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from dataclasses import dataclass
from typing import Any

from ..errors import KernelError, OverlayctlError, from_oserror
from . import _libc

#: statfs(2) f_type values (include/uapi/linux/magic.h and the filesystems' sources).
FS_MAGIC: dict[int, str] = {
    0xEF53: "ext4",  # ext2/ext3/ext4 share one magic
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlay",
    0x6969: "nfs",
    0x65735546: "fuse",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x2FC12FC1: "zfs",
    0xF2F52010: "f2fs",
    0x00C36400: "ceph",
    0x01021997: "9p",
    0x858458F6: "ramfs",
    0xE0F5E1E2: "erofs",
    0x73717368: "squashfs",
    0x4D44: "vfat",
    0x2011BAB0: "exfat",
    0x5346544E: "ntfs",
}

#: Filesystems whose dentries the kernel must revalidate with a server (or a
#: FUSE daemon): overlayfs refuses them as upper ("upper fs missing required
#: features", fs/overlayfs/super.c) or cannot trust them to stay consistent.
NETWORK_FS = frozenset({"nfs", "cifs", "smb2", "fuse", "ceph", "9p"})

#: d_type values of getdents64 (include/linux/fs_types.h); 0 is DT_UNKNOWN.
DT_DIR = 4
DT_REG = 8

#: Module parameters that set the kernel's default overlay options.
_PARAMETERS_DIR = "/sys/module/overlay/parameters"


@functools.cache
def overlay_supported() -> bool:
    """The kernel has overlayfs: ``nodev\\toverlay`` is listed in /proc/filesystems.

    A module that is not loaded yet does not show; the kernel loads it on the
    first mount attempt, but we deliberately try nothing else here.
    """
    try:
        with open("/proc/filesystems") as f:
            text = f.read()
    except OSError:
        return False
    return "nodev\toverlay" in text.splitlines()


@functools.cache
def has_lowerdir_plus() -> bool:
    """The overlay fs-context accepts ``fsconfig(SET_STRING, "lowerdir+", dir)``.

    Added in Linux 6.8 (fs/overlayfs/params.c); older kernels answer
    "Unknown parameter" with EINVAL.  The throw-away context is closed
    without ever creating a superblock.  Without CAP_SYS_ADMIN, fsopen
    fails and this reports False.
    """
    try:
        fd = _libc.fsopen("overlay")
    except OSError:
        return False
    try:
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "lowerdir+", "/")
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


@functools.cache
def module_parameters() -> dict[str, str]:
    """The overlay module's parameters (/sys/module/overlay/parameters/*).

    They set the defaults of redirect_dir, index, metacopy, xino and
    nfs_export; mountinfo omits every option equal to its default.  Empty
    when the module is not loaded.
    """
    params: dict[str, str] = {}
    try:
        names = sorted(os.listdir(_PARAMETERS_DIR))
    except OSError:
        return params
    for name in names:
        try:
            with open(f"{_PARAMETERS_DIR}/{name}") as f:
                params[name] = f.read().strip()
        except OSError:
            continue
    return params


@functools.cache
def kernel_release() -> str:
    """The running kernel's release string (uname -r)."""
    return os.uname().release


@dataclass(frozen=True, slots=True)
class BackingFs:
    """What the filesystem holding ``path`` offers an overlay upper layer."""

    path: str
    fs_type_name: str
    magic: int
    d_type: bool
    trusted_xattr: bool
    whiteout: bool
    problems: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "fs_type": self.fs_type_name,
            "magic": f"0x{self.magic:08x}",
            "d_type": self.d_type,
            "trusted_xattr": self.trusted_xattr,
            "whiteout": self.whiteout,
            "usable": self.usable,
            "problems": list(self.problems),
        }


def magic_name(magic: int) -> str:
    """The name of a statfs magic, or its hex form when unknown."""
    return FS_MAGIC.get(magic, f"0x{magic:08x}")


def backing_problems(fs_type_name: str, d_type: bool, trusted_xattr: bool, whiteout: bool) -> tuple[str, ...]:
    """Why a filesystem cannot hold the store's upper layers; empty when it can."""
    problems: list[str] = []
    if fs_type_name == "overlay":
        # The kernel rejects overlayfs as upperdir, and stacking depth is 2.
        problems.append("the store is on an overlay filesystem; an upper layer cannot live on overlayfs")
    elif fs_type_name in NETWORK_FS:
        problems.append(f"the store is on {fs_type_name}, a network or FUSE filesystem; it cannot host an upper layer")
    if not d_type:
        # overlayfs only warns at mount time, but without d_type whiteouts can
        # show through in readdir (Documentation/filesystems/overlayfs.rst).
        problems.append("the filesystem does not report file types in readdir (d_type); for xfs, reformat with ftype=1")
    if not trusted_xattr:
        problems.append(
            "the filesystem cannot store trusted.* extended attributes; opaque directories would not be recorded"
        )
    if not whiteout:
        problems.append("a whiteout (character device 0/0) cannot be created on the filesystem")
    return tuple(problems)


def probe_backing_fs(path: str) -> BackingFs:
    """Probe the filesystem holding ``path`` by trying what overlay needs there.

    Works in a fresh scratch directory under ``path`` that is always removed.
    Raises what errors.from_oserror makes of the failure (NotPermitted,
    StoreError for a full disk, KernelError) when the probe cannot run.
    """
    import tempfile

    try:
        magic = _libc.statfs_type(path)
    except OSError as exc:
        raise _cannot_probe(exc, path, "statfs") from exc
    try:
        scratch = tempfile.mkdtemp(prefix=".overlayctl-probe-", dir=path)
    except OSError as exc:
        raise _cannot_probe(exc, path, "mkdir") from exc
    name = magic_name(magic)
    try:
        d_type = _probe_d_type(scratch)
        trusted = _probe_trusted_xattr(scratch)
        whiteout = _probe_whiteout(scratch)
    except OSError as exc:  # an errno that does not answer the question, such as ENOSPC
        raise _cannot_probe(exc, path, "probe") from exc
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return BackingFs(
        path=path,
        fs_type_name=name,
        magic=magic,
        d_type=d_type,
        trusted_xattr=trusted,
        whiteout=whiteout,
        problems=backing_problems(name, d_type, trusted, whiteout),
    )


def _cannot_probe(exc: OSError, path: str, call: str) -> OverlayctlError:
    # ENOENT too is a KernelError here: every failure has the fix the hint gives.
    return from_oserror(
        exc,
        call=call,
        what=f"cannot probe the filesystem at {path}",
        hint="give an existing directory the store may write to",
        missing=KernelError,
    )


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _probe_d_type(scratch: str) -> bool:
    """Raw getdents64 gives DT_REG and DT_DIR, not DT_UNKNOWN (0).

    os.scandir would hide DT_UNKNOWN by falling back to stat().
    """
    _touch(os.path.join(scratch, "f"))
    os.mkdir(os.path.join(scratch, "d"))
    fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    try:
        entries = dict(_libc.getdents64(fd))
    finally:
        os.close(fd)
    return entries.get("f") == DT_REG and entries.get("d") == DT_DIR


def _probe_trusted_xattr(scratch: str) -> bool:
    """trusted.* xattrs can be set: overlay keeps opaque, redirect, origin there.

    EPERM without CAP_SYS_ADMIN, ENOTSUP where the filesystem has no xattrs.
    """
    target = os.path.join(scratch, "x")
    _touch(target)
    try:
        os.setxattr(target, "trusted.overlay.probe", b"y")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
            return False
        raise
    return True


def _probe_whiteout(scratch: str) -> bool:
    """A 0/0 character device (overlay's whiteout) can be created: needs CAP_MKNOD."""
    try:
        os.mknod(os.path.join(scratch, "wh"), stat.S_IFCHR | 0o600, os.makedev(0, 0))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
            return False
        raise
    return True
