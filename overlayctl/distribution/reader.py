"""Opening an archive to load from: a directory, a seekable tar, or a tar stream.

Each is an ``Archive`` (``source``): an ``ArchiveSource`` for parsing
(``model``) plus ``open_blob``.  Only regular files are read.  Symlinks are
followed inside the archive only (Docker's classic ``docker save`` links a
repeated ``layer.tar`` to its first copy), and never under ``blobs/``: a
blob that is a symlink is refused.

- a tar file: ``tarsource.TarFileArchive``, blobs read at their offsets;
- a pipe, or a gzip-compressed tar: ``tarsource.SpooledArchive``, blobs
  spooled to the store's staging directory;
- a directory (an OCI image layout, or an extracted ``docker save``):
  ``DirArchive``, opened component by component without following symlinks.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from typing import BinaryIO

from ..errors import ArchiveError, NotFound, UnsafeArchive
from .mediatypes import GZIP_MAGIC, ZSTD_MAGIC
from .model import META_LIMIT
from .source import Archive, resolve_inside, too_large
from .tarsource import SpooledArchive, TarFileArchive

__all__ = ["Archive", "DirArchive", "SpooledArchive", "TarFileArchive", "open_archive"]

_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DirArchive(Archive):
    """A directory: every component opened with O_NOFOLLOW from the root's fd."""

    concurrent_blobs = True  # each blob is its own open file

    def __init__(self, root: str) -> None:
        self.name = root
        self._root = root

    def _link_of(self, path: str) -> str | None:
        try:
            if stat.S_ISLNK(os.lstat(f"{self._root}/{path}").st_mode):
                return os.readlink(f"{self._root}/{path}")
        except (FileNotFoundError, NotADirectoryError):
            pass
        return None

    def exists(self, path: str) -> bool:
        return os.path.lexists(f"{self._root}/{path}")

    def _open(self, path: str, what: str) -> int:
        resolved = resolve_inside(path, self._link_of, what)
        *dirs, last = resolved.split("/")
        fd = os.open(self._root, _WALK)
        try:
            for part in dirs:
                fd, parent = os.open(part, _WALK, dir_fd=fd), fd
                os.close(parent)
            file_fd = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        except FileNotFoundError:
            raise ArchiveError(f"{what}: {path} is not in the archive") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeArchive(f"{what}: {path} is reached through a symlink") from None
            raise ArchiveError(f"{what}: cannot open {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            os.close(file_fd)
            raise ArchiveError(f"{what}: {path} is not a regular file")
        return file_fd

    def check(self, path: str, what: str) -> None:
        os.close(self._open(path, what))

    def read_meta(self, path: str, what: str) -> bytes:
        with os.fdopen(self._open(path, what), "rb") as f:
            data = f.read(META_LIMIT + 1)
        if len(data) > META_LIMIT:
            raise too_large(path, len(data), what)
        return data

    def open_blob(self, path: str, what: str) -> BinaryIO:
        return os.fdopen(self._open(path, what), "rb")

    def blob_size(self, path: str, what: str) -> int:
        fd = self._open(path, what)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)


def _sniff_file(file: BinaryIO) -> bytes:
    head = file.read(4)
    file.seek(0)
    return head


def open_archive(source: str | BinaryIO, spool_root: str) -> Archive:
    """The archive at a path (directory or tar file) or in a binary stream.

    A stream that is a regular file at offset 0 (``< image.tar``) is read
    by offsets like a path; any other stream (a pipe), and a gzip-compressed
    tar, is spooled.
    """
    if isinstance(source, str):
        if os.path.isdir(source):
            return DirArchive(source)
        try:
            file = open(source, "rb")  # noqa: SIM115 (the archive owns it)
        except FileNotFoundError:
            raise NotFound(f"no such file or directory: {source}") from None
        except OSError as exc:
            raise ArchiveError(f"cannot read {source}: {exc.strerror}") from None
        return _open_file(file, source, spool_root, owned=True)
    name = getattr(source, "name", None)
    name = name if isinstance(name, str) else "the input stream"
    if _regular_at_start(source):
        return _open_file(source, name, spool_root, owned=False)
    return SpooledArchive(source, name, spool_root)


def _open_file(file: BinaryIO, name: str, spool_root: str, *, owned: bool) -> Archive:
    head = _sniff_file(file)
    if head.startswith(GZIP_MAGIC):
        try:
            return SpooledArchive(file, name, spool_root)
        finally:
            if owned:
                file.close()
    if head.startswith(ZSTD_MAGIC):
        if owned:
            file.close()
        raise ArchiveError(f"{name}: a zstd-compressed archive is not supported", hint="decompress it first")
    return TarFileArchive(file, name, owned=owned)


def _regular_at_start(stream: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode) and stream.seekable() and stream.tell() == 0
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
