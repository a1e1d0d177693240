"""Namespaces: make a mount namespace, pin namespaces to files, enter, read, drop.

A pin works like ``ip netns``: the namespace's ``/proc/<pid>/ns/mnt`` is
bind-mounted onto an empty file under the run root, which keeps the
namespace (and every mount inside it) alive with no process in it.  The pin
file must sit on a private mount, so the pin directory is bind-mounted onto
itself and made private once.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..errors import KernelError
from . import _libc

T = TypeVar("T")

_NS_FLAGS = os.O_RDONLY | os.O_CLOEXEC


def is_mount_point(path: str) -> bool:
    """True when path is a mount point in the caller's namespace.

    Compares mount IDs (statx) with the parent's: os.path.ismount misses a
    directory bind-mounted onto itself, which keeps the same device.
    """
    path = os.path.abspath(path)
    try:
        return _libc.mount_id(path) != _libc.mount_id(os.path.dirname(path) or "/")
    except OSError:
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


def release_pin_dir_if_unused(path: str) -> bool:
    """release_pin_dir when no namespace is pinned below path any more."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return False
    if any(is_pinned(f"{path}/{name}") for name in names):
        return False
    release_pin_dir(path)
    return True


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
    # The pin file stays between mounts (an empty file pins nothing), which
    # saves creating it on every mount; remove_pin_file deletes it for good.
    os.close(os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    return _on_each_cpu(lambda: _make_and_pin(pin, action))


class _PinRefused(Exception):
    """The kernel refused to bind the new namespace's file (EINVAL).

    An internal signal between _make_and_pin and _on_each_cpu, which retries
    on another CPU: it never leaves this module (the last refusal becomes a
    KernelError).
    """


def _make_and_pin(pin: str, action: Callable[[], T]) -> T:
    new_fd = -1
    try:
        with _saved_namespace():
            _libc.unshare(_libc.CLONE_NEWNS)
            _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_SLAVE)
            result = action()
            new_fd = os.open("/proc/self/ns/mnt", _NS_FLAGS)
        try:
            _libc.mount(f"/proc/self/fd/{new_fd}", pin, None, _libc.MS_BIND)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise _PinRefused(str(exc)) from exc
            raise
        return result
    finally:
        if new_fd >= 0:
            os.close(new_fd)


def _on_each_cpu(attempt: Callable[[], T]) -> T:
    """Run attempt, retrying on each CPU in turn while the pin is refused.

    The kernel refuses to bind a mount namespace file into a namespace whose
    ID is not older (its loop check compares IDs).  Since Linux 6.18 IDs come
    from per-CPU batches, so a caller that is itself in a non-initial
    namespace can get a "younger" new namespace with a smaller ID on another
    CPU.  Making the namespace on the CPU whose batch is ahead succeeds.
    """
    try:
        return attempt()
    except _PinRefused:
        pass
    allowed = os.sched_getaffinity(0)
    try:
        for cpu in range(os.cpu_count() or 1):
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                continue  # not in our cpuset
            with contextlib.suppress(_PinRefused):
                return attempt()
    finally:
        os.sched_setaffinity(0, allowed)
    raise KernelError(
        "the kernel refused to pin the new mount namespace on every CPU (its namespace loop check)",
        errno=errno.EINVAL,
        call="mount(MS_BIND)",
    )


def pin_namespace_of(pid: int, kind: str, pin: str) -> None:
    """Pin a process's namespace of one kind ("net", "mnt", ...) onto the file pin."""
    os.close(os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    _libc.mount(f"/proc/{pid}/ns/{kind}", pin, None, _libc.MS_BIND)


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
    """Unpin: the namespace dies with its last user.  False if nothing was pinned."""
    pinned = is_pinned(pin)
    if pinned:
        _libc.umount2(pin, _libc.MNT_DETACH)
    return pinned


def remove_pin_file(pin: str) -> None:
    """Unpin and delete the pin file (when its container goes)."""
    drop_pin(pin)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pin)
