"""The plan of a load: each image's config bytes, ordered layers, tags.

Made from an archive's metadata by ``plan.plan_archive``; the blobs
themselves are read later, by the API, through ``reader`` and ``verify``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ..errors import ArchiveError
from . import mediatypes as mt
from .descriptor import check_digest, load_json, parse_descriptor, sha256_of
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
    manifest: bytes = field(default=b"", repr=False)  # the OCI or Docker manifest it was read from, if any

    @property
    def id(self) -> str:
        return sha256_of(self.config)

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]


class KeptBlob(NamedTuple):
    """A layer blob of a kept manifest, and the file that holds it."""

    digest: str
    size: int
    media_type: str
    path: str


@dataclass(frozen=True, slots=True)
class KeptManifest:
    """An image's original manifest, with a file of each layer blob it names (``pull --keep-blobs``)."""

    body: bytes
    media_type: str
    blobs: tuple[KeptBlob, ...]  # base first

    @property
    def digest(self) -> str:
        return sha256_of(self.body)


def kept_manifest(body: bytes, image_id: str, blob_file: Callable[[str, int], str | None]) -> KeptManifest | None:
    """The manifest body, if it is the image's (its config digest is the image ID) and blob_file finds each layer.

    blob_file(digest, size) gives the path of a verified copy of a blob, or None.
    """
    try:
        manifest = load_json(body, "a kept manifest")
        config = parse_descriptor(manifest.get("config"), "its config")
        layers = [parse_descriptor(obj, "a layer") for obj in manifest.get("layers") or []]
    except ArchiveError:
        return None
    media_type = manifest.get("mediaType") or mt.OCI_MANIFEST
    if config.digest != image_id or media_type not in mt.MANIFEST_TYPES:
        return None
    blobs = []
    for layer in layers:
        path = blob_file(layer.digest, layer.size)
        if path is None:
            return None
        blobs.append(KeptBlob(layer.digest, layer.size, layer.media_type, path))
    return KeptManifest(body, media_type, tuple(blobs))


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
            by_id[image.id] = ImagePlan(seen.config, seen.layers, tags, seen.where, seen.manifest)
    return tuple(by_id.values())
