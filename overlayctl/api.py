"""LayerStore: the Python API that the CLI and the benchmarks call.

It joins the store (disk), the plan (pure data) and the kernel (syscalls)::

    from overlayctl import LayerStore

    store = LayerStore(root="/var/lib/overlayctl")
    image = store.import_image("/srv/rootfs", tag="base")    # a one-layer image
    ctr = store.create_container("base", name="web")         # init layer + empty upper
    store.mount("web")                # overlay in a new, pinned mount namespace
    print(store.plan("web").lowers)   # what is mounted, top first
    store.commit("web", tag="base:v2", message="add config")
    store.unmount("web")
    store.remove_container("web")

Every mutation is built in staging and published by rename under the store
lock, so a failed or interrupted call leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import InUse, InvalidArgument, NotFound, StoreError, TooManyLayers
from .plan.mountplan import MAX_LOWER_LAYERS, MountPlan
from .plan.options import check_layer_count, merge_options, parse_feature_options
from .store import containers as ctrs
from .store import images as imgs
from .store import layers as lyrs
from .store.atomic import sweep_staging, write_atomic
from .store.changes import Change, upper_changes
from .store.ids import short_id
from .store.layout import StoreLayout
from .store.lock import StoreLock
from .store.records import ContainerRecord, ImageRecord, LayerRecord, dump_json, load_json, parse_ref
from .store.state import RunState, read_state

if TYPE_CHECKING:
    from .runtime.spec import RunSpec

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


class LayerStore:
    """A layer store at ``root`` with runtime state under ``run_root``.

    Layers are read-only and content addressed (chain IDs); images are
    ordered stacks of layers; containers are an image plus an init layer
    and a writable upper.  References accept tags, names and unique ID
    prefixes everywhere.
    """

    def __init__(self, root: str | None = None, run_root: str | None = None) -> None:
        self.layout = StoreLayout.at(root, run_root)
        self.lock = StoreLock(self.layout.lock)

    # -- housekeeping -------------------------------------------------------

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
        from .kernel.probe import probe_backing_fs

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

    # -- layers -------------------------------------------------------------

    def layers(self) -> list[LayerRecord]:
        return lyrs.list_layers(self.layout)

    def layer(self, ref: str) -> LayerRecord:
        return lyrs.load_layer(self.layout, lyrs.resolve_layer(self.layout, ref))

    def create_layer(
        self, source: str | BinaryIO, *, parent: str | None = None, comment: str = ""
    ) -> LayerRecord:
        """A layer from a directory, a tar file (plain or gzip) or a binary stream."""
        parent_id = lyrs.resolve_layer(self.layout, parent) if parent else None
        self._ensure_root()
        fill, close = self._filler(source)
        try:
            self._sweep()
            record, _ = lyrs.create_layer(self.layout, self.lock, fill, parent=parent_id, comment=comment)
        finally:
            close()
        return record

    def _filler(self, source: str | BinaryIO):
        if not isinstance(source, str):
            return lyrs.from_tar(source), lambda: None
        if os.path.isdir(source):
            return lyrs.from_directory(source, self.layout.staging), lambda: None
        try:
            stream = open(source, "rb")
        except FileNotFoundError:
            raise NotFound(f"no such file or directory: {source}") from None
        except OSError as exc:
            raise InvalidArgument(f"cannot read {source}: {exc.strerror}") from None
        return lyrs.from_tar(stream), stream.close

    def export_layer(self, ref: str, out: BinaryIO) -> str:
        """Write a layer as an OCI tar (overlay whiteouts back to .wh. files)."""
        from .archive.generate import write_layer_tar

        layer_id = lyrs.resolve_layer(self.layout, ref)
        return write_layer_tar(self.layout.diff(layer_id), out)

    def layer_users(self, layer_id: str) -> list[str]:
        """What keeps a layer: images whose stack holds it, and child layers."""
        users = [f"image {self._image_name(i)}" for i in imgs.list_images(self.layout) if layer_id in i.layers]
        users += [f"layer {short_id(r.id)}" for r in self.layers() if r.parent == layer_id]
        return users

    def remove_layer(self, ref: str) -> str:
        layer_id = lyrs.resolve_layer(self.layout, ref)
        with self._mutation():
            users = self.layer_users(layer_id)
            if users:
                raise InUse(
                    f"layer {short_id(layer_id)} is used by {', '.join(users[:3])}",
                    hint="remove those first",
                )
            lyrs.remove_layer(self.layout, layer_id)
        return layer_id

    # -- images -------------------------------------------------------------

    def images(self) -> list[ImageRecord]:
        return imgs.list_images(self.layout)

    def image(self, ref: str) -> ImageRecord:
        return imgs.load_image(self.layout, imgs.resolve_image(self.layout, ref))

    def tags(self, image_id: str | None = None) -> list[str] | dict[str, str]:
        tags = imgs.read_tags(self.layout)
        return tags if image_id is None else imgs.tags_of(tags, image_id)

    def _image_name(self, image: ImageRecord) -> str:
        tags = imgs.tags_of(imgs.read_tags(self.layout), image.id)
        return tags[0] if tags else short_id(image.id)

    def import_image(
        self,
        source: str | BinaryIO,
        *,
        tag: str | None = None,
        runtime: dict[str, Any] | None = None,
        comment: str = "",
        changes: dict[str, Any] | None = None,
    ) -> ImageRecord:
        """A one-layer image from a root filesystem (directory or tar).

        ``changes`` (cmd, entrypoint, env, workdir) set its runtime config,
        as ``docker import --change`` does.
        """
        from .runtime.spec import runtime_changes

        ref = parse_ref(tag) if tag else None
        runtime = runtime_changes(**(changes or {}), base=runtime)
        layer = self.create_layer(source, comment=comment)
        name = source if isinstance(source, str) else "stream"
        history = [{"created": layer.created, "created_by": f"overlayctl image import {name}", "comment": comment}]
        return self._publish_image([layer.diff_id], runtime=runtime, history=history, tag=ref)

    def create_image(
        self,
        top_layer: str,
        *,
        tag: str | None = None,
        runtime: dict[str, Any] | None = None,
        comment: str = "",
    ) -> ImageRecord:
        """An image whose stack is a layer and its parents."""
        ref = parse_ref(tag) if tag else None
        chain = []
        layer_id: str | None = lyrs.resolve_layer(self.layout, top_layer)
        while layer_id:
            chain.append(lyrs.load_layer(self.layout, layer_id))
            layer_id = chain[-1].parent
        chain.reverse()
        check_layer_count(len(chain))
        history = [
            {"created": r.created, "created_by": "overlayctl layer create", "comment": r.comment or comment}
            for r in chain
        ]
        return self._publish_image([r.diff_id for r in chain], runtime=runtime, history=history, tag=ref)

    def _publish_image(self, diff_ids, *, runtime, history, tag, parent=None) -> ImageRecord:
        record = ImageRecord.build(diff_ids, runtime=runtime, history=history, parent=parent)
        with self._mutation():
            imgs.save_image(self.layout, record)
            if tag:
                tags = imgs.read_tags(self.layout)
                tags[tag] = record.id
                imgs.write_tags(self.layout, tags)
        return record

    def tag_image(self, ref: str, new_tag: str) -> str:
        image_id = imgs.resolve_image(self.layout, ref)
        normal = parse_ref(new_tag)
        with self._mutation():
            tags = imgs.read_tags(self.layout)
            tags[normal] = image_id
            imgs.write_tags(self.layout, tags)
        return normal

    def image_history(self, ref: str) -> list[dict[str, Any]]:
        """One row a layer, newest first: layer, size, created, created_by, comment."""
        image = self.image(ref)
        entries = [h for h in image.history if not h.get("empty_layer")]
        rows = []
        for i, layer_id in enumerate(image.layers):
            record = lyrs.load_layer(self.layout, layer_id)
            entry = entries[i] if i < len(entries) else {}
            rows.append(
                {
                    "layer": layer_id,
                    "size": record.size,
                    "created": entry.get("created", record.created),
                    "created_by": entry.get("created_by", ""),
                    "comment": entry.get("comment", record.comment),
                }
            )
        return rows[::-1]

    def image_size(self, image: ImageRecord) -> int:
        return sum(lyrs.load_layer(self.layout, layer).size for layer in image.layers)

    def image_tree(self) -> list[dict[str, Any]]:
        """Images as a forest by parent image; each node: id, tags, size, own size, children."""
        images = self.images()
        by_id = {i.id: i for i in images}
        tags = imgs.read_tags(self.layout)
        sizes = {layer.id: layer.size for layer in self.layers()}

        def node(image: ImageRecord) -> dict[str, Any]:
            parent = by_id.get(image.parent or "")
            own = image.layers[len(parent.layers) :] if parent else image.layers
            return {
                "id": image.id,
                "tags": imgs.tags_of(tags, image.id),
                "layers": len(image.layers),
                "size": sum(sizes.get(layer, 0) for layer in image.layers),
                "own_size": sum(sizes.get(layer, 0) for layer in own),
                "created": image.created,
                "children": [node(c) for c in images if c.parent == image.id],
            }

        return [node(i) for i in images if (i.parent or "") not in by_id]

    def remove_image(self, ref: str, *, force: bool = False) -> dict[str, list[str]]:
        """Untag or delete an image; its layers that nothing else uses go too."""
        image_id = imgs.resolve_image(self.layout, ref)
        removed: dict[str, list[str]] = {"untagged": [], "deleted": [], "layers": []}
        with self._mutation():
            tags = imgs.read_tags(self.layout)
            own_tags = imgs.tags_of(tags, image_id)
            normal = _maybe_ref(ref)
            if normal in own_tags and len(own_tags) > 1 and not force:
                del tags[normal]
                imgs.write_tags(self.layout, tags)
                removed["untagged"].append(normal)
                return removed
            users = [c.name for c in ctrs.list_containers(self.layout) if c.image == image_id]
            if users:
                raise InUse(
                    f"image {ref} is used by container {', '.join(users[:3])}",
                    hint="remove the container first",
                )
            others = [i for i in self.images() if i.id != image_id]
            children = [i for i in others if i.parent == image_id]
            if children and not force:
                raise InUse(
                    f"image {ref} is the parent of image {self._image_name(children[0])}",
                    hint="remove that image first, or use --force",
                )
            for t in own_tags:
                del tags[t]
            imgs.write_tags(self.layout, tags)
            removed["untagged"] = own_tags
            image = imgs.load_image(self.layout, image_id)
            os.unlink(self.layout.image_json(image_id))
            removed["deleted"].append(image_id)
            still_used = {layer for i in others for layer in i.layers}
            for layer_id in reversed(image.layers):
                if layer_id in still_used or not os.path.isdir(self.layout.layer_dir(layer_id)):
                    continue
                if any(r.parent == layer_id for r in self.layers()):
                    continue
                lyrs.remove_layer(self.layout, layer_id)
                removed["layers"].append(layer_id)
        return removed

    # -- containers ---------------------------------------------------------

    def containers(self) -> list[ContainerState]:
        self.reap()
        return [self._state(r) for r in ctrs.list_containers(self.layout)]

    def container(self, ref: str) -> ContainerState:
        return self._state(ctrs.resolve_container(self.layout, ref))

    def _state(self, record: ContainerRecord) -> ContainerState:
        from .kernel import ns

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
        from .runtime.spec import RunSpec, build_spec
        from .store.records import check_container_name

        if name is not None:
            check_container_name(name)
        requested = parse_feature_options(options)
        record = self.image(image)
        if spec is None:
            runtime = record.runtime
            spec = build_spec(runtime) if runtime.get("Cmd") or runtime.get("Entrypoint") else RunSpec()
        address = None
        if spec.network == "bridge":
            from .store.network import allocate_address

            address = lambda container_id: allocate_address(self.layout, self.lock, container_id)  # noqa: E731
        with self._mutation():
            try:
                return ctrs.create_container(
                    self.layout, record, name=name, options=requested, hostname=hostname, spec=spec.to_json(), address=address
                )
            except BaseException:
                if address is not None:
                    self._release_address_of_missing()
                raise

    def _release_address_of_missing(self) -> None:
        """Give back bridge addresses held for containers that do not exist."""
        from .store.network import load_network, release_address

        _, addresses = load_network(self.layout)
        existing = set(ctrs.container_ids(self.layout))
        for owner in set(addresses.values()) - existing:
            release_address(self.layout, self.lock, owner)

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
        from .kernel import mount as kmount
        from .kernel import ns

        record = ctrs.resolve_container(self.layout, ref)
        api = api or kmount.default_api()
        with self.lock:
            state = self._state(record)
            if state.mounted:
                raise InUse(f"container {record.name} is already mounted ({state.mounted})")
            if state.run.status == "running":
                raise InUse(f"container {record.name} is running; its root is mounted in its own namespace",
                            hint=f"use 'overlayctl exec {record.name}'")
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
        from .kernel import mount as kmount
        from .kernel import ns

        record = ctrs.resolve_container(self.layout, ref)
        with self.lock:
            done = ns.drop_pin(self.layout.pin(record.id))
            if done:
                # The last pin gone: leave no bind mount of the pin dir behind.
                ns.release_pin_dir_if_unused(self.layout.ns_dir)
            if ns.is_mount_point(self.layout.merged(record.id)):
                done = kmount.unmount(self.layout.merged(record.id)) or done
            if done and any(k == "volatile" for k, _ in record.options):
                # A clean unmount makes a volatile upper safe to mount again.
                ctrs.reset_work(self.layout, record)
        return done

    def enter(self, ref: str, command: Sequence[str] = ()) -> None:
        """Replace this process by command, inside the container's mount namespace."""
        from .kernel import ns

        state = self.container(ref)
        if not state.mounted:
            raise InvalidArgument(
                f"container {state.record.name} is not mounted", hint=f"run 'overlayctl container mount {state.record.name}'"
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
        from .runtime.spec import runtime_changes

        config = runtime_changes(**(changes or {}), base=base.runtime)
        return self._publish_image(
            base.diff_ids + [layer.diff_id], runtime=config, history=history, tag=ref_tag, parent=base.id
        )

    def remove_container(self, ref: str, *, force: bool = False) -> ContainerRecord:
        """Delete a container (refused while mounted unless force: then unmounted first)."""
        from .kernel import ns

        self.reap()
        record = ctrs.resolve_container(self.layout, ref)
        if read_state(self.layout, record.id).status == "running":
            if not force:
                raise InUse(f"container {record.name} is running", hint="stop it first or use -f")
            self._monitor().stop(self.layout, self.lock, record, timeout=0)
        with self._mutation():
            if self._state(record).mounted:
                if not force:
                    raise InUse(f"container {record.name} is mounted", hint="unmount it first or use -f")
                self.unmount(record.id)
            ns.remove_pin_file(self.layout.pin(record.id))
            if record.address:
                from .store.network import release_address

                release_address(self.layout, self.lock, record.id)
            ctrs.remove_container(self.layout, record)
        return record

    # -- running ------------------------------------------------------------

    def create_for_run(
        self,
        image: str,
        command: Sequence[str] = (),
        *,
        name: str | None = None,
        hostname: str | None = None,
        env: Sequence[str] = (),
        workdir: str | None = None,
        user: str | None = None,
        volumes: Sequence[str] = (),
        network: str = "none",
        memory: str | None = None,
        pids_limit: int | str | None = None,
        cpus: str | None = None,
        interactive: bool = False,
        remove: bool = False,
    ) -> ContainerRecord:
        """A container with everything ``run`` needs: its command, env, limits, network."""
        from .runtime.cgroups import Limits
        from .runtime.spec import build_spec

        self.reap()
        limits = Limits.parse(memory, pids_limit, cpus)
        spec = build_spec(
            self.image(image).runtime,
            command=command,
            env=env,
            workdir=workdir,
            user=user,
            volumes=volumes,
            network=network,
            limits=limits.to_json() if limits != Limits(None, None, None) else {},
            interactive=interactive,
            auto_remove=remove,
        )
        for volume in spec.volumes:
            if not os.path.exists(volume.source):
                raise NotFound(f"volume source {volume.source} does not exist")
        return self.create_container(image, name=name, hostname=hostname, spec=spec)

    def run(self, image: str, command: Sequence[str] = (), **options: Any) -> int:
        """Create a container and run it in the foreground; returns its exit code.

        Takes the keyword options of ``create_for_run``.
        """
        record = self.create_for_run(image, command, **options)
        return self.start(record.id, attach=True)

    def _monitor(self):
        from .runtime import monitor

        return monitor

    def start(self, ref: str, *, attach: bool = False) -> int:
        """Start a container.

        In the background (the default): returns its PID 1 once its command
        runs.  With ``attach``: in the foreground, returning its exit code.
        """
        from .runtime import daemon

        self.reap()
        record = ctrs.resolve_container(self.layout, ref)
        if not record.spec.get("argv"):
            raise InvalidArgument(f"container {record.name} has no command", hint="create it with 'overlayctl run'")
        if attach:
            return self._monitor().run(self.layout, self.lock, record)
        return daemon.start_detached(self.layout, self.lock, record)

    def stop(self, ref: str, *, timeout: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after timeout; False if it was not running."""
        record = ctrs.resolve_container(self.layout, ref)
        return self._monitor().stop(self.layout, self.lock, record, timeout)

    def exec(self, ref: str, command: Sequence[str], *, interactive: bool = False) -> int:
        """Run command inside a running container (all its namespaces and its root)."""
        from .runtime import enter

        state = self.container(ref)
        if state.run.status != "running" or not state.run.pid:
            raise InvalidArgument(f"container {state.record.name} is not running", hint=f"overlayctl start {state.record.name}")
        return enter.exec_in(state.record, state.run, list(command), interactive=interactive)

    def logs(self, ref: str) -> str:
        """The path of a detached container's output."""
        record = ctrs.resolve_container(self.layout, ref)
        return self.layout.log(record.id)

    def network(self) -> dict[str, Any]:
        """The bridge network: name, subnet, gateway, and addresses by container."""
        from .store.network import load_network

        config, addresses = load_network(self.layout)
        names = {r.id: r.name for r in ctrs.list_containers(self.layout)}
        return {
            "bridge": config.bridge,
            "subnet": config.subnet,
            "gateway": str(config.gateway),
            "addresses": {a: names.get(cid, cid) for a, cid in addresses.items()},
        }

    def configure_network(self, *, bridge: str | None = None, subnet: str | None = None) -> None:
        from .store.network import configure_network

        with self._mutation():
            configure_network(self.layout, self.lock, bridge=bridge, subnet=subnet)

    def reap(self) -> list[str]:
        """Clean up after containers whose overlayctl monitor died."""
        if not os.path.isdir(self.layout.containers):
            return []
        return self._monitor().reap_stale(self.layout, self.lock)

    # -- plain unions and inspection ---------------------------------------

    def mounts(self, *, pid: int | None = None, container: str | None = None) -> list[dict[str, Any]]:
        """Overlay mounts of a mount namespace, each directory mapped to the store."""
        from .plan.mountinfo import decode_overlay_options, overlay_mounts, parse_mountinfo

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
        from .kernel import ns

        if container is not None:
            state = self.container(container)
            if state.mounted != "namespace":
                if state.mounted == "host":
                    return _read(f"/proc/self/mountinfo")
                raise InvalidArgument(f"container {state.record.name} is not mounted")
            return ns.run_in_namespace(state.pin, lambda: _read("/proc/self/mountinfo"))
        path = f"/proc/{pid}/mountinfo" if pid is not None else "/proc/self/mountinfo"
        try:
            return _read(path)
        except FileNotFoundError:
            raise NotFound(f"no such process: {pid}") from None

    def mount_union(
        self, lowers: Sequence[str], target: str, *, upper: str | None = None, options: Iterable[str] = ()
    ) -> MountPlan:
        """Union-mount plain directories at target in the caller's namespace (first lower on top)."""
        from .kernel import mount as kmount

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

        from .kernel import mount as kmount
        from .plan.mountinfo import decode_overlay_options, overlay_mounts, parse_mountinfo

        target = os.path.abspath(target)
        mine = [m for m in overlay_mounts(parse_mountinfo(_read("/proc/self/mountinfo"))) if m.mount_point == target]
        if not mine:
            raise InvalidArgument(f"{target} is not an overlay mount point")
        kmount.unmount(target)
        decoded = decode_overlay_options(mine[-1])
        if decoded.upper and decoded.work == union_workdir(decoded.upper):
            shutil.rmtree(decoded.work, ignore_errors=True)

    def info(self) -> dict[str, Any]:
        from .kernel import probe
        from .kernel.mount import default_api
        from .plan.mountplan import MAX_LOWER_LAYERS

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


def _maybe_ref(ref: str) -> str | None:
    try:
        return parse_ref(ref)
    except InvalidArgument:
        return None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
