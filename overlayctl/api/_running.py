"""store.runtime: run, start, stop, exec and remove running containers; the bridge network.

A thin part over ``runtime/``: how a container's process is started and
watched can change back end without changing these verbs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument
from ..store import containers as ctrs
from ..store.records import ContainerRecord
from ._containers import Containers
from ._context import StoreContext
from ._images import Images


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """The bridge network: its name, subnet, gateway, and addresses held by containers."""

    bridge: str
    subnet: str
    gateway: str
    addresses: dict[str, str]  # address -> container name (or ID when it is gone)

    def to_json(self) -> dict[str, Any]:
        return {"bridge": self.bridge, "subnet": self.subnet, "gateway": self.gateway, "addresses": self.addresses}


class Runtime:
    """Running containers: their processes, their state, their network."""

    def __init__(self, ctx: StoreContext, images: Images, containers: Containers) -> None:
        self._ctx = ctx
        self._layout = ctx.layout
        self._images = images
        self._containers = containers

    def create(
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
        **security: Any,
    ) -> ContainerRecord:
        """A container with everything ``run`` needs: its command, env, limits, network, profile.

        ``security`` takes the keywords of ``build_spec`` for the profile:
        tty, init, cap_add, cap_drop, privileged, security_opt, devices,
        read_only, tmpfs, userns, runtime.
        """
        from ..runtime.spec import build_spec

        limits = {}
        if (memory, pids_limit, cpus) != (None, None, None):
            from ..runtime.cgroups import Limits  # only with limits: it is not a light import

            limits = Limits.parse(memory, pids_limit, cpus).to_json()
        spec = build_spec(
            self._images.get(image).runtime,
            command=command,
            env=env,
            workdir=workdir,
            user=user,
            volumes=volumes,
            network=network,
            limits=limits,
            interactive=interactive,
            auto_remove=remove,
            **security,
        )
        spec.check_sources()
        if spec.runtime:
            from ..runtime.oci import choose

            choose(spec.runtime)
        return self._containers.create(image, name=name, hostname=hostname, spec=spec)

    def run(self, image: str, command: Sequence[str] = (), **options: Any) -> int:
        """Create a container and run it in the foreground; returns its exit code.

        Takes the keyword options of ``create``.  With ``remove=True`` the
        container is gone afterwards, also when it could not be started.
        """
        self.reap()
        record = self.create(image, command, **options)
        try:
            return self.start(record.id, attach=True)
        except BaseException:
            if options.get("remove"):
                self._remove_leftover(record)
            raise

    def _remove_leftover(self, record: ContainerRecord) -> None:
        from ..errors import OverlayctlError

        try:
            self._containers.remove(record.id, force=True)
        except OverlayctlError:
            pass  # already removed by its monitor, or reported by check

    def start(self, ref: str, *, attach: bool = False) -> int:
        """Start a container.

        In the background (the default): returns its PID 1 once its command
        runs.  With ``attach``: in the foreground, returning its exit code.
        """
        from ..runtime import monitor

        record = ctrs.resolve_container(self._layout, ref)
        if not record.spec.get("argv"):
            raise InvalidArgument(f"container {record.name} has no command", hint="create it with 'overlayctl run'")
        if record.spec.get("tty") and not attach:
            raise InvalidArgument(
                f"container {record.name} has a terminal (-t): run it in the foreground", hint="drop -d or -t"
            )
        return monitor.start(self._ctx, record, attach=attach)

    def stop(self, ref: str, *, timeout: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after timeout; False if it was not running."""
        from ..runtime import monitor

        record = ctrs.resolve_container(self._layout, ref)
        return monitor.stop(self._ctx, record, timeout)

    def remove(self, ref: str, *, force: bool = False) -> ContainerRecord:
        """Remove a container; with force a running one is stopped (and a mounted one unmounted) first."""
        self.reap()
        record = ctrs.resolve_container(self._layout, ref)
        state = self._containers.state(record)
        if state.run.status == "running":
            if not force:
                from ..errors import InUse

                raise InUse(f"container {record.name} is running", hint="stop it first or use -f")
            self.stop(record.id, timeout=0)
        return self._containers.remove(record.id, force=force)

    def exec(self, ref: str, command: Sequence[str], *, interactive: bool = False, tty: bool = False) -> int:
        """Run command inside a running container, with its user, env, capabilities and seccomp profile."""
        from ..runtime import monitor

        state = self._containers.get(ref)
        if state.run.status != "running" or not state.run.pid:
            raise InvalidArgument(
                f"container {state.record.name} is not running", hint=f"overlayctl start {state.record.name}"
            )
        return monitor.exec_in(self._ctx, state.record, state.run, list(command), interactive=interactive, tty=tty)

    def spec(self, ref: str) -> dict[str, Any]:
        """The container's OCI runtime config: the one it last ran with, else the one it would run with."""
        from ..runtime import bundle

        record = ctrs.resolve_container(self._layout, ref)
        try:
            return bundle.read_config(self._layout, record.id)
        except FileNotFoundError:
            return bundle.planned_config(self._layout, record)

    def cleanup(self, container_id: str) -> bool:
        """What conmon calls when a container exits: release what it held; False when already done."""
        from ..runtime import monitor

        return monitor.finish(self._ctx, container_id)

    def log_path(self, ref: str) -> str:
        """The file holding a detached container's output."""
        record = ctrs.resolve_container(self._layout, ref)
        return self._layout.log(record.id)

    def network(self) -> NetworkInfo:
        """The bridge network and the addresses handed out."""
        from ..store.network import load_network

        config, addresses = load_network(self._layout)
        names = {r.id: r.name for r in ctrs.list_containers(self._layout)}
        held = {a: names.get(cid, cid) for a, cid in addresses.items()}
        return NetworkInfo(config.bridge, config.subnet, str(config.gateway), held)

    def configure_network(self, *, bridge: str | None = None, subnet: str | None = None) -> None:
        """Set the bridge's name and/or subnet (refused while addresses are handed out)."""
        from ..store.network import configure_network

        with self._ctx.transaction("network set") as txn:
            configure_network(self._layout, txn.lock, bridge=bridge, subnet=subnet)

    def reap(self) -> list[str]:
        """Clean up after containers whose monitor (conmon) died; their names."""
        if not os.path.isdir(self._layout.containers):
            return []
        import warnings

        from ..runtime import monitor

        with warnings.catch_warnings():
            # A damaged record is the business of the command that needs it, and of check.
            warnings.simplefilter("ignore")
            return monitor.reap_stale(self._ctx)
