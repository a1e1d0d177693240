"""Mount namespaces: make one, pin it to a file, enter it, read it, drop it.

A pin works like ``ip netns``: the namespace's ``/proc/<pid>/ns/mnt`` is
bind-mounted onto an empty file under the run root, which keeps the
namespace (and every mount inside it) alive with no process in it.  The pin
file must sit on a private mount, so the pin directory is bind-mounted onto
itself and made private once.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

from . import _libc

T = TypeVar("T")

_NS_FLAGS = os.O_RDONLY | os.O_CLOEXEC


def is_mount_point(path: str) -> bool:
    """True when path is a mount point in the caller's namespace.

    os.path.ismount misses bind mounts of a directory onto itself (same
    device), so mountinfo is read instead.
    """
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            point = line.split(b" ", 5)[4]
            if b"\\" in point:
                point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), point)
            if os.fsdecode(point) == path:
                return True
    return False


def prepare_pin_dir(path: str) -> None:
    """Make path a private mount point, so pins below it never propagate."""
    os.makedirs(path, exist_ok=True)
    if is_mount_point(path):
        return
    _libc.mount(path, path, None, _libc.MS_BIND)
    _libc.mount(None, path, None, _libc.MS_PRIVATE)


def release_pin_dir(path: str) -> None:
    """Undo prepare_pin_dir (used by tests and by 'cleanup' of a run root)."""
    if is_mount_point(path):
        _libc.umount2(path, _libc.MNT_DETACH)


def is_pinned(pin: str) -> bool:
    """True when a namespace is bind-mounted on the pin file."""
    try:
        return os.stat(pin).st_dev != os.stat(os.path.dirname(pin)).st_dev
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _saved_namespace() -> Iterator[None]:
    """Return to the caller's mount namespace and working directory afterwards.

    setns(CLONE_NEWNS) resets the root and cwd to the namespace's root, so the
    cwd is saved as an fd and restored.
    """
    orig = os.open("/proc/self/ns/mnt", _NS_FLAGS)
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield
    finally:
        try:
            _libc.setns(orig, _libc.CLONE_NEWNS)
            os.fchdir(cwd)
        finally:
            os.close(orig)
            os.close(cwd)


def run_in_new_namespace(pin: str, action: Callable[[], T]) -> T:
    """Run action in a new, recursively slave mount namespace, then pin it.

    The caller stays in its own namespace.  When action raises, the new
    namespace is dropped with everything mounted in it.  Mounts made in it
    never propagate to the host; the host's later unmounts still reach it
    (slave, not private), so it does not keep host filesystems busy.
    """
    with open(pin, "ab"):
        pass
    new_fd = -1
    try:
        with _saved_namespace():
            _libc.unshare(_libc.CLONE_NEWNS)
            _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_SLAVE)
            result = action()
            new_fd = os.open("/proc/self/ns/mnt", _NS_FLAGS)
        _libc.mount(f"/proc/self/fd/{new_fd}", pin, None, _libc.MS_BIND)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(pin)
        raise
    finally:
        if new_fd >= 0:
            os.close(new_fd)
    return result


def run_in_namespace(pin: str, action: Callable[[], T]) -> T:
    """Run action inside the pinned namespace and come back."""
    fd = os.open(pin, _NS_FLAGS)
    try:
        with _saved_namespace():
            _libc.setns(fd, _libc.CLONE_NEWNS)
            return action()
    finally:
        os.close(fd)


def enter(pin: str) -> None:
    """Move the calling process into the pinned namespace for good (before exec)."""
    fd = os.open(pin, _NS_FLAGS)
    try:
        _libc.setns(fd, _libc.CLONE_NEWNS)
    finally:
        os.close(fd)


def drop_pin(pin: str) -> bool:
    """Unpin and delete the pin file; the namespace dies with its last user."""
    pinned = is_pinned(pin)
    if pinned:
        _libc.umount2(pin, _libc.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pin)
    return pinned
