"""Layers on disk: create from a tar stream or a directory, list, export, remove."""

from __future__ import annotations

import contextlib
import os
from typing import BinaryIO

from ..errors import InvalidArgument, NotFound
from .atomic import discard, new_staging, publish, retire, symlink_atomic, write_atomic
from .ids import chain_id, resolve_prefix, short_link
from .layout import StoreLayout, hex_of
from .lock import StoreLock
from .records import LayerRecord, dump_json, load_json, now_rfc3339


def layer_ids(layout: StoreLayout) -> list[str]:
    try:
        names = os.listdir(layout.layers)
    except FileNotFoundError:
        return []
    return ["sha256:" + n for n in names]


def load_layer(layout: StoreLayout, layer_id: str) -> LayerRecord:
    try:
        return LayerRecord.from_json(load_json(layout.layer_json(layer_id)))
    except FileNotFoundError:
        raise NotFound(f"no such layer: {layer_id}") from None


def list_layers(layout: StoreLayout) -> list[LayerRecord]:
    records = [load_layer(layout, i) for i in layer_ids(layout)]
    return sorted(records, key=lambda r: (r.created, r.id))


def resolve_layer(layout: StoreLayout, ref: str) -> str:
    return resolve_prefix(ref, layer_ids(layout), "layer")


def layer_link(layer_id: str) -> str:
    return short_link(layer_id)


def create_layer(
    layout: StoreLayout,
    lock: StoreLock,
    fill,
    *,
    parent: str | None = None,
    comment: str = "",
) -> tuple[LayerRecord, bool]:
    """Build a layer in staging with ``fill(diff_dir) -> (diff_id, size)``, then publish it.

    Returns the record and whether it is new: the same content on the same
    parent is stored once (its ID is the chain ID).  On any error the staging
    directory is removed and the store is as it was.
    """
    if parent is not None and not os.path.isfile(layout.layer_json(parent)):
        raise NotFound(f"no such parent layer: {parent}")
    staged = new_staging(layout.staging)
    try:
        os.mkdir(f"{staged}/diff", 0o755)
        diff_id, size = fill(f"{staged}/diff")
        layer_id = chain_id(parent, diff_id)
        with lock:
            if os.path.isfile(layout.layer_json(layer_id)):
                return load_layer(layout, layer_id), False
            record = LayerRecord(
                id=layer_id,
                diff_id=diff_id,
                parent=parent,
                size=size,
                created=now_rfc3339(),
                comment=comment,
                link=layer_link(layer_id),
            )
            write_atomic(f"{staged}/layer.json", dump_json(record.to_json()))
            os.makedirs(layout.links, exist_ok=True)
            # The link first (dangling until the rename): a sweep removes
            # dangling links, so a crash in between leaves nothing visible.
            symlink_atomic(f"../layers/{hex_of(layer_id)}/diff", layout.link(record.link))
            os.makedirs(layout.layers, exist_ok=True)
            publish(staged, layout.layer_dir(layer_id))
            return record, True
    finally:
        discard(staged)


def from_tar(source: BinaryIO):
    """A fill function that extracts a (possibly gzipped) tar stream."""

    def fill(diff: str) -> tuple[str, int]:
        from ..archive.extract import extract_layer

        result = extract_layer(source, diff)
        return result.diff_id, result.size

    return fill


def from_directory(src: str):
    """A fill function that copies a directory through its canonical tar.

    Going through the tar makes the stored files exactly what the diff_id
    describes, and reuses the one hardened extractor.
    """

    def fill(diff: str) -> tuple[str, int]:
        from ..archive.extract import extract_layer
        from ..archive.generate import write_layer_tar

        if not os.path.isdir(src):
            raise InvalidArgument(f"not a directory: {src}")
        tar_path = f"{os.path.dirname(diff)}/layer.tar"
        try:
            with open(tar_path, "w+b") as tar:
                diff_id = write_layer_tar(src, tar)
                tar.seek(0)
                result = extract_layer(tar, diff)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tar_path)
        assert result.diff_id == diff_id, "a generated tar must extract to itself"
        return diff_id, result.size

    return fill


def remove_layer(layout: StoreLayout, layer_id: str) -> None:
    """Delete a layer (the caller checks that nothing uses it, under the lock)."""
    record = load_layer(layout, layer_id)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.link(record.link))
    retire(layout.layer_dir(layer_id), layout.staging)


def sweep_links(layout: StoreLayout) -> list[str]:
    """Remove short links and name links whose layer or container is gone."""
    removed = []
    for directory in (layout.links, layout.names):
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        for name in names:
            path = f"{directory}/{name}"
            if not os.path.exists(path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                removed.append(path)
    return removed
