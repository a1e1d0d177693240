"""Carry out a MountPlan with the kernel's overlay filesystem, and undo it.

Two ways to mount, chosen by a probe: the new mount API (``fsopen``,
``fsconfig`` with one ``lowerdir+`` per layer, ``fsmount``, ``move_mount``;
Linux >= 6.8 for ``lowerdir+``) and classic ``mount(2)`` with short links,
whose data must fit in one page.
"""

from __future__ import annotations

import enum
import errno
import os
import time

from ..errors import KernelError, NotPermitted, OverlayctlError, OverlayUnsupported, TooManyLayers, from_oserror
from ..plan.mountplan import MAX_LOWER_LAYERS, MountPlan
from ..plan.options import check_layer_count, classic_data, fsconfig_settings
from . import _libc


class MountApi(enum.Enum):
    NEW = "new"  # fsopen/fsconfig(lowerdir+)/fsmount/move_mount
    CLASSIC = "classic"  # mount(2) with one page of option data


def default_api() -> MountApi:
    """The new API where the kernel has ``lowerdir+``, classic mount(2) otherwise."""
    from .probe import has_lowerdir_plus

    return MountApi.NEW if has_lowerdir_plus() else MountApi.CLASSIC


def apply(plan: MountPlan, api: MountApi | None = None) -> MountApi:
    """Mount the overlay the plan describes at ``plan.target``; returns the API used.

    Raises a KernelError (or subclass), or InUse when the kernel finds a
    directory busy, with a message a person can act on.
    """
    api = api or default_api()
    started = time.clock_gettime(time.CLOCK_MONOTONIC)
    try:
        if api is MountApi.NEW:
            _apply_new(plan)
        else:
            _apply_classic(plan)
    except _MountFailed as failed:
        # Most overlay errors reach only the kernel log, not the caller.
        detail = failed.detail or recent_kernel_log(started)
        raise translate_error(failed.error, plan, failed.call, detail) from failed.error
    return api


def unmount(target: str, *, detach: bool = False) -> bool:
    """Unmount target; False when nothing was mounted there."""
    try:
        _libc.umount2(target, (_libc.MNT_DETACH if detach else 0) | _libc.UMOUNT_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise from_oserror(exc, call="umount2", what=f"cannot unmount {target}") from exc
    return True


class _MountFailed(Exception):
    """A mount call failed: carries the OSError and the call from deep in
    _apply_new/_apply_classic up to apply(), which reads the kernel log and
    translates it.  An internal signal: it never leaves this module.
    """

    def __init__(self, error: OSError, call: str, detail: str = "") -> None:
        super().__init__(str(error))
        self.error = error
        self.call = call
        self.detail = detail


def recent_kernel_log(since: float, word: str = "overlay") -> str:
    """Kernel log lines mentioning word, logged since a CLOCK_MONOTONIC time.

    /dev/kmsg records are "prio,seq,usec,flags;text"; usec is monotonic.
    """
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    lines: list[str] = []
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten while reading: go on
                    continue
                break
            if not record:
                break
            header, _, text = record.decode(errors="replace").partition(";")
            fields = header.split(",")
            if len(fields) > 2 and int(fields[2]) / 1e6 >= since - 0.01 and word in text:
                lines.append(text.split("\n", 1)[0].strip())
    finally:
        os.close(fd)
    return "; ".join(dict.fromkeys(lines[-3:]))


def _read_fs_context(fd: int) -> str:
    """The kernel's own messages on an fs-context fd ("e overlay: ..." lines)."""
    messages = []
    while True:
        try:
            # A buffer smaller than the message loses it (EMSGSIZE): read 4 KiB.
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        messages.append(data.decode(errors="replace").strip())
    return "; ".join(m[2:] if m[:2] in ("e ", "w ", "i ") else m for m in messages)


def _apply_new(plan: MountPlan) -> None:
    check_layer_count(len(plan.lowers))
    try:
        fd = _libc.fsopen("overlay")
    except OSError as exc:
        raise _MountFailed(exc, "fsopen") from exc
    try:
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "source", "overlay")
        try:
            # The hot loop of a deep mount: one call per layer, nothing else.
            _libc.add_lowers(fd, plan.lowers)
        except OSError as exc:
            raise _MountFailed(exc, "fsconfig(lowerdir+)", _read_fs_context(fd)) from exc
        for key, value in fsconfig_settings(plan):
            _configure(fd, key, value)
        _configure(fd, None, None)
        try:
            mfd = _libc.fsmount(fd)
        except OSError as exc:
            raise _MountFailed(exc, "fsmount", _read_fs_context(fd)) from exc
        try:
            _libc.move_mount(mfd, "", _libc.AT_FDCWD, plan.target, _libc.MOVE_MOUNT_F_EMPTY_PATH)
        except OSError as exc:
            raise _MountFailed(exc, "move_mount") from exc
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def _configure(fd: int, key: str | None, value: str | None) -> None:
    try:
        if key is None:
            _libc.fsconfig(fd, _libc.FSCONFIG_CMD_CREATE)
        elif value is None:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_FLAG, key)
        else:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, key, value)
    except OSError as exc:
        call = "fsconfig(CMD_CREATE)" if key is None else f"fsconfig({key})"
        raise _MountFailed(exc, call, _read_fs_context(fd)) from exc


def _apply_classic(plan: MountPlan) -> None:
    data = classic_data(plan)
    flags = _libc.MS_RDONLY if plan.readonly else 0
    cwd = None
    if plan.links is not None and plan.link_base is not None:
        # Short relative links resolve against the store root: mount from there.
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.chdir(plan.link_base)
    try:
        _libc.mount("overlay", plan.target, "overlay", flags, data)
    except OSError as exc:
        raise _MountFailed(exc, "mount") from exc
    finally:
        if cwd is not None:
            os.fchdir(cwd)
            os.close(cwd)


def _missing_directory(plan: MountPlan) -> str | None:
    labels = list(plan.labels) + [""] * (len(plan.lowers) - len(plan.labels))
    for path, label in zip(plan.lowers, labels):
        if not os.path.isdir(path):
            return f"lower layer {label + ' ' if label else ''}directory {path} is missing"
    for role, path in (("upper", plan.upper), ("work", plan.work), ("target", plan.target)):
        if path is not None and not os.path.isdir(path):
            return f"{role} directory {path} is missing"
    return None


def translate_error(exc: OSError, plan: MountPlan | None, call: str, detail: str = "") -> OverlayctlError:
    """Turn a failed mount call into a message a person can act on.

    Two errnos mean something particular for a mount call, and the plan
    explains a failure better than EINVAL or ENOENT do; from_oserror does the rest.
    """
    code = exc.errno or 0
    kw = {"errno": code, "call": call, "detail": detail}
    if code == errno.ENODEV:  # the filesystem type is unknown
        return OverlayUnsupported("the kernel has no overlay filesystem", hint="load it with 'modprobe overlay'", **kw)
    if code == errno.ENOSPC:  # from a mount call, not a full disk (count_mounts, fs/namespace.c)
        return KernelError(
            f"the kernel refused the overlay mount ({call}): {detail or os.strerror(code)}",
            hint="the mount namespace holds as many mounts as /proc/sys/fs/mount-max allows",
            **kw,
        )
    error = from_oserror(
        exc,
        call=call,
        what=f"the kernel refused the overlay mount ({call})",
        detail=detail,
        hint=None if detail else "the kernel log (dmesg) may have the details",
        missing=KernelError,
    )
    if plan is None or isinstance(error, NotPermitted):
        return error
    missing = _missing_directory(plan)
    if missing:
        return KernelError(missing, hint="the store may be damaged; see 'overlayctl info'", **kw)
    if "too many lower" in detail or len(plan.lowers) > MAX_LOWER_LAYERS:
        return TooManyLayers(f"{len(plan.lowers)} lower layers: the kernel stacks at most {MAX_LOWER_LAYERS}", **kw)
    return error
