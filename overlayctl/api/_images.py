"""store.images: import, create, list, tag, history and remove images."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import InUse, InvalidArgument
from ..plan.options import check_layer_count
from ..store import containers as ctrs
from ..store import images as imgs
from ..store import layers as lyrs
from ..store.ids import short_id
from ..store.layout import StoreLayout
from ..store.records import ImageRecord, LayerRecord, parse_ref
from ..store.transaction import ROLLFORWARD, Transaction
from ._context import StoreContext
from ._layers import Layers
from ._load import LoadReport, load_archive
from ._progress import Progress
from ._save import SaveReport, save_archive


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One layer of an image with the history entry that made it."""

    layer: LayerRecord
    created: str
    created_by: str
    comment: str

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer.id,
            "size": self.layer.size,
            "created": self.created,
            "created_by": self.created_by,
            "comment": self.comment,
        }


@dataclass(frozen=True, slots=True)
class ImageRemoval:
    """What ``images.remove`` did: tags dropped, image records and layers deleted."""

    untagged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, list[str]]:
        return {"untagged": self.untagged, "deleted": self.deleted, "layers": self.layers}


class Images:
    """Images (ordered stacks of layers with a runtime config) and their tags."""

    def __init__(self, ctx: StoreContext, layers: Layers) -> None:
        self._ctx = ctx
        self._layout = ctx.layout
        self._layers = layers

    def list(self) -> list[ImageRecord]:
        return imgs.list_images(self._layout)

    def get(self, ref: str) -> ImageRecord:
        """An image by tag or unique ID prefix."""
        return imgs.load_image(self._layout, imgs.resolve_image(self._layout, ref))

    def tags(self, image_id: str | None = None) -> dict[str, str] | list[str]:
        """All tags ({ref: image ID}), or the refs of one image."""
        tags = imgs.read_tags(self._layout)
        return tags if image_id is None else imgs.tags_of(tags, image_id)

    def size(self, image: ImageRecord) -> int:
        """Bytes of all the image's layers."""
        return sum(lyrs.load_layer(self._layout, layer).size for layer in image.layers)

    def sizes(self) -> dict[str, int]:
        """{image ID: bytes of all its layers}, from one read of each record.

        A damaged layer record counts as 0 bytes (with a warning): sizes are
        for display, and the other images' sizes stay right.
        """
        layer_size = {r.id: r.size for r in lyrs.list_layers(self._layout)}
        return {i.id: sum(layer_size.get(x, 0) for x in i.layers) for i in self.list()}

    def import_rootfs(
        self,
        source: str | BinaryIO,
        *,
        tag: str | None = None,
        runtime: dict[str, Any] | None = None,
        comment: str = "",
        changes: dict[str, Any] | None = None,
    ) -> ImageRecord:
        """A one-layer image from a root filesystem (directory or tar).

        ``changes`` (cmd, entrypoint, env, workdir) set its runtime config,
        as ``docker import --change`` does.  The layer, the image and its tag
        are published in one transaction.
        """
        from ..runtime.spec import runtime_changes

        ref = parse_ref(tag) if tag else None
        runtime = runtime_changes(**(changes or {}), base=runtime)
        name = source if isinstance(source, str) else "stream"
        staged = self._layers.stage(source)
        try:
            with self._ctx.transaction("image import") as txn:
                layer, _ = lyrs.publish_layer(txn, staged, parent=None, comment=comment)
                entry = {"created": layer.created, "created_by": f"overlayctl image import {name}", "comment": comment}
                record = ImageRecord.build([layer.diff_id], runtime=runtime, history=[entry])
                return self.publish(txn, record, tag=ref)
        finally:
            staged.discard()

    def create(
        self,
        top_layer: str,
        *,
        tag: str | None = None,
        runtime: dict[str, Any] | None = None,
        comment: str = "",
    ) -> ImageRecord:
        """An image whose stack is a layer and its parents."""
        ref = parse_ref(tag) if tag else None
        with self._ctx.transaction("image create") as txn:
            chain = []
            layer_id: str | None = lyrs.resolve_layer(self._layout, top_layer)
            while layer_id:
                chain.append(lyrs.load_layer(self._layout, layer_id))
                layer_id = chain[-1].parent
            chain.reverse()
            check_layer_count(len(chain))
            history = [
                {"created": r.created, "created_by": "overlayctl layer create", "comment": r.comment or comment}
                for r in chain
            ]
            record = ImageRecord.build([r.diff_id for r in chain], runtime=runtime, history=history)
            return self.publish(txn, record, tag=ref)

    def load(
        self,
        source: str | BinaryIO,
        *,
        tag: str | None = None,
        platform: str | None = None,
        progress: Progress | None = None,
    ) -> LoadReport:
        """Load the images of an archive: ``docker save`` output, or an OCI image layout.

        source is a path (a tar file, or a directory holding an OCI image
        layout) or a binary stream (a pipe is spooled to staging).  Layers
        may be plain, gzip or zstd tars.  From a multi-platform index the
        host's platform is picked, or ``platform`` (``os/arch[/variant]``).
        ``tag`` adds a tag (an archive of one image only).  Each image's ID
        is its config digest, as Docker's; layers already stored are not
        unpacked again.  Every blob is checked against its digest and size
        and every layer against its diff_id as it is read, and everything
        is published in one transaction: on any error the store is left as
        it was.  Layers are unpacked in parallel where the archive allows.
        ``progress`` (an ``api._progress.Progress``) is told of the layers
        and bytes to read as they are.
        """
        return load_archive(self._ctx, self._layers, source, tag=tag, platform=platform, progress=progress)

    def save(
        self,
        refs: list[str],
        out: BinaryIO | str,
        *,
        format: str = "docker-archive",
        progress: Progress | None = None,
    ) -> SaveReport:
        """Write images to out: a binary stream, or a directory for ``format="oci-dir"``.

        ``docker-archive`` (the default) is Docker 25's form, an OCI image
        layout with Docker's manifest.json and repositories beside it, which
        ``docker load``, ``podman load`` and ``skopeo`` read; ``oci-archive``
        and ``oci-dir`` are the OCI layout alone.  A layer loaded from a tar
        is written as the same bytes; the same images give the same archive.
        In the OCI formats, an image pulled with ``keep_blobs`` is written
        with its original manifest and compressed blobs.
        Takes no lock: records are read once, and each layer is checked
        against its diff_id as it is written.  ``progress`` (an
        ``api._progress.Progress``) is told of the layers and bytes written.
        """
        return save_archive(self._layout, self._layers, list(refs), out, format, progress=progress)

    def publish(self, txn: Transaction, record: ImageRecord, *, tag: str | None = None) -> ImageRecord:
        """Store an image record (all its layers must be stored) and point tag at it."""
        imgs.save_image(txn, record)
        if tag:
            txn.set_tags(imgs.read_tags(self._layout), {parse_ref(tag): record.id})
        return record

    def tag(self, ref: str, new_tag: str) -> str:
        """Point new_tag at the image ref names; the normalised tag."""
        normal = parse_ref(new_tag)
        with self._ctx.transaction("image tag") as txn:
            image_id = imgs.resolve_image(self._layout, ref)
            txn.set_tags(imgs.read_tags(self._layout), {normal: image_id})
        return normal

    def history(self, ref: str) -> list[HistoryEntry]:
        """One entry a layer, newest first."""
        image = self.get(ref)
        entries = [h for h in image.history if not h.get("empty_layer")]
        rows = []
        for i, layer_id in enumerate(image.layers):
            record = lyrs.load_layer(self._layout, layer_id)
            entry = entries[i] if i < len(entries) else {}
            created = entry.get("created", record.created)
            rows.append(
                HistoryEntry(record, created, entry.get("created_by", ""), entry.get("comment", record.comment))
            )
        return rows[::-1]

    def remove(self, ref: str, *, force: bool = False) -> ImageRemoval:
        """Untag or delete an image; its layers that nothing else uses go too.

        A reference that is one of several tags only drops that tag (unless
        ``force``).  Refused while a container uses the image, or (without
        ``force``) while another image was committed from it.
        """
        with self._ctx.transaction("image rm", on_crash=ROLLFORWARD) as txn:
            image_id = imgs.resolve_image(self._layout, ref)
            own_tags = imgs.tags_of(imgs.read_tags(self._layout), image_id)
            normal = _maybe_ref(ref)
            if normal in own_tags and len(own_tags) > 1 and not force:
                txn.remove([], untag=[normal])
                return ImageRemoval(untagged=[normal])
            self._check_unused(image_id, ref, force)
            image = imgs.load_image(self._layout, image_id)
            layers = unused_layers(self._layout, image.layers, images_gone={image_id})
            paths = [self._layout.image_json(image_id), *lyrs.removal_paths(self._layout, layers)]
            txn.remove(paths, untag=own_tags)
        return ImageRemoval(untagged=own_tags, deleted=[image_id], layers=[r.id for r in layers])

    def _check_unused(self, image_id: str, ref: str, force: bool) -> None:
        users = [c.name for c in ctrs.list_containers(self._layout) if c.image == image_id]
        if users:
            raise InUse(f"image {ref} is used by container {', '.join(users[:3])}", hint="remove the container first")
        if force:
            return
        children = [i for i in imgs.list_images(self._layout) if i.parent == image_id]
        if children:
            tags = imgs.tags_of(imgs.read_tags(self._layout), children[0].id)
            raise InUse(
                f"image {ref} is the parent of image {tags[0] if tags else short_id(children[0].id)}",
                hint="remove that image first, or use --force",
            )


def unused_layers(
    layout: StoreLayout,
    candidates: list[str],
    *,
    images_gone: set[str] = frozenset(),
    containers_gone: set[str] = frozenset(),
) -> list[LayerRecord]:
    """Those of candidates (bottom to top) that nothing would use once the given images and containers are gone.

    Top first, so that a child goes before its parent.  One read of each
    image, container and layer record: linear in the store's size.
    """
    images = [i for i in imgs.list_images(layout) if i.id not in images_gone]
    used = {layer for image in images for layer in image.layers}
    used |= {layer for c in ctrs.list_containers(layout) if c.id not in containers_gone for layer in c.layers}
    records = {r.id: r for r in lyrs.list_layers(layout)}
    children = Counter(r.parent for r in records.values() if r.parent)
    unused: list[LayerRecord] = []
    for layer_id in reversed(candidates):
        record = records.get(layer_id)
        if record is None or layer_id in used or children[layer_id]:
            continue
        unused.append(record)
        if record.parent:
            children[record.parent] -= 1
    return unused


def _maybe_ref(ref: str) -> str | None:
    try:
        return parse_ref(ref)
    except InvalidArgument:
        return None
