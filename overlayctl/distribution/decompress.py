"""A layer blob's plain tar: gzip and zstd undone, or the compression sniffed."""

from __future__ import annotations

import gzip
from typing import BinaryIO

from ..errors import ArchiveError
from . import mediatypes as mt

_HEAD = 4  # bytes enough for the gzip and zstd magic numbers


class _Prefixed:
    """A reader that gives back the bytes taken to sniff, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size is None or size < 0:
            head, self._head = self._head, b""
            return head + self._rest.read()
        out, self._head = self._head[:size], self._head[size:]
        return out


class _Zstd:
    """zstandard's stream reader, its errors as ArchiveError.

    Output is produced a read at a time, so a zstd bomb cannot fill memory.
    A truncated stream ends without an error here; the blob digest and the
    diff_id, both checked, catch it.
    """

    def __init__(self, raw: BinaryIO) -> None:
        try:
            import zstandard
        except ImportError:
            raise ArchiveError(
                "the layer is zstd-compressed and the zstandard module is not installed",
                hint="pip install zstandard",
            ) from None
        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 16, read_across_frames=True)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except self._error as exc:
            raise ArchiveError(f"corrupt zstd stream: {exc}") from None


def _read_head(raw: BinaryIO) -> bytes:
    head = b""
    while len(head) < _HEAD:
        chunk = raw.read(_HEAD - len(head))
        if not chunk:
            break
        head += chunk
    return head


def open_layer(raw: BinaryIO, compression: str) -> BinaryIO:
    """A reader of the uncompressed layer tar in ``raw`` (compression: mediatypes.NONE/GZIP/ZSTD/SNIFF)."""
    if compression == mt.SNIFF:
        head = _read_head(raw)
        compression, raw = mt.sniff(head), _Prefixed(head, raw)
    if compression == mt.NONE:
        return raw
    if compression == mt.GZIP:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    if compression == mt.ZSTD:
        return _Zstd(raw)
    raise ValueError(compression)
