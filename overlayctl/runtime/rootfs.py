"""The container's root filesystem: volumes, /proc, /sys, /dev, pivot_root.

Runs in the container's PID 1, in its own new mount namespace, after the
overlay is mounted at ``merged``.  Nothing here propagates to the host: the
namespace is made recursively private first.
"""

from __future__ import annotations

import os
import stat

from ..errors import InvalidArgument
from ..kernel import _libc
from .spec import Volume

_NOSUID_NODEV_NOEXEC = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC

#: Device nodes of the small /dev: name -> (major, minor).
DEVICES = {
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


def make_private() -> None:
    """Stop propagation both ways (pivot_root needs non-shared parents)."""
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)


def inside(merged: str, path: str) -> str:
    """The host path of a container path, refusing symlinks that lead out of merged."""
    target = os.path.join(merged, path.lstrip("/"))
    real = os.path.realpath(target)
    if real != merged and not real.startswith(merged + "/"):
        raise InvalidArgument(f"{path} leads outside the container (through a symlink)")
    return real


def bind_volumes(merged: str, volumes: tuple[Volume, ...]) -> None:
    for volume in volumes:  # their sources were checked before the container started
        target = inside(merged, volume.target)
        if os.path.isdir(volume.source):
            os.makedirs(target, exist_ok=True)
        elif not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        _libc.mount(volume.source, target, None, _libc.MS_BIND | _libc.MS_REC)
        if volume.readonly:
            # A bind mount takes flags only on a remount of itself.
            _libc.mount(None, target, None, _libc.MS_REMOUNT | _libc.MS_BIND | _libc.MS_RDONLY)


def mount_proc_sys(merged: str, *, own_sysfs: bool) -> None:
    """A new /proc (of the new PID namespace) and a read-only /sys."""
    proc = inside(merged, "/proc")
    os.makedirs(proc, exist_ok=True)
    _libc.mount("proc", proc, "proc", _NOSUID_NODEV_NOEXEC)
    sys_dir = inside(merged, "/sys")
    os.makedirs(sys_dir, exist_ok=True)
    if own_sysfs:
        # sysfs shows the network devices of the namespace that mounts it.
        _libc.mount("sysfs", sys_dir, "sysfs", _NOSUID_NODEV_NOEXEC | _libc.MS_RDONLY)
    else:
        _libc.mount("/sys", sys_dir, None, _libc.MS_BIND | _libc.MS_REC)
        _libc.mount(None, sys_dir, None, _libc.MS_REMOUNT | _libc.MS_BIND | _libc.MS_RDONLY)


def mount_dev(merged: str) -> None:
    """A small /dev: tmpfs with the usual nodes, a private devpts and /dev/shm."""
    dev = inside(merged, "/dev")
    os.makedirs(dev, exist_ok=True)
    _libc.mount("tmpfs", dev, "tmpfs", _libc.MS_NOSUID | _libc.MS_NOEXEC, "mode=755,size=65536k")
    for name, (major, minor) in DEVICES.items():
        os.mknod(f"{dev}/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)  # mknod applies the umask
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/pts", 0o755)
    _libc.mount(
        "devpts", f"{dev}/pts", "devpts", _libc.MS_NOSUID | _libc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"
    )
    os.mkdir(f"{dev}/shm", 0o1777)
    _libc.mount("shm", f"{dev}/shm", "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k")


def pivot(merged: str) -> None:
    """Make merged the root: pivot_root(".", ".") then drop the old root."""
    os.chdir(merged)
    _libc.pivot_root(".", ".")
    _libc.umount2(".", _libc.MNT_DETACH)
    os.chdir("/")
