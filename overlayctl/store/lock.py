"""The store lock: one flock serialises every mutation across processes."""

from __future__ import annotations

import fcntl
import os
import time

from ..errors import StoreError


class StoreLock:
    """Re-entrant exclusive flock on ``<root>/lock``.

    Reads need no lock: every record is replaced by an atomic rename.
    """

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._fd = -1
        self._depth = 0

    def __enter__(self) -> StoreLock:
        if self._depth == 0:
            self._acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            os.close(self._fd)
            self._fd = -1

    def _acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise StoreError(
                        f"the store is locked by another overlayctl process ({self.path})",
                        hint="wait for it to finish",
                    ) from None
                time.sleep(0.01)
