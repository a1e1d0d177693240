"""LayerStore: the Python API that the CLI and the benchmarks call.

A store has parts, each a handful of verbs returning typed records::

    from overlayctl import LayerStore

    store = LayerStore(root="/var/lib/overlayctl")
    image = store.images.import_rootfs("/srv/rootfs", tag="base")   # a one-layer image
    ctr = store.containers.create("base", name="web")                # init layer + empty upper
    store.containers.mount("web")        # overlay in a new, pinned mount namespace
    print(store.containers.plan("web").lowers)                        # what is mounted, top first
    store.containers.commit("web", tag="base:v2", message="add config")
    store.containers.unmount("web")
    store.containers.remove("web")

Every change is one transaction: long work (unpacking a layer, copying an
upper) happens in staging without the lock, and the publishing step runs
under the store lock with a journal, so a failed, interrupted or killed
call leaves the store as it was, or finished.
"""

from __future__ import annotations

import importlib
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..store.lock import DEFAULT_TIMEOUT
from ._context import STORE_FORMAT, StoreContext
from ._layers import Layers

if TYPE_CHECKING:
    from ._containers import Containers, ContainerState
    from ._images import HistoryEntry, ImageRemoval, Images
    from ._mounts import MountedDir, Mounts, OverlayMount, union_workdir
    from ._pull import PulledLayer, PullReport
    from ._push import PushedBlob, PushReport
    from ._registries import Registries
    from ._running import NetworkInfo, Runtime
    from ._system import CheckReport, DiskUsage, ImageUsage, PruneReport, System

#: Names imported when first asked for: a command loads only the parts it uses (start-up time).
_LAZY = {
    "_containers": ("Containers", "ContainerState"),
    "_images": ("HistoryEntry", "ImageRemoval", "Images"),
    "_mounts": ("MountedDir", "Mounts", "OverlayMount", "union_workdir"),
    "_pull": ("PulledLayer", "PullReport"),
    "_push": ("PushedBlob", "PushReport"),
    "_registries": ("Registries",),
    "_running": ("NetworkInfo", "Runtime"),
    "_system": ("CheckReport", "DiskUsage", "ImageUsage", "PruneReport", "System"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "STORE_FORMAT",
    "CheckReport",
    "ContainerState",
    "Containers",
    "DiskUsage",
    "HistoryEntry",
    "ImageRemoval",
    "ImageUsage",
    "Images",
    "LayerStore",
    "Layers",
    "MountedDir",
    "Mounts",
    "NetworkInfo",
    "OverlayMount",
    "PruneReport",
    "PulledLayer",
    "PullReport",
    "PushReport",
    "PushedBlob",
    "Registries",
    "Runtime",
    "System",
    "union_workdir",
]


class LayerStore:
    """A layer store at ``root`` with runtime state under ``run_root``.

    Its parts: ``layers`` (read-only, content addressed by chain ID),
    ``images`` (ordered stacks of layers, and tags), ``containers`` (an
    image plus an init layer and a writable upper), ``runtime`` (running
    containers), ``mounts`` (what the kernel has mounted), ``system``
    (check, disk usage, prune) and ``registries`` (pull, push, login).  References accept tags, names and unique
    ID prefixes everywhere.  ``lock_timeout`` bounds the wait for another
    process's change to the store.

    ``backing_probe(root) -> BackingFs`` and ``mounted_below(path) -> [mount
    points]`` replace the two questions the store asks the kernel (is this
    filesystem fit for overlay layers; is anything mounted below a removed
    directory), so that the store's rules can be tested without root.
    """

    def __init__(
        self,
        root: str | None = None,
        run_root: str | None = None,
        *,
        lock_timeout: float = DEFAULT_TIMEOUT,
        backing_probe=None,
        mounted_below=None,
    ) -> None:
        ctx = StoreContext(root, run_root, lock_timeout, backing_probe=backing_probe, mounted_below=mounted_below)
        self.layout = ctx.layout
        self.layers = Layers(ctx)
        self._ctx = ctx

    # The other parts are made when first used, so that a command imports only what it needs.

    @cached_property
    def images(self) -> Images:
        from ._images import Images

        return Images(self._ctx, self.layers)

    @cached_property
    def containers(self) -> Containers:
        from ._containers import Containers

        return Containers(self._ctx, self.layers, self.images)

    @cached_property
    def runtime(self) -> Runtime:
        from ._running import Runtime

        return Runtime(self._ctx, self.images, self.containers)

    @cached_property
    def mounts(self) -> Mounts:
        from ._mounts import Mounts

        return Mounts(self._ctx, self.containers)

    @cached_property
    def system(self) -> System:
        from ._system import System

        return System(self._ctx, self.containers, self.runtime)

    @cached_property
    def registries(self) -> Registries:
        from ._registries import Registries

        return Registries(self._ctx, self.layers)

    @property
    def lock(self):
        """The store lock (tests hold it to see that readers do not wait)."""
        return self._ctx.lock
