"""Tar archives: a seekable file read at member offsets, or a stream spooled once.

- ``TarFileArchive``: the member headers are scanned first (tarfile seeks
  over the data), then each blob is read at its offset: no copy, whatever
  the order of the members (``docker save`` writes ``manifest.json`` last).
- ``SpooledArchive``: a tar stream (a pipe, or a gzip-compressed tar) read
  once, in order, through the layer extractor's hardened tar reader.
  Metadata files are kept in memory; every other file is copied to one
  spool file in the store's staging directory and read back at its offset
  once the metadata is known.

Only regular files are read; names are normalised, and a member named with
``..`` or an absolute path, or twice, is refused.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import threading
from dataclasses import dataclass
from typing import BinaryIO

from ..archive._tarstream import CheckedInfo, TarReader
from ..errors import ArchiveError, UnsafeArchive
from ..store.atomic import discard, new_staging
from .model import META_LIMIT
from .paths import normalize
from .source import Archive, resolve_inside, too_large

#: Top-level files kept in memory when a stream is read.
META_NAMES = frozenset({"manifest.json", "index.json", "oci-layout", "repositories"})


@dataclass(frozen=True, slots=True)
class _Member:
    kind: str  # "file", "link" or "other"
    offset: int = 0
    size: int = 0
    target: str = ""  # of a link
    data: bytes | None = None  # a file kept in memory


class _Indexed(Archive):
    """An archive whose members are listed in ``self.members`` (a tar, scanned or spooled)."""

    concurrent_blobs = True  # slices are read with os.pread (see _Slice)

    def __init__(self) -> None:
        self.members: dict[str, _Member] = {}
        self._slice_lock = threading.Lock()

    def _name(self, raw_name: str) -> str | None:
        """A member's normalised name; None for the archive's root (``./``)."""
        if not raw_name.startswith("/") and all(p in ("", ".") for p in raw_name.split("/")):
            return None
        return normalize(raw_name, f"{self.name}: entry")

    def _add(self, name: str | None, member: _Member) -> None:
        if name is None or member.kind == "dir":
            return
        if name in self.members:
            raise ArchiveError(f"{self.name}: entry {name!r} is in the archive twice")
        self.members[name] = member

    def _link_of(self, path: str) -> str | None:
        member = self.members.get(path)
        return member.target if member is not None and member.kind == "link" else None

    def _find(self, path: str, what: str) -> _Member:
        resolved = resolve_inside(path, self._link_of, what)
        member = self.members.get(resolved)
        if member is None:
            raise ArchiveError(f"{what}: {path} is not in the archive")
        if member.kind != "file":
            raise ArchiveError(f"{what}: {path} is not a regular file")
        return member

    def exists(self, path: str) -> bool:
        return path in self.members

    def check(self, path: str, what: str) -> None:
        self._find(path, what)

    def read_meta(self, path: str, what: str) -> bytes:
        member = self._find(path, what)
        if member.size > META_LIMIT:
            raise too_large(path, member.size, what)
        if member.data is not None:
            return member.data
        return self._slice(member).read()

    def open_blob(self, path: str, what: str) -> BinaryIO:
        member = self._find(path, what)
        if member.data is not None:
            return io.BytesIO(member.data)
        return self._slice(member)  # type: ignore[return-value]

    def blob_size(self, path: str, what: str) -> int:
        return self._find(path, what).size

    def _slice(self, member: _Member) -> _Slice:
        raise NotImplementedError


class _Slice:
    """Bytes [offset, offset + size) of a seekable file.

    Read with ``os.pread`` on the file's descriptor: no shared file
    position, so slices of one file may be read at once from several
    threads.  A file object without a descriptor is read with a seek before
    each read, under a lock shared by its slices.
    """

    def __init__(self, file: BinaryIO, offset: int, size: int, lock: threading.Lock) -> None:
        self._file = file
        self._pos = offset
        self._end = offset + size
        self._lock = lock
        try:
            self._fd: int | None = file.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._fd = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._pos
        if left <= 0 or size == 0:
            return b""
        want = left if size is None or size < 0 else min(size, left)
        if self._fd is not None:
            data = os.pread(self._fd, want, self._pos)
        else:
            with self._lock:
                self._file.seek(self._pos)
                data = self._file.read(want)
        self._pos += len(data)
        return data

    def close(self) -> None:
        pass


class _HeaderInfo(CheckedInfo):
    """CheckedInfo that keeps the header error which ended iteration (tarfile hides it)."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            tar.distribution_stop = exc  # type: ignore[attr-defined]
            raise


def _kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.issym():
        return "link"
    return "dir" if info.isdir() else "other"


class TarFileArchive(_Indexed):
    """A seekable, uncompressed tar: headers scanned once, blobs read at their offsets."""

    def __init__(self, file: BinaryIO, name: str, *, owned: bool = True) -> None:
        super().__init__()
        self.name = name
        self._file = file
        self._owned = owned
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    def _scan(self) -> None:
        end = self._file.seek(0, os.SEEK_END)
        self._file.seek(0)
        try:
            tar = tarfile.open(  # noqa: SIM115 (reads headers of our file object; nothing to close)
                fileobj=self._file, mode="r:", tarinfo=_HeaderInfo, encoding="utf-8", errors="surrogateescape"
            )
        except tarfile.TarError as exc:
            raise ArchiveError(f"{self.name} is not a tar archive: {exc}") from None
        while True:
            try:
                info = tar.next()
            except tarfile.TarError as exc:
                if "unexpected end" in str(exc):
                    raise ArchiveError(f"{self.name}: the archive is truncated (at offset {tar.offset})") from None
                raise ArchiveError(f"{self.name}: unreadable tar at offset {tar.offset}: {exc}") from None
            if info is None:
                break
            tar.members.clear()
            if info.isreg() and info.offset_data + info.size > end:
                raise ArchiveError(f"{self.name}: the archive is truncated in entry {info.name!r}")
            self._add(self._name(info.name), _Member(_kind(info), info.offset_data, info.size, info.linkname))
        stop = getattr(tar, "distribution_stop", None)
        if isinstance(stop, (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError)):
            raise ArchiveError(f"{self.name}: the archive is truncated: no end-of-archive block at offset {tar.offset}")
        if stop is not None and not isinstance(stop, tarfile.EOFHeaderError):
            raise ArchiveError(f"{self.name}: invalid tar header at offset {tar.offset}: {stop}")

    def _slice(self, member: _Member) -> _Slice:
        return _Slice(self._file, member.offset, member.size, self._slice_lock)

    def close(self) -> None:
        if self._owned:
            self._file.close()


class _Counting:
    """A reader that counts the bytes it passes."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        return data


class SpooledArchive(_Indexed):
    """A tar stream read once: metadata in memory, other files in a spool file in ``spool_root``."""

    def __init__(self, stream: BinaryIO, name: str, spool_root: str) -> None:
        super().__init__()
        self.name = name
        self._dir = new_staging(spool_root)
        try:
            self._spool = open(f"{self._dir}/spool", "w+b")  # noqa: SIM115 (closed by close())
            self._read(stream)
        except BaseException:
            self.close()
            raise

    def _read(self, stream: BinaryIO) -> None:
        counted = _Counting(stream)
        try:
            self._spool_members(counted)  # type: ignore[arg-type]
        except UnsafeArchive:
            raise
        except ArchiveError as exc:
            if counted.count == 0:
                raise ArchiveError(f"{self.name}: the archive is empty (0 bytes)") from None
            if exc.message.startswith(self.name):
                raise
            if "unexpected end" in exc.message or "truncated" in exc.message:
                raise ArchiveError(f"{self.name}: the archive is truncated ({exc.message})") from None
            raise ArchiveError(f"{self.name}: {exc.message}", hint=exc.hint) from None

    def _spool_members(self, stream: BinaryIO) -> None:
        reader = TarReader(stream)
        for info in reader:
            name, kind = self._name(info.name), _kind(info)
            member = _Member(kind, target=info.linkname)
            if kind == "file" and name in META_NAMES and info.size <= META_LIMIT:
                buf = io.BytesIO()
                reader.copy_data(info, buf)
                member = _Member(kind, 0, info.size, data=buf.getvalue())
            elif kind == "file":
                offset = self._spool.tell()
                reader.copy_data(info, self._spool)
                member = _Member(kind, offset, info.size)
            self._add(name, member)
        reader.finish()
        self._spool.flush()

    def _slice(self, member: _Member) -> _Slice:
        return _Slice(self._spool, member.offset, member.size, self._slice_lock)

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            self._spool.close()
        discard(self._dir)
