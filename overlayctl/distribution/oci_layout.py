"""The images of an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``).

Each ``index.json`` entry is an image, or an index of one image per
platform (nested indexes are followed), of which the wanted platform is
picked.  Every index, manifest and config is checked against its
descriptor's size and digest when read; layer blobs are only checked to be
there (the API verifies them as it unpacks them).
"""

from __future__ import annotations

from ..errors import ArchiveError
from . import mediatypes as mt
from .descriptor import Descriptor, load_json, parse_descriptor
from .model import ArchiveSource, ImagePlan, LayerPlan, check_layer_count, config_diff_ids, config_platform
from .platform import Platform
from .refs import tags_from_annotations

LAYOUT = "oci-layout"
INDEX = "index.json"
#: Indexes nested deeper than this are refused (a loop, or a hostile archive).
MAX_DEPTH = 8


def plan_oci_layout(src: ArchiveSource, wanted: Platform, *, explicit: bool) -> list[ImagePlan]:
    """One plan per index.json entry that has an image for ``wanted``.

    An entry whose descriptor names another platform is skipped; an index
    must have ``wanted``.  An image whose descriptor names no platform is
    taken whatever its config says, unless ``explicit`` (--platform given).
    """
    _check_layout(src)
    index = load_json(src.read_meta(INDEX, INDEX), INDEX)
    entries = _manifests(index, INDEX)
    images: list[ImagePlan] = []
    skipped: list[str] = []
    for i, obj in enumerate(entries):
        where = f"{INDEX} entry {i}"
        desc = parse_descriptor(obj, where)
        tags = tags_from_annotations(desc.annotations, where)
        if desc.platform is not None and not desc.platform.matches(wanted):
            skipped.append(str(desc.platform))
            continue
        image = _resolve(src, desc, where, wanted, explicit, tags, depth=0, skipped=skipped)
        if image is not None:
            images.append(image)
    if not images and skipped:
        raise _no_image("the archive", wanted, skipped)
    return images


def resolve_image(src: ArchiveSource, desc: Descriptor, where: str, wanted: Platform, tags: list[str]) -> ImagePlan:
    """The image one descriptor names (a manifest, or an index followed down to ``wanted``)."""
    skipped: list[str] = []
    image = _resolve(src, desc, where, wanted, True, tags, depth=0, skipped=skipped)
    if image is None:
        raise _no_image(where, wanted, skipped)
    return image


def _no_image(what: str, wanted: Platform, skipped: list[str]) -> ArchiveError:
    have = ", ".join(sorted(set(skipped)))
    return ArchiveError(f"{what} has no image for {wanted} (it has {have})", hint="choose one with --platform")


def _check_layout(src: ArchiveSource) -> None:
    if not src.exists(LAYOUT):
        raise ArchiveError(f"not an OCI image layout: no {LAYOUT} file")
    layout = load_json(src.read_meta(LAYOUT, LAYOUT), LAYOUT)
    version = layout.get("imageLayoutVersion")
    if not isinstance(version, str) or version.split(".")[0] != "1":
        raise ArchiveError(f"{LAYOUT}: unsupported imageLayoutVersion {version!r}")


def _manifests(index: dict, where: str) -> list:
    entries = index.get("manifests")
    if index.get("schemaVersion") != 2 or not isinstance(entries, list):
        raise ArchiveError(f"{where} is not an image index (schemaVersion 2 with a manifests list)")
    return entries


def _read_blob(src: ArchiveSource, desc: Descriptor, where: str) -> bytes:
    what = f"blob {desc.digest} ({where})"
    src.check(desc.path, what)
    return desc.check(src.read_meta(desc.path, what), where)


def _resolve(
    src: ArchiveSource,
    desc: Descriptor,
    where: str,
    wanted: Platform,
    explicit: bool,
    tags: list[str],
    *,
    depth: int,
    skipped: list[str],
) -> ImagePlan | None:
    """The image a descriptor names, following indexes down to the wanted platform."""
    if desc.media_type in mt.INDEX_TYPES:
        if depth >= MAX_DEPTH:
            raise ArchiveError(f"{where}: indexes nested more than {MAX_DEPTH} deep")
        index = load_json(_read_blob(src, desc, where), f"index {desc.digest} ({where})")
        chosen = _pick(index, desc, where, wanted)
        inner = f"{where} > {desc.digest[:19]}"
        return _resolve(src, chosen, inner, wanted, explicit, tags, depth=depth + 1, skipped=skipped)
    if desc.media_type not in mt.MANIFEST_TYPES:
        raise ArchiveError(f"{where}: unknown media type {desc.media_type!r} (not an image manifest or index)")
    return _image(src, desc, where, wanted, explicit, tags, skipped)


def _pick(index: dict, desc: Descriptor, where: str, wanted: Platform) -> Descriptor:
    """The entry of a (nested) index for ``wanted``; entries without a platform only when none has it."""
    entries = [
        parse_descriptor(e, f"{where}: index {desc.digest} entry {i}") for i, e in enumerate(_manifests(index, where))
    ]
    exact = [e for e in entries if e.platform is not None and e.platform.matches(wanted)]
    if exact:
        return exact[0]
    unknown = [e for e in entries if e.platform is None]
    if unknown:
        return unknown[0]
    have = ", ".join(sorted({str(e.platform) for e in entries if e.platform is not None})) or "none"
    raise ArchiveError(
        f"{where}: index {desc.digest} has no image for {wanted} (it has {have})", hint="choose one with --platform"
    )


def _image(
    src: ArchiveSource,
    desc: Descriptor,
    where: str,
    wanted: Platform,
    explicit: bool,
    tags: list[str],
    skipped: list[str],
) -> ImagePlan | None:
    what = f"manifest {desc.digest} ({where})"
    body = _read_blob(src, desc, where)
    manifest = load_json(body, what)
    config_desc = parse_descriptor(manifest.get("config"), f"{what}: config")
    if config_desc.media_type not in mt.CONFIG_TYPES:
        raise ArchiveError(f"{what}: config media type {config_desc.media_type!r} is not an image config")
    layer_objs = manifest.get("layers")
    if not isinstance(layer_objs, list):
        raise ArchiveError(f"{what} has no list of layers")
    config_what = f"config {config_desc.digest} of {what}"
    config = _read_blob(src, config_desc, f"config of {what}")
    if explicit and desc.platform is None:
        found = config_platform(config, config_what)
        if found is not None and not found.matches(wanted):
            skipped.append(str(found))
            return None
    diff_ids = config_diff_ids(config, config_what)
    check_layer_count(diff_ids, len(layer_objs), what)
    layers = []
    for j, obj in enumerate(layer_objs):
        layer = parse_descriptor(obj, f"layer {j} of {what}")
        layer_where = f"layer {j} (blob {layer.digest}) of {what}"
        compression = mt.layer_compression(layer.media_type, layer_where)
        src.check(layer.path, layer_where)
        layers.append(
            LayerPlan(
                layer.path,
                compression,
                diff_ids[j],
                layer_where,
                digest=layer.digest,
                size=layer.size,
                media_type=layer.media_type,
            )
        )
    return ImagePlan(config, tuple(layers), tuple(tags), what, body)
