"""Layers and images: create, import, list, tag, history, tree, remove."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import InUse, InvalidArgument, NotFound
from ..plan.options import check_layer_count
from ..store import containers as ctrs
from ..store import images as imgs
from ..store import layers as lyrs
from ..store.ids import short_id
from ..store.records import ImageRecord, LayerRecord, parse_ref
from ._base import StoreBase

if TYPE_CHECKING:
    pass


class ImagesAPI(StoreBase):
    """Layers and images: create, import, list, tag, history, tree, remove."""

    def layers(self) -> list[LayerRecord]:
        return lyrs.list_layers(self.layout)

    def layer(self, ref: str) -> LayerRecord:
        return lyrs.load_layer(self.layout, lyrs.resolve_layer(self.layout, ref))

    def create_layer(self, source: str | BinaryIO, *, parent: str | None = None, comment: str = "") -> LayerRecord:
        """A layer from a directory, a tar file (plain or gzip) or a binary stream."""
        parent_id = lyrs.resolve_layer(self.layout, parent) if parent else None
        self._ensure_root()
        fill, close = self._filler(source)
        try:
            self._sweep()
            record, _ = lyrs.create_layer(self.layout, self.lock, fill, parent=parent_id, comment=comment)
        finally:
            close()
        return record

    def _filler(self, source: str | BinaryIO):
        if not isinstance(source, str):
            return lyrs.from_tar(source), lambda: None
        if os.path.isdir(source):
            return lyrs.from_directory(source), lambda: None
        try:
            stream = open(source, "rb")
        except FileNotFoundError:
            raise NotFound(f"no such file or directory: {source}") from None
        except OSError as exc:
            raise InvalidArgument(f"cannot read {source}: {exc.strerror}") from None
        return lyrs.from_tar(stream), stream.close

    def export_layer(self, ref: str, out: BinaryIO) -> str:
        """Write a layer as an OCI tar (overlay whiteouts back to .wh. files)."""
        from ..archive.generate import write_layer_tar

        layer_id = lyrs.resolve_layer(self.layout, ref)
        return write_layer_tar(self.layout.diff(layer_id), out)

    def layer_users(self, layer_id: str) -> list[str]:
        """What keeps a layer: images whose stack holds it, and child layers."""
        users = [f"image {self._image_name(i)}" for i in imgs.list_images(self.layout) if layer_id in i.layers]
        users += [f"layer {short_id(r.id)}" for r in self.layers() if r.parent == layer_id]
        return users

    def remove_layer(self, ref: str) -> str:
        layer_id = lyrs.resolve_layer(self.layout, ref)
        with self._mutation():
            users = self.layer_users(layer_id)
            if users:
                raise InUse(
                    f"layer {short_id(layer_id)} is used by {', '.join(users[:3])}",
                    hint="remove those first",
                )
            lyrs.remove_layer(self.layout, layer_id)
        return layer_id

    # -- images -------------------------------------------------------------

    def images(self) -> list[ImageRecord]:
        return imgs.list_images(self.layout)

    def image(self, ref: str) -> ImageRecord:
        return imgs.load_image(self.layout, imgs.resolve_image(self.layout, ref))

    def tags(self, image_id: str | None = None) -> list[str] | dict[str, str]:
        tags = imgs.read_tags(self.layout)
        return tags if image_id is None else imgs.tags_of(tags, image_id)

    def _image_name(self, image: ImageRecord) -> str:
        tags = imgs.tags_of(imgs.read_tags(self.layout), image.id)
        return tags[0] if tags else short_id(image.id)

    def import_image(
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
        as ``docker import --change`` does.
        """
        from ..runtime.spec import runtime_changes

        ref = parse_ref(tag) if tag else None
        runtime = runtime_changes(**(changes or {}), base=runtime)
        layer = self.create_layer(source, comment=comment)
        name = source if isinstance(source, str) else "stream"
        history = [{"created": layer.created, "created_by": f"overlayctl image import {name}", "comment": comment}]
        return self._publish_image([layer.diff_id], runtime=runtime, history=history, tag=ref)

    def create_image(
        self,
        top_layer: str,
        *,
        tag: str | None = None,
        runtime: dict[str, Any] | None = None,
        comment: str = "",
    ) -> ImageRecord:
        """An image whose stack is a layer and its parents."""
        ref = parse_ref(tag) if tag else None
        chain = []
        layer_id: str | None = lyrs.resolve_layer(self.layout, top_layer)
        while layer_id:
            chain.append(lyrs.load_layer(self.layout, layer_id))
            layer_id = chain[-1].parent
        chain.reverse()
        check_layer_count(len(chain))
        history = [
            {"created": r.created, "created_by": "overlayctl layer create", "comment": r.comment or comment}
            for r in chain
        ]
        return self._publish_image([r.diff_id for r in chain], runtime=runtime, history=history, tag=ref)

    def _publish_image(self, diff_ids, *, runtime, history, tag, parent=None) -> ImageRecord:
        record = ImageRecord.build(diff_ids, runtime=runtime, history=history, parent=parent)
        with self._mutation():
            imgs.save_image(self.layout, record)
            if tag:
                tags = imgs.read_tags(self.layout)
                tags[tag] = record.id
                imgs.write_tags(self.layout, tags)
        return record

    def tag_image(self, ref: str, new_tag: str) -> str:
        image_id = imgs.resolve_image(self.layout, ref)
        normal = parse_ref(new_tag)
        with self._mutation():
            tags = imgs.read_tags(self.layout)
            tags[normal] = image_id
            imgs.write_tags(self.layout, tags)
        return normal

    def image_history(self, ref: str) -> list[dict[str, Any]]:
        """One row a layer, newest first: layer, size, created, created_by, comment."""
        image = self.image(ref)
        entries = [h for h in image.history if not h.get("empty_layer")]
        rows = []
        for i, layer_id in enumerate(image.layers):
            record = lyrs.load_layer(self.layout, layer_id)
            entry = entries[i] if i < len(entries) else {}
            rows.append(
                {
                    "layer": layer_id,
                    "size": record.size,
                    "created": entry.get("created", record.created),
                    "created_by": entry.get("created_by", ""),
                    "comment": entry.get("comment", record.comment),
                }
            )
        return rows[::-1]

    def image_size(self, image: ImageRecord) -> int:
        return sum(lyrs.load_layer(self.layout, layer).size for layer in image.layers)

    def image_tree(self) -> list[dict[str, Any]]:
        """Images as a forest by parent image; each node: id, tags, size, own size, children."""
        images = self.images()
        by_id = {i.id: i for i in images}
        tags = imgs.read_tags(self.layout)
        sizes = {layer.id: layer.size for layer in self.layers()}

        def node(image: ImageRecord) -> dict[str, Any]:
            parent = by_id.get(image.parent or "")
            own = image.layers[len(parent.layers) :] if parent else image.layers
            return {
                "id": image.id,
                "tags": imgs.tags_of(tags, image.id),
                "layers": len(image.layers),
                "size": sum(sizes.get(layer, 0) for layer in image.layers),
                "own_size": sum(sizes.get(layer, 0) for layer in own),
                "created": image.created,
                "children": [node(c) for c in images if c.parent == image.id],
            }

        return [node(i) for i in images if (i.parent or "") not in by_id]

    def remove_image(self, ref: str, *, force: bool = False) -> dict[str, list[str]]:
        """Untag or delete an image; its layers that nothing else uses go too."""
        image_id = imgs.resolve_image(self.layout, ref)
        removed: dict[str, list[str]] = {"untagged": [], "deleted": [], "layers": []}
        with self._mutation():
            tags = imgs.read_tags(self.layout)
            own_tags = imgs.tags_of(tags, image_id)
            normal = _maybe_ref(ref)
            if normal in own_tags and len(own_tags) > 1 and not force:
                del tags[normal]
                imgs.write_tags(self.layout, tags)
                removed["untagged"].append(normal)
                return removed
            users = [c.name for c in ctrs.list_containers(self.layout) if c.image == image_id]
            if users:
                raise InUse(
                    f"image {ref} is used by container {', '.join(users[:3])}",
                    hint="remove the container first",
                )
            others = [i for i in self.images() if i.id != image_id]
            children = [i for i in others if i.parent == image_id]
            if children and not force:
                raise InUse(
                    f"image {ref} is the parent of image {self._image_name(children[0])}",
                    hint="remove that image first, or use --force",
                )
            for t in own_tags:
                del tags[t]
            imgs.write_tags(self.layout, tags)
            removed["untagged"] = own_tags
            image = imgs.load_image(self.layout, image_id)
            os.unlink(self.layout.image_json(image_id))
            removed["deleted"].append(image_id)
            still_used = {layer for i in others for layer in i.layers}
            for layer_id in reversed(image.layers):
                if layer_id in still_used or not os.path.isdir(self.layout.layer_dir(layer_id)):
                    continue
                if any(r.parent == layer_id for r in self.layers()):
                    continue
                lyrs.remove_layer(self.layout, layer_id)
                removed["layers"].append(layer_id)
        return removed


def _maybe_ref(ref: str) -> str | None:
    try:
        return parse_ref(ref)
    except InvalidArgument:
        return None
