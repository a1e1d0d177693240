"""Reading a layer stream: decompression, the diff_id, and checked tar headers.

Python 3.11.7's ``tarfile`` is used only to parse ustar/GNU header blocks, in
stream mode. What it gets wrong on this version is guarded here:

- a bad checksum or a truncated header ends iteration silently, as if the archive
  ended: after the last member we require that everything left is zero bytes and
  that at least one zero block is there;
- a negative size loops forever (CVE-2025-8194): refused before tarfile uses it;
- PAX parsing is quadratic on crafted digits (CVE-2024-6232): we parse PAX
  records ourselves, in linear time;
- a streaming gzip read never checks the CRC trailer: we read the stream to EOF,
  which makes ``gzip`` check it, and turn a short or corrupt stream into an error.

Every uncompressed byte goes through ``HashingReader`` once, in order: the
diff_id is its sha256, and a ``Splitter`` (tar-split recording) sees the same bytes.
"""

from __future__ import annotations

import decimal
import gzip
import hashlib
import shutil
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from overlayctl.errors import ArchiveError

if TYPE_CHECKING:
    from overlayctl.archive._splitter import Parts, Splitter

BLOCKSIZE = tarfile.BLOCKSIZE
_CHUNK = 1 << 20
# PAX and GNU long-name headers are read whole; real ones are a few KiB.
_MAX_META_SIZE = 1 << 20
_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_LONG_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
# Magic numbers of compressed streams we do not read (zstd is an OCI layer media
# type, https://github.com/opencontainers/image-spec/blob/main/layer.md; bzip2 and
# xz are not). Checked only when the ustar magic is absent, since a
# plain tar's first bytes are a file name, which may start with anything.
_UNSUPPORTED = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)


class _Prefixed:
    """A reader that returns the bytes the sniffer already took, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size < 0:
            head, self._head = self._head, b""
            return head + self._rest.read()
        out, self._head = self._head[:size], self._head[size:]
        return out


class HashingReader:
    """Hashes every uncompressed byte and remembers where the last non-zero one was."""

    def __init__(self, raw: BinaryIO, what: str) -> None:
        self._raw = raw
        self._what = what
        self._digest = hashlib.sha256()
        self.position = 0  # bytes read so far
        self.data_end = 0  # offset just after the last non-zero byte
        self.observer: Callable[[bytes], None] | None = None  # sees every byte hashed, in order

    def read(self, size: int = -1) -> bytes:
        try:
            chunk = self._raw.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"corrupt {self._what} at uncompressed byte {self.position}: {exc}") from exc
        if chunk:
            self._digest.update(chunk)
            if self.observer is not None:
                self.observer(chunk)
            used = len(chunk.rstrip(b"\0"))
            if used:
                self.data_end = self.position + used
            self.position += len(chunk)
        return chunk

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def diff_id(self) -> str:
        return "sha256:" + self._digest.hexdigest()

    def digest(self) -> bytes:
        return self._digest.digest()


def _read_head(source: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < size:
        chunk = source.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def open_stream(source: BinaryIO) -> HashingReader:
    """Sniff the compression of ``source`` and return a reader of the plain tar."""
    try:
        head = _read_head(source, BLOCKSIZE)
    except (OSError, EOFError, zlib.error) as exc:  # a stream decompressed on the way fails here too
        raise ArchiveError(f"cannot read the layer: {exc}") from exc
    if not head:
        raise ArchiveError("the layer is empty (0 bytes)")
    raw = _Prefixed(head, source)
    if head.startswith(b"\x1f\x8b"):
        return HashingReader(gzip.GzipFile(fileobj=raw, mode="rb"), "gzip stream")
    if head[257:262] != b"ustar":
        for magic, name in _UNSUPPORTED:
            if head.startswith(magic):
                raise ArchiveError(
                    f"{name}-compressed layers are not supported",
                    hint="decompress the layer first",
                )
    return HashingReader(raw, "layer stream")


def _round_up(size: int) -> int:
    return -(-size // BLOCKSIZE) * BLOCKSIZE


def _bad_pax(offset: int, why: str) -> ArchiveError:
    return ArchiveError(f"invalid PAX header at offset {offset}: {why}")


def _check_pax_numbers(records: dict[str, str], offset: int) -> None:
    for key in ("size", "uid", "gid"):
        value = records.get(key)
        if value is not None and not (value.isascii() and value.isdigit()):
            raise _bad_pax(offset, f"{key}={value!r} is not a non-negative integer")
    if "mtime" in records:
        try:
            if not decimal.Decimal(records["mtime"]).is_finite():
                raise ValueError
        except (ValueError, decimal.InvalidOperation):
            raise _bad_pax(offset, f"mtime={records['mtime']!r} is not a number") from None


def parse_pax_records(data: bytes, offset: int) -> dict[str, str]:
    """Parse ``"LEN KEY=VALUE\\n"`` records in one pass.

    Keys and values are decoded as UTF-8 with surrogateescape, so non-UTF-8 bytes
    (binary xattr values, ``hdrcharset=BINARY`` names) survive as they were.
    """
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0 and not data[pos:].strip(b"\0"):
            break  # NUL padding after the last record
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > 0 else b""
        if not digits.isdigit():
            raise _bad_pax(offset, f"no record length at byte {pos}")
        end = pos + int(digits)
        if end > len(data) or end <= space + 1 or data[end - 1] != 0x0A:
            raise _bad_pax(offset, f"bad record length at byte {pos}")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise _bad_pax(offset, f"record without a key at byte {pos}")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    if any(key.startswith("GNU.sparse.") for key in records):
        raise ArchiveError(f"sparse file at offset {offset}: sparse files are not supported")
    _check_pax_numbers(records, offset)
    return records


class CheckedInfo(tarfile.TarInfo):
    """A TarInfo that refuses what tarfile mishandles and parses PAX records itself."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            # tarfile ends iteration on any of these without saying which one it
            # was; keep it so that TarReader.finish() can tell a zero block from
            # a bad checksum or a short header.
            tar.overlayctl_stop = exc  # type: ignore[attr-defined]
            raise

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size < 0:
            raise ArchiveError(f"negative size in the tar header at offset {self.offset}")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveError(f"sparse file at offset {self.offset}: sparse files are not supported")
        if self.type in _META_TYPES + _LONG_TYPES and self.size > _MAX_META_SIZE:
            raise ArchiveError(f"extended tar header at offset {self.offset} is too large ({self.size} bytes)")
        if self.type in _META_TYPES:
            return self._proc_pax(tar)
        return super()._proc_member(tar)

    def _proc_pax(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        data = tar.fileobj.read(_round_up(self.size))
        if len(data) < self.size:
            raise ArchiveError(f"truncated PAX header at offset {self.offset}")
        records = parse_pax_records(data[: self.size], self.offset)
        if self.type == tarfile.XGLTYPE:
            if "size" in records:
                raise _bad_pax(self.offset, "a global header cannot set the size")
            # tarfile applies its global records to every later member.
            tar.pax_headers.update(records)
            return self._next_header(tar)
        member = self._next_header(tar)
        member._apply_pax_info({**tar.pax_headers, **records}, tar.encoding, tar.errors)
        member.offset = self.offset
        if "size" in records and (member.isreg() or member.type not in tarfile.SUPPORTED_TYPES):
            # The real size is in the record: the next header starts after it.
            tar.offset = member.offset_data + _round_up(member.size)
        return member

    def _next_header(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        # tarfile would read a bad header here as the end of the archive.
        try:
            return self.fromtarfile(tar)
        except tarfile.HeaderError as exc:
            raise ArchiveError(f"bad tar header after the extended header at offset {self.offset}: {exc}") from None


class TarReader:
    """The members of a layer stream, then a check that the archive really ended.

    With a ``splitter``, every byte read is also given to it, and it is told
    where each member ends and where the content copied by ``copy_data`` is.
    """

    def __init__(self, source: BinaryIO, splitter: Splitter | None = None) -> None:
        self.stream = open_stream(source)
        self._splitter = splitter
        if splitter is not None:
            self.stream.observer = splitter.feed  # before tarfile reads the first header
        try:
            self._tar = tarfile.open(
                fileobj=self.stream,
                mode="r|",
                tarinfo=CheckedInfo,
                encoding="utf-8",
                errors="surrogateescape",
            )
        except tarfile.TarError as exc:
            raise ArchiveError(f"not a tar archive: {exc}") from None

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while True:
            try:
                member = self._tar.next()
            except tarfile.TarError as exc:
                raise ArchiveError(f"unreadable tar at offset {self._tar.offset}: {exc}") from None
            if member is None:
                return
            self._tar.members.clear()  # stream mode would keep every member
            yield member
            if self._splitter is not None:
                # The member was handled: the next one's content starts after its header.
                self._splitter.settle(self._tar.offset)

    def copy_data(self, member: tarfile.TarInfo, out: BinaryIO, parts: Parts = ()) -> None:
        """Copy a regular member's data to ``out``, the file ``parts`` of the layer, in chunks."""
        data = self._tar.extractfile(member)
        assert data is not None, member.type
        if self._splitter is not None:
            self._splitter.add_file(member.offset_data, member.size, parts)
        try:
            shutil.copyfileobj(data, out, _CHUNK)
        except tarfile.TarError as exc:
            raise ArchiveError(f"entry {member.name!r}: {exc} (truncated archive?)") from None

    def finish(self) -> str:
        """Read to EOF, check the end-of-archive marker, and return the diff_id."""
        if self._splitter is not None:
            self._splitter.settle(sys.maxsize)  # the rest is trailer and padding: raw
        self.stream.drain()
        end = self._tar.offset
        stop = getattr(self._tar, "overlayctl_stop", None)
        if isinstance(stop, tarfile.InvalidHeaderError):
            raise ArchiveError(f"invalid tar header at offset {end}: {stop}")
        if self.stream.position < end + BLOCKSIZE:
            raise ArchiveError(f"the archive is truncated: no end-of-archive block at offset {end}")
        if self.stream.data_end > end:
            raise ArchiveError(f"data after the end-of-archive block at offset {end}")
        return self.stream.diff_id()
