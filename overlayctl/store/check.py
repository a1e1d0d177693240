"""Check the store's records against its directories, and repair what is safe to.

Every object is published by one rename, so a record never points at a
half-built object; what a crash or a hand edit can leave is garbage (a
directory no record names, a staging entry, a dangling link) or a damaged
record.  Garbage is removed by ``repair``; damaged records are reported,
never guessed at.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .atomic import abandoned, retire
from .layout import StoreLayout
from .records import ImageRecord

_HEX64 = set("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the store; ``garbage`` problems are removed by repair."""

    path: str
    message: str
    garbage: bool = False

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "message": self.message, "garbage": self.garbage}


def check_store(layout: StoreLayout) -> list[Problem]:
    """Everything wrong with the store at layout (reads only)."""
    problems: list[Problem] = []
    layers = _check_layers(layout, problems)
    images = _check_images(layout, layers, problems)
    _check_tags(layout, images, problems)
    _check_containers(layout, images, problems)
    _check_links(layout, problems)
    for name in filter(abandoned, _listdir(layout.staging)):
        problems.append(Problem(f"{layout.staging}/{name}", "unfinished work left in staging", garbage=True))
    return problems


def repair(layout: StoreLayout, problems: list[Problem]) -> list[Problem]:
    """Remove the garbage among problems (call under the store lock); what was removed."""
    removed = []
    for problem in problems:
        if problem.garbage and os.path.lexists(problem.path):
            if os.path.isdir(problem.path) and not os.path.islink(problem.path):
                retire(problem.path, layout.staging)
            else:
                os.unlink(problem.path)
            removed.append(problem)
    return removed


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _load(path: str, problems: list[Problem]) -> dict | None:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problems.append(Problem(path, f"damaged record: {exc}"))
        return None


def _records(directory: str, filename: str, kind: str, problems: list[Problem]):
    """(name, path, record) of each object directory; one without its record is garbage."""
    for name in _listdir(directory):
        path = f"{directory}/{name}"
        record = _load(f"{path}/{filename}", problems)
        if record is not None:
            yield name, path, record
        elif not os.path.exists(f"{path}/{filename}"):
            problems.append(Problem(path, f"{kind} directory without {filename}", garbage=True))


def _check_layers(layout: StoreLayout, problems: list[Problem]) -> set[str]:
    parents = {}
    for name, path, record in _records(layout.layers, "layer.json", "layer", problems):
        if not os.path.isdir(f"{path}/diff"):
            problems.append(Problem(path, "layer without its diff directory"))
        if record.get("id") != f"sha256:{name}":
            problems.append(Problem(path, f"layer.json names {record.get('id')}, not its directory"))
        parents[f"sha256:{name}"] = record.get("parent")
    for layer_id, parent in parents.items():
        if parent and parent not in parents:
            problems.append(Problem(layout.layer_dir(layer_id), f"parent layer {parent} is missing"))
    return set(parents)


def _check_images(layout: StoreLayout, layers: set[str], problems: list[Problem]) -> set[str]:
    images = set()
    for name in _listdir(layout.images):
        path = f"{layout.images}/{name}"
        if not name.endswith(".json") or not set(name[:-5]) <= _HEX64:
            problems.append(Problem(path, "not an image record", garbage=".tmp-" in name))
            continue
        try:
            with open(path, "rb") as f:
                image = ImageRecord.from_bytes(f.read())
        except (OSError, ValueError, KeyError) as exc:
            problems.append(Problem(path, f"damaged record: {exc}"))
            continue
        if image.id != f"sha256:{name[:-5]}":
            problems.append(Problem(path, "its sha256 is not its name: the record was changed"))
        for layer in image.layers:
            if layer not in layers:
                problems.append(Problem(path, f"layer {layer} of the image is missing"))
        images.add(f"sha256:{name[:-5]}")
    return images


def _check_tags(layout: StoreLayout, images: set[str], problems: list[Problem]) -> None:
    tags = _load(layout.tags, problems) or {}
    for ref, image_id in tags.items():
        if image_id not in images:
            problems.append(Problem(layout.tags, f"tag {ref} names a missing image {image_id}"))


def _check_containers(layout: StoreLayout, images: set[str], problems: list[Problem]) -> None:
    for _, path, record in _records(layout.containers, "container.json", "container", problems):
        for sub in ("init", "upper", "work", "merged"):
            if not os.path.isdir(f"{path}/{sub}"):
                problems.append(Problem(path, f"container {record.get('name')} has no {sub}/ directory"))
        if record.get("image") not in images:
            problems.append(Problem(path, f"container {record.get('name')} uses a missing image"))


def _check_links(layout: StoreLayout, problems: list[Problem]) -> None:
    for directory, what in ((layout.links, "short link"), (layout.names, "container name")):
        for name in _listdir(directory):
            path = f"{directory}/{name}"
            if not os.path.exists(path):
                problems.append(Problem(path, f"dangling {what}", garbage=True))
