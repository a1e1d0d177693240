"""The setup child: a new mount namespace with the overlay, config.json, then conmon.

The child mounts the container's overlay in a mount namespace of its own, so
nothing reaches the host's mount table, and (unless ``--network host``)
enters a new network namespace that the parent pins and wires up.  Once the
parent says go, the child becomes conmon (or ``runtime run`` for a foreground
terminal), which inherits both namespaces; the runtime's container copies
them.

Two pipes carry the handshake: ``ready`` (the child has set up; parent: pin,
attach, go) and ``events`` (JSON lines: the child's error, or conmon's
``{"data": PID}`` once ``runtime create`` is done).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ContainerFailed, OverlayctlError, from_oserror
from ..kernel import _libc
from ..kernel.proc import is_alive
from ..store import containers as ctrs
from ..store.records import ContainerRecord
from ..store.state import read_state, write_state
from . import bundle
from .children import EXIT_SETUP_FAILED, check_command, wait_for_file, waitpid
from .oci import OciRuntime
from .ocispec import HostFacts, environment
from .spec import RunSpec

if TYPE_CHECKING:
    from ..api._context import StoreContext


@dataclass
class Launch:
    """A container on its way: the child (conmon or ``runtime run``) and what it reports."""

    child: int
    monitor_dir: str
    events_fd: int
    conmon: bool
    attach: bool
    guard: StartGuard | None = None

    def container_pid(self) -> int:
        """PID 1 as the host sees it, once the runtime created it."""
        if not self.conmon:
            return int(wait_for_file(f"{self.monitor_dir}/pid", self.child))
        line = _read_line(self.events_fd)
        os.close(self.events_fd)
        self.events_fd = -1
        if not self.attach:
            waitpid(self.child)  # conmon's first process exits once its daemon runs
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = {}
        pid = event.get("data", -1)
        if not isinstance(pid, int) or pid <= 0:
            raise _failure(event)
        return pid

    def monitor_pid(self) -> int:
        if self.attach:
            return self.child
        return int(wait_for_file(f"{self.monitor_dir}/conmon.pid", os.getpid()))

    def signal_target(self, pid: int | None) -> int | None:
        """Who a forwarded signal goes to: PID 1, or ``runtime run`` which passes it on."""
        return pid if self.conmon else self.child

    def started(self) -> None:
        """The command runs: the start guard may go."""
        if self.guard is not None:
            self.guard.release(started=True)

    def abandon(self) -> None:
        """Undo a start that failed half-way: kill and reap the child; the guard deletes the container."""
        if self.guard is not None:
            self.guard.release(started=False)
        if self.events_fd >= 0:
            os.close(self.events_fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            waitpid(self.child)


class StartGuard:
    """A process that deletes the container if overlayctl dies between ``runtime create`` and ``start``.

    A created container waits for ``start`` for ever, and conmon with it,
    holding the caller's output pipes.  The guard is in a session of its
    own, so it outlives a kill of overlayctl's process group; told
    "started", it just exits.
    """

    POLL = 0.02
    PATIENCE = 10.0  # seconds to wait for the runtime to make the container it must delete

    def __init__(self, runtime: OciRuntime, container_id: str, maker: int, monitor_dir: str) -> None:
        read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                os.setsid()
                null = os.open("/dev/null", os.O_RDWR)
                for target in (0, 1, 2):
                    os.dup2(null, target)
                os.closerange(3, read_fd)
                os.closerange(read_fd + 1, 65536)
                word = os.read(read_fd, 1)
                if word == b"d":  # overlayctl gave up: what was made goes now
                    runtime.delete(container_id)
                elif word != b"s":  # overlayctl died: wait for the runtime to finish making it
                    self._delete_when_created(runtime, container_id, maker, monitor_dir)
            except BaseException:  # noqa: BLE001 - a forked child never returns into the caller
                code = 1
            finally:
                os._exit(code)
        os.close(read_fd)

    @classmethod
    def _delete_when_created(cls, runtime: OciRuntime, container_id: str, maker: int, monitor_dir: str) -> None:
        """Delete the container once made, if it never started; give up when nothing is left that could make it."""
        import time

        deadline = time.monotonic() + cls.PATIENCE
        while time.monotonic() < deadline:
            state = runtime.state(container_id)
            if state is None and not (is_alive(maker) or is_alive(_pid_in(f"{monitor_dir}/conmon.pid"))):
                state = runtime.state(container_id)  # nothing can make it any more: a last look
                if state is None:
                    return
            if state is not None:
                # Started before overlayctl died (it could not say so): the container is the user's now.
                if state.get("status") == "created":
                    runtime.delete(container_id)
                return
            time.sleep(cls.POLL)

    def release(self, *, started: bool) -> None:
        if self._write_fd < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"s" if started else b"d")
        os.close(self._write_fd)
        self._write_fd = -1
        waitpid(self.pid)


def _pid_in(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _failure(event: dict) -> OverlayctlError:
    message = str(event.get("error") or event.get("message") or "the runtime could not create the container")
    message = " ".join(message.split())
    code = event.get("code", EXIT_SETUP_FAILED)
    return ContainerFailed(message, code)


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def launch(
    ctx: StoreContext,
    record: ContainerRecord,
    spec: RunSpec,
    facts: HostFacts,
    runtime: OciRuntime,
    *,
    conmon: str | None,
    attach: bool,
    id_range=None,
) -> Launch:
    """Fork the setup child, pin and wire its network namespace, and let it become the monitor."""
    layout = ctx.layout
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    events_r, events_w = os.pipe2(os.O_CLOEXEC)
    argv = _monitor_argv(ctx, record, runtime, conmon, attach)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        for fd in (ready_r, go_w, events_r):
            os.close(fd)
        _child_main(ctx, record, spec, facts, id_range, argv, attach, ready_w, go_r, events_w)
    for fd in (ready_w, go_r, events_w):
        os.close(fd)
    guard = StartGuard(runtime, record.id, child, layout.monitor_dir(record.id)) if conmon else None
    launched = Launch(child, layout.monitor_dir(record.id), events_r, conmon is not None, attach, guard)
    try:
        with os.fdopen(ready_r, "rb") as pipe:
            ready = pipe.readline()
        if not ready:
            raise _failure(json.loads(_read_line(events_r) or "{}"))
        os.write(go_w, b"g")
    except BaseException:
        launched.abandon()
        raise
    finally:
        os.close(go_w)
    return launched


def _monitor_argv(ctx, record: ContainerRecord, runtime: OciRuntime, conmon: str | None, attach: bool) -> list[str]:
    layout = ctx.layout
    monitor_dir = layout.monitor_dir(record.id)
    bundle_dir = layout.bundle(record.id)
    if conmon is None:
        return runtime.run_argv(record.id, bundle_dir, f"{monitor_dir}/pid")
    argv = [
        conmon,
        "--api-version", "1",
        "--cid", record.id,
        "--cuuid", record.id,
        "--name", record.name,
        "--runtime", runtime.choice.path,
        "--runtime-arg", "--root",
        "--runtime-arg", layout.runtime_state,
        "--bundle", bundle_dir,
        "--container-pidfile", f"{monitor_dir}/pid",
        "--persist-dir", monitor_dir,
        "--log-path", "passthrough",
    ]  # fmt: skip
    if attach:
        # overlayctl waits and cleans up itself; if it is killed, the next command reaps.
        return [*argv, "--sync"]
    argv += ["--conmon-pidfile", f"{monitor_dir}/conmon.pid", "--exit-command", sys.executable]
    cleanup = ["-m", "overlayctl", "--root", layout.root, "--run-root", layout.run_root, "container", "cleanup"]
    for arg in [*cleanup, record.id]:
        argv += ["--exit-command-arg", arg]
    return argv


def attach_bridge(ctx, record: ContainerRecord, pid: int) -> None:
    """Connect a created container's network namespace to the bridge, before its command runs."""
    from dataclasses import replace

    from ..store.network import allocate_address, load_network
    from . import net

    layout = ctx.layout
    # Under the lock: a container that ends meanwhile may remove an unused
    # bridge, which must not happen between its creation and this veth.
    with ctx.lock:
        address = allocate_address(layout, ctx.lock, record.id)
        config, _ = load_network(layout)
        attached = net.attach(config, record.id, pid, address)
        write_state(layout, record.id, replace(read_state(layout, record.id), network=attached))


def _child_main(ctx, record, spec: RunSpec, facts: HostFacts, id_range, argv, attach, ready_w, go_r, events_w) -> None:
    """Set up, report ready, wait for go, become the monitor; never returns."""
    code = EXIT_SETUP_FAILED
    try:
        _set_up_namespaces(ctx, record, spec, facts, id_range)
        os.write(ready_w, b"ready\n")
        os.close(ready_w)
        if not os.read(go_r, 1):  # the parent gave up
            os._exit(EXIT_SETUP_FAILED)
        _exec_monitor(ctx, record, spec, argv, attach, events_w)
    except OverlayctlError as exc:
        if isinstance(exc, ContainerFailed):
            code = exc.exit_code
        _report(events_w, exc.message, code)
    except OSError as exc:
        _report(events_w, from_oserror(exc).message, code)
    except BaseException as exc:  # noqa: BLE001 - a forked child never returns into the caller
        _report(events_w, f"internal error: {exc!r}", code)
    finally:
        os._exit(code)


def _report(fd: int, message: str, code: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps({"error": message, "code": code}) + "\n").encode())


def _set_up_namespaces(ctx, record: ContainerRecord, spec: RunSpec, facts: HostFacts, id_range) -> None:
    from ..kernel import mount as kmount
    from ..kernel.mount import MountApi, default_api
    from .users import inside, resolve_user

    layout = ctx.layout
    _libc.unshare(_libc.CLONE_NEWNS)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    # Short links only where mount(2) is used: its options must fit in a page.
    plan = ctrs.build_plan(layout, record, labels=False, links=default_api() is MountApi.CLASSIC)
    if id_range is None:
        kmount.apply(plan)
    else:
        from .userns import mount_idmapped

        mount_idmapped(plan, id_range)
    merged = plan.target
    user = resolve_user(merged, spec.user)
    os.makedirs(inside(merged, spec.workdir or "/"), exist_ok=True)  # as Docker does for a missing WorkingDir
    check_command(merged, spec.argv[0], environment(spec, record.hostname, user.home))
    bundle.write_config(layout, record, spec, user, facts)


def _exec_monitor(ctx, record: ContainerRecord, spec: RunSpec, argv: list[str], attach: bool, events_w: int) -> None:
    """Become conmon (or ``runtime run``) with the container's stdio."""
    if not (spec.interactive or spec.tty):
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    if not attach:
        log = os.open(ctx.layout.log(record.id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    os.chdir(ctx.layout.monitor_dir(record.id))  # conmon writes an "oom" file into its working directory
    env = dict(os.environ)
    os.set_inheritable(events_w, True)
    env["_OCI_SYNCPIPE"] = str(events_w)
    if not is_alive(os.getppid()):
        os._exit(EXIT_SETUP_FAILED)
    os.execve(argv[0], argv, env)
