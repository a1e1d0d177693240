"""Check the store's records against its directories, and repair what is safe to.

Every object is published by one rename inside a journaled transaction, so
a record never points at a half-built object.  What a crash, a full disk or
a hand edit can leave is:

* garbage: a staging or trash entry of a dead process, a temporary file, a
  dangling link, a directory without its record, an interrupted transaction
  (repair finishes it), a tag or bridge address naming what is gone;
* derived data that went missing: a layer's short link (repair makes it again);
* damage: a record that cannot be read, a layer without its files, a layer
  whose files no longer hash to what was recorded.  Damage is reported,
  never guessed at; only a damaged tags.json is moved aside by repair, since
  every other command needs it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from .atomic import TMP_MARK, abandoned
from .layout import StoreLayout
from .records import ImageRecord, LayerRecord
from .transaction import Transaction, recover

_HEX64 = set("0123456789abcdef")

#: What repair does about a problem; None: nothing, it is reported only.
REMOVE, RELINK, RECOVER, UNTAG, RELEASE, MOVE_ASIDE = "remove", "relink", "recover", "untag", "release", "move-aside"
#: A container whose monitor died: the runtime reaps it (its cgroup, network, pins).
REAP = "reap"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the store, and the repair that fixes it (if one is safe)."""

    path: str
    message: str
    repair: str | None = None
    subject: str = ""  # what the repair acts on: a layer ID, a tag, a container ID

    @property
    def garbage(self) -> bool:
        return self.repair is not None

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "message": self.message, "garbage": self.garbage, "repair": self.repair}


def check_store(layout: StoreLayout, *, verify_content: bool = False) -> list[Problem]:
    """Everything wrong with the store at layout (reads only).

    ``verify_content`` re-hashes every layer's files against what was
    recorded when it was made (reads every byte of the store).
    """
    problems: list[Problem] = []
    if os.path.exists(layout.journal):
        problems.append(Problem(layout.journal, "an interrupted transaction", RECOVER))
    layers = _check_layers(layout, problems, verify_content)
    images = _check_images(layout, set(layers), problems)
    _check_tags(layout, images, problems)
    containers = _check_containers(layout, images, problems)
    _check_links(layout, problems)
    _check_network(layout, containers, problems)
    for name in filter(abandoned, _listdir(layout.staging)):
        problems.append(Problem(f"{layout.staging}/{name}", "unfinished work left in staging", REMOVE))
    for name in filter(_undeleted, _listdir(layout.trash)):
        problems.append(Problem(f"{layout.trash}/{name}", "undeleted trash", REMOVE))
    _check_temporaries(layout, containers, problems)
    return problems


def _undeleted(name: str) -> bool:
    """A trash entry nobody is deleting: its process is gone, or it is ours (we are checking, not deleting)."""
    return abandoned(name) or name.split("-", 1)[0] == str(os.getpid())


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _load(path: str, problems: list[Problem], kind: type = dict) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problems.append(Problem(path, f"damaged record: {str(exc).splitlines()[0]}"))
        return None
    if not isinstance(data, kind):
        problems.append(Problem(path, f"damaged record: not a JSON {kind.__name__}"))
        return None
    return data


def _records(directory: str, filename: str, kind: str, problems: list[Problem]):
    """(name, path, record) of each object directory; one without its record is garbage."""
    for name in _listdir(directory):
        path = f"{directory}/{name}"
        record = _load(f"{path}/{filename}", problems)
        if record is not None:
            yield name, path, record
        elif not os.path.exists(f"{path}/{filename}"):
            problems.append(Problem(path, f"{kind} directory without {filename}", REMOVE))


def _check_layers(layout: StoreLayout, problems: list[Problem], verify: bool) -> dict[str, LayerRecord]:
    records: dict[str, LayerRecord] = {}
    for name, path, data in _records(layout.layers, "layer.json", "layer", problems):
        try:
            record = LayerRecord.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Problem(f"{path}/layer.json", f"damaged record: missing or bad field {exc}"))
            continue
        records[record.id] = record
        if record.id != f"sha256:{name}":
            problems.append(Problem(path, f"layer.json names {record.id}, not its directory"))
        if not os.path.isdir(f"{path}/diff"):
            problems.append(Problem(path, "layer without its diff directory"))
            continue
        link = layout.link(record.link)
        if not os.path.islink(link):
            problems.append(Problem(link, f"short link of layer {record.id[7:19]} is missing", RELINK, record.id))
        if verify:
            from .layers import verify_content

            why = verify_content(layout, record)
            if why is not None:
                problems.append(Problem(path, why))
    for layer_id, record in records.items():
        if record.parent and record.parent not in records:
            problems.append(Problem(layout.layer_dir(layer_id), f"parent layer {record.parent} is missing"))
    return records


def _check_images(layout: StoreLayout, layers: set[str], problems: list[Problem]) -> set[str]:
    images = set()
    for name in _listdir(layout.images):
        path = f"{layout.images}/{name}"
        if not name.endswith(".json") or not set(name[:-5]) <= _HEX64 or len(name) != 69:
            if TMP_MARK not in name:  # temporaries are judged by _check_temporaries
                problems.append(Problem(path, "not an image record"))
            continue
        try:
            with open(path, "rb") as f:
                image = ImageRecord.from_bytes(f.read())
        except (OSError, ValueError) as exc:
            problems.append(Problem(path, f"damaged record: {str(exc).splitlines()[0]}"))
            continue
        if image.id != f"sha256:{name[:-5]}":
            problems.append(Problem(path, "its sha256 is not its name: the record was changed"))
        for layer in image.layers:
            if layer not in layers:
                problems.append(Problem(path, f"layer {layer} of the image is missing"))
        images.add(f"sha256:{name[:-5]}")
    return images


def _check_tags(layout: StoreLayout, images: set[str], problems: list[Problem]) -> None:
    if not os.path.exists(layout.tags):
        return
    found: list[Problem] = []
    tags = _load(layout.tags, found)
    if found or not all(isinstance(v, str) for v in (tags or {}).values()):
        problems.append(Problem(layout.tags, "damaged tags.json (repair moves it aside)", MOVE_ASIDE))
        return
    for ref, image_id in (tags or {}).items():
        if image_id not in images:
            problems.append(Problem(layout.tags, f"tag {ref} names a missing image {image_id}", UNTAG, ref))


def _check_containers(layout: StoreLayout, images: set[str], problems: list[Problem]) -> set[str]:
    containers = set()
    for name, path, record in _records(layout.containers, "container.json", "container", problems):
        containers.add(name)
        for sub in ("init", "upper", "work", "merged"):
            if not os.path.isdir(f"{path}/{sub}"):
                problems.append(Problem(path, f"container {record.get('name')} has no {sub}/ directory"))
        if record.get("image") not in images:
            problems.append(Problem(path, f"container {record.get('name')} uses a missing image"))
    return containers


def _check_links(layout: StoreLayout, problems: list[Problem]) -> None:
    for directory, what in ((layout.links, "short link"), (layout.names, "container name")):
        for name in _listdir(directory):
            path = f"{directory}/{name}"
            if TMP_MARK not in name and not os.path.exists(path):
                problems.append(Problem(path, f"dangling {what}", REMOVE))


def _check_network(layout: StoreLayout, containers: set[str], problems: list[Problem]) -> None:
    data = _load(layout.network_json, problems)
    addresses = (data or {}).get("addresses") or {}
    if not isinstance(addresses, dict):
        problems.append(Problem(layout.network_json, "damaged record: addresses is not a map"))
        return
    for address, owner in sorted(addresses.items()):
        if owner not in containers:
            message = f"address {address} is held by container {str(owner)[:12]}, which no longer exists"
            problems.append(Problem(layout.network_json, message, RELEASE, str(owner)))


def _check_temporaries(layout: StoreLayout, containers: set[str], problems: list[Problem]) -> None:
    """write_atomic's temporaries (``<file>.tmp-<pid>``) whose process is gone."""
    directories = [layout.root, layout.images, layout.links, layout.names]
    directories += [layout.container_dir(c) for c in containers] + [
        layout.layer_dir(n) for n in _listdir(layout.layers)
    ]
    for directory in directories:
        for name in _listdir(directory):
            stem, mark, pid = name.rpartition(TMP_MARK)
            if mark and stem and abandoned(pid):
                problems.append(Problem(f"{directory}/{name}", "temporary file of an interrupted write", REMOVE))


def repair(txn: Transaction, problems: list[Problem]) -> list[Problem]:
    """Fix the repairable problems (under the transaction's lock); the ones fixed."""
    from . import layers, network

    layout = txn.layout
    fixed = []
    untag = {p.subject: None for p in problems if p.repair == UNTAG}
    for problem in problems:
        if problem.repair == RECOVER:
            recover(txn)
        elif problem.repair == REMOVE and os.path.lexists(problem.path):
            if problem.path != txn.trash_dir:  # this repair's own trash is emptied after it
                txn.trash(problem.path)
        elif problem.repair == RELINK:
            layers.restore_link(layout, layers.load_layer(layout, problem.subject))
        elif problem.repair == RELEASE:
            network.release_address(layout, txn.lock, problem.subject)
        elif problem.repair == MOVE_ASIDE:
            os.rename(layout.tags, f"{layout.tags}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        elif problem.repair not in (UNTAG, REAP):
            continue
        fixed.append(problem)
    if untag:
        txn.remove([], untag=untag)
    return fixed
