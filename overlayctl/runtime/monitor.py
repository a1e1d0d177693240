"""Start, watch, stop and clean up containers through an OCI runtime and conmon.

::

    overlayctl start/run          checks, pins the network namespace, attaches the bridge,
      └─ setup child              new mount namespace: mounts the overlay, writes config.json,
           = conmon                 then becomes conmon, which runs `runtime create`
               └─ PID 1           the container's command (runtime init execs it on `runtime start`)

conmon watches PID 1, writes its exit code, and when it ends calls
``overlayctl container cleanup ID`` (``finish`` here), which deletes the
runtime's state, unpins the network and writes the final state (or removes
the container with ``--rm``).  No Python process stays alive per container;
a foreground ``run`` only waits for conmon and forwards signals.  When conmon
itself dies, ``reap_stale`` (run by later commands) cleans up.

``run -t`` in the foreground is the exception: ``runtime run`` keeps the
terminal (raw mode, window size) and overlayctl cleans up after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from typing import TYPE_CHECKING

from ..errors import InUse, NotFound, OverlayctlError
from ..kernel import _libc, ns
from ..kernel.proc import is_alive, start_time, wait_gone
from ..store import containers as ctrs
from ..store.layout import StoreLayout
from ..store.records import ContainerRecord
from ..store.state import DEAD_MONITOR, RunState, monitor_exit_code, read_state, write_state
from . import bundle, oci
from .children import SignalForwarder, check_command, waitpid
from .spec import RunSpec

if TYPE_CHECKING:
    from ..api._context import StoreContext


def spec_of(record: ContainerRecord) -> RunSpec:
    return RunSpec.from_json(record.spec or {})


def runtime_for(layout: StoreLayout, spec: RunSpec) -> oci.OciRuntime:
    return oci.OciRuntime(oci.choose(spec.runtime), layout.runtime_state)


def check_startable(layout: StoreLayout, record: ContainerRecord, state: RunState) -> None:
    if state.status == "running" and is_alive(state.monitor, state.monitor_start):
        raise InUse(f"container {record.name} is already running")
    if ns.is_pinned(layout.pin(record.id)) or ns.is_mount_point(layout.merged(record.id)):
        raise InUse(
            f"container {record.name} is mounted", hint=f"run 'overlayctl container unmount {record.name}' first"
        )


def start(ctx: StoreContext, record: ContainerRecord, *, attach: bool) -> int:
    """Start a container: in the background, returning its PID 1; or attached, returning its exit code."""
    spec = spec_of(record)
    layout = ctx.layout
    runtime = runtime_for(layout, spec)
    conmon = None if attach and spec.tty else oci.conmon_path()
    id_range = None
    with ctx.lock:
        state = read_state(layout, record.id)
        check_startable(layout, record, state)
        if spec.userns == "auto":
            from .userns import prepare

            id_range = prepare(layout, ctx.lock, record)
        me = os.getpid()
        state = state.running(monitor=me, monitor_start=start_time(me), detached=not attach, pid=None, network=None)
        write_state(layout, record.id, state)
    monitor_dir = layout.monitor_dir(record.id)
    shutil.rmtree(monitor_dir, ignore_errors=True)
    os.makedirs(monitor_dir, 0o700)
    from .launch import Launch, launch

    launched: Launch | None = None
    with SignalForwarder(active=attach) as forwarder:
        try:
            facts = bundle.host_facts(layout, record, spec, id_range=id_range)
            launched = launch(ctx, record, spec, facts, runtime, conmon=conmon, attach=attach, id_range=id_range)
            state = _started(ctx, record, launched, runtime)
        except BaseException:
            if launched is not None:
                launched.abandon()
            finish(ctx, record.id, error="it could not be started")
            raise
        if not attach:
            return state.pid or 0
        forwarder.point_at(launched.signal_target(state.pid))
        return _wait(ctx, record, launched)


def _started(ctx: StoreContext, record, launched, runtime: oci.OciRuntime) -> RunState:
    """Record PID 1 and conmon, attach the bridge, then let the command run."""
    from dataclasses import replace

    from .cgroups import Cgroup, Limits

    layout = ctx.layout
    pid = launched.container_pid()
    monitor = launched.monitor_pid()
    state = replace(
        read_state(layout, record.id),
        pid=pid,
        pid_start=start_time(pid),
        monitor=monitor,
        monitor_start=start_time(monitor),
        cgroup=Cgroup.of(record.id, Limits.from_json(spec_of(record).limits)).to_json(),
    )
    write_state(layout, record.id, state)
    if spec_of(record).network == "bridge":
        from .launch import attach_bridge

        attach_bridge(ctx, record, pid)
    if launched.conmon:
        runtime.start(record.id)
    launched.started()
    return read_state(layout, record.id)


def _wait(ctx: StoreContext, record: ContainerRecord, launched) -> int:
    """The foreground: wait for the monitor to end; clean up."""
    status = waitpid(launched.child)
    code = os.waitstatus_to_exitcode(status)
    code = code if code >= 0 else 128 - code
    exit_file = f"{ctx.layout.monitor_dir(record.id)}/exit"
    if not launched.conmon:  # runtime run: its exit code is the container's
        with contextlib.suppress(OSError), open(exit_file, "w") as f:
            f.write(str(code))
    finish(ctx, record.id)
    return code


def finish(ctx: StoreContext, container_id: str, *, error: str = "") -> bool:
    """Everything a container leaves when it ends: runtime state, overlay, network pin, veth; --rm.

    Runs as conmon's exit command, after a foreground run, or from
    ``reap_stale``; the first one does the work, the others find nothing.
    """
    from ..store.transaction import ROLLFORWARD
    from .cgroups import Cgroup

    layout = ctx.layout
    try:
        record = ctrs.load_container(layout, container_id)
    except NotFound:  # removed already (--rm)
        return False
    state = read_state(layout, container_id)
    if state.status != "running":
        return False
    monitor_dir = layout.monitor_dir(container_id)
    code = monitor_exit_code(layout, container_id)
    extra, oom = dict(state.extra), False
    with contextlib.suppress(OSError, OverlayctlError, ValueError):
        cgroup = Cgroup.of(container_id)
        oom = cgroup.oom_killed()
        extra["memory_peak"] = cgroup.memory_peak()
    spec = spec_of(record)
    with contextlib.suppress(OverlayctlError):
        runtime_for(layout, spec).delete(container_id)
    if ns.is_mount_point(layout.merged(container_id)):  # conmon's namespace, where the exit command runs
        with contextlib.suppress(OSError):
            _libc.umount2(layout.merged(container_id), _libc.MNT_DETACH)
    with ctx.transaction("container end", on_crash=ROLLFORWARD) as txn:
        state = read_state(layout, container_id)
        if state.status != "running":
            return False
        if state.network:
            _detach(layout, container_id)
        shutil.rmtree(monitor_dir, ignore_errors=True)
        if spec.auto_remove:
            _remove(txn, record)
            return True
        if code is None and not error:
            error = DEAD_MONITOR
        write_state(layout, container_id, state.exited(code, oom_killed=oom, error=error, extra=extra))
    return True


def _detach(layout: StoreLayout, container_id: str) -> None:
    """Remove the host end of the veth now (the namespace may die later), then the bridge if unused."""
    from ..store.network import load_network
    from . import net

    config, _ = load_network(layout)
    with contextlib.suppress(OverlayctlError):
        net.detach(config, container_id)
        net.remove_bridge_if_unused(config)


def _remove(txn, record: ContainerRecord) -> None:
    from ..store.idranges import release

    if record.address:
        from ..store.network import release_address

        release_address(txn.layout, txn.lock, record.id)
    release(txn.layout, txn.lock, record.id)
    ns.remove_pin_file(txn.layout.pin(record.id))
    txn.remove(ctrs.removal_paths(txn.layout, record))


def stop(ctx: StoreContext, record: ContainerRecord, timeout: float = 10.0) -> bool:
    """SIGTERM to the container, SIGKILL to all its processes after timeout; False if it was not running."""
    state = read_state(ctx.layout, record.id)
    if state.status != "running" or not is_alive(state.pid, state.pid_start):
        reap_stale(ctx)
        return False
    runtime = runtime_for(ctx.layout, spec_of(record))
    runtime.kill(record.id, signal.SIGTERM)
    if not wait_gone(state.pid, timeout):
        runtime.kill(record.id, signal.SIGKILL, all_processes=True)
        wait_gone(state.pid, 5)
    # conmon cleans up when PID 1 ends; wait for it so that stop returns on a clean state.
    if state.monitor:
        wait_gone(state.monitor, 10)
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
            with contextlib.suppress(OverlayctlError):
                runtime_for(layout, spec_of(record)).kill(record.id, signal.SIGKILL, all_processes=True)
            wait_gone(state.pid, 5)
        if finish(ctx, record.id):
            reaped.append(record.name)
    return reaped


def exec_in(
    ctx: StoreContext, record: ContainerRecord, state: RunState, argv: list[str], *, interactive: bool, tty: bool
) -> int:
    """Run argv in a running container with its process settings (user, env, caps, seccomp); its exit code."""
    import subprocess

    if not argv:
        from ..errors import InvalidArgument

        raise InvalidArgument("give a command to run", hint=f"overlayctl exec {record.name} -- sh")
    config = bundle.read_config(ctx.layout, record.id)
    process = dict(config["process"], args=list(argv), terminal=tty)
    check_command(f"/proc/{state.pid}/root", argv[0], process["env"])
    path = f"{ctx.layout.monitor_dir(record.id)}/exec-{os.getpid()}.json"
    with open(path, "w") as f:
        json.dump(process, f)
    runtime = runtime_for(ctx.layout, spec_of(record))
    try:
        sys.stdout.flush()
        with SignalForwarder() as forwarder:
            child = subprocess.Popen(
                runtime.exec_argv(record.id, path, tty=tty), stdin=None if interactive or tty else subprocess.DEVNULL
            )
            forwarder.point_at(child.pid)
            return child.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
