"""Layers on disk: create from a tar stream or a directory, list, export, remove.

A layer made from a tar keeps its tar-split (``layout.tar_split``, format in
``archive.tarsplit``), written in staging by the same pass that extracts and
hashes the tar, and published with the layer in one rename: export then
writes that tar again, byte for byte. A layer made from a directory or an
upper has none and exports its canonical tar, which is its diff_id's tar.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ..errors import ArchiveError, InvalidArgument, NotFound, StoreError
from .atomic import discard, new_staging, publish, symlink_atomic, write_atomic
from .ids import chain_id, resolve_prefix, short_id, short_link
from .layout import TAR_SPLIT, StoreLayout, hex_of
from .records import LayerRecord, damaged, dump_json, load_each, load_json, now_rfc3339

if TYPE_CHECKING:
    from ..plan.idmap import IdRange
    from .transaction import Transaction


def layer_ids(layout: StoreLayout) -> list[str]:
    try:
        names = os.listdir(layout.layers)
    except FileNotFoundError:
        return []
    return ["sha256:" + n for n in names]


def load_layer(layout: StoreLayout, layer_id: str) -> LayerRecord:
    path = layout.layer_json(layer_id)
    try:
        return LayerRecord.from_json(load_json(path))
    except FileNotFoundError:
        raise NotFound(f"no such layer: {layer_id}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise damaged(path, f"missing or bad field {exc}") from None


def list_layers(layout: StoreLayout) -> list[LayerRecord]:
    """Every layer, oldest first; one removed meanwhile is left out, a damaged one skipped with a warning."""
    records = load_each(layer_ids(layout), lambda layer_id: load_layer(layout, layer_id))
    return sorted(records, key=lambda r: (r.created, r.id))


def resolve_layer(layout: StoreLayout, ref: str) -> str:
    return resolve_prefix(ref, layer_ids(layout), "layer")


def layer_link(layer_id: str) -> str:
    return short_link(layer_id)


@dataclass(frozen=True, slots=True)
class LayerFiles:
    """What a fill function made: the digest of the tar as given, and the files' usage."""

    diff_id: str
    size: int
    inodes: int
    content_digest: str  # sha256 of the files' canonical tar (== diff_id for a canonical source)


@dataclass(frozen=True, slots=True)
class StagedLayer:
    """A layer built in staging, not yet published: its diff/ directory and what it holds."""

    path: str  # the staging directory; diff/ inside
    files: LayerFiles

    @property
    def diff_id(self) -> str:
        return self.files.diff_id

    def discard(self) -> None:
        discard(self.path)


Fill = Callable[[str], LayerFiles]


def stage_layer(layout: StoreLayout, fill: Fill) -> StagedLayer:
    """Build a layer's files in staging with ``fill(diff_dir)``.

    Needs no lock: the staging directory is this process's own.  On error
    nothing is left behind.
    """
    staged = new_staging(layout.staging)
    try:
        os.mkdir(f"{staged}/diff", 0o755)
        return StagedLayer(staged, fill(f"{staged}/diff"))
    except BaseException:
        discard(staged)
        raise


def publish_layer(
    txn: Transaction, staged: StagedLayer, *, parent: str | None, comment: str = "", blob: dict | None = None
) -> tuple[LayerRecord, bool]:
    """Publish a staged layer on parent; returns the record and whether it is new.

    The same content on the same parent is stored once (its ID is the chain
    ID): then the staged copy is dropped and the stored record returned.
    """
    layout = txn.layout
    if parent is not None and not os.path.isfile(layout.layer_json(parent)):
        raise NotFound(f"no such parent layer: {parent}")
    layer_id = chain_id(parent, staged.diff_id)
    if os.path.isdir(layout.layer_dir(layer_id)):
        _adopt_tar_split(layout, layer_id, staged)
        staged.discard()
        return load_layer(layout, layer_id), False
    record = LayerRecord(
        id=layer_id,
        diff_id=staged.diff_id,
        parent=parent,
        size=staged.files.size,
        inodes=staged.files.inodes,
        content_digest=staged.files.content_digest,
        created=now_rfc3339(),
        comment=comment,
        link=layer_link(layer_id),
        blob=blob,
    )
    write_atomic(f"{staged.path}/layer.json", dump_json(record.to_json()))
    os.makedirs(layout.links, exist_ok=True)
    os.makedirs(layout.layers, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.link(record.link))  # a dangling link of a layer removed before
    txn.creating(layout.link(record.link), layout.layer_dir(layer_id))
    symlink_atomic(f"../layers/{hex_of(layer_id)}/diff", layout.link(record.link))
    publish(staged.path, layout.layer_dir(layer_id))
    return record, True


def _adopt_tar_split(layout: StoreLayout, layer_id: str, staged: StagedLayer) -> None:
    """Give a stored layer without a tar-split (from an older store) the staged one.

    The same chain ID means the same tar, extracted the same way. One rename
    under the lock: the layer has it or not, both of which are whole.
    """
    staged_split = f"{staged.path}/{TAR_SPLIT}"
    if os.path.exists(staged_split) and not os.path.exists(layout.tar_split(layer_id)):
        os.rename(staged_split, layout.tar_split(layer_id))


def from_tar(source: BinaryIO) -> Fill:
    """A fill function that extracts a (possibly gzipped) tar stream and records its tar-split."""

    def fill(diff: str) -> LayerFiles:
        from ..archive.extract import extract_layer

        tar_split = f"{os.path.dirname(diff)}/{TAR_SPLIT}"
        result = extract_layer(source, diff, tar_split=tar_split)
        # With a tar-split, export gives the tar back and is checked against the diff_id:
        # no second pass over the files.  Without one, the canonical tar's digest.
        digest = result.diff_id if os.path.exists(tar_split) else content_digest(diff)
        return LayerFiles(result.diff_id, result.size, result.inodes, digest)

    return fill


def from_directory(src: str, *, id_shift: IdRange | None = None) -> Fill:
    """A fill function that copies a directory through its canonical tar.

    Going through the tar makes the stored files exactly what the diff_id
    describes, and reuses the one hardened extractor.  ``id_shift`` shifts
    the owners of a user-namespaced container's upper back to the
    container's IDs (``archive.generate.write_layer_tar``), in the tar and
    so in the stored files.
    """

    def fill(diff: str) -> LayerFiles:
        from ..archive.extract import extract_layer
        from ..archive.generate import write_layer_tar

        if not os.path.isdir(src):
            raise InvalidArgument(f"not a directory: {src}")
        tar_path = f"{os.path.dirname(diff)}/layer.tar"
        try:
            with open(tar_path, "w+b") as tar:
                diff_id = write_layer_tar(src, tar, id_shift=id_shift)
                tar.seek(0)
                result = extract_layer(tar, diff)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tar_path)
        assert result.diff_id == diff_id, "a generated tar must extract to itself"
        return LayerFiles(diff_id, result.size, result.inodes, diff_id)

    return fill


def verify_content(layout: StoreLayout, record: LayerRecord) -> str | None:
    """Why a layer's files are not what was recorded when it was made, or None when they are.

    A layer with a tar-split must regenerate its original tar (its diff_id);
    another, its canonical tar with the digest recorded when it was made.
    Reads every byte of the layer.
    """

    has_split = os.path.exists(layout.tar_split(record.id))
    expected = record.diff_id if has_split else record.content_digest
    try:
        digest = export_layer(layout, record.id, _Discard())
    except StoreError as exc:
        return exc.message
    if digest != expected:
        return f"layer files hash to {digest}, not {expected}"
    return None


def export_layer(layout: StoreLayout, layer_id: str, out: BinaryIO) -> str:
    """Write a layer as a tar to ``out``; return its digest.

    A layer with a tar-split gives the tar it was imported from, byte for
    byte, and the digest is its diff_id; a StoreError says when its files
    changed since (checked before anything is written, except a change of
    content that keeps the size: found by the digest at the end, when the
    bytes already written to ``out`` are useless) or its tar-split is
    damaged. Other layers give their canonical tar.
    """
    from ..archive.generate import write_layer_tar

    tar_split = layout.tar_split(layer_id)
    if not os.path.exists(tar_split):
        return write_layer_tar(layout.diff(layer_id), out)
    from ..archive.regenerate import FilesChanged, write_original_tar

    record = load_layer(layout, layer_id)
    try:
        return write_original_tar(layout.diff(layer_id), tar_split, out, record.diff_id)
    except FilesChanged as exc:
        raise StoreError(
            f"layer {short_id(layer_id)}'s files changed since import: {exc.message}",
            hint=f"its original tar cannot be regenerated; remove {tar_split} to export its canonical tar",
        ) from None
    except ArchiveError as exc:
        raise StoreError(
            f"layer {short_id(layer_id)}'s tar-split is damaged: {exc.message}",
            hint=f"remove {tar_split} to export the layer's canonical tar instead",
        ) from None


def content_digest(diff: str) -> str:
    """The sha256 of the canonical tar of a layer's files: what --verify-content compares."""
    from ..archive.generate import write_layer_tar

    return write_layer_tar(diff, _Discard())


def removal_paths(layout: StoreLayout, records: list[LayerRecord]) -> list[str]:
    """What removing layers removes: their directories, then their short links."""
    return [layout.layer_dir(r.id) for r in records] + [layout.link(r.link) for r in records]


def restore_link(layout: StoreLayout, record: LayerRecord) -> None:
    """Make a layer's short link again (it is derived from the layer ID)."""
    os.makedirs(layout.links, exist_ok=True)
    symlink_atomic(f"../layers/{hex_of(record.id)}/diff", layout.link(record.link))


def sweep_links(layout: StoreLayout) -> list[str]:
    """Remove short links and name links whose layer or container is gone (under the lock)."""
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


class _Discard:
    """A sink that keeps nothing: for digests, where only the hash of the bytes matters."""

    def write(self, data: bytes) -> int:
        return len(data)
