"""The store lock: one flock on ``<root>/lock`` serialises every change to the store.

A verb takes the lock once, in the API layer, for its whole publishing
step; store functions that change the disk never lock themselves and check
that their caller holds it (``StoreLock.require``).  Readers take no lock:
every record is replaced by an atomic rename, so a reader sees the old file
or the new one.  ``check`` takes the lock shared, so that it sees no
transaction half done and blocks no other reader.

The exclusive holder writes its PID and command line into the lock file, so
that a waiter that gives up can say who holds the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from ..errors import StoreError

DEFAULT_TIMEOUT = 30.0


class StoreLock:
    """Re-entrant flock on ``path``: exclusive by default, shared with ``shared=True``.

    Raises StoreError naming the holder when the lock is not had within
    ``timeout`` seconds.
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._fd = -1
        self._depth = 0
        self._exclusive = False

    @property
    def held(self) -> bool:
        """Whether this process holds the lock exclusively."""
        return self._depth > 0 and self._exclusive

    def require(self) -> None:
        """Fail loudly when a store function that changes the disk runs unlocked."""
        if not self.held:
            raise AssertionError("a store change outside the store lock")

    def __enter__(self) -> StoreLock:
        self.acquire(shared=False)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @contextlib.contextmanager
    def shared(self) -> Iterator[StoreLock]:
        """Hold the lock shared (a reader's hold) for the block."""
        self.acquire(shared=True)
        try:
            yield self
        finally:
            self.release()

    def acquire(self, *, shared: bool) -> None:
        if self._depth:
            if not shared and not self._exclusive:
                raise AssertionError("cannot upgrade a shared store lock to exclusive")
            self._depth += 1
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, self.timeout, self.path)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._depth, self._exclusive = fd, 1, not shared
        if not shared:
            _write_holder(fd)

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            os.close(self._fd)
            self._fd = -1
            self._exclusive = False


def _flock(fd: int, mode: int, timeout: float, path: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"the store is locked by {describe_holder(path)} for more than {timeout:g} s",
                    hint="wait for it to finish, or raise --lock-timeout",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _write_holder(fd: int) -> None:
    pid = os.getpid()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid} {_command_line(pid)}\n".encode(), 0)


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return "?"
    return " ".join(words)[:200]  # one line, whatever the arguments hold


def describe_holder(path: str) -> str:
    """Who holds the lock, as "pid 123 (overlayctl image import ...)", from the lock file."""
    try:
        with open(path, "rb") as f:
            pid_text, _, command = f.read(400).decode(errors="replace").strip().partition(" ")
    except OSError:
        return "another process"
    if not pid_text.isdigit() or not os.path.exists(f"/proc/{pid_text}"):
        return "another process"
    return f"pid {pid_text} ({command})"
