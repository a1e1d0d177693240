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
from ..errors import ArchiveError
from .cache import BlobCache
from .client import RegistryClient
from .reference import RemoteRef

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
        response.auto_close = False
        if partial is None:  # another pull is downloading it into the cache: this one streams it uncached
            return response  # type: ignore[return-value]
        if response.status == 206:
            self.resumed[digest] = offset
        return self.cache.caching(response, digest, partial, offset=self.resumed.get(digest, 0))  # type: ignore[return-value]

    def blob_size(self, path: str, what: str) -> int:
        return 0

    def close(self) -> None:
        self.client.close()


def _listed_digests(body: bytes) -> list[str]:
    """The digests of the manifests an index lists (none for a manifest)."""
    import json

    try:
        entries = json.loads(body).get("manifests") or []
        return [e["digest"] for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]
    except (ValueError, AttributeError, TypeError):
        return []
