"""store.system: check and repair the store, disk usage, prune, and what the kernel offers."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..store import containers as ctrs
from ..store import images as imgs
from ..store import layers as lyrs
from ..store.check import REAP, Problem
from ..store.state import read_state
from ..store.transaction import ROLLFORWARD
from ._containers import Containers
from ._context import STORE_FORMAT, StoreContext
from ._images import unused_layers
from ._running import Runtime


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``check`` found: problems left, and those repair fixed."""

    problems: list[Problem]
    repaired: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"problems": [p.to_json() for p in self.problems], "removed": [p.to_json() for p in self.repaired]}


@dataclass(frozen=True, slots=True)
class ImageUsage:
    id: str
    tags: list[str]
    size: int  # all its layers
    shared: int  # its layers that another image also uses
    unique: int  # its layers no other image uses
    containers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tags": self.tags,
            "size": self.size,
            "shared_size": self.shared,
            "unique_size": self.unique,
            "containers": self.containers,
        }


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Like ``docker system df``: images, layers and containers, with what prune could free.

    Layer sizes and inode counts were recorded when each layer was made;
    only containers' uppers are measured now.
    """

    images: list[ImageUsage]
    layers: list[dict[str, Any]]  # id, size, inodes, images (how many use it)
    containers: list[dict[str, Any]]  # id, name, image, size, inodes, running

    image_layers: dict[str, list[str]] = field(default_factory=dict, repr=False)  # image ID -> layer IDs
    cache: tuple[int, int] = (0, 0)  # files and bytes in the download cache of pulls

    def summary(self) -> list[dict[str, Any]]:
        """One row per kind: total, active, size, reclaimable (docker system df's columns)."""
        active = [i for i in self.images if i.containers]
        used = {layer for i in active for layer in self.image_layers.get(i.id, ())}
        layer_size = {layer["id"]: layer["size"] for layer in self.layers}
        total = sum(layer_size.values())
        stopped = [c for c in self.containers if not c["running"]]
        return [
            {
                "type": "Images",
                "total": len(self.images),
                "active": len(active),
                "size": total,
                "reclaimable": total - sum(layer_size.get(layer, 0) for layer in used),
            },
            {
                "type": "Containers",
                "total": len(self.containers),
                "active": len(self.containers) - len(stopped),
                "size": sum(c["size"] for c in self.containers),
                "reclaimable": sum(c["size"] for c in stopped),
            },
            {
                "type": "Download cache",
                "total": self.cache[0],
                "active": 0,
                "size": self.cache[1],
                "reclaimable": self.cache[1],
            },
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "images": [i.to_json() for i in self.images],
            "layers": self.layers,
            "containers": self.containers,
        }


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What ``prune`` removed, and the bytes it freed."""

    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    freed: int = 0
    cache: int = 0  # bytes of the download cache emptied (counted in freed)

    def to_json(self) -> dict[str, Any]:
        return {
            "containers": self.containers,
            "images": self.images,
            "layers": self.layers,
            "leftovers": self.leftovers,
            "freed": self.freed,
            "cache": self.cache,
        }


class System:
    """The store as a whole: its health, its size, its garbage; and the kernel's overlay."""

    def __init__(self, ctx: StoreContext, containers: Containers, runtime: Runtime) -> None:
        self._ctx = ctx
        self._layout = ctx.layout
        self._containers = containers
        self._runtime = runtime

    def check(self, *, repair: bool = False, verify_content: bool = False) -> CheckReport:
        """Problems of the store; with repair, fix those that are safe to fix.

        ``verify_content`` re-hashes every layer's files against the digest
        recorded when it was made (reads every byte of the store).
        """
        from ..store.check import check_store
        from ..store.check import repair as repair_store

        if not os.path.isdir(self._layout.root):
            return CheckReport([])
        with self._ctx.lock.shared():
            found = check_store(self._layout, verify_content=verify_content) + self._dead_monitors()
        if not repair or not any(p.garbage for p in found):
            return CheckReport(found)
        self._runtime.reap()
        with self._ctx.transaction("check --repair", on_crash=ROLLFORWARD) as txn:
            repair_store(txn, check_store(self._layout))
        with self._ctx.lock.shared():
            left = check_store(self._layout, verify_content=verify_content) + self._dead_monitors()
        return CheckReport(left, [p for p in found if p not in left])

    def _dead_monitors(self) -> list[Problem]:
        """Containers recorded as running whose monitor is gone (repair reaps them)."""
        return [
            Problem(
                self._layout.container_dir(s.record.id),
                f"container {s.record.name}: {s.run.error or 'ended, not cleaned up (its overlayctl was killed)'}",
                REAP,
            )
            for s in self._containers.list()
            if s.run.status == "exited" and read_state(self._layout, s.record.id).status == "running"
        ]

    def df(self) -> DiskUsage:
        """Disk usage by image, layer and container (see DiskUsage)."""
        from ..archive.generate import dir_usage
        from ..registry.cache import BlobCache

        layout = self._layout
        layers = {r.id: r for r in lyrs.list_layers(layout)}
        images = imgs.list_images(layout)
        tags = imgs.read_tags(layout, damaged_ok=True)
        containers = self._containers.list()
        users = Counter(layer for i in images for layer in set(i.layers))
        by_image = Counter(s.record.image for s in containers)
        image_rows = []
        for image in images:
            own = [layers[x].size for x in set(image.layers) if x in layers and users[x] == 1]
            total = sum(layers[x].size for x in set(image.layers) if x in layers)
            row = ImageUsage(
                image.id, imgs.tags_of(tags, image.id), total, total - sum(own), sum(own), by_image[image.id]
            )
            image_rows.append(row)
        layer_rows = [{"id": r.id, "size": r.size, "inodes": r.inodes, "images": users[r.id]} for r in layers.values()]
        container_rows = []
        for s in containers:
            size, inodes = _usage(dir_usage, layout.upper(s.record.id))
            running = s.run.status == "running"
            row = {"id": s.record.id, "name": s.record.name, "image": s.record.image, "size": size, "inodes": inodes}
            container_rows.append({**row, "running": running})
        cache = BlobCache(layout.blob_cache).usage()
        return DiskUsage(image_rows, layer_rows, container_rows, {i.id: i.layers for i in images}, cache)

    def prune(self, *, all_images: bool = False) -> PruneReport:
        """Remove stopped (unmounted) containers, dangling images (with all_images: every
        image no container uses), layers nothing uses, what dead processes left, and the
        download cache of pulls.
        """
        from ..archive.generate import dir_usage
        from ..registry.cache import BlobCache
        from ..store.atomic import abandoned

        if not os.path.isdir(self._layout.root):
            return PruneReport()
        self._runtime.reap()
        layout = self._layout
        # The transaction sweeps these first: what dead processes left in staging and trash.
        leftovers = [f"{d}/{n}" for d in (layout.staging, layout.trash) for n in _listdir(d) if abandoned(n)]
        freed = 0
        with self._ctx.transaction("system prune", on_crash=ROLLFORWARD) as txn:
            # Decide everything first: a damaged record fails the prune before it removes anything.
            tags = imgs.read_tags(layout)
            stopped = [s.record for s in self._containers.list() if s.run.status != "running" and not s.mounted]
            gone_ids = {r.id for r in stopped}
            in_use = {c.image for c in ctrs.list_containers(layout) if c.id not in gone_ids}
            images = imgs.list_images(layout)
            parents = {i.parent for i in images if i.parent}
            doomed = [
                i
                for i in images
                if i.id not in in_use and (all_images or (not imgs.tags_of(tags, i.id) and i.id not in parents))
            ]
            gone_images = {i.id for i in doomed}
            layers = unused_layers(layout, _parents_first(layout), images_gone=gone_images, containers_gone=gone_ids)
            for record in stopped:
                freed += _usage(dir_usage, layout.upper(record.id))[0]
                self._containers.release(txn, record)
            paths = [p for r in stopped for p in ctrs.removal_paths(layout, r)]
            paths += [layout.image_json(i) for i in gone_images] + lyrs.removal_paths(layout, layers)
            txn.remove(paths, untag=[ref for i in doomed for ref in imgs.tags_of(tags, i.id)])
            freed += sum(r.size for r in layers)
            cache = BlobCache(layout.blob_cache).clear()
        return PruneReport(
            [r.name for r in stopped], [i.id for i in doomed], [r.id for r in layers], leftovers, freed + cache, cache
        )

    def info(self) -> dict[str, Any]:
        """The kernel's overlay support, the store's filesystem, and the OCI runtime containers run with."""
        from ..kernel import probe
        from ..kernel.mount import default_api
        from ..plan.mountplan import MAX_LOWER_LAYERS
        from ..runtime import oci

        supported = probe.overlay_supported()
        where = self._layout.root
        while not os.path.exists(where):
            where = os.path.dirname(where)
        return {
            "kernel": probe.kernel_release(),
            "overlay": supported,
            "module_parameters": probe.module_parameters() if supported else {},
            "mount_api": default_api().value if supported else None,
            "max_lower_layers": MAX_LOWER_LAYERS,
            "root": self._layout.root,
            "run_root": self._layout.run_root,
            "store_format": self._ctx.format or STORE_FORMAT,
            "backing": probe.probe_backing_fs(where).to_json(),
            "containers": oci.describe(),
        }


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _usage(measure, path: str) -> tuple[int, int]:
    try:
        return measure(path)
    except OSError:
        return 0, 0


def _parents_first(layout) -> list[str]:
    """Every layer ID, each after its parent."""
    parent = {r.id: r.parent for r in lyrs.list_layers(layout)}
    depth: dict[str, int] = {}
    for layer_id in parent:
        chain = []
        while layer_id in parent and layer_id not in depth:
            chain.append(layer_id)
            layer_id = parent[layer_id]
        base = depth.get(layer_id, -1)
        for n, link in enumerate(reversed(chain), start=1):
            depth[link] = base + n
    return sorted(parent, key=depth.__getitem__)
