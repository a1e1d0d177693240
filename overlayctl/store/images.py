"""Images and tags on disk: records, resolution of references, removal."""

from __future__ import annotations

import os

from ..errors import NotFound
from .atomic import write_atomic
from .ids import resolve_prefix
from .layout import StoreLayout
from .records import ImageRecord, dump_json, load_json, parse_ref


def image_ids(layout: StoreLayout) -> list[str]:
    try:
        names = os.listdir(layout.images)
    except FileNotFoundError:
        return []
    return ["sha256:" + n[:-5] for n in names if n.endswith(".json")]


def load_image(layout: StoreLayout, image_id: str) -> ImageRecord:
    try:
        with open(layout.image_json(image_id), "rb") as f:
            return ImageRecord.from_bytes(f.read())
    except FileNotFoundError:
        raise NotFound(f"no such image: {image_id}") from None


def list_images(layout: StoreLayout) -> list[ImageRecord]:
    images = [load_image(layout, i) for i in image_ids(layout)]
    return sorted(images, key=lambda r: (r.created, r.id))


def save_image(layout: StoreLayout, record: ImageRecord) -> None:
    """Write an image record (call under the store lock)."""
    os.makedirs(layout.images, exist_ok=True)
    path = layout.image_json(record.id)
    if not os.path.exists(path):
        write_atomic(path, record.raw)


def read_tags(layout: StoreLayout) -> dict[str, str]:
    try:
        return dict(load_json(layout.tags))
    except FileNotFoundError:
        return {}


def write_tags(layout: StoreLayout, tags: dict[str, str]) -> None:
    """Replace tags.json (call under the store lock)."""
    os.makedirs(layout.root, exist_ok=True)
    write_atomic(layout.tags, dump_json(dict(sorted(tags.items()))))


def tags_of(tags: dict[str, str], image_id: str) -> list[str]:
    return sorted(ref for ref, target in tags.items() if target == image_id)


def resolve_image(layout: StoreLayout, ref: str) -> str:
    """An image ID from a tag (``name[:tag]``) or a unique ID prefix."""
    tags = read_tags(layout)
    if ref in tags:
        return tags[ref]
    try:
        normal = parse_ref(ref)
    except Exception:
        normal = None
    if normal in tags:
        return tags[normal]
    try:
        return resolve_prefix(ref, image_ids(layout), "image")
    except NotFound:
        raise NotFound(f"no such image: {ref}", hint="see 'overlayctl image ls'") from None
