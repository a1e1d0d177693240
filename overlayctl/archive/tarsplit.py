"""The tar-split file: what regenerates a layer's original tar from its files.

A layer imported from a tar keeps, next to ``diff/``, the bytes of that tar
that are not file content: every header block (PAX, global PAX and GNU
long-name/long-link headers included), the padding after each file's data,
the end-of-archive blocks and whatever zero blocks followed them. For each
regular file whose data went into a file of ``diff/``, it keeps only the
size and the file's path: the content is read back from ``diff/`` when the
tar is regenerated, so file data is never stored twice. The idea is
tar-split's (Docker, containers/storage); the file format is our own.

File format (version 1)
-----------------------

The file is a gzip stream (RFC 1952; ``zcat`` reads it). Uncompressed, it is
the magic line ``b"overlayctl-tar-split 1\\n"`` then records, each a one-byte
tag and fields; integers are unsigned big-endian::

    b"R" len:u32 bytes[len]          raw bytes of the tar, copied as they are
    b"F" size:u64 plen:u32 path[plen] ``size`` bytes of content: the file ``path``
                                      (relative to diff/, no leading slash, the
                                      file system's bytes) read from its start
    b"E" total:u64 sha256[32]         end: the tar is ``total`` bytes long and its
                                      sha256 is the layer's diff_id

The records, in order, are the tar: the raw bytes of ``R`` records and the
content of the files of ``F`` records, concatenated, give its ``total``
bytes. Raw records are at most ``MAX_RAW`` bytes (a long run is split into
several); an ``F`` record has ``size > 0``; ``E`` is the last record and
nothing follows it. A file that does not end with ``E`` is damaged.

Everything here is pure: it reads and writes file objects and makes no other
system call (``_splitter`` records a tar-split during extraction,
``regenerate`` writes the tar back).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from overlayctl.errors import ArchiveError

MAGIC = b"overlayctl-tar-split 1\n"
MAX_RAW = 1 << 20
# Level 3 compresses the headers of 20,000 small files 3x faster than level 6
# for 25% more bytes: a few hundredths of the layer either way.
COMPRESSLEVEL = 3
_LEN = struct.Struct(">I")
_FILE = struct.Struct(">QI")
_END = struct.Struct(">Q32s")
_RAW_TAG = struct.Struct(">cI")
_FILE_TAG = struct.Struct(">cQI")
_BATCH = 1 << 16
_MAX_PATH = 1 << 20


class TarSplitError(ArchiveError):
    """A tar-split file that cannot be read: truncated, corrupt or of another format."""


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes of the tar copied as they are."""

    data: bytes


@dataclass(frozen=True, slots=True)
class FileRef:
    """``size`` bytes of content read from the file ``path`` under diff/."""

    path: bytes
    size: int


@dataclass(frozen=True, slots=True)
class End:
    """The last record: the tar's length and sha256 (the layer's diff_id)."""

    total: int
    digest: bytes

    @property
    def diff_id(self) -> str:
        return "sha256:" + self.digest.hex()


Record = Raw | FileRef | End


class TarSplitWriter:
    """Encodes records into a gzip stream written to ``out`` (which it does not close).

    Consecutive raw bytes are merged into as few ``R`` records as ``MAX_RAW``
    allows; writes to the gzip stream are batched.
    """

    def __init__(self, out: BinaryIO, compresslevel: int = COMPRESSLEVEL) -> None:
        self._gzip = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=compresslevel, mtime=0, filename="")
        self._batch = bytearray(MAGIC)
        self._raw = bytearray()
        self.total = 0  # bytes of the tar described so far

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        self._raw += data
        self.total += len(data)
        while len(self._raw) >= MAX_RAW:
            self._flush_raw(MAX_RAW)

    def file(self, path: bytes, size: int) -> None:
        # Once per file of the layer: one append to the batch per field.
        if size <= 0:
            raise ValueError("a file record needs data")
        if not path or path[0] == 0x2F or len(path) > _MAX_PATH:
            raise ValueError(f"bad path for a file record: {path!r}")
        batch, raw = self._batch, self._raw
        if raw:  # shorter than MAX_RAW: raw() flushed longer runs
            batch += _RAW_TAG.pack(b"R", len(raw))
            batch += raw
            raw.clear()
        batch += _FILE_TAG.pack(b"F", size, len(path))
        batch += path
        self.total += size
        if len(batch) >= _BATCH:
            self._gzip.write(batch)
            batch.clear()

    def end(self, digest: bytes) -> None:
        """Write the end record (the total is what the records describe) and flush."""
        if len(digest) != 32:
            raise ValueError("a sha256 digest is 32 bytes")
        self._flush_raw(len(self._raw))
        self._add(b"E" + _END.pack(self.total, digest))
        self._gzip.write(self._batch)
        self._batch.clear()
        self._gzip.close()

    def _flush_raw(self, size: int) -> None:
        if size:
            self._add(_RAW_TAG.pack(b"R", size))
            self._add(self._raw[:size])
            del self._raw[:size]

    def _add(self, data: bytes | bytearray) -> None:
        self._batch += data
        if len(self._batch) >= _BATCH:
            self._gzip.write(self._batch)
            self._batch.clear()


class _Reader:
    def __init__(self, source: BinaryIO) -> None:
        self._gzip = gzip.GzipFile(fileobj=source, mode="rb")

    def take(self, size: int, what: str) -> bytes:
        data = self._read(size)
        if len(data) < size:
            raise TarSplitError(f"truncated tar-split: it ends inside {what}")
        return data

    def at_eof(self) -> bool:
        """Whether the stream ends here (reading to its end checks the gzip CRC)."""
        return not self._read(1)

    def _read(self, size: int) -> bytes:
        try:
            return self._gzip.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise TarSplitError(f"corrupt tar-split: {exc}") from None


def read_tar_split(source: BinaryIO) -> Iterator[Record]:
    """The records of a tar-split file, checked, the ``End`` record last.

    Raises TarSplitError for a damaged file: bad magic, an unknown tag, a
    record cut short, anything after the end record, a corrupt gzip stream,
    or an end record whose total is not what the records add up to. The
    error may come after some records were yielded.
    """
    reader = _Reader(source)
    if reader.take(len(MAGIC), "its magic") != MAGIC:
        raise TarSplitError("not a tar-split file of format 1 (bad magic)")
    total = 0
    while True:
        tag = reader.take(1, "a record tag")
        if tag == b"R":
            (size,) = _LEN.unpack(reader.take(_LEN.size, "a raw record"))
            if not 0 < size <= MAX_RAW:
                raise TarSplitError(f"tar-split raw record of {size} bytes")
            total += size
            yield Raw(reader.take(size, "a raw record"))
        elif tag == b"F":
            size, plen = _FILE.unpack(reader.take(_FILE.size, "a file record"))
            if size == 0 or not 0 < plen <= _MAX_PATH:
                raise TarSplitError(f"tar-split file record with size {size} and path length {plen}")
            path = reader.take(plen, "a file record")
            if path.startswith(b"/") or b"\0" in path or b".." in path.split(b"/"):
                raise TarSplitError(f"tar-split file record with a bad path {path!r}")
            total += size
            yield FileRef(path, size)
        elif tag == b"E":
            end = End(*_END.unpack(reader.take(_END.size, "the end record")))
            if end.total != total:
                raise TarSplitError(f"tar-split records add up to {total} bytes, its end record says {end.total}")
            if not reader.at_eof():
                raise TarSplitError("tar-split has data after its end record")
            yield end
            return
        else:
            raise TarSplitError(f"tar-split record with an unknown tag {tag!r}")
