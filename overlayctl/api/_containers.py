"""Containers: create, plan, mount, enter, diff, commit, remove."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InUse, InvalidArgument, NotFound, StoreError, TooManyLayers
from ..plan.mountplan import MAX_LOWER_LAYERS, MountPlan
from ..plan.options import parse_feature_options
from ..store import containers as ctrs
from ..store import images as imgs
from ..store.changes import Change, upper_changes
from ..store.records import ContainerRecord, ImageRecord, parse_ref
from ..store.state import read_state
from ._base import ContainerState, StoreBase

if TYPE_CHECKING:
    from ..runtime.spec import RunSpec


class ContainersAPI(StoreBase):
    """Containers: create, plan, mount, enter, diff, commit, remove."""

    def containers(self) -> list[ContainerState]:
        self.reap()
        return [self._state(r) for r in ctrs.list_containers(self.layout)]

    def container(self, ref: str) -> ContainerState:
        return self._state(ctrs.resolve_container(self.layout, ref))

    def _state(self, record: ContainerRecord) -> ContainerState:
        from ..kernel import ns

        pin = self.layout.pin(record.id)
        run = read_state(self.layout, record.id)
        if ns.is_pinned(pin):
            return ContainerState(record, "namespace", pin, run)
        if ns.is_mount_point(self.layout.merged(record.id)):
            return ContainerState(record, "host", None, run)
        return ContainerState(record, None, None, run)

    def create_container(
        self,
        image: str,
        *,
        name: str | None = None,
        options: Iterable[str] = (),
        hostname: str | None = None,
        spec: RunSpec | None = None,
    ) -> ContainerRecord:
        """A container from an image: init layer, empty upper and work.

        ``spec`` says how it runs; by default the image's Entrypoint, Cmd,
        Env, WorkingDir and User, with no network.
        """
        from ..runtime.spec import RunSpec, build_spec
        from ..store.records import check_container_name

        if name is not None:
            check_container_name(name)
        requested = parse_feature_options(options)
        record = self.image(image)
        if spec is None:
            runtime = record.runtime
            spec = build_spec(runtime) if runtime.get("Cmd") or runtime.get("Entrypoint") else RunSpec()
        container_id = ctrs.new_container_id()
        with self._mutation():
            address = None
            if spec.network == "bridge":
                from ..store.network import allocate_address

                address = allocate_address(self.layout, self.lock, container_id)
            try:
                return ctrs.create_container(
                    self.layout,
                    record,
                    name=name,
                    options=requested,
                    hostname=hostname,
                    spec=spec.to_json(),
                    container_id=container_id,
                    address=address,
                )
            except BaseException:
                if address is not None:
                    from ..store.network import release_address

                    release_address(self.layout, self.lock, container_id)
                raise

    def plan(self, ref: str, *, links: bool = False) -> MountPlan:
        """The container's overlay as plain data; mounts nothing.

        ``links`` adds the short relative names classic mount(2) uses.
        """
        record = ctrs.resolve_container(self.layout, ref)
        return ctrs.build_plan(self.layout, record, links=links)

    def mount(self, ref: str, *, host: bool = False, api=None) -> ContainerState:
        """Mount a container: in a new pinned mount namespace, or with host=True in ours.

        ``api`` forces a kernel interface (``kernel.mount.MountApi``); by
        default the new mount API where the kernel has ``lowerdir+``.
        """
        from ..kernel import mount as kmount
        from ..kernel import ns

        record = ctrs.resolve_container(self.layout, ref)
        api = api or kmount.default_api()
        with self.lock:
            state = self._state(record)
            if state.mounted:
                raise InUse(f"container {record.name} is already mounted ({state.mounted})")
            if state.run.status == "running":
                raise InUse(
                    f"container {record.name} is running; its root is mounted in its own namespace",
                    hint=f"use 'overlayctl exec {record.name}'",
                )
            self._check_volatile(record)
            plan = ctrs.build_plan(self.layout, record, links=api is kmount.MountApi.CLASSIC, labels=False)
            if host:
                kmount.apply(plan, api)
                return ContainerState(record, "host", None)
            pin = self.layout.pin(record.id)
            ns.prepare_pin_dir(self.layout.ns_dir)
            try:
                ns.run_in_new_namespace(pin, lambda: kmount.apply(plan, api))
            except BaseException:
                ns.release_pin_dir_if_unused(self.layout.ns_dir)
                raise
            return ContainerState(record, "namespace", pin)

    def _check_volatile(self, record: ContainerRecord) -> None:
        if os.path.exists(f"{self.layout.work(record.id)}/work/incompat/volatile"):
            raise StoreError(
                f"container {record.name} was mounted 'volatile' and not cleanly unmounted; "
                "its upper may have lost writes",
                hint=f"check it, then remove {self.layout.work(record.id)}/work/incompat",
            )

    def unmount(self, ref: str) -> bool:
        """Undo mount (either kind); False when the container was not mounted."""
        from ..kernel import mount as kmount
        from ..kernel import ns

        record = ctrs.resolve_container(self.layout, ref)
        with self.lock:
            pin = self.layout.pin(record.id)
            if ns.is_pinned(pin):
                # Unmount inside first: dropping the pin alone would leave the
                # overlay's teardown (and the sync of its upper) to a kernel
                # worker, still running when this returns.
                merged = self.layout.merged(record.id)
                ns.run_in_namespace(pin, lambda: kmount.unmount(merged, detach=False))
            # The pin dir's own bind mount stays (as ip netns keeps /run/netns):
            # the next mount needs it; the last container's removal releases it.
            done = ns.drop_pin(pin)
            if ns.is_mount_point(self.layout.merged(record.id)):
                done = kmount.unmount(self.layout.merged(record.id)) or done
            if done and any(k == "volatile" for k, _ in record.options):
                # A clean unmount makes a volatile upper safe to mount again.
                ctrs.reset_work(self.layout, record)
        return done

    def enter(self, ref: str, command: Sequence[str] = ()) -> None:
        """Replace this process by command, inside the container's mount namespace."""
        from ..kernel import ns

        state = self.container(ref)
        if not state.mounted:
            raise InvalidArgument(
                f"container {state.record.name} is not mounted",
                hint=f"run 'overlayctl container mount {state.record.name}'",
            )
        if state.mounted == "namespace":
            ns.enter(self.layout.pin(state.record.id))
        os.chdir(self.layout.merged(state.record.id))
        argv = list(command) or [os.environ.get("SHELL") or "/bin/sh"]
        try:
            os.execvp(argv[0], argv)
        except FileNotFoundError:
            raise NotFound(f"command not found: {argv[0]}") from None

    def diff(self, ref: str) -> list[Change]:
        """Added, changed and deleted paths, from the container's upper."""
        record = ctrs.resolve_container(self.layout, ref)
        plan = ctrs.build_plan(self.layout, record)
        return upper_changes(self.layout.upper(record.id), list(plan.lowers))

    def commit(
        self,
        ref: str,
        *,
        tag: str | None = None,
        message: str = "",
        changes: dict[str, Any] | None = None,
    ) -> ImageRecord:
        """The container's upper as a new layer on its image: a new image.

        ``changes`` (cmd, entrypoint, env, workdir) adjust the new image's
        runtime config; the rest is the parent image's.

        The old image stays (rollback); the container keeps its upper and its
        mount.  An upper written with redirect_dir=on or metacopy=on is refused.
        """
        record = ctrs.resolve_container(self.layout, ref)
        ref_tag = parse_ref(tag) if tag else None
        base = imgs.load_image(self.layout, record.image)
        if len(base.layers) + 2 > MAX_LOWER_LAYERS:
            raise TooManyLayers(
                f"committing would make an image of {len(base.layers) + 1} layers; with a container's "
                f"init layer that is more than the kernel's {MAX_LOWER_LAYERS}",
                hint="squash the image first",
            )
        parent_layer = base.layers[-1] if base.layers else None
        layer = self.create_layer(self.layout.upper(record.id), parent=parent_layer, comment=message)
        history = base.history + [
            {"created": layer.created, "created_by": f"overlayctl container commit {record.name}", "comment": message}
        ]
        from ..runtime.spec import runtime_changes

        config = runtime_changes(**(changes or {}), base=base.runtime)
        return self._publish_image(
            base.diff_ids + [layer.diff_id], runtime=config, history=history, tag=ref_tag, parent=base.id
        )

    def remove_container(self, ref: str, *, force: bool = False) -> ContainerRecord:
        """Delete a container (refused while mounted unless force: then unmounted first)."""
        from ..kernel import ns

        self.reap()
        record = ctrs.resolve_container(self.layout, ref)
        if read_state(self.layout, record.id).status == "running":
            if not force:
                raise InUse(f"container {record.name} is running", hint="stop it first or use -f")
            self.stop(record.id, timeout=0)
        with self._mutation():
            if self._state(record).mounted:
                if not force:
                    raise InUse(f"container {record.name} is mounted", hint="unmount it first or use -f")
                self.unmount(record.id)
            ns.remove_pin_file(self.layout.pin(record.id))
            ns.release_pin_dir_if_unused(self.layout.ns_dir)
            if record.address:
                from ..store.network import release_address

                release_address(self.layout, self.lock, record.id)
            ctrs.remove_container(self.layout, record)
        return record
