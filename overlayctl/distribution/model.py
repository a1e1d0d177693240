"""The plan of a load: each image's config bytes, ordered layers, tags.

Made from an archive's metadata by ``plan.plan_archive``; the blobs
themselves are read later, by the API, through ``reader`` and ``verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import ArchiveError
from .descriptor import check_digest, load_json, sha256_of
from .platform import Platform, platform_of

#: Largest metadata file or blob read whole (index, manifest, config).
META_LIMIT = 16 << 20


class ArchiveSource(Protocol):
    """What parsing needs of an archive (``reader`` implements it)."""

    def exists(self, path: str) -> bool:
        """Whether a normalised path names anything in the archive (top-level names only)."""

    def check(self, path: str, what: str) -> None:
        """ArchiveError unless path is a regular file of the archive, reached without leaving it."""

    def read_meta(self, path: str, what: str) -> bytes:
        """The whole file at path (at most META_LIMIT bytes); ArchiveError naming ``what`` otherwise."""


@dataclass(frozen=True, slots=True)
class LayerPlan:
    """One layer blob to unpack, and what it must turn out to be."""

    path: str  # in the archive
    compression: str  # mediatypes.NONE / GZIP / ZSTD / SNIFF
    diff_id: str  # from the config's rootfs.diff_ids: the sha256 of the uncompressed tar
    where: str  # for messages: "layer 2 (blobs/sha256/…) of index.json entry 0"
    digest: str | None = None  # the blob's digest, when the archive states it
    size: int | None = None  # the blob's size, when the archive states it
    media_type: str | None = None


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """One image: its original config bytes (their sha256 is the image ID), layers base first, tags."""

    config: bytes
    layers: tuple[LayerPlan, ...]
    tags: tuple[str, ...]
    where: str

    @property
    def id(self) -> str:
        return sha256_of(self.config)

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What an archive holds: its format and its images (one each, tags merged)."""

    format: str  # "docker-archive" or "oci-layout"
    images: tuple[ImagePlan, ...]


def config_diff_ids(raw: bytes, where: str) -> list[str]:
    """The ``rootfs.diff_ids`` of an image config, each a checked digest."""
    config = load_json(raw, where)
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ArchiveError(f"{where} is not an image config: no rootfs.diff_ids")
    if rootfs.get("type") != "layers":
        raise ArchiveError(f"{where}: unsupported rootfs type {rootfs.get('type')!r}")
    return [check_digest(d, f"{where}: rootfs.diff_ids[{i}]") for i, d in enumerate(rootfs["diff_ids"])]


def config_platform(raw: bytes, where: str) -> Platform | None:
    return platform_of(load_json(raw, where), where)


def check_layer_count(diff_ids: list[str], layers: int, where: str) -> None:
    """A config must name one diff_id per layer of its manifest."""
    if len(diff_ids) != layers:
        raise ArchiveError(f"{where}: the config names {len(diff_ids)} diff_ids but the manifest lists {layers} layers")


def merged(images: list[ImagePlan]) -> tuple[ImagePlan, ...]:
    """One plan per image ID, in first order, with the tags of all of its entries."""
    by_id: dict[str, ImagePlan] = {}
    for image in images:
        seen = by_id.get(image.id)
        if seen is None:
            by_id[image.id] = image
        else:
            tags = tuple(dict.fromkeys(seen.tags + image.tags))
            by_id[image.id] = ImagePlan(seen.config, seen.layers, tags, seen.where)
    return tuple(by_id.values())
