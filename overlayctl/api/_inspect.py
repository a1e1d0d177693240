"""Looking at mounts, plain union mounts, and what the kernel offers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, NotFound
from ..plan.mountplan import MountPlan
from ..plan.options import check_layer_count, merge_options, parse_feature_options
from ..store import containers as ctrs
from ._base import StoreBase

if TYPE_CHECKING:
    pass


class InspectAPI(StoreBase):
    """Looking at mounts, plain union mounts, and what the kernel offers."""

    def mounts(self, *, pid: int | None = None, container: str | None = None) -> list[dict[str, Any]]:
        """Overlay mounts of a mount namespace, each directory mapped to the store."""
        from ..plan.mountinfo import decode_overlay_options, overlay_mounts, parse_mountinfo

        text = self._read_mountinfo(pid, container)
        reports = []
        for info in overlay_mounts(parse_mountinfo(text)):
            decoded = decode_overlay_options(info)
            reports.append(
                {
                    "mount_id": info.mount_id,
                    "target": info.mount_point,
                    "readonly": decoded.readonly,
                    "lowers": [self._describe(p) for p in decoded.lowers],
                    "upper": self._describe(decoded.upper) if decoded.upper else None,
                    "work": self._describe(decoded.work) if decoded.work else None,
                    "options": [k if v is None else f"{k}={v}" for k, v in decoded.options],
                }
            )
        return reports

    def _describe(self, path: str) -> dict[str, Any]:
        return {"path": path, "store": ctrs.describe_path(self.layout, path)}

    def _read_mountinfo(self, pid: int | None, container: str | None) -> str:
        from ..kernel import ns

        if container is not None:
            state = self.container(container)
            if state.mounted == "namespace":
                return ns.run_in_namespace(state.pin, lambda: _read("/proc/self/mountinfo"))
            if state.mounted == "host":
                return _read("/proc/self/mountinfo")
            if state.run.status == "running" and state.run.pid:
                # A running container's root was pivoted: its mounts are seen from its PID 1.
                return _read(f"/proc/{state.run.pid}/mountinfo")
            raise InvalidArgument(f"container {state.record.name} is neither mounted nor running")
        path = f"/proc/{pid}/mountinfo" if pid is not None else "/proc/self/mountinfo"
        try:
            return _read(path)
        except FileNotFoundError:
            raise NotFound(f"no such process: {pid}") from None

    def mount_union(
        self, lowers: Sequence[str], target: str, *, upper: str | None = None, options: Iterable[str] = ()
    ) -> MountPlan:
        """Union-mount plain directories at target in the caller's namespace (first lower on top)."""
        from ..kernel import mount as kmount

        plan = self.union_plan(lowers, target, upper=upper, options=options)
        if plan.work is not None:
            os.makedirs(plan.work, exist_ok=True)
        if len(plan.lowers) == 2 and plan.lowers[-1] == self.layout.empty:
            os.makedirs(self.layout.empty, exist_ok=True)
        kmount.apply(plan)
        return plan

    def union_plan(
        self, lowers: Sequence[str], target: str, *, upper: str | None = None, options: Iterable[str] = ()
    ) -> MountPlan:
        if not lowers:
            raise InvalidArgument("give at least one --lower directory")
        paths = [os.path.abspath(p) for p in lowers]
        for path in paths + ([os.path.abspath(upper)] if upper else []) + [os.path.abspath(target)]:
            if not os.path.isdir(path):
                raise NotFound(f"no such directory: {path}")
        work = None
        if upper:
            upper = os.path.abspath(upper)
            work = union_workdir(upper)
        elif len(paths) == 1:
            # The kernel needs two lowers for a read-only union: add an empty one.
            paths.append(self.layout.empty)
        check_layer_count(len(paths))
        return MountPlan(
            lowers=tuple(paths),
            target=os.path.abspath(target),
            upper=upper,
            work=work,
            options=merge_options(parse_feature_options(options)),
        )

    def unmount_union(self, target: str) -> None:
        """Unmount a union made by mount_union, and remove the work dir it made."""
        import shutil

        from ..kernel import mount as kmount
        from ..plan.mountinfo import decode_overlay_options, overlay_mounts, parse_mountinfo

        target = os.path.abspath(target)
        mine = [m for m in overlay_mounts(parse_mountinfo(_read("/proc/self/mountinfo"))) if m.mount_point == target]
        if not mine:
            raise InvalidArgument(f"{target} is not an overlay mount point")
        kmount.unmount(target)
        decoded = decode_overlay_options(mine[-1])
        if decoded.upper and decoded.work == union_workdir(decoded.upper):
            shutil.rmtree(decoded.work, ignore_errors=True)

    def check(self, *, repair: bool = False) -> dict[str, list[dict[str, Any]]]:
        """Problems of the store (records against directories); with repair, remove garbage."""
        from ..store.check import check_store
        from ..store.check import repair as repair_store

        if not os.path.isdir(self.layout.root):
            return {"problems": [], "removed": []}
        with self.lock:
            problems = check_store(self.layout)
            removed = repair_store(self.layout, problems) if repair else []
        left = [p for p in problems if p not in removed]
        return {"problems": [p.to_json() for p in left], "removed": [p.to_json() for p in removed]}

    def info(self) -> dict[str, Any]:
        from ..kernel import probe
        from ..kernel.mount import default_api
        from ..plan.mountplan import MAX_LOWER_LAYERS

        supported = probe.overlay_supported()
        where = self.layout.root
        while not os.path.exists(where):
            where = os.path.dirname(where)
        return {
            "kernel": probe.kernel_release(),
            "overlay": supported,
            "module_parameters": probe.module_parameters() if supported else {},
            "mount_api": default_api().value if supported else None,
            "max_lower_layers": MAX_LOWER_LAYERS,
            "root": self.layout.root,
            "run_root": self.layout.run_root,
            "backing": probe.probe_backing_fs(where).to_json(),
        }


def union_workdir(upper: str) -> str:
    """The work directory made beside an upper for a plain union mount."""
    parent, name = os.path.split(upper.rstrip("/"))
    return os.path.join(parent, f".{name}.overlayctl-work")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
