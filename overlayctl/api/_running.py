"""Running containers: run, start, stop, exec, logs, the bridge network, reaping."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..store import containers as ctrs
from ..store.records import ContainerRecord
from ._base import StoreBase

if TYPE_CHECKING:
    pass


class RunningAPI(StoreBase):
    """Running containers: run, start, stop, exec, logs, the bridge network, reaping."""

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
        from ..runtime.spec import build_spec

        self.reap()
        limits = {}
        if (memory, pids_limit, cpus) != (None, None, None):
            from ..runtime.cgroups import Limits  # only with limits: it is not a light import

            limits = Limits.parse(memory, pids_limit, cpus).to_json()
        spec = build_spec(
            self.image(image).runtime,
            command=command,
            env=env,
            workdir=workdir,
            user=user,
            volumes=volumes,
            network=network,
            limits=limits,
            interactive=interactive,
            auto_remove=remove,
        )
        spec.check_volumes()
        return self.create_container(image, name=name, hostname=hostname, spec=spec)

    def run(self, image: str, command: Sequence[str] = (), **options: Any) -> int:
        """Create a container and run it in the foreground; returns its exit code.

        Takes the keyword options of ``create_for_run``.
        """
        record = self.create_for_run(image, command, **options)
        return self.start(record.id, attach=True)

    def start(self, ref: str, *, attach: bool = False) -> int:
        """Start a container.

        In the background (the default): returns its PID 1 once its command
        runs.  With ``attach``: in the foreground, returning its exit code.
        """
        from ..runtime import monitor

        self.reap()
        record = ctrs.resolve_container(self.layout, ref)
        if not record.spec.get("argv"):
            raise InvalidArgument(f"container {record.name} has no command", hint="create it with 'overlayctl run'")
        if attach:
            return monitor.run(self.layout, self.lock, record)
        from ..runtime import daemon

        return daemon.start_detached(self.layout, self.lock, record)

    def stop(self, ref: str, *, timeout: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after timeout; False if it was not running."""
        from ..runtime import monitor

        record = ctrs.resolve_container(self.layout, ref)
        return monitor.stop(self.layout, self.lock, record, timeout)

    def exec(self, ref: str, command: Sequence[str], *, interactive: bool = False) -> int:
        """Run command inside a running container (all its namespaces and its root)."""
        from ..runtime import enter

        state = self.container(ref)
        if state.run.status != "running" or not state.run.pid:
            raise InvalidArgument(
                f"container {state.record.name} is not running", hint=f"overlayctl start {state.record.name}"
            )
        return enter.exec_in(state.record, state.run, list(command), interactive=interactive)

    def logs(self, ref: str) -> str:
        """The path of a detached container's output."""
        record = ctrs.resolve_container(self.layout, ref)
        return self.layout.log(record.id)

    def network(self) -> dict[str, Any]:
        """The bridge network: name, subnet, gateway, and addresses by container."""
        from ..store.network import load_network

        config, addresses = load_network(self.layout)
        names = {r.id: r.name for r in ctrs.list_containers(self.layout)}
        return {
            "bridge": config.bridge,
            "subnet": config.subnet,
            "gateway": str(config.gateway),
            "addresses": {a: names.get(cid, cid) for a, cid in addresses.items()},
        }

    def configure_network(self, *, bridge: str | None = None, subnet: str | None = None) -> None:
        from ..store.network import configure_network

        with self._mutation():
            configure_network(self.layout, self.lock, bridge=bridge, subnet=subnet)

    def reap(self) -> list[str]:
        """Clean up after containers whose overlayctl monitor died."""
        if not os.path.isdir(self.layout.containers):
            return []
        from ..runtime import monitor

        return monitor.reap_stale(self.layout, self.lock)
