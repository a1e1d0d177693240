"""The download cache: blobs of pulls, kept so that an interrupted pull resumes.

``<root>/cache/blobs/sha256/<hex>`` is a blob verified in full;
``<hex>.partial`` the part of one received so far, which the next pull
continues with an HTTP ``Range`` request where the registry allows it.  A
blob streams into its layer and into the cache at once, so nothing is read
twice.  A pull drops the verified blobs of its image once it is published
(unless ``--keep-blobs``); ``system df`` counts the cache and ``system
prune`` empties it.  Nothing in it is garbage: ``check`` leaves it alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from typing import BinaryIO


class BlobCache:
    """Files of one cache directory, by digest."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def path(self, digest: str) -> str:
        algorithm, _, hexdigest = digest.partition(":")
        return os.path.join(self.directory, algorithm, hexdigest)

    def partial(self, digest: str) -> str:
        return self.path(digest) + ".partial"

    def has(self, digest: str) -> bool:
        return os.path.isfile(self.path(digest))

    def received(self, digest: str) -> int:
        """Bytes of the blob received by an earlier, interrupted pull."""
        try:
            return os.path.getsize(self.partial(digest))
        except OSError:
            return 0

    def caching(self, raw: BinaryIO, digest: str, *, offset: int) -> CachingReader:
        """A reader of the whole blob: the received part from the cache, then raw (which starts at offset)."""
        os.makedirs(os.path.dirname(self.path(digest)), mode=0o700, exist_ok=True)
        return CachingReader(self, raw, digest, offset)

    def drop(self, digest: str) -> None:
        for path in (self.path(digest), self.partial(digest)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def usage(self) -> tuple[int, int]:
        """(files, bytes) in the cache."""
        files = size = 0
        for directory, _, names in os.walk(self.directory):
            for name in names:
                with contextlib.suppress(OSError):
                    size += os.lstat(os.path.join(directory, name)).st_size
                    files += 1
        return files, size

    def clear(self) -> int:
        """Empty the cache; the bytes freed."""
        _, size = self.usage()
        shutil.rmtree(self.directory, ignore_errors=True)
        return size


class CachingReader:
    """The blob's bytes in order: the cached part first, then the network's, which are appended to the cache.

    At the end, a blob whose digest matches is moved to its verified place;
    one that does not match is dropped (the load names the mismatch).
    """

    def __init__(self, cache: BlobCache, raw: BinaryIO, digest: str, offset: int) -> None:
        self._cache = cache
        self._raw = raw
        self._digest = digest
        self._sha = hashlib.sha256()
        partial = cache.partial(digest)
        self._head = open(partial, "rb") if offset else None
        self._out = open(partial, "ab" if offset else "wb")
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head is not None:
            data = self._head.read(size)
            if data:
                self._sha.update(data)
                return data
            self._head.close()
            self._head = None
        data = self._raw.read(size)
        if data:
            self._out.write(data)
            self._sha.update(data)
        elif not self._done:
            self._finish(whole=True)
        return data

    def _finish(self, *, whole: bool) -> None:
        """Keep a blob that matches its digest; drop one read whole that does not; else keep the part."""
        self._done = True
        self._out.close()
        if f"sha256:{self._sha.hexdigest()}" == self._digest:
            with contextlib.suppress(FileNotFoundError):  # a prune emptied the cache meanwhile
                os.replace(self._cache.partial(self._digest), self._cache.path(self._digest))
        elif whole:
            self._cache.drop(self._digest)

    def close(self) -> None:
        """Its reader may stop at the blob's last byte without reading the end: the digest decides."""
        if self._head is not None:
            self._head.close()
        if not self._done:
            self._finish(whole=False)
        self._raw.close()
