"""The kernel's own overlay mount, with no overlayctl code in between: the bench's yardstick.

``raw_new_api_mount`` is the new mount API called directly (fsopen, one
``fsconfig lowerdir+`` per layer, upper, work, options, fsmount,
move_mount); ``raw_mount_of`` applies it to a container's lowers with a
scratch upper, work dir and target, and times the mount call alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from overlayctl import LayerStore


def raw_new_api_mount(
    lowers: Iterable[str], upper: str, work: str, target: str, options: Sequence[tuple[str, str | None]]
) -> None:
    """Mount an overlay of lowers at target by the raw new mount API."""
    from overlayctl.kernel import _libc

    fd = _libc.fsopen("overlay")
    try:
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "source", "overlay")
        for path in lowers:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "lowerdir+", path)
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "upperdir", upper)
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "workdir", work)
        for key, value in options:
            if value is None:
                _libc.fsconfig(fd, _libc.FSCONFIG_SET_FLAG, key)
            else:
                _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, key, value)
        _libc.fsconfig(fd, _libc.FSCONFIG_CMD_CREATE)
        mfd = _libc.fsmount(fd)
        try:
            _libc.move_mount(mfd, "", _libc.AT_FDCWD, target, _libc.MOVE_MOUNT_F_EMPTY_PATH)
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def raw_mount_of(store: LayerStore, name: str) -> Callable[[], float]:
    """A timed raw mount of a container's lowers, with scratch upper, work and target.

    Each call mounts, times the mount alone, unmounts, and returns the time.
    """
    from overlayctl.kernel import _libc

    plan = store.containers.plan(name)
    scratch = Path(store.layout.root).parent / f"raw-{name}"
    for sub in ("u", "w", "m"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    target = str(scratch / "m")

    def run() -> float:
        start = time.perf_counter()
        raw_new_api_mount(plan.lowers, str(scratch / "u"), str(scratch / "w"), target, plan.options)
        elapsed = time.perf_counter() - start
        _libc.umount2(target, 0)
        return elapsed

    return run
