"""``registries.push``: an image of the store into a registry repository.

A layer that came from a blob (a pull, a load) reuses it: nothing is sent
when the registry has it (``HEAD``), it is cross-mounted from its source
repository on the same registry, or a kept blob (``pull --keep-blobs``) is
uploaded as it came.  Otherwise the layer's byte-exact tar (as
``images.save`` writes it) is compressed (gzip, or zstd on request) into
staging while hashed, and uploaded.  Then the config, then the manifest:
the one the image was pulled by when it was kept with its blobs, else in
the form ``docker push`` writes (OCI when a layer's type is OCI's).
Nothing in the store changes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from ..distribution import mediatypes as mt
from ..errors import InvalidArgument
from ..store import images as imgs
from ..store import layers as lyrs
from ._context import StoreContext
from ._progress import Progress, serialized
from ._pull import DEFAULT_JOBS

if TYPE_CHECKING:
    from ..registry.cache import BlobCache
    from ..registry.client import RegistryClient
    from ..store.records import LayerRecord
    from ._layers import Layers

COMPRESSIONS = ("gzip", "zstd")
#: zlib's level 3: about 3 times as fast as level 6 here, for blobs about 7 % larger (9, gzip's own default, is 10 times as slow).
GZIP_LEVEL = 3
_LAYER_TYPES = {"gzip": mt.DOCKER_LAYER_GZIP, "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


@dataclass(frozen=True, slots=True)
class PushedBlob:
    """One blob of a pushed image: its digest, whether it was uploaded or already there, its size."""

    digest: str
    status: str  # "uploaded", "exists" or "mounted"
    bytes: int
    media_type: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "status": self.status, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class PushReport:
    """What ``images.push`` did: where to, the manifest's digest, the layer blobs."""

    reference: str
    manifest: str
    layers: tuple[PushedBlob, ...]
    config: PushedBlob

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "manifest": self.manifest,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }


class _Hashing:
    """A file writer that hashes and counts what passes, and tells progress of it; it stops when cancelled."""

    def __init__(
        self,
        out: BinaryIO,
        progress: Progress | None = None,
        layer: str | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0
        self.progress = progress
        self.layer = layer
        self.cancel = cancel

    def write(self, data: bytes) -> int:
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled
        self.sha.update(data)
        self.size += len(data)
        if self.progress is not None:
            self.progress.advance(len(data), self.layer)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def compressed_blob(
    layers: Layers,
    layer_id: str,
    path: str,
    compression: str,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[str, int]:
    """Write the layer's tar, compressed, to path; (digest, size) of what was written.

    progress hears of the tar's bytes as they go into the compressor; cancel stops the writing.
    """
    with open(path, "wb") as f:
        hashing = _Hashing(f)
        if compression == "zstd":
            import zstandard

            with zstandard.ZstdCompressor().stream_writer(hashing, closefd=False) as z:
                layers.export(layer_id, _Hashing(z, progress, layer_id, cancel))  # type: ignore[arg-type]
        else:
            import gzip

            with gzip.GzipFile(fileobj=hashing, mode="wb", mtime=0, compresslevel=GZIP_LEVEL) as z:  # type: ignore[arg-type]
                layers.export(layer_id, _Hashing(z, progress, layer_id, cancel))  # type: ignore[arg-type]
    return f"sha256:{hashing.sha.hexdigest()}", hashing.size


def upload_blob(client: RegistryClient, repository: str, digest: str, size: int, body: Any, scopes) -> str:
    """Put a blob unless the registry has it: "exists" or "uploaded"."""
    if _has_blob(client, repository, digest, scopes):
        return "exists"
    _send_blob(client, repository, digest, size, body, scopes)
    return "uploaded"


def _has_blob(client: RegistryClient, repository: str, digest: str, scopes) -> bool:
    head = client.request("HEAD", f"/v2/{repository}/blobs/{digest}", scopes=scopes, what=f"blob {digest}")
    return head.status == 200


def _send_blob(client: RegistryClient, repository: str, digest: str, size: int, body: Any, scopes) -> None:
    """A monolithic upload: POST opens the session (registry 2.8 has no single-request upload), PUT sends the bytes."""
    started = client.request("POST", f"/v2/{repository}/blobs/uploads/", scopes=scopes, what="starting an upload")
    if started.status != 202:
        client.raise_for(started, f"an upload to {repository}")
    location = started.headers.get("Location", "")
    if not location.startswith(("http://", "https://")):
        location = client.base + location
    location += ("&" if "?" in location else "?") + f"digest={digest}"
    done = client.request(
        "PUT",
        location,
        scopes=scopes,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        body=body,
        what=f"blob {digest}",
    )
    if done.status != 201:
        client.raise_for(done, f"the upload of blob {digest}")


def push_image(
    ctx: StoreContext,
    layers: Layers,
    source: str,
    destination: str | None = None,
    *,
    compression: str = "gzip",
    insecure: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> PushReport:
    """Push the image source names to destination (default: source, which must then name a registry).

    Layers are pushed ``jobs`` at a time (default 3).  progress hears of
    each layer, and of the bytes of the layers compressed and uploaded.
    """
    from ..registry.cache import BlobCache
    from ..registry.client import RegistryClient
    from ..registry.credentials import CredentialStore
    from ..registry.reference import parse_remote
    from ..store.atomic import discard, new_staging

    if compression not in COMPRESSIONS:
        raise InvalidArgument(f"invalid --compress {compression!r}", hint="use gzip or zstd")
    image_id = imgs.resolve_image(ctx.layout, source)
    record = imgs.load_image(ctx.layout, image_id)
    target = parse_remote(destination or source)
    if target.digest:
        raise InvalidArgument(f"cannot push to a digest: {target}", hint="give a tag: NAME:TAG")
    jobs = max(1, jobs or DEFAULT_JOBS)
    client = RegistryClient(
        target.api_host, insecure=insecure, credentials=CredentialStore().get(target.registry), pool_size=jobs
    )
    ctx.ensure_root()
    staging = new_staging(ctx.layout.staging)
    try:
        records = [lyrs.load_layer(ctx.layout, layer_id) for layer_id in record.layers]
        cache = BlobCache(ctx.layout.blob_cache)
        kept = cache.kept_image(image_id)
        blobs = [b._asdict() for b in kept.blobs] if kept else [layer.blob for layer in records]
        events = serialized(progress)
        events.start(len(records), sum(r.size for r in records))
        pusher = _LayerPusher(client, target, layers, cache, compression, staging, events)
        pushed = _each_in_parallel(pusher.push, list(enumerate(zip(records, blobs, strict=True))), jobs, pusher.cancel)
        scopes = pusher.scopes
        config_digest = f"sha256:{hashlib.sha256(record.raw).hexdigest()}"
        config_status = upload_blob(client, target.repository, config_digest, len(record.raw), record.raw, scopes)
        if kept and [b.digest for b in pushed] == [b.digest for b in kept.blobs]:
            manifest, media_type = kept.body, kept.media_type
        else:
            manifest, media_type = _manifest(record.raw, config_digest, pushed)
        manifest_digest = _put_manifest(client, target.repository, target.tag or "latest", manifest, media_type, scopes)
        events.finish()
    finally:
        discard(staging)
        client.close()
    return PushReport(
        str(target), manifest_digest, tuple(pushed), PushedBlob(config_digest, config_status, len(record.raw))
    )


class _Cancelled(Exception):
    """Raised in a layer's upload when another layer's failed."""


class _LayerPusher:
    """Pushes one layer of an image: its blob reused (exists, mounted, kept), or compressed into staging and sent."""

    def __init__(
        self,
        client: RegistryClient,
        target,
        layers: Layers,
        cache: BlobCache,
        compression: str,
        staging: str,
        events: Progress,
    ) -> None:
        self.client, self.target, self.layers, self.cache = client, target, layers, cache
        self.compression, self.staging, self.events = compression, staging, events
        self.scopes = (f"repository:{target.repository}:pull,push",)
        self.cancel = threading.Event()

    def push(self, item: tuple[int, tuple[LayerRecord, dict | None]]) -> PushedBlob:
        i, (layer, blob) = item
        if self.cancel.is_set():
            raise _Cancelled
        self.events.layer_start(layer.id, layer.size)
        pushed = _reuse(self.client, self.target, blob, self.compression, self.scopes, self.cache)
        if pushed is not None:
            self.events.advance(layer.size, layer.id)
        else:
            path = os.path.join(self.staging, f"layer-{i}")
            digest, size = compressed_blob(self.layers, layer.id, path, self.compression, self.events, self.cancel)
            with open(path, "rb") as body:
                status = upload_blob(self.client, self.target.repository, digest, size, body, self.scopes)
            os.unlink(path)
            pushed = PushedBlob(digest, status, size, _LAYER_TYPES[self.compression])
        self.events.layer_done(layer.id)
        return pushed


def _each_in_parallel(fn: Callable[[Any], PushedBlob], items: list, jobs: int, cancel: threading.Event) -> list:
    """fn(item) for each item, jobs at a time; the results in order.  The first error cancels the others."""
    if jobs == 1 or len(items) < 2:
        return [fn(item) for item in items]
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait  # only here: not a light import

    with ThreadPoolExecutor(jobs, thread_name_prefix="overlayctl-push") as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f.exception() for f in futures if f in done and f.exception() is not None]
            if failed:
                raise next((e for e in failed if not isinstance(e, _Cancelled)), failed[0])
            return [f.result() for f in futures]
        except BaseException:
            cancel.set()
            for future in futures:
                future.cancel()
            raise


def _reuse(
    client: RegistryClient, target, blob: dict | None, compression: str, scopes, cache: BlobCache
) -> PushedBlob | None:
    """The blob a layer came from: when the registry has it, can mount it, or it was kept (``pull --keep-blobs``)."""
    if not blob or mt.LAYER_TYPES.get(blob.get("media_type", "")) != compression:
        return None
    digest, size, media_type = blob["digest"], int(blob["size"]), blob["media_type"]
    if _has_blob(client, target.repository, digest, scopes):
        return PushedBlob(digest, "exists", size, media_type)
    if cache.has(digest):
        with open(cache.path(digest), "rb") as body:
            _send_blob(client, target.repository, digest, size, body, scopes)
        return PushedBlob(digest, "uploaded", size, media_type)
    registry, _, repository = str(blob.get("source") or "").partition("/")
    if registry != target.registry or not repository or repository == target.repository:
        return None
    path = f"/v2/{target.repository}/blobs/uploads/?mount={digest}&from={repository}"
    mounted = client.request("POST", path, scopes=(*scopes, f"repository:{repository}:pull"), what=f"blob {digest}")
    if mounted.status == 201:
        return PushedBlob(digest, "mounted", size, media_type)
    if mounted.status == 202 and mounted.headers.get("Location"):  # an upload began instead: end it
        location = mounted.headers["Location"]
        client.request("DELETE", location if "://" in location else client.base + location, scopes=scopes)
    return None


def _manifest(config: bytes, config_digest: str, layers: list[PushedBlob]) -> tuple[bytes, str]:
    """The manifest in the form ``docker push`` writes: Docker v2 schema 2, or OCI when a layer's type is OCI's."""
    import json

    docker = not any(b.media_type.startswith("application/vnd.oci.") for b in layers)
    media_type = mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG,
            "size": len(config),
            "digest": config_digest,
        },
        "layers": [{"mediaType": b.media_type, "size": b.bytes, "digest": b.digest} for b in layers],
    }
    return json.dumps(manifest, indent=3).encode(), media_type


def _put_manifest(client: RegistryClient, repository: str, tag: str, body: bytes, media_type: str, scopes) -> str:
    response = client.request(
        "PUT",
        f"/v2/{repository}/manifests/{tag}",
        scopes=scopes,
        headers={"Content-Type": media_type},
        body=body,
        what=f"manifest {repository}:{tag}",
    )
    if response.status != 201:
        client.raise_for(response, f"the manifest {repository}:{tag}")
    return f"sha256:{hashlib.sha256(body).hexdigest()}"
