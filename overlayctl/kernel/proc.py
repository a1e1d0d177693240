"""Facts about processes from /proc: alive, start time, parent."""

from __future__ import annotations

import os


def start_time(pid: int) -> int | None:
    """Clock ticks after boot when pid started (field 22 of /proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


def is_alive(pid: int | None, started: int | None = None) -> bool:
    """Whether pid runs (and is the same process that started at ``started``)."""
    if not pid:
        return False
    now = start_time(pid)
    if now is None:
        return False
    if _is_zombie(pid):
        return False
    return started is None or now == started


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] in (b"Z", b"X")


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to timeout seconds for pid to end (pidfd where possible)."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)
