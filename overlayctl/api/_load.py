"""store.images.load: images from a ``docker save`` archive or an OCI image layout.

The archive's metadata is planned first (``distribution.plan``); then every
layer not yet in the store is unpacked into staging without the lock, its
blob checked against its digest and size as it is read and its tar against
the config's diff_id; then one transaction publishes the layers, the image
records (the original config bytes: the image ID is the config digest) and
the tags.  Any error leaves the store as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import ArchiveError, InvalidArgument, StoreError
from ..store import images as imgs
from ..store import layers as lyrs
from ..store.ids import chain_ids
from ..store.records import ImageRecord
from ._context import StoreContext

if TYPE_CHECKING:
    from ..distribution.model import ImagePlan, LayerPlan
    from ..distribution.reader import Archive
    from ._layers import Layers


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
) -> LoadReport:
    """Load every image of an archive (see ``Images.load``)."""
    from ..distribution.plan import plan_archive
    from ..distribution.platform import parse_platform
    from ..distribution.reader import open_archive
    from ..distribution.refs import normalize_ref
    from ..plan.options import check_layer_count

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
        for image in plan.images:
            check_layer_count(len(image.layers))
        staged: dict[str, lyrs.StagedLayer] = {}
        try:
            for image in plan.images:
                for layer, chain in zip(image.layers, chain_ids(image.diff_ids)):
                    if chain not in staged and not os.path.isdir(ctx.layout.layer_dir(chain)):
                        staged[chain] = _stage(layers, archive, layer)
            return _publish(ctx, plan.images, staged, extra)
        finally:
            for layer_files in staged.values():
                layer_files.discard()


def _stage(layers: Layers, archive: Archive, layer: LayerPlan) -> lyrs.StagedLayer:
    """Unpack one layer blob into staging, checking its digest, size and diff_id as it is read."""
    from ..distribution.decompress import open_layer
    from ..distribution.verify import VerifyingReader

    raw = archive.open_blob(layer.path, layer.where)
    try:
        blob = VerifyingReader(raw, digest=layer.digest, size=layer.size, where=layer.where)
        try:
            staged = layers.stage(open_layer(blob, layer.compression))
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
    ctx: StoreContext, images: tuple[ImagePlan, ...], staged: dict[str, lyrs.StagedLayer], extra: str | None
) -> LoadReport:
    """The load's one transaction: layers bottom up, image records, then all the tags at once."""
    layout = ctx.layout
    written = reused = size = 0
    loaded: list[LoadedImage] = []
    with ctx.transaction("image load") as txn:
        new_here: set[str] = set()
        records = []
        for image in images:
            parent: str | None = None
            for chain in chain_ids(image.diff_ids):
                if chain in staged and chain not in new_here and not os.path.isdir(layout.layer_dir(chain)):
                    record, _ = lyrs.publish_layer(txn, staged[chain], parent=parent)
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
