"""The store's housekeeping: the lock, first-use setup, sweeping interrupted work."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..store import layers as lyrs
from ..store.atomic import sweep_staging, write_atomic
from ..store.layout import StoreLayout
from ..store.lock import StoreLock
from ..store.records import ContainerRecord, dump_json, load_json
from ..store.state import RunState

if TYPE_CHECKING:
    pass


STORE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ContainerState:
    record: ContainerRecord
    mounted: str | None  # "namespace", "host" or None
    pin: str | None
    run: RunState = RunState()

    def to_json(self) -> dict[str, Any]:
        return {
            **self.record.to_json(),
            "mounted": self.mounted,
            "pin": self.pin,
            "state": self.run.status,
            "pid": self.run.pid,
            "exit_code": self.run.exit_code,
            "oom_killed": self.run.oom_killed,
            "run": self.run.to_json(),
        }


class StoreBase:
    """The store's housekeeping: the lock, first-use setup, sweeping interrupted work."""

    def __init__(self, root: str | None = None, run_root: str | None = None) -> None:
        self.layout = StoreLayout.at(root, run_root)
        self.lock = StoreLock(self.layout.lock)

    @contextlib.contextmanager
    def _mutation(self):
        """Lock the store, making it (and probing its filesystem) on first use."""
        self._ensure_root()
        with self.lock:
            self._sweep()
            yield

    def _sweep(self) -> None:
        """Remove what interrupted commands left: staging dirs, dangling links."""
        with self.lock:
            sweep_staging(self.layout.staging)
            lyrs.sweep_links(self.layout)

    def _ensure_root(self) -> None:
        layout = self.layout
        if os.path.isfile(layout.store_json):
            return
        os.makedirs(layout.root, mode=0o711, exist_ok=True)
        from ..kernel.probe import probe_backing_fs

        backing = probe_backing_fs(layout.root)
        if not backing.usable:
            raise StoreError(
                f"the store root {layout.root} cannot hold overlay layers: " + "; ".join(backing.problems),
                hint="choose another --root on ext4, xfs (ftype=1), btrfs or tmpfs",
            )
        with StoreLock(layout.lock):
            if not os.path.isfile(layout.store_json):
                write_atomic(layout.store_json, dump_json({"format": STORE_FORMAT, "backing": backing.to_json()}))

    def backing(self) -> dict[str, Any] | None:
        with contextlib.suppress(FileNotFoundError):
            return load_json(self.layout.store_json).get("backing")
        return None
