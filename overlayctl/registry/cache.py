"""The download cache: blobs of pulls, kept so that an interrupted pull resumes.

``<root>/cache/blobs/sha256/<hex>`` is a blob verified in full;
``<hex>.partial`` the part of one received so far, which the next pull
continues with an HTTP ``Range`` request where the registry allows it.  A
blob streams into its layer and into the cache at once, so nothing is read
twice.  One pull at a time writes a partial blob (it holds a lock on it);
another pull of the same blob meanwhile streams it without caching.

A pull drops the verified blobs of its image once it is published, unless
``--keep-blobs``: then the image's manifest stays too, as
``manifests/sha256/<image hex>`` (by the image ID, its config's digest), so
that ``push`` and ``image save --format oci-archive`` give the manifest
digest of the registry.  ``system df`` counts the cache and ``system
prune`` empties it.  Nothing in it is garbage: ``check`` leaves it alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from typing import TYPE_CHECKING, BinaryIO

from ..store.atomic import write_atomic

if TYPE_CHECKING:
    from ..distribution.model import KeptManifest


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

    def hold(self, digest: str) -> BinaryIO | None:
        """The blob's partial file, locked for this pull (its size: the bytes an earlier pull received).

        None while another pull holds it: that one is downloading the blob.
        """
        partial = self.partial(digest)
        os.makedirs(os.path.dirname(partial), mode=0o700, exist_ok=True)
        while True:
            f = open(partial, "ab")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                return None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(partial).st_ino == os.fstat(f.fileno()).st_ino:
                    return f
            f.close()  # the pull that held it finished (renamed or dropped it) meanwhile: take the new one

    def caching(self, raw: BinaryIO, digest: str, partial: BinaryIO, *, offset: int) -> CachingReader:
        """A reader of the whole blob: offset bytes received before from the held partial file, then raw."""
        return CachingReader(self, raw, digest, partial, offset)

    def drop(self, digest: str) -> None:
        for path in (self.path(digest), self.partial(digest)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _manifest_path(self, image_id: str) -> str:
        algorithm, _, hexdigest = image_id.partition(":")
        return os.path.join(self.directory, "manifests", algorithm, hexdigest)

    def keep_manifest(self, image_id: str, body: bytes) -> None:
        """Keep the manifest an image was pulled by (with its blobs, kept by the pull)."""
        path = self._manifest_path(image_id)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomic(path, body)

    def kept_manifest(self, image_id: str) -> bytes | None:
        """The manifest kept for an image, if any (its blobs may be gone: the reader checks)."""
        try:
            with open(self._manifest_path(image_id), "rb") as f:
                return f.read()
        except OSError:
            return None

    def kept_image(self, image_id: str) -> KeptManifest | None:
        """The manifest kept for an image, when every layer blob it names is kept too."""
        from ..distribution.model import kept_manifest

        body = self.kept_manifest(image_id)
        return None if body is None else kept_manifest(body, image_id, self._blob_file)

    def _blob_file(self, digest: str, size: int) -> str | None:
        path = self.path(digest)
        try:
            return path if os.path.getsize(path) == size else None
        except OSError:
            return None

    def drop_manifest(self, image_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._manifest_path(image_id))

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

    def __init__(self, cache: BlobCache, raw: BinaryIO, digest: str, partial: BinaryIO, offset: int) -> None:
        self._cache = cache
        self._raw = raw
        self._digest = digest
        self._sha = hashlib.sha256()
        self._out = partial  # opened for appending, and locked
        if not offset:
            self._out.truncate(0)
        self._head = open(cache.partial(digest), "rb") if offset else None
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
        """Keep a blob that matches its digest; drop one read whole that does not; else keep the part.

        The lock is released last, once the partial file is renamed or dropped.
        """
        self._done = True
        try:
            self._out.flush()
            if f"sha256:{self._sha.hexdigest()}" == self._digest:
                with contextlib.suppress(FileNotFoundError):  # a prune emptied the cache meanwhile
                    os.replace(self._cache.partial(self._digest), self._cache.path(self._digest))
            elif whole:
                self._cache.drop(self._digest)
        finally:
            self._out.close()

    def close(self) -> None:
        """Its reader may stop at the blob's last byte without reading the end: the digest decides."""
        if self._head is not None:
            self._head.close()
        if not self._done:
            self._finish(whole=False)
        self._raw.close()
