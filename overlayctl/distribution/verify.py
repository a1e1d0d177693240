"""A blob stream that checks its size and digest as its bytes pass."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from ..errors import ArchiveError

_CHUNK = 1 << 20


class VerifyingReader:
    """Reads a blob, hashing every byte; at EOF, ArchiveError unless size and digest match.

    ``digest`` and ``size`` may be None when the archive does not state them
    (Docker's classic ``layer.tar``: its diff_id is checked instead).  Too
    many bytes fail as soon as they are read; too few, or other bytes, fail
    at EOF, the read that returns b"".  ``where`` names the blob in messages.
    """

    def __init__(self, raw: BinaryIO, *, digest: str | None, size: int | None, where: str) -> None:
        self._raw = raw
        self._digest = digest
        self._size = size
        self._where = where
        self._hash = hashlib.sha256()
        self.count = 0  # bytes read so far
        self._error: ArchiveError | None = None
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        if size == 0:
            return b""
        chunk = self._raw.read(size)
        if chunk:
            self._hash.update(chunk)
            self.count += len(chunk)
            if self._size is not None and self.count > self._size:
                self._fail(f"is larger than its descriptor's size {self._size}")
        else:
            self._at_eof()
        return chunk

    def _at_eof(self) -> None:
        if self._done:
            return
        self._done = True
        if self._size is not None and self.count < self._size:
            self._fail(f"is truncated: {self.count} of {self._size} bytes")
        found = "sha256:" + self._hash.hexdigest()
        if self._digest is not None and found != self._digest:
            self._fail(f"does not match its digest {self._digest} (the archive holds {found})")

    def _fail(self, why: str) -> None:
        self._error = ArchiveError(f"{self._where}: the blob {why}")
        raise self._error

    @property
    def digest(self) -> str:
        """The sha256 of the bytes read so far (all of them, after finish)."""
        return "sha256:" + self._hash.hexdigest()

    def finish(self) -> None:
        """Read what is left and check the blob; idempotent, raises the same error again."""
        while self.read(_CHUNK):
            pass

    def failed(self) -> ArchiveError | None:
        """The blob's own error, if it has one (reading the rest to know, when a digest or size is stated)."""
        if self._error is None and (self._digest is not None or self._size is not None):
            try:
                self.finish()
            except ArchiveError:
                pass
        return self._error
