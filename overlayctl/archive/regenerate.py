"""Writing a layer's original tar again, byte for byte, from its tar-split and files.

``write_original_tar`` replays a tar-split (format in ``tarsplit``): raw
records are written as they are, and each file record's content is streamed
from the file it names under the layer's ``diff/``. Files are opened one
component at a time with ``O_NOFOLLOW`` from an fd of ``diff/``, so a symlink
put there behind the store's back is never followed. What is written is
hashed as it goes, and must hash to the layer's diff_id.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from overlayctl.archive.generate import HashingWriter
from overlayctl.archive.tarsplit import End, FileRef, Raw, read_tar_split
from overlayctl.errors import ArchiveError

_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put in place of a file must not block the open.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class FilesChanged(ArchiveError):
    """The layer's files are no longer those its tar-split refers to."""


class _Files:
    """Opens files under diff/ without following symlinks; keeps the last directory open."""

    def __init__(self, diff: str) -> None:
        self._root = os.open(diff, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._dir: tuple[bytes, int] | None = None

    def close(self) -> None:
        if self._dir is not None:
            os.close(self._dir[1])
            self._dir = None
        os.close(self._root)

    def _dirfd(self, parent: bytes) -> int:
        if self._dir is not None and self._dir[0] == parent:
            return self._dir[1]
        fd = os.dup(self._root)
        try:
            for comp in parent.split(b"/") if parent else ():
                child = os.open(comp, _WALK, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        if self._dir is not None:
            os.close(self._dir[1])
        self._dir = (parent, fd)
        return fd

    def open(self, ref: FileRef) -> int:
        """An fd of the regular file ``ref.path``, checked to be ``ref.size`` bytes."""
        shown = os.fsdecode(ref.path)
        parent, _, base = ref.path.rpartition(b"/")
        try:
            fd = os.open(base, _READ, dir_fd=self._dirfd(parent))
        except OSError as exc:
            raise FilesChanged(f"{shown!r} cannot be opened: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != ref.size:
            os.close(fd)
            what = f"{st.st_size} bytes" if stat.S_ISREG(st.st_mode) else "not a regular file"
            raise FilesChanged(f"{shown!r} is {what}, it was {ref.size} bytes")
        return fd


def _copy(fd: int, ref: FileRef, out: HashingWriter, buf: bytearray) -> None:
    left = ref.size
    view = memoryview(buf)
    while left:
        n = os.readv(fd, [view[: min(left, len(view))]])
        if n == 0:
            raise FilesChanged(f"{os.fsdecode(ref.path)!r} shrank while it was read")
        out.write(view[:n])
        left -= n
    if os.fstat(fd).st_size != ref.size:
        raise FilesChanged(f"{os.fsdecode(ref.path)!r} changed size while it was read")


def check_tar_split(diff: str, tar_split: str, diff_id: str) -> None:
    """Read the whole tar-split and check every file it refers to, writing nothing.

    Raises TarSplitError if the file is damaged or not this layer's, and
    FilesChanged if a file is missing or not of its recorded size.
    """
    files = _Files(diff)
    try:
        with open(tar_split, "rb") as source:
            for record in read_tar_split(source):
                if isinstance(record, FileRef):
                    os.close(files.open(record))
                elif isinstance(record, End) and record.diff_id != diff_id:
                    raise ArchiveError(f"the tar-split describes {record.diff_id}, not this layer ({diff_id})")
    finally:
        files.close()


def write_original_tar(diff: str, tar_split: str, out: BinaryIO, diff_id: str) -> str:
    """Write to ``out`` the tar that ``diff`` was extracted from; return its diff_id.

    Everything is checked before the first byte is written (``check_tar_split``:
    a damaged tar-split, a missing file, a file of another size). A file whose
    content changed but not its size is only found by the sha256 of all that
    was written, compared to ``diff_id`` at the end: then FilesChanged is
    raised, and the bytes already written to ``out`` are useless (they are not
    the layer's tar); so are they after any other error raised while writing.
    ``out`` only needs ``write`` (a pipe is fine).
    """
    check_tar_split(diff, tar_split, diff_id)
    sink = HashingWriter(out)
    files = _Files(diff)
    buf = bytearray(_CHUNK)
    try:
        with open(tar_split, "rb") as source:
            for record in read_tar_split(source):
                if isinstance(record, Raw):
                    sink.write(record.data)
                elif isinstance(record, FileRef):
                    fd = files.open(record)
                    try:
                        _copy(fd, record, sink, buf)
                    finally:
                        os.close(fd)
    finally:
        files.close()
    if sink.diff_id() != diff_id:
        raise FilesChanged(f"the files hash to {sink.diff_id()} as a tar, not to the diff_id {diff_id}")
    return diff_id
