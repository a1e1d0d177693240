"""store.layers: create, list, inspect, export and remove read-only layers."""

from __future__ import annotations

import os
from typing import BinaryIO

from ..errors import InUse, InvalidArgument, NotFound
from ..store import images as imgs
from ..store import layers as lyrs
from ..store.ids import short_id
from ..store.records import LayerRecord
from ..store.transaction import ROLLFORWARD
from ._context import StoreContext


class Layers:
    """Read-only, content-addressed layers (their ID is the OCI chain ID)."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx
        self._layout = ctx.layout

    def list(self) -> list[LayerRecord]:
        return lyrs.list_layers(self._layout)

    def get(self, ref: str) -> LayerRecord:
        """A layer by unique ID prefix."""
        return lyrs.load_layer(self._layout, lyrs.resolve_layer(self._layout, ref))

    def create(self, source: str | BinaryIO, *, parent: str | None = None, comment: str = "") -> LayerRecord:
        """A layer from a directory, a tar file (plain or gzip) or a binary stream.

        The files are unpacked in staging without the store lock; only the
        publishing step takes it.  The same content on the same parent is
        stored once.
        """
        if parent:
            lyrs.resolve_layer(self._layout, parent)  # a bad parent fails before the long work
        staged = self.stage(source)
        try:
            with self._ctx.transaction("layer create") as txn:
                parent_id = lyrs.resolve_layer(self._layout, parent) if parent else None
                record, _ = lyrs.publish_layer(txn, staged, parent=parent_id, comment=comment)
        finally:
            staged.discard()
        return record

    def stage(self, source: str | BinaryIO) -> lyrs.StagedLayer:
        """Unpack source into staging (no lock); publish it with ``store.layers.publish_layer``."""
        self._ctx.ensure_root()
        if not isinstance(source, str):
            return lyrs.stage_layer(self._layout, lyrs.from_tar(source))
        if os.path.isdir(source):
            return lyrs.stage_layer(self._layout, lyrs.from_directory(source))
        try:
            stream = open(source, "rb")
        except FileNotFoundError:
            raise NotFound(f"no such file or directory: {source}") from None
        except OSError as exc:
            raise InvalidArgument(f"cannot read {source}: {exc.strerror}") from None
        with stream:
            return lyrs.stage_layer(self._layout, lyrs.from_tar(stream))

    def export(self, ref: str, out: BinaryIO) -> str:
        """Write a layer as an OCI layer tar; its digest.

        A layer imported from a tar gives that tar again, byte for byte (its
        digest is the layer's diff_id), regenerated from its tar-split and its
        files; if they changed since the import, StoreError (the bytes already
        written to ``out`` are then useless). A layer made from a directory or
        a commit gives its canonical tar (overlay whiteouts back to .wh. files).
        """
        layer_id = lyrs.resolve_layer(self._layout, ref)
        return lyrs.export_layer(self._layout, layer_id, out)

    def users(self, layer_id: str) -> list[str]:
        """What keeps a layer: images whose stack holds it, and child layers."""
        tags = imgs.read_tags(self._layout, damaged_ok=True)
        users = []
        for image in imgs.list_images(self._layout):
            if layer_id in image.layers:
                names = imgs.tags_of(tags, image.id)
                users.append(f"image {names[0] if names else short_id(image.id)}")
        users += [f"layer {short_id(r.id)}" for r in self.list() if r.parent == layer_id]
        return users

    def remove(self, ref: str) -> str:
        """Delete a layer that no image and no other layer uses; its ID."""
        with self._ctx.transaction("layer rm", on_crash=ROLLFORWARD) as txn:
            layer_id = lyrs.resolve_layer(self._layout, ref)
            users = self.users(layer_id)
            if users:
                raise InUse(f"layer {short_id(layer_id)} is used by {', '.join(users[:3])}", hint="remove those first")
            txn.remove(lyrs.removal_paths(self._layout, [lyrs.load_layer(self._layout, layer_id)]))
        return layer_id
