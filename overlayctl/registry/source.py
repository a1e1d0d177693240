"""A repository of a registry read like an archive: manifests and configs whole, layer blobs streamed.

``load_images`` then does what it does for ``image load``: every blob
checked against its digest as it streams, layers unpacked in parallel,
those already stored (same chain ID) not fetched at all, one transaction.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from ..distribution import mediatypes as mt
from ..distribution.model import META_LIMIT
from ..distribution.source import Archive
from ..errors import ArchiveError, RegistryError
from .cache import BlobCache
from .client import RegistryClient, reason_of
from .reference import RemoteRef

#: Breaks of a blob's download in a row, each resumed with a Range request, before the pull gives up.
MAX_BREAKS = 5
#: What a pull accepts for a manifest, best first (registry 2.8 answers 404 for an OCI manifest it is not asked for).
MANIFEST_ACCEPT = ", ".join([mt.OCI_INDEX, mt.DOCKER_LIST, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST])


def digest_of(path: str) -> str:
    """``blobs/sha256/<hex>`` -> ``sha256:<hex>``."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        raise ArchiveError(f"not a blob path: {path}")
    return f"{parts[1]}:{parts[2]}"


class RegistrySource(Archive):
    """The blobs of one repository, fetched as they are asked for."""

    concurrent_blobs = True

    def __init__(self, client: RegistryClient, ref: RemoteRef, cache: BlobCache) -> None:
        self.client = client
        self.cache = cache
        self.resumed: dict[str, int] = {}  # digest: bytes a blob's download took from the cache
        self.ref = ref
        self.name = str(ref)
        self.scopes = (f"repository:{ref.repository}:pull",)
        self._manifests: dict[str, tuple[str, bytes]] = {}  # digest: (media type, body)
        self._listed: set[str] = set()  # digests an index names: manifests, fetched from /manifests/

    def fetch_manifest(self, reference: str) -> tuple[str, bytes, str]:
        """(media type, body, digest) of a manifest or index, by tag or digest."""
        from ..distribution.descriptor import sha256_of

        response = self.client.request(
            "GET",
            f"/v2/{self.ref.repository}/manifests/{reference}",
            scopes=self.scopes,
            headers={"Accept": MANIFEST_ACCEPT},
            what=f"manifest of {self.ref}",
        )
        if response.status != 200:
            self.client.raise_for(response, f"manifest {self.ref.repository}:{reference}")
        body = response.data
        if len(body) > META_LIMIT:
            raise ArchiveError(f"{self.client.host}: the manifest of {self.ref} is too large ({len(body)} bytes)")
        digest = sha256_of(body)
        if reference.startswith("sha256:") and digest != reference:
            raise ArchiveError(f"{self.client.host}: the manifest {reference} has digest {digest} (tampered with?)")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        self._manifests[digest] = (media_type, body)
        self._listed.update(_listed_digests(body))
        return media_type, body, digest

    def exists(self, path: str) -> bool:
        return True

    def check(self, path: str, what: str) -> None:
        digest_of(path)

    def read_meta(self, path: str, what: str) -> bytes:
        """A manifest an index names (from /manifests/), or a config (from /blobs/)."""
        digest = digest_of(path)
        if digest in self._manifests:
            return self._manifests[digest][1]
        if digest in self._listed:
            return self.fetch_manifest(digest)[1]
        response = self._blob(digest, what, stream=False)
        if len(response.data) > META_LIMIT:
            raise ArchiveError(f"{what}: {digest} is too large for metadata ({len(response.data)} bytes)")
        return response.data

    def _blob(self, digest: str, what: str, *, stream: bool, offset: int = 0):
        response = self.client.request(
            "GET",
            f"/v2/{self.ref.repository}/blobs/{digest}",
            scopes=self.scopes,
            headers={"Range": f"bytes={offset}-"} if offset else None,
            stream=stream,
            what=what,
        )
        if response.status not in ((200, 206) if offset else (200,)):
            if stream:
                response.drain_conn()
            self.client.raise_for(response, f"blob {digest} ({what})")
        return response

    def open_blob(self, path: str, what: str) -> BinaryIO:
        """The blob from the cache when a pull verified it before, else from the registry (resumed, if it can)."""
        digest = digest_of(path)
        if self.cache.has(digest):
            return open(self.cache.path(digest), "rb")
        partial = self.cache.hold(digest)
        offset = 0 if partial is None else os.fstat(partial.fileno()).st_size
        try:
            response = self._blob(digest, what, stream=True, offset=offset)
        except BaseException:
            if partial is not None:
                partial.close()
            raise
        start = offset if response.status == 206 else 0
        body = _Body(self, digest, what, response, start)
        if partial is None:  # another pull is downloading it into the cache: this one streams it uncached
            return body  # type: ignore[return-value]
        if start:
            self.resumed[digest] = start
        return self.cache.caching(body, digest, partial, offset=start)  # type: ignore[return-value]

    def blob_size(self, path: str, what: str) -> int:
        return 0

    def close(self) -> None:
        self.client.close()


class _Body:
    """A blob's bytes from the registry; when the connection breaks, asked for again from where it broke (Range).

    The registry is retried as any request is (about RETRY_SECONDS); one
    that cannot answer a Range request ends the pull with one line (the
    bytes received stay in the download cache for the next pull).
    """

    def __init__(self, source: RegistrySource, digest: str, what: str, response, offset: int) -> None:
        self._source = source
        self._digest = digest
        self._what = what
        self._response = response
        self._offset = offset
        self._breaks = 0  # breaks since the last byte received
        response.auto_close = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        import urllib3

        while True:
            try:
                data = self._response.read(size if size is not None and size >= 0 else None)
            except urllib3.exceptions.HTTPError as exc:
                self._resume(exc)
                continue
            if data:
                self._breaks = 0
            self._offset += len(data)
            return data

    def _resume(self, exc: Exception) -> None:
        host = self._source.client.host
        self._response.close()
        self._breaks += 1
        if self._breaks > MAX_BREAKS:
            raise RegistryError(
                f"{host}: the download of blob {self._digest} broke {self._breaks} times in a row: {reason_of(exc)}",
                hint="pull again: it goes on from the bytes received",
            )
        response = self._source._blob(self._digest, self._what, stream=True, offset=self._offset)
        if response.status != 206:
            response.drain_conn()
            raise RegistryError(
                f"{host}: the download of blob {self._digest} broke ({exc.__class__.__name__}) "
                "and the registry cannot resume it (it ignores Range)",
                hint="pull again",
            )
        response.auto_close = False
        self._response = response

    def close(self) -> None:
        self._response.close()


def _listed_digests(body: bytes) -> list[str]:
    """The digests of the manifests an index lists (none for a manifest)."""
    import json

    try:
        entries = json.loads(body).get("manifests") or []
        return [e["digest"] for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]
    except (ValueError, AttributeError, TypeError):
        return []
