"""What every archive reader shares: the Archive interface and symlinks resolved inside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Self

from ..errors import ArchiveError, UnsafeArchive
from .paths import resolve


class Archive:
    """An archive to load from; a context manager that releases what it holds."""

    name: str = "archive"
    #: Whether open_blob may be called from several threads at once, each reader read in its own thread.
    concurrent_blobs: bool = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the archive's files (and its spool)."""

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def check(self, path: str, what: str) -> None:
        raise NotImplementedError

    def read_meta(self, path: str, what: str) -> bytes:
        raise NotImplementedError

    def open_blob(self, path: str, what: str) -> BinaryIO:
        """A reader of the file at path, from its first byte to its last."""
        raise NotImplementedError

    def blob_size(self, path: str, what: str) -> int:
        """The size of the file at path (the errors of open_blob)."""
        raise NotImplementedError


def resolve_inside(path: str, link_of: Callable[[str], str | None], what: str) -> str:
    """resolve() inside the archive; a symlink on a path under blobs/ is refused."""

    def checked(prefix: str) -> str | None:
        target = link_of(prefix)
        if target is not None and path.startswith("blobs/"):
            via = "" if prefix == path else f" through {prefix}"
            raise UnsafeArchive(f"{what}: the blob {path} is a symlink{via} (to {target!r})")
        return target

    return resolve(path, checked, what)[0]


def too_large(path: str, size: int, what: str) -> ArchiveError:
    return ArchiveError(f"{what}: {path} is too large for metadata ({size} bytes)")
