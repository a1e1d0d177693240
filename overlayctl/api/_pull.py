"""``images.pull``: an image from a registry into the store, the way ``image load`` loads an archive."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..store.ids import chain_ids
from ._context import StoreContext
from ._progress import Progress

if TYPE_CHECKING:
    from ..distribution.model import LayerPlan
    from ..registry.source import RegistrySource
    from ._layers import Layers

#: Blobs fetched at once by default (as containerd and Docker).
DEFAULT_JOBS = 3


@dataclass(frozen=True, slots=True)
class PulledLayer:
    """One layer of a pulled image: its blob, its diff_id, and whether it had to be fetched."""

    digest: str
    diff_id: str
    status: str  # "fetched" or "present"
    bytes: int
    resumed: int = 0  # bytes of it an earlier, interrupted pull had received (a Range request fetched the rest)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "diff_id": self.diff_id,
            "status": self.status,
            "bytes": self.bytes,
            "resumed": self.resumed,
        }


@dataclass(frozen=True, slots=True)
class PullReport:
    """What ``images.pull`` did: the image (its ID is its config digest, as Docker's), its tags, its layers."""

    id: str
    tags: tuple[str, ...]
    manifest: str
    layers: tuple[PulledLayer, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "image": {"id": self.id, "tags": list(self.tags)},
            "manifest": self.manifest,
            "layers": [layer.to_json() for layer in self.layers],
        }


def pull_image(
    ctx: StoreContext,
    layers: Layers,
    reference: str,
    *,
    platform: str | None = None,
    insecure: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    keep_blobs: bool = False,
) -> PullReport:
    """Pull reference (Docker's form) from its registry; see ``Registries.pull``."""
    from ..distribution.descriptor import parse_descriptor
    from ..distribution.oci_layout import resolve_image
    from ..distribution.platform import host_platform, parse_platform
    from ..registry.cache import BlobCache
    from ..registry.client import RegistryClient
    from ..registry.credentials import CredentialStore
    from ..registry.reference import parse_remote
    from ..registry.source import RegistrySource
    from ._load import load_images

    ref = parse_remote(reference)
    wanted = parse_platform(platform) if platform else host_platform()
    jobs = max(1, jobs or DEFAULT_JOBS)
    credentials = CredentialStore().get(ref.registry)
    client = RegistryClient(ref.api_host, insecure=insecure, credentials=credentials, pool_size=jobs)
    ctx.ensure_root()
    cache = BlobCache(ctx.layout.blob_cache)
    with RegistrySource(client, ref, cache) as source:
        media_type, body, digest = source.fetch_manifest(ref.reference)
        if not media_type:
            media_type = _declared_type(body)
        where = f"{ref} ({client.host})"
        top = parse_descriptor({"mediaType": media_type, "digest": digest, "size": len(body)}, where)
        tags = [ref.tagged()] if ref.tag and not ref.digest else []
        image = resolve_image(source, top, where, wanted, tags)
        chains = chain_ids(image.diff_ids)
        present = {chain for chain in chains if os.path.isdir(ctx.layout.layer_dir(chain))}
        if keep_blobs:
            _fetch_into_cache(source, [layer for layer, chain in zip(image.layers, chains) if chain in present])
        report = load_images(
            ctx, layers, source, (image,), progress=progress, workers=jobs, verb="image pull", origin=ref.origin
        )
        resumed = dict(source.resumed)
    if keep_blobs:
        cache.keep_manifest(image.id, image.manifest)
    else:
        cache.drop_manifest(image.id)
        for layer in image.layers:
            cache.drop(layer.digest or "")
    pulled = tuple(
        PulledLayer(
            layer.digest or "",
            layer.diff_id,
            "present" if chain in present else "fetched",
            layer.size or 0,
            resumed.get(layer.digest or "", 0),
        )
        for layer, chain in zip(image.layers, chains)
    )
    return PullReport(report.images[0].id, tuple(tags), digest, pulled)


def _fetch_into_cache(source: RegistrySource, layers: list[LayerPlan]) -> None:
    """The blobs of layers the store has (a pull does not fetch those), fetched into the cache to be kept."""
    from ..errors import ArchiveError

    for layer in layers:
        digest = layer.digest or ""
        if source.cache.has(digest):
            continue
        with contextlib.closing(source.open_blob(layer.path, layer.where)) as blob:
            while blob.read(1 << 20):
                pass
        if not source.cache.has(digest):
            raise ArchiveError(
                f"{layer.where} could not be kept: it does not match its digest, or another pull is fetching it",
                hint="pull again",
            )


def _declared_type(body: bytes) -> str:
    import json

    try:
        value = json.loads(body).get("mediaType", "")
    except (ValueError, AttributeError):
        value = ""
    return value if isinstance(value, str) else ""
