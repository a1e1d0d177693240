"""Bringing a store of an older format up to date (under the lock, before anything else).

Format 1 to 2: layer records gain ``inodes`` and ``content_digest``, which
format 1 did not record; they are measured once from each layer's files.
``journal.json`` and ``trash/`` need nothing: they are made when used.
"""

from __future__ import annotations

from dataclasses import replace

from .atomic import write_atomic
from .layers import content_digest, layer_ids, load_layer
from .records import dump_json
from .transaction import Transaction


def migrate(txn: Transaction, found: int, wanted: int) -> None:
    """Rewrite what differs between format ``found`` and ``wanted``, then store.json."""
    from .records import load_json

    layout = txn.layout
    if found < 2:
        _measure_layers(txn)
    store = load_json(layout.store_json)
    write_atomic(layout.store_json, dump_json({**store, "format": wanted}))


def _measure_layers(txn: Transaction) -> None:
    from ..archive.generate import dir_usage

    layout = txn.layout
    for layer_id in layer_ids(layout):
        record = load_layer(layout, layer_id)
        if record.content_digest:
            continue
        size, inodes = dir_usage(layout.diff(layer_id))
        record = replace(record, size=size, inodes=inodes, content_digest=content_digest(layout.diff(layer_id)))
        write_atomic(layout.layer_json(layer_id), dump_json(record.to_json()))
