"""Which mount points lie below a path, in our mount namespace and in pinned ones."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from ..plan.mountinfo import parse_mountinfo


def mounts_below(path: str, pins: Iterable[str] = ()) -> list[str]:
    """Mount points at or below path: in this process's namespace and in each pinned one.

    A mount namespace pinned by a bind mount of its nsfs file has no process
    to read /proc/PID/mountinfo from, so each pin is entered in turn.
    """
    from . import ns

    prefix = path.rstrip("/") + "/"
    found = _below(_read_self(), prefix)
    for pin in pins:
        with contextlib.suppress(OSError):
            if ns.is_pinned(pin):
                found += _below(ns.run_in_namespace(pin, _read_self), prefix)
    return found


def _read_self() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def _below(text: str, prefix: str) -> list[str]:
    return [m.mount_point for m in parse_mountinfo(text) if (m.mount_point + "/").startswith(prefix)]
