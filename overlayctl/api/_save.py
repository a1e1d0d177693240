"""``store.images.save``: images out as an archive that Docker, podman and skopeo load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..store import images as imgs
from ._layers import Layers
from ._progress import Progress, serialized


@dataclass(frozen=True, slots=True)
class SaveReport:
    """What ``images.save`` wrote: the images (ID and tags), layer blobs, bytes."""

    images: list[dict[str, Any]] = field(default_factory=list)
    layers: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "layers": self.layers, "bytes": self.bytes}


def save_archive(
    layout, layers: Layers, refs: list[str], out: BinaryIO | str, fmt: str, *, progress: Progress | None = None
) -> SaveReport:
    """Write the images refs name to out; a reference by tag writes that tag, one by ID none (as docker save).

    progress hears of each layer blob and of its bytes as they are written.
    """
    from ..distribution.writer import ImageToSave, write_archive
    from ..registry.cache import BlobCache

    chosen: dict[str, list[str]] = {}
    tags = imgs.read_tags(layout)
    for ref in refs:
        image_id = imgs.resolve_image(layout, ref)
        named = chosen.setdefault(image_id, [])
        tag = _tag_named(tags, ref, image_id)
        if tag and tag not in named:
            named.append(tag)
    cache = BlobCache(layout.blob_cache)
    images = []
    for image_id, named in chosen.items():
        record = imgs.load_image(layout, image_id)
        kept = cache.kept_image(image_id)  # used by the OCI formats only
        images.append(ImageToSave(record.raw, tuple(record.layers), tuple(record.diff_ids), tuple(named), kept))
    events = serialized(progress)
    written = write_archive(images, layers.export, out, fmt, progress=events if progress is not None else None)
    events.finish()
    listed = [{"id": image_id, "tags": tags} for image_id, tags in chosen.items()]
    return SaveReport(listed, written.layers, written.bytes)


def _tag_named(tags: dict[str, str], ref: str, image_id: str) -> str | None:
    """The tag ref names, if it names the image by a tag (not by ID)."""
    from ._images import _maybe_ref

    for candidate in (ref, _maybe_ref(ref)):
        if candidate and tags.get(candidate) == image_id:
            return candidate
    return None
