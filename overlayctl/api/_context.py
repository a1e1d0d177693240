"""What every part of the API shares: the store's layout, its lock, transactions, the format."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..errors import InUse, StoreError
from ..store import layers as lyrs
from ..store.atomic import sweep_staging, write_atomic
from ..store.layout import StoreLayout
from ..store.lock import DEFAULT_TIMEOUT, StoreLock
from ..store.records import dump_json, load_json
from ..store.transaction import ROLLBACK, Transaction, empty_trash, sweep_trash, transaction

if TYPE_CHECKING:
    from ..kernel.probe import BackingFs

#: The store's on-disk format.  2: journal.json and trash/, layer inode
#: counts and content digests.  A format-1 store is migrated on first write.
STORE_FORMAT = 2


class StoreContext:
    """The layout and lock of one store, and the one way to change it: ``transaction``."""

    def __init__(
        self,
        root: str | None,
        run_root: str | None,
        lock_timeout: float = DEFAULT_TIMEOUT,
        *,
        backing_probe: Callable[[str], BackingFs] | None = None,
        mounted_below: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.layout = StoreLayout.at(root, run_root)
        self.lock = StoreLock(self.layout.lock, timeout=lock_timeout)
        self.format = self._read_format()
        self._backing_probe = backing_probe
        if mounted_below is not None:
            self.mounted_below = mounted_below

    def _read_format(self) -> int | None:
        try:
            found = load_json(self.layout.store_json).get("format")
        except FileNotFoundError:
            return None
        if not isinstance(found, int) or found > STORE_FORMAT:
            raise StoreError(
                f"the store at {self.layout.root} has format {found}; this overlayctl reads formats up to "
                f"{STORE_FORMAT}",
                hint="use a newer overlayctl, or another --root",
            )
        return found

    @contextlib.contextmanager
    def transaction(self, verb: str, *, on_crash: str = ROLLBACK) -> Iterator[Transaction]:
        """Lock the store for one verb's publishing step (see ``store.transaction``).

        Makes the store on first use, migrates an older format, sweeps what
        dead processes left, and deletes what the verb removed once the lock
        is released.
        """
        assert not self.lock.held, "a transaction inside a transaction"
        self.ensure_root()
        txn = None
        try:
            with transaction(self.layout, self.lock, verb, on_crash=on_crash) as txn:
                if self.format != STORE_FORMAT:
                    self._migrate(txn)
                sweep_staging(self.layout.staging)
                lyrs.sweep_links(self.layout)
                yield txn
        except BaseException:
            if txn is not None and txn.trash_dir:
                with contextlib.suppress(InUse):
                    empty_trash(txn.trash_dir, self.mounted_below)
            raise
        if txn.trash_dir:
            empty_trash(txn.trash_dir, self.mounted_below)
        sweep_trash(self.layout, self.mounted_below)

    def mounted_below(self, path: str) -> list[str]:
        """Mount points at or below path, here and in every mount namespace we pinned."""
        from ..kernel.mountpoints import mounts_below

        try:
            pins = [f"{self.layout.ns_dir}/{n}" for n in os.listdir(self.layout.ns_dir)]
        except FileNotFoundError:
            pins = []
        return mounts_below(path, pins)

    def ensure_root(self) -> None:
        """Make the store on first use, refusing a backing filesystem overlay cannot use."""
        layout = self.layout
        if self.format is not None:
            return
        os.makedirs(layout.root, mode=0o711, exist_ok=True)
        probe = self._backing_probe
        if probe is None:
            from ..kernel.probe import probe_backing_fs as probe
        backing = probe(layout.root)
        if not backing.usable:
            raise StoreError(
                f"the store root {layout.root} cannot hold overlay layers: " + "; ".join(backing.problems),
                hint="choose another --root on ext4, xfs (ftype=1), btrfs or tmpfs",
            )
        with self.lock:
            if not os.path.isfile(layout.store_json):
                write_atomic(layout.store_json, dump_json({"format": STORE_FORMAT, "backing": backing.to_json()}))
        self.format = self._read_format()

    def _migrate(self, txn: Transaction) -> None:
        """Bring an older store to STORE_FORMAT (under the lock, before anything else)."""
        from ..store.migrate import migrate

        migrate(txn, self.format or 1, STORE_FORMAT)
        self.format = STORE_FORMAT

    def backing(self) -> dict | None:
        """What the store's filesystem was found to be when the store was made."""
        with contextlib.suppress(FileNotFoundError):
            return load_json(self.layout.store_json).get("backing")
        return None
