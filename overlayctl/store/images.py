"""Images and tags on disk: records, resolution of references, publishing."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import InvalidArgument, NotFound, StoreError
from .atomic import write_atomic
from .ids import resolve_prefix
from .layout import StoreLayout
from .records import ImageRecord, damaged, dump_json, load_each, load_json, parse_ref

if TYPE_CHECKING:
    from .transaction import Transaction


def image_ids(layout: StoreLayout) -> list[str]:
    try:
        names = os.listdir(layout.images)
    except FileNotFoundError:
        return []
    return ["sha256:" + n[:-5] for n in names if n.endswith(".json") and len(n) == 69]


def load_image(layout: StoreLayout, image_id: str) -> ImageRecord:
    path = layout.image_json(image_id)
    try:
        with open(path, "rb") as f:
            return ImageRecord.from_bytes(f.read())
    except FileNotFoundError:
        raise NotFound(f"no such image: {image_id}") from None
    except ValueError as exc:
        raise damaged(path, exc) from None


def list_images(layout: StoreLayout) -> list[ImageRecord]:
    """Every image, oldest first; one removed meanwhile is left out, a damaged one skipped with a warning."""
    images = load_each(image_ids(layout), lambda image_id: load_image(layout, image_id))
    return sorted(images, key=lambda r: (r.created, r.id))


def save_image(txn: Transaction, record: ImageRecord) -> bool:
    """Publish an image record; False when the same record is already stored.

    Every layer of the image must be in the store: an image never points
    at a missing layer.
    """
    layout = txn.layout
    for layer_id in record.layers:
        if not os.path.isdir(layout.layer_dir(layer_id)):
            raise NotFound(f"layer {layer_id} of the image is not in the store")
    path = layout.image_json(record.id)
    if os.path.exists(path):
        return False
    os.makedirs(layout.images, exist_ok=True)
    txn.creating(path)
    write_atomic(path, record.raw)
    return True


def read_tags(layout: StoreLayout, *, damaged_ok: bool = False) -> dict[str, str]:
    """{name:tag: image ID}.  A damaged tags.json is a StoreError, or {} with damaged_ok."""
    try:
        tags = load_json(layout.tags)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise damaged(layout.tags, "not a map of references to image IDs")
        return tags
    except FileNotFoundError:
        return {}
    except StoreError:
        if damaged_ok:
            return {}
        raise


def write_tags(txn: Transaction, tags: dict[str, str]) -> None:
    """Replace tags.json (through Transaction.set_tags, which journals the change)."""
    os.makedirs(txn.layout.root, exist_ok=True)
    write_atomic(txn.layout.tags, dump_json(dict(sorted(tags.items()))))


def tags_of(tags: dict[str, str], image_id: str) -> list[str]:
    return sorted(ref for ref, target in tags.items() if target == image_id)


def resolve_image(layout: StoreLayout, ref: str) -> str:
    """An image ID from a tag (``name[:tag]``) or a unique ID prefix.

    With a damaged tags.json, IDs still resolve.
    """
    try:
        tags = read_tags(layout)
    except StoreError:
        if not _looks_like_id(ref):
            raise
        tags = {}
    if ref in tags:
        return tags[ref]
    try:
        normal = parse_ref(ref)
    except InvalidArgument:
        normal = None
    if normal in tags:
        return tags[normal]
    try:
        return resolve_prefix(ref, image_ids(layout), "image")
    except NotFound:
        raise NotFound(f"no such image: {ref}", hint="see 'overlayctl image ls'") from None


def _looks_like_id(ref: str) -> bool:
    hex_part = ref[7:] if ref.startswith("sha256:") else ref
    return bool(hex_part) and all(c in "0123456789abcdef" for c in hex_part)
