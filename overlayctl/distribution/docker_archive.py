"""The images of a ``docker save`` archive, from its ``manifest.json``.

Both forms: the classic one (Docker <= 24: ``<id>/layer.tar``,
``<image id>.json``) and Docker 25's (paths into ``blobs/sha256/``, beside
an OCI layout).  manifest.json states no media types: layer compression is
sniffed from the magic bytes, as ``docker load`` does.  A content-addressed
name (``blobs/sha256/<hex>``, ``<hex>.json``) is a digest, and checked.
"""

from __future__ import annotations

from ..errors import ArchiveError
from . import mediatypes as mt
from .descriptor import digest_in_path, load_json, sha256_of
from .model import ArchiveSource, ImagePlan, LayerPlan, check_layer_count, config_diff_ids
from .paths import normalize
from .refs import archive_tag, unique

MANIFEST = "manifest.json"
REPOSITORIES = "repositories"


def plan_docker_archive(src: ArchiveSource) -> list[ImagePlan]:
    """One plan per manifest.json entry."""
    entries = load_json(src.read_meta(MANIFEST, MANIFEST), MANIFEST, list)
    repositories = _repositories(src)
    return [_entry(src, entry, i, repositories) for i, entry in enumerate(entries)]


def _entry(src: ArchiveSource, entry: object, index: int, repositories: dict[str, list[str]]) -> ImagePlan:
    where = f"{MANIFEST} entry {index}"
    if not isinstance(entry, dict):
        raise ArchiveError(f"{where} is not a JSON object")
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str):
        raise ArchiveError(f"{where} has no Config")
    if not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
        raise ArchiveError(f"{where} has no list of Layers")
    config_path = normalize(config_name, f"{where}: Config")
    config_what = f"the config {config_name} of {where}"
    src.check(config_path, config_what)
    config = src.read_meta(config_path, config_what)
    named = digest_in_path(config_path)
    if named is not None and named != sha256_of(config):
        raise ArchiveError(f"{config_what} does not match its digest {named} (the archive holds {sha256_of(config)})")
    diff_ids = config_diff_ids(config, config_what)
    check_layer_count(diff_ids, len(layer_names), where)
    layers = []
    for j, name in enumerate(layer_names):
        layer_where = f"layer {j} ({name}) of {where}"
        path = normalize(name, layer_where)
        src.check(path, layer_where)
        digest = digest_in_path(path) if path.startswith("blobs/") else None
        layers.append(LayerPlan(path, mt.SNIFF, diff_ids[j], layer_where, digest=digest))
    tags = _repo_tags(entry.get("RepoTags"), where)
    if not tags and layer_names:
        tags = repositories.get(_top_layer_key(layer_names[-1]), []) + repositories.get(sha256_of(config), [])
    return ImagePlan(config, tuple(layers), tuple(unique(tags)), where)


def _repo_tags(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ArchiveError(f"{where}: RepoTags is not a list of strings")
    return [archive_tag(t, f"{where}: RepoTags") for t in value]


def _repositories(src: ArchiveSource) -> dict[str, list[str]]:
    """The legacy ``repositories`` file: {key: [tags]}, keyed by the v1 ID or digest it names.

    ``{"busybox": {"latest": "<v1 id of the top layer>"}}``: a fallback for
    entries whose RepoTags are empty.
    """
    if not src.exists(REPOSITORIES):
        return {}
    data = load_json(src.read_meta(REPOSITORIES, REPOSITORIES), REPOSITORIES)
    found: dict[str, list[str]] = {}
    for repo, tags in data.items():
        if not isinstance(tags, dict):
            raise ArchiveError(f"{REPOSITORIES}: {repo!r} does not map tags to IDs")
        for tag, target in tags.items():
            if not isinstance(target, str):
                raise ArchiveError(f"{REPOSITORIES}: {repo}:{tag} does not name an ID")
            ref = archive_tag(f"{repo}:{tag}", REPOSITORIES)
            key = target if target.startswith("sha256:") else f"sha256:{target}"
            found.setdefault(key, []).append(ref)
    return found


def _top_layer_key(name: str) -> str:
    """What ``repositories`` names the top layer by: the v1 ID (its directory) or its blob digest."""
    parts = name.strip("/").split("/")
    hex_id = parts[-1] if len(parts) >= 2 and parts[-2] == "sha256" else parts[0]
    return f"sha256:{hex_id}"
