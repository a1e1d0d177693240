"""store.containers: create, plan, mount, enter, diff, commit and remove containers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import InUse, InvalidArgument, NotFound, OverlayctlError, StoreError, TooManyLayers
from ..plan.mountplan import MAX_LOWER_LAYERS, MountPlan
from ..plan.options import parse_feature_options
from ..store import containers as ctrs
from ..store import images as imgs
from ..store import layers as lyrs
from ..store.changes import Change, upper_changes
from ..store.records import ContainerRecord, ImageRecord, parse_ref
from ..store.state import DEAD_MONITOR, RunState, monitor_exit_code, read_state
from ..store.transaction import ROLLFORWARD, Transaction
from ._context import StoreContext
from ._images import Images
from ._layers import Layers

if TYPE_CHECKING:
    from ..runtime.spec import RunSpec


@dataclass(frozen=True, slots=True)
class ContainerState:
    """A container's record with what is true of it now: mounted where, running or not."""

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


class Containers:
    """Containers: an image, an init layer and a writable upper, mounted in their own namespace."""

    def __init__(self, ctx: StoreContext, layers: Layers, images: Images) -> None:
        self._ctx = ctx
        self._layout = ctx.layout
        self._layers = layers
        self._images = images

    # -- reading ------------------------------------------------------------

    def list(self) -> list[ContainerState]:
        """Every container with its state.  Reads only: a dead monitor is shown, not reaped."""
        states = []
        for record in ctrs.list_containers(self._layout):
            states.append(self.state(record))
        return states

    def get(self, ref: str) -> ContainerState:
        """A container by name, ID or unique ID prefix."""
        return self.state(ctrs.resolve_container(self._layout, ref))

    def state(self, record: ContainerRecord) -> ContainerState:
        """What is true of a container now (its run state as seen, never written)."""
        from ..kernel import ns
        from ..kernel.proc import is_alive

        layout = self._layout
        pin = layout.pin(record.id)
        run = read_state(layout, record.id)
        if run.status == "running" and not is_alive(run.monitor, run.monitor_start):
            code = monitor_exit_code(layout, record.id)  # ended, not yet cleaned up
            run = replace(run.exited(code), error="" if code is not None else DEAD_MONITOR)
        if ns.is_pinned(pin):
            return ContainerState(record, "namespace", pin, run)
        if ns.is_mount_point(layout.merged(record.id)):
            return ContainerState(record, "host", None, run)
        return ContainerState(record, None, None, run)

    def plan(self, ref: str, *, links: bool = False) -> MountPlan:
        """The container's overlay as plain data; mounts nothing.

        ``links`` adds the short relative names classic mount(2) uses.
        """
        record = ctrs.resolve_container(self._layout, ref)
        return ctrs.build_plan(self._layout, record, links=links)

    def diff(self, ref: str) -> list[Change]:
        """Added, changed and deleted paths, from the container's upper."""
        record = ctrs.resolve_container(self._layout, ref)
        plan = ctrs.build_plan(self._layout, record)
        return upper_changes(self._layout.upper(record.id), list(plan.lowers))

    # -- changing -----------------------------------------------------------

    def create(
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
        Env, WorkingDir and User, with no network.  The image is resolved
        in the same transaction that publishes the container, so a
        concurrent ``image rm`` cannot leave it on a missing image.
        """
        from ..store.records import check_container_name

        if name is not None:
            check_container_name(name)
        requested = parse_feature_options(options)
        container_id = ctrs.new_container_id()
        with self._ctx.transaction("container create") as txn:
            record = self._images.get(image)
            spec = spec or _default_spec(record)
            address = None
            if spec.network == "bridge":
                from ..store.network import allocate_address

                address = allocate_address(self._layout, txn.lock, container_id)
            try:
                return ctrs.create_container(
                    txn,
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

                    release_address(self._layout, txn.lock, container_id)
                raise

    def mount(self, ref: str, *, host: bool = False, api=None) -> ContainerState:
        """Mount a container: in a new pinned mount namespace, or with host=True in ours.

        ``api`` forces a kernel interface (``kernel.mount.MountApi``); by
        default the new mount API where the kernel has ``lowerdir+``.
        """
        from ..kernel import mount as kmount
        from ..kernel import ns

        api = api or kmount.default_api()
        ctrs.resolve_container(self._layout, ref)  # NotFound before taking the lock of a store that may not exist
        with self._ctx.lock:
            record = ctrs.resolve_container(self._layout, ref)
            state = self.state(record)
            if state.mounted:
                raise InUse(f"container {record.name} is already mounted ({state.mounted})")
            if state.run.status == "running":
                raise InUse(
                    f"container {record.name} is running; its root is mounted in its own namespace",
                    hint=f"use 'overlayctl exec {record.name}'",
                )
            self._check_volatile(record)
            plan = ctrs.build_plan(self._layout, record, links=api is kmount.MountApi.CLASSIC, labels=False)
            if host:
                kmount.apply(plan, api)
                return ContainerState(record, "host", None)
            pin = self._layout.pin(record.id)
            ns.prepare_pin_dir(self._layout.ns_dir)
            try:
                ns.run_in_new_namespace(pin, lambda: kmount.apply(plan, api))
            except BaseException:
                ns.release_pin_dir_if_unused(self._layout.ns_dir)
                raise
            return ContainerState(record, "namespace", pin)

    def _check_volatile(self, record: ContainerRecord) -> None:
        if os.path.exists(f"{self._layout.work(record.id)}/work/incompat/volatile"):
            raise StoreError(
                f"container {record.name} was mounted 'volatile' and not cleanly unmounted; "
                "its upper may have lost writes",
                hint=f"check it, then remove {self._layout.work(record.id)}/work/incompat",
            )

    def unmount(self, ref: str) -> bool:
        """Undo mount (either kind); False when the container was not mounted."""
        with self._ctx.transaction("container unmount") as txn:
            return self._unmount(txn, ctrs.resolve_container(self._layout, ref))

    def _unmount(self, txn: Transaction, record: ContainerRecord) -> bool:
        from ..kernel import mount as kmount
        from ..kernel import ns

        pin = self._layout.pin(record.id)
        merged = self._layout.merged(record.id)
        if ns.is_pinned(pin):
            # Unmount inside first: dropping the pin alone would leave the
            # overlay's teardown (and the sync of its upper) to a kernel
            # worker, still running when this returns.
            ns.run_in_namespace(pin, lambda: kmount.unmount(merged, detach=False))
        # The pin dir's own bind mount stays (as ip netns keeps /run/netns):
        # the next mount needs it; the last container's removal releases it.
        done = ns.drop_pin(pin)
        if ns.is_mount_point(merged):
            done = kmount.unmount(merged) or done
        if done and any(k == "volatile" for k, _ in record.options):
            # A clean unmount makes a volatile upper safe to mount again.
            ctrs.reset_work(txn, record)
        return done

    def enter(self, ref: str, command: Sequence[str] = ()) -> None:
        """Replace this process by command, inside the container's mount namespace."""
        from ..kernel import ns

        state = self.get(ref)
        if not state.mounted:
            raise InvalidArgument(
                f"container {state.record.name} is not mounted",
                hint=f"run 'overlayctl container mount {state.record.name}'",
            )
        if state.mounted == "namespace":
            ns.enter(self._layout.pin(state.record.id))
        os.chdir(self._layout.merged(state.record.id))
        argv = list(command) or [os.environ.get("SHELL") or "/bin/sh"]
        try:
            os.execvp(argv[0], argv)
        except FileNotFoundError:
            raise NotFound(f"command not found: {argv[0]}") from None

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
        runtime config; the rest is the parent image's.  The upper is copied
        in staging without the lock; the layer, image and tag are published
        in one transaction.  The old image stays (rollback); the container
        keeps its upper and its mount.  An upper written with redirect_dir=on
        or metacopy=on is refused.  The files of a container run with
        ``--userns=auto`` get back the IDs it saw (host start+N -> N).
        """
        from ..runtime.spec import runtime_changes

        record = ctrs.resolve_container(self._layout, ref)
        ref_tag = parse_ref(tag) if tag else None
        base = imgs.load_image(self._layout, record.image)
        if len(base.layers) + 2 > MAX_LOWER_LAYERS:
            raise TooManyLayers(
                f"committing would make an image of {len(base.layers) + 1} layers; with a container's "
                f"init layer that is more than the kernel's {MAX_LOWER_LAYERS}",
                hint="squash the image first",
            )
        config = runtime_changes(**(changes or {}), base=base.runtime)
        from ..store.idranges import range_of

        upper = self._layout.upper(record.id)
        id_shift = range_of(self._layout, record.id)
        try:
            if id_shift is None:
                staged = self._layers.stage(upper)
            else:
                self._ctx.ensure_root()
                staged = lyrs.stage_layer(self._layout, lyrs.from_directory(upper, id_shift=id_shift))
        except (OverlayctlError, OSError):
            if not os.path.isdir(upper) or not os.path.isfile(self._layout.container_json(record.id)):
                # No lock is held while the upper is copied: a 'container rm' may have run meanwhile.
                raise NotFound(f"no such container: {ref} (it was removed during the commit)") from None
            raise
        try:
            with self._ctx.transaction("container commit") as txn:
                base = imgs.load_image(self._layout, record.image)
                parent = base.layers[-1] if base.layers else None
                layer, _ = lyrs.publish_layer(txn, staged, parent=parent, comment=message)
                entry = {
                    "created": layer.created,
                    "created_by": f"overlayctl container commit {record.name}",
                    "comment": message,
                }
                image = ImageRecord.build(
                    base.diff_ids + [layer.diff_id],
                    runtime=config,
                    history=base.history + [entry],
                    parent=base.id,
                )
                return self._images.publish(txn, image, tag=ref_tag)
        finally:
            staged.discard()

    def remove(self, ref: str, *, force: bool = False) -> ContainerRecord:
        """Delete a container that does not run (a mounted one only with force: unmounted first).

        A running container is stopped by ``store.runtime.remove``.
        """
        with self._ctx.transaction("container rm", on_crash=ROLLFORWARD) as txn:
            record = ctrs.resolve_container(self._layout, ref)
            if read_state(self._layout, record.id).status == "running":
                raise InUse(f"container {record.name} is running", hint="stop it first, or 'overlayctl rm -f'")
            if self.state(record).mounted:
                if not force:
                    raise InUse(f"container {record.name} is mounted", hint="unmount it first or use -f")
                self._unmount(txn, record)
            self.discard(txn, record)
        return record

    def discard(self, txn: Transaction, record: ContainerRecord) -> None:
        """Remove a stopped, unmounted container inside txn: pin file, address, directories."""
        self.release(txn, record)
        txn.remove(ctrs.removal_paths(self._layout, record))

    def release(self, txn: Transaction, record: ContainerRecord) -> None:
        """Give back what a stopped container holds outside its directory: pin file, address, ID range."""
        from ..kernel import ns
        from ..store.idranges import release

        ns.remove_pin_file(self._layout.pin(record.id))
        ns.release_pin_dir_if_unused(self._layout.ns_dir)
        release(self._layout, txn.lock, record.id)
        if record.address:
            from ..store.network import release_address

            release_address(self._layout, txn.lock, record.id)


def _default_spec(image: ImageRecord) -> RunSpec:
    from ..runtime.spec import RunSpec, build_spec

    runtime = image.runtime
    return build_spec(runtime) if runtime.get("Cmd") or runtime.get("Entrypoint") else RunSpec()
