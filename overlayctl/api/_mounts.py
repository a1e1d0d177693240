"""store.mounts: overlay mounts as the kernel shows them, and plain union mounts."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, NotFound
from ..plan.mountplan import MountPlan
from ..plan.options import check_layer_count, merge_options, parse_feature_options
from ..store import containers as ctrs
from ._containers import Containers
from ._context import StoreContext


@dataclass(frozen=True, slots=True)
class MountedDir:
    """A directory of an overlay mount, and what it is in the store (None: not ours)."""

    path: str
    store: dict[str, str] | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "store": self.store}


@dataclass(frozen=True, slots=True)
class OverlayMount:
    """One overlay mount of a mount namespace, each directory mapped back to the store."""

    mount_id: int
    target: str
    readonly: bool
    lowers: tuple[MountedDir, ...]
    upper: MountedDir | None
    work: MountedDir | None
    options: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "mount_id": self.mount_id,
            "target": self.target,
            "readonly": self.readonly,
            "lowers": [d.to_json() for d in self.lowers],
            "upper": self.upper.to_json() if self.upper else None,
            "work": self.work.to_json() if self.work else None,
            "options": list(self.options),
        }


class Mounts:
    """Overlay mounts as the kernel reports them, and union mounts of plain directories."""

    def __init__(self, ctx: StoreContext, containers: Containers) -> None:
        self._layout = ctx.layout
        self._containers = containers

    def list(self, *, pid: int | None = None, container: str | None = None) -> list[OverlayMount]:
        """Overlay mounts of a mount namespace (ours, a process's or a container's)."""
        from ..plan.mountinfo import decode_overlay_options, overlay_mounts, parse_mountinfo

        mounts = []
        for info in overlay_mounts(parse_mountinfo(self._read_mountinfo(pid, container))):
            decoded = decode_overlay_options(info)
            mounts.append(
                OverlayMount(
                    mount_id=info.mount_id,
                    target=info.mount_point,
                    readonly=decoded.readonly,
                    lowers=tuple(self._describe(p) for p in decoded.lowers),
                    upper=self._describe(decoded.upper) if decoded.upper else None,
                    work=self._describe(decoded.work) if decoded.work else None,
                    options=tuple(k if v is None else f"{k}={v}" for k, v in decoded.options),
                )
            )
        return mounts

    def _describe(self, path: str) -> MountedDir:
        return MountedDir(path, ctrs.describe_path(self._layout, path))

    def _read_mountinfo(self, pid: int | None, container: str | None) -> str:
        from ..kernel import ns

        if container is not None:
            state = self._containers.get(container)
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

    def union(
        self, lowers: Sequence[str], target: str, *, upper: str | None = None, options: Iterable[str] = ()
    ) -> MountPlan:
        """Union-mount plain directories at target in the caller's namespace (first lower on top)."""
        from ..kernel import mount as kmount

        plan = self.union_plan(lowers, target, upper=upper, options=options)
        if plan.work is not None:
            os.makedirs(plan.work, exist_ok=True)
        if len(plan.lowers) == 2 and plan.lowers[-1] == self._layout.empty:
            os.makedirs(self._layout.empty, exist_ok=True)
        kmount.apply(plan)
        return plan

    def union_plan(
        self, lowers: Sequence[str], target: str, *, upper: str | None = None, options: Iterable[str] = ()
    ) -> MountPlan:
        """The plan ``union`` would carry out; mounts nothing."""
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
            paths.append(self._layout.empty)
        check_layer_count(len(paths))
        return MountPlan(
            lowers=tuple(paths),
            target=os.path.abspath(target),
            upper=upper,
            work=work,
            options=merge_options(parse_feature_options(options)),
        )

    def unmount_union(self, target: str) -> None:
        """Unmount a union made by ``union``, and remove the work dir it made."""
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


def union_workdir(upper: str) -> str:
    """The work directory made beside an upper for a plain union mount."""
    parent, name = os.path.split(upper.rstrip("/"))
    return os.path.join(parent, f".{name}.overlayctl-work")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
