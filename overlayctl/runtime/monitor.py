"""The monitor: start a container, wait for it, clean up after it.

The monitor is the overlayctl process of a foreground ``run``, or a daemon
for ``start``.  It owns the container's cgroup, network namespace pin and
network attachment, and writes the run state.  When a monitor dies without
cleaning up, ``reap_stale`` (run by later commands) does it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ContainerFailed, InUse, OverlayctlError
from ..kernel import ns
from ..kernel.proc import is_alive, start_time, wait_gone
from ..store import containers as ctrs
from ..store.layout import StoreLayout
from ..store.records import ContainerRecord
from ..store.state import RunState, read_state, write_state
from ..store.transaction import Transaction
from . import process
from .spec import RunSpec

if TYPE_CHECKING:
    from ..api._context import StoreContext


def spec_of(record: ContainerRecord) -> RunSpec:
    return RunSpec.from_json(record.spec or {})


def check_startable(layout: StoreLayout, record: ContainerRecord, state: RunState) -> None:
    if state.status == "running" and is_alive(state.monitor, state.monitor_start):
        raise InUse(f"container {record.name} is already running")
    if ns.is_pinned(layout.pin(record.id)) or ns.is_mount_point(layout.merged(record.id)):
        raise InUse(
            f"container {record.name} is mounted", hint=f"run 'overlayctl container unmount {record.name}' first"
        )
    spec_of(record).check_volumes()


def run(
    ctx: StoreContext,
    record: ContainerRecord,
    *,
    detached: bool = False,
    on_started: Callable[[int], None] | None = None,
) -> int:
    """Run the container to its end; returns its exit code.

    on_started(pid) is called once the command was exec'd (``start`` uses it
    to return while the container runs on).
    """
    spec = spec_of(record)
    layout, lock = ctx.layout, ctx.lock
    with lock:
        state = read_state(layout, record.id)
        check_startable(layout, record, state)
        me = os.getpid()
        state = state.running(monitor=me, monitor_start=start_time(me), detached=detached, pid=None)
        write_state(layout, record.id, state)
    try:
        state, launched = _start(layout, lock, record, spec, state)
    except BaseException:
        _finish(ctx, record, read_state(layout, record.id), None, spec)
        raise
    previous = {
        sig: signal.signal(sig, lambda signum, frame: _forward(launched.pid, signum)) for sig in process.FORWARDED
    }
    try:
        error = process.read_until_eof(launched.status_fd)
        if not error and on_started:
            on_started(launched.pid)
        _, status = os.waitpid(launched.keeper, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = process.exit_code_of(status)
    _finish(ctx, record, state, code, spec, error=error)
    if error:
        raise ContainerFailed(error, code)
    return code


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _start(layout, lock, record, spec, state):
    """Launch, then put PID 1 in its cgroup and network before letting it go."""
    from ..kernel.mount import MountApi, default_api

    # Short links only where mount(2) is used: its options must fit in a page.
    plan = ctrs.build_plan(layout, record, labels=False, links=default_api() is MountApi.CLASSIC)
    cgroup = None
    if spec.limits:
        from .cgroups import Cgroup, Limits

        cgroup = Cgroup.create(record.id, Limits.from_json(spec.limits))
        state = _save(layout, record, state, cgroup=cgroup.to_json())
    launched = process.launch(plan, spec, record.hostname)
    try:
        if cgroup is not None:
            cgroup.add(launched.pid)
        network = None
        if spec.network != "host":
            ns.prepare_pin_dir(layout.netns_dir)
            ns.pin_namespace_of(launched.pid, "net", layout.netns_pin(record.id))
        if spec.network == "bridge":
            network = _attach(layout, lock, record, launched.pid)
        state = _save(layout, record, state, pid=launched.pid, pid_start=start_time(launched.pid), network=network)
        os.write(launched.go_fd, b"g")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(launched.pid, signal.SIGKILL)
        os.waitpid(launched.keeper, 0)
        raise
    finally:
        os.close(launched.go_fd)
    return state, launched


def _save(layout, record, state: RunState, **changes) -> RunState:
    from dataclasses import replace

    state = replace(state, **changes)
    write_state(layout, record.id, state)
    return state


def _attach(layout, lock, record, pid: int) -> dict:
    from ..store.network import allocate_address, load_network
    from . import net

    # Under the lock: a container that ends meanwhile may remove an unused
    # bridge, which must not happen between its creation and this veth.
    with lock:
        address = allocate_address(layout, lock, record.id)
        config, _ = load_network(layout)
        return net.attach(config, record.id, pid, address)


def _finish(ctx: StoreContext, record, state: RunState, code: int | None, spec: RunSpec, *, error: str = "") -> None:
    """Everything a container leaves when it ends: cgroup, pins, veth, state; --rm."""
    from ..store.transaction import ROLLFORWARD

    layout = ctx.layout
    oom, extra = False, dict(state.extra)
    if state.cgroup:
        from .cgroups import Cgroup

        cgroup = Cgroup.from_json(state.cgroup)
        with contextlib.suppress(OSError, OverlayctlError):
            oom = cgroup.oom_killed()
            extra["memory_peak"] = cgroup.memory_peak()
        with contextlib.suppress(OSError, OverlayctlError):
            cgroup.kill_all()
            cgroup.remove()
    with ctx.transaction("container end", on_crash=ROLLFORWARD) as txn:
        ns.remove_pin_file(layout.netns_pin(record.id))
        ns.release_pin_dir_if_unused(layout.netns_dir)
        if state.network:
            _detach(layout, record.id)
        if spec.auto_remove:
            _remove(txn, record)
            return
        write_state(layout, record.id, state.exited(code, oom_killed=oom, error=error, extra=extra))


def _detach(layout: StoreLayout, container_id: str) -> None:
    """Remove the host end of the veth now (the namespace may die later), then the bridge if unused."""
    from ..store.network import load_network
    from . import net

    config, _ = load_network(layout)
    with contextlib.suppress(OverlayctlError):
        net.detach(config, container_id)
        net.remove_bridge_if_unused(config)


def _remove(txn: Transaction, record: ContainerRecord) -> None:
    if record.address:
        from ..store.network import release_address

        release_address(txn.layout, txn.lock, record.id)
    ns.remove_pin_file(txn.layout.pin(record.id))
    txn.remove(ctrs.removal_paths(txn.layout, record))


def stop(ctx: StoreContext, record: ContainerRecord, timeout: float = 10.0) -> bool:
    """SIGTERM to the container, SIGKILL after timeout; False if it was not running."""
    state = read_state(ctx.layout, record.id)
    if state.status != "running" or not is_alive(state.pid, state.pid_start):
        reap_stale(ctx)
        return False
    _forward(state.pid, signal.SIGTERM)
    if not wait_gone(state.pid, timeout):
        _forward(state.pid, signal.SIGKILL)
        wait_gone(state.pid, 5)
    # The monitor cleans up; wait for it so that stop returns on a clean state.
    if state.monitor and not wait_gone(state.monitor, 10):
        reap_stale(ctx)
    reap_stale(ctx)
    return True


def reap_stale(ctx: StoreContext) -> list[str]:
    """Clean up after containers whose monitor died (SIGKILL, crash, reboot)."""
    layout = ctx.layout
    reaped = []
    for record in ctrs.list_containers(layout):
        state = read_state(layout, record.id)
        if state.status != "running" or is_alive(state.monitor, state.monitor_start):
            continue
        if is_alive(state.pid, state.pid_start):
            _forward(state.pid, signal.SIGKILL)
            wait_gone(state.pid, 5)
        _finish(ctx, record, state, None, spec_of(record), error="its overlayctl monitor died")
        reaped.append(record.name)
    return reaped
