"""store.images.load: images from a ``docker save`` archive or an OCI image layout.

The archive's metadata is planned first (``distribution.plan``); then every
layer not yet in the store is unpacked into staging without the lock, its
blob checked against its digest and size as it is read and its tar against
the config's diff_id; then one transaction publishes the layers, the image
records (the original config bytes: the image ID is the config digest) and
the tags.  Any error leaves the store as it was.

Layers are unpacked in parallel (up to ``MAX_WORKERS`` threads, no more than
the CPUs) when the archive can be read at several places at once (a tar
file, a spooled stream and a directory can): each staging reads its own
blob stream.  On the first error the layers not started are cancelled,
those running stop at their next read, every staged layer is discarded, and
that first error is raised.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import ArchiveError, InvalidArgument, StoreError
from ..store import images as imgs
from ..store import layers as lyrs
from ..store.ids import chain_ids
from ..store.records import ImageRecord
from ._context import StoreContext
from ._progress import Progress, serialized

if TYPE_CHECKING:
    from ..distribution.model import ImagePlan, LayerPlan
    from ..distribution.reader import Archive
    from ._layers import Layers

#: Most layers unpacked at once (each a thread reading, hashing and writing files).
MAX_WORKERS = 4


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """One image a load stored (or found stored): its ID, its tags, and tags moved to it.

    ``moved`` maps each tag that pointed at another image to that image's ID.
    """

    id: str
    tags: tuple[str, ...] = ()
    moved: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tags": list(self.tags)}


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What ``images.load`` did: images, layers written and reused, bytes of file data written.

    A layer counts once per image that has it: written the first time it is
    stored, reused when it was in the store already (or written for an
    earlier image of the same archive).
    """

    images: tuple[LoadedImage, ...]
    layers_written: int
    layers_reused: int
    bytes_written: int

    def to_json(self) -> dict[str, Any]:
        return {
            "images": [i.to_json() for i in self.images],
            "layers_written": self.layers_written,
            "layers_reused": self.layers_reused,
            "bytes_written": self.bytes_written,
        }


def load_archive(
    ctx: StoreContext,
    layers: Layers,
    source: str | BinaryIO,
    *,
    tag: str | None = None,
    platform: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> LoadReport:
    """Load every image of an archive (see ``Images.load``).

    workers: at most this many layers unpacked at once (default: the CPUs, at most MAX_WORKERS).
    """
    from ..distribution.plan import plan_archive
    from ..distribution.platform import parse_platform
    from ..distribution.reader import open_archive
    from ..distribution.refs import normalize_ref

    extra = normalize_ref(tag) if tag else None
    wanted = parse_platform(platform) if platform else None
    ctx.ensure_root()
    with open_archive(source, ctx.layout.staging) as archive:
        plan = plan_archive(archive, wanted)
        if extra and len(plan.images) > 1:
            raise InvalidArgument(
                f"--tag needs an archive of one image; this one has {len(plan.images)}",
                hint="load without --tag, then use 'overlayctl image tag'",
            )
        return load_images(ctx, layers, archive, plan.images, extra=extra, progress=progress, workers=workers)


def load_images(
    ctx: StoreContext,
    layers: Layers,
    archive: Archive,
    images: tuple[ImagePlan, ...],
    *,
    extra: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    verb: str = "image load",
    origin: str | None = None,
) -> LoadReport:
    """Stage the layers of images not in the store yet (in parallel where the archive allows), then publish."""
    from ..plan.options import check_layer_count

    events = serialized(progress)
    for image in images:
        check_layer_count(len(image.layers))
    todo: dict[str, LayerPlan] = {}  # chain ID: the layer to unpack, base first
    reused = 0
    for image in images:
        for layer, chain in zip(image.layers, chain_ids(image.diff_ids)):
            if chain in todo:
                continue
            if os.path.isdir(ctx.layout.layer_dir(chain)):
                reused += 1
            else:
                todo[chain] = layer
    if progress is not None:
        events.start(len(todo) + reused, sum(_blob_size(archive, layer) for layer in todo.values()))
        for _ in range(reused):
            events.layer_done()
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_WORKERS)
    if not archive.concurrent_blobs:
        workers = 1
    staged: dict[str, lyrs.StagedLayer] = {}
    try:
        _stage_all(layers, archive, todo, staged, events, max(1, min(workers, len(todo))))
        report = _publish(ctx, images, staged, extra, verb, origin)
    finally:
        for layer_files in staged.values():
            layer_files.discard()
    events.finish()
    return report


def _key(layer: LayerPlan) -> str:
    """What progress calls a layer: its blob's digest (or its path in the archive)."""
    return layer.digest or layer.path


def _blob_of(layer: LayerPlan, origin: str | None) -> dict | None:
    """What a layer record keeps of the blob it came from (nothing when the archive did not say)."""
    if not (layer.digest and layer.media_type and layer.size is not None):
        return None
    blob = {"digest": layer.digest, "media_type": layer.media_type, "size": layer.size}
    return {**blob, "source": origin} if origin else blob


def _blob_size(archive: Archive, layer: LayerPlan) -> int:
    """The bytes of a layer's blob (0 when it cannot be found: unpacking it will say why)."""
    if layer.size is not None:
        return layer.size
    try:
        return archive.blob_size(layer.path, layer.where)
    except (ArchiveError, NotImplementedError):
        return 0


class _Cancelled(Exception):
    """Raised in a layer's reader when another layer failed: its staging stops."""


class _Counted:
    """A blob stream that reports the bytes it passes, and stops when the load is cancelled."""

    def __init__(self, raw: BinaryIO, events: Progress, cancel: threading.Event, layer: str) -> None:
        self._raw = raw
        self._events = events
        self._cancel = cancel
        self._layer = layer

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._cancel.is_set():
            raise _Cancelled
        data = self._raw.read(size)
        self._events.advance(len(data), self._layer)
        return data

    def close(self) -> None:
        self._raw.close()


def _stage_all(
    layers: Layers,
    archive: Archive,
    todo: dict[str, LayerPlan],
    staged: dict[str, lyrs.StagedLayer],
    events: Progress,
    workers: int,
) -> None:
    """Stage every layer of todo into staged (chain ID: layer); what was staged is left there on error too."""
    cancel = threading.Event()
    if workers == 1:
        for chain, layer in todo.items():
            staged[chain] = _stage(layers, archive, layer, events, cancel)
            events.layer_done(_key(layer))
        return
    from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait  # only here: not a light import

    with ThreadPoolExecutor(workers, thread_name_prefix="overlayctl-load") as pool:
        futures: dict[Future, str] = {
            pool.submit(_stage, layers, archive, layer, events, cancel): chain for chain, layer in todo.items()
        }
        first: BaseException | None = None
        try:
            pending = set(futures)
            while pending and first is None:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is None:
                        staged[futures[future]] = future.result()
                        events.layer_done(_key(todo[futures[future]]))
                    elif first is None:
                        first = future.exception()
        except BaseException as exc:  # noqa: BLE001 (KeyboardInterrupt while waiting: stop the others too)
            first = exc
        if first is None:
            return
        # Cancel what has not started, stop what runs at its next read, keep what finished (to discard it).
        cancel.set()
        for future in futures:
            future.cancel()
        wait(futures)
        for future, chain in futures.items():
            if chain not in staged and not future.cancelled() and future.exception() is None:
                staged[chain] = future.result()
        raise first


def _stage(
    layers: Layers, archive: Archive, layer: LayerPlan, events: Progress, cancel: threading.Event
) -> lyrs.StagedLayer:
    """Unpack one layer blob into staging, checking its digest, size and diff_id as it is read."""
    from ..archive.readahead import ReadAhead
    from ..distribution.decompress import open_layer
    from ..distribution.verify import VerifyingReader

    events.layer_start(_key(layer), layer.size)
    raw = _Counted(archive.open_blob(layer.path, layer.where), events, cancel, _key(layer))
    try:
        blob = VerifyingReader(raw, digest=layer.digest, size=layer.size, where=layer.where)  # type: ignore[arg-type]
        try:
            with ReadAhead(open_layer(blob, layer.compression)) as tar:  # type: ignore[arg-type]
                staged = layers.stage(tar)  # type: ignore[arg-type]
        except ArchiveError as exc:
            # A damaged blob is the cause to name, whatever the unpacking made of it.
            cause = blob.failed()
            if cause is exc:
                raise
            if cause is not None:
                raise cause from None
            raise type(exc)(f"{layer.where}: {exc.message}", hint=exc.hint) from None
        try:
            blob.finish()
            if staged.diff_id != layer.diff_id:
                raise ArchiveError(
                    f"{layer.where}: the layer is {staged.diff_id}, its config says diff_id {layer.diff_id}"
                )
        except BaseException:
            staged.discard()
            raise
        return staged
    finally:
        raw.close()


def _publish(
    ctx: StoreContext,
    images: tuple[ImagePlan, ...],
    staged: dict[str, lyrs.StagedLayer],
    extra: str | None,
    verb: str,
    origin: str | None,
) -> LoadReport:
    """The load's one transaction: layers bottom up, image records, then all the tags at once."""
    layout = ctx.layout
    written = reused = size = 0
    loaded: list[LoadedImage] = []
    with ctx.transaction(verb) as txn:
        new_here: set[str] = set()
        records = []
        for image in images:
            parent: str | None = None
            for layer, chain in zip(image.layers, chain_ids(image.diff_ids)):
                if chain in staged and chain not in new_here and not os.path.isdir(layout.layer_dir(chain)):
                    record, _ = lyrs.publish_layer(txn, staged[chain], parent=parent, blob=_blob_of(layer, origin))
                    new_here.add(chain)
                    written += 1
                    size += record.size
                elif os.path.isdir(layout.layer_dir(chain)):
                    reused += 1
                else:
                    raise StoreError(
                        f"layer {chain} was removed from the store while the archive was read",
                        hint="load the archive again",
                    )
                parent = chain
            record = ImageRecord.from_bytes(image.config)
            imgs.save_image(txn, record)
            records.append((record, list(image.tags) + ([extra] if extra else [])))
        tags = imgs.read_tags(layout)
        changes: dict[str, str] = {}
        for record, refs in records:
            refs = list(dict.fromkeys(refs))
            moved = {ref: tags[ref] for ref in refs if ref in tags and tags[ref] != record.id}
            changes.update({ref: record.id for ref in refs if tags.get(ref) != record.id})
            loaded.append(LoadedImage(record.id, tuple(refs), moved))
        if changes:
            txn.set_tags(tags, changes)
    return LoadReport(tuple(loaded), written, reused, size)
