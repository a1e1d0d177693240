"""Family ``run``: what ``overlayctl run`` costs, side by side with ``docker run`` and with ``runc run`` alone.

Each round runs, in turn, on the same busybox rootfs: ``overlayctl run --rm
busybox:bench -- true`` (the default profile: capabilities, seccomp, masked
paths), the same with ``--privileged``, ``docker run --rm --network none``
of the rootfs ``docker import``ed, ``runc run`` of a bundle prepared once
(the floor of the runtime step) and ``LayerStore.run`` in-process; every
ratio is one of medians taken side by side (``harness.interleaved``).
Docker comes from ``testkit.dockerd``: the host's daemon when the client
reaches one, else a private dockerd in the bench's temp dir.  Without Docker
or runc their rows say why and the others are still measured.

The floor's bundle is prepared once by ``run_floor``: container
``benchfloor``'s own config.json, its root the container's overlay mounted
in our namespace.

Then one ``overlayctl run -d ... sleep 60``: the PSS of what stays beside
the container (conmon) and of the container's own processes.

The Docker image, the floor's runc state, mount and container, and the
detached container are removed also after an error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from testkit.dockerd import (
    DEBIAN_DOCKER,
    DOCKER_CALL_TIMEOUT,
    Docker,
    DockerUnavailable,
    docker_engine,
    last_line,
    processes_naming,
    signals_deferred,
)

from .context import Bench
from .harness import fmt_time, interleaved, median, print_ratio, ratio, reps_or
from .results import Results, header, not_measured
from .run_floor import Unavailable, overlayctl, prepare_floor, remove_container

NAME = "run"
SUMMARY = "'overlayctl run --rm IMAGE true' (default, --privileged) vs docker run and runc run; conmon's memory"

RUN_TAG = "busybox:bench"  # the busybox rootfs in the bench store
DOCKER_IMAGE = "overlayctl-bench/busybox:latest"  # the same rootfs in Docker
DETACHED_NAME = "benchdetached"  # the container whose memory is measured
RUN_REPS = 20
RUN_WARMUP = 2
GOAL_RUN_VS_DOCKER = 1 / 3  # overlayctl run within 1/3 of docker run's median
GOAL_PROFILE_S = 0.005  # the default profile costs at most 5 ms over --privileged
GOAL_BESIDE_KIB = 2048  # what stays beside a detached container: at most 2 MiB PSS
EXIT_WAIT_S = 5.0  # for the monitor to go after 'rm -f'
NOTE = "busybox rootfs, 1 layer + init layer"


class Contender:
    """One step of the rounds, its times and its note.

    An optional one (docker run, runc run) that fails is dropped with its
    reason and the others go on; overlayctl's own steps raise, and the
    family breaks.  ``verify`` runs after the rounds; its text joins the note.
    """

    def __init__(
        self,
        name: str,
        action: Callable[[], object] | None,
        note: str = "",
        *,
        optional: bool = False,
        verify: Callable[[], str] | None = None,
    ) -> None:
        self.name = name
        self.action = action
        self.note = note  # why it is missing when action is None
        self.optional = optional
        self.verify = verify
        self.times: list[float] = []

    def step(self) -> float | None:
        """The action; 0.0 (its own time, ignored) once an optional one has failed."""
        if self.action is None:
            return 0.0
        if not self.optional:
            self.action()
            return None
        try:
            self.action()
        except (Unavailable, DockerUnavailable, OSError, subprocess.SubprocessError) as exc:
            self.action, self.note = None, str(exc) or type(exc).__name__
            return 0.0
        return None  # interleaved times the call

    @property
    def measured(self) -> bool:
        return self.action is not None


def measure(ctx: Bench, results: Results, reps: int | None) -> None:
    """The rounds side by side, their rows and ratios, then the memory beside a detached container."""
    store = ctx.store()
    rootfs, _ = ctx.busybox_rootfs()
    count = reps_or(RUN_REPS, reps)
    start = time.perf_counter()
    store.images.import_rootfs(str(rootfs), tag=RUN_TAG)
    imported = time.perf_counter() - start
    before = {state.record.id for state in store.containers.list()}

    def api_run() -> None:
        with interrupts_kept():
            code = store.runtime.run(RUN_TAG, ["true"], remove=True)
        if code != 0:
            raise RuntimeError(f"LayerStore.run of 'true' exited {code}")

    default = Contender("overlayctl run --rm IMAGE true", lambda: ctx.cli("run", "--rm", RUN_TAG, "--", "true"))
    privileged = Contender(
        "overlayctl run --rm --privileged", lambda: ctx.cli("run", "--rm", "--privileged", RUN_TAG, "--", "true")
    )
    in_process = Contender("LayerStore.run (in-process)", api_run)
    with contextlib.ExitStack() as stack:
        docker = open_docker(stack, ctx.base / "dockerd", rootfs)
        floor = open_floor(stack, ctx)
        header(
            "run: overlayctl run --rm IMAGE true vs docker run --rm --network none IMAGE true vs runc run"
            f" (wall time, side by side; store import took {fmt_time(imported)})"
        )
        contenders = (default, privileged, docker, floor, in_process)
        rounds = interleaved(*(c.step for c in contenders), reps=count, warmup=RUN_WARMUP)
        for contender, times in zip(contenders, rounds):
            contender.times = times
            if contender.measured and contender.verify is not None:
                contender.note = f"{contender.note}; {contender.verify()}"
    record(results, default, privileged, docker, floor, in_process)
    left = [state.record.name for state in store.containers.list() if state.record.id not in before]
    if left:
        print(f"bench: 'run --rm' left containers {left} in the store", file=sys.stderr)
    detached_memory(ctx, results)


@contextlib.contextmanager
def interrupts_kept() -> Iterator[None]:
    """KeyboardInterrupt after the block when SIGINT or SIGTERM came during it.

    A foreground ``LayerStore.run`` forwards those signals to the container
    in place of the bench's handlers (as ``docker run`` does), so the bench
    would go on; the wakeup fd sees every signal, whatever its handler.
    """
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    got = b""
    try:
        yield
    finally:
        signal.set_wakeup_fd(old)
        with contextlib.suppress(BlockingIOError):
            got = os.read(r, 512)
        os.close(r)
        os.close(w)
    if {signal.SIGINT, signal.SIGTERM} & set(got):
        raise KeyboardInterrupt


def record(
    results: Results,
    default: Contender,
    privileged: Contender,
    docker: Contender,
    floor: Contender,
    in_process: Contender,
) -> None:
    """The rows of the rounds and their ratio lines: to docker, the profile's cost, to the runc floor."""
    goal = met = None
    if docker.measured:
        to_docker = ratio(default.times, docker.times)
        goal, met = "<= 1/3 of docker run", to_docker <= GOAL_RUN_VS_DOCKER
    row = results.add("run", default.name, default.times, n=1, lowers=2, goal=goal, met=met, note=NOTE)
    cost = median(default.times) - median(privileged.times)
    paired = median([a - b for a, b in zip(default.times, privileged.times)])
    priv = results.add(
        "run",
        privileged.name,
        privileged.times,
        n=1,
        lowers=2,
        goal="profile cost <= 5 ms",
        met=cost <= GOAL_PROFILE_S,
        note=f"{NOTE}; all capabilities and devices, no seccomp, no masked paths",
    )
    priv["profile_cost_s"] = cost
    priv["ratio_note"] = f"profile cost {cost * 1e3:.1f} ms = default - privileged"
    if docker.measured:
        row["ratio_to_docker"] = to_docker
        results.add("run", docker.name, docker.times, note=docker.note)
    else:
        row["note"] = f"{NOTE}; {docker.note}"
        not_measured(docker.name, None, f"not measured: {docker.note}")
    if floor.measured:
        to_floor = ratio(default.times, floor.times)
        row["ratio_to_runc_run"] = to_floor
        results.add("run", floor.name, floor.times, n=1, lowers=2, note=floor.note)
    else:
        not_measured(floor.name, None, f"not measured: {floor.note}")
    results.add("run", in_process.name, in_process.times, n=1, lowers=2, note=f"{NOTE}; no docker equivalent")
    if docker.measured:
        print_ratio("overlayctl run / docker run", to_docker, goal=GOAL_RUN_VS_DOCKER)
    state = "ok" if cost <= GOAL_PROFILE_S else "MISSED"
    print(
        f"  profile cost, default - privileged: {cost * 1e3:.1f} ms (goal <= {GOAL_PROFILE_S * 1e3:.0f} ms: {state});"
        f" median of the rounds' differences {paired * 1e3:.1f} ms",
        flush=True,
    )
    if floor.measured:
        print_ratio("overlayctl run / runc run of a prepared bundle", to_floor)


def open_docker(stack: contextlib.ExitStack, tmp: Path, rootfs: Path) -> Contender:
    """docker run of the rootfs; its engine and image are released when stack closes."""
    name = "docker run --rm --network none"
    try:
        docker = stack.enter_context(docker_engine(tmp))
        stack.callback(docker_remove_image, docker)
        docker_import(docker, rootfs)
    except DockerUnavailable as exc:
        return Contender(name, None, str(exc), optional=True)
    argv = docker.argv("run", "--rm", "--network", "none", DOCKER_IMAGE, "true")

    def docker_run() -> None:
        done = subprocess.run(
            argv,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=DOCKER_CALL_TIMEOUT,
        )
        if done.returncode != 0:
            raise DockerUnavailable(f"docker run: {last_line(done.stderr) or f'exit {done.returncode}'}")

    client = "Debian's client" if docker.client == DEBIAN_DOCKER else docker.client
    return Contender(name, docker_run, f"docker {docker.version}, {docker.where}, {client}", optional=True)


def docker_import(docker: Docker, rootfs: Path) -> None:
    """tar -C rootfs -c . | docker import - IMAGE"""
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    try:
        docker.call("import", "-", DOCKER_IMAGE, stdin=tar.stdout)
    finally:
        tar.stdout.close()
        if tar.wait() != 0:
            raise DockerUnavailable(f"tar of {rootfs} failed (exit {tar.returncode})")


def docker_remove_image(docker: Docker) -> None:
    """Remove the bench's image and any container of it (none, after --rm)."""
    with signals_deferred():
        with contextlib.suppress(DockerUnavailable):
            ids = docker.call("ps", "-aq", "--filter", f"ancestor={DOCKER_IMAGE}").stdout.split()
            if ids:
                print(f"bench: removing {len(ids)} docker containers left by 'docker run --rm'", file=sys.stderr)
                docker.call("rm", "-f", *ids)
        with contextlib.suppress(DockerUnavailable):
            docker.call("rmi", DOCKER_IMAGE)


def open_floor(stack: contextlib.ExitStack, ctx: Bench) -> Contender:
    """runc run of container benchfloor's bundle (see ``run_floor``); undone when stack closes."""
    name = "runc run of a prepared bundle"
    try:
        action, note, verify = prepare_floor(stack, ctx, RUN_TAG)
    except Unavailable as exc:
        return Contender(name, None, str(exc), optional=True)
    return Contender(name, action, note, optional=True, verify=verify)


def detached_memory(ctx: Bench, results: Results) -> None:
    """PSS of the processes beside one detached container (conmon) and of the container's own."""
    store = ctx.store()
    header("run -d: memory of one detached container 'sleep 60' (PSS from /proc/PID/smaps_rollup)")
    try:
        overlayctl(ctx, "run", "-d", "--name", DETACHED_NAME, RUN_TAG, "--", "sleep", "60")
        inspect = json.loads(overlayctl(ctx, "container", "inspect", DETACHED_NAME, "--json"))
        pid, monitor = inspect["pid"], inspect["run"]["monitor"]
        if not pid or not monitor:
            raise Unavailable(f"inspect shows pid {pid}, monitor {monitor} (state {inspect['state']})")
        own = descendants(pid)
        ours = {monitor, *processes_naming(Path(store.layout.run_root)), *processes_naming(Path(store.layout.root))}
        beside = [(p, comm(p), pss_kib(p)) for p in sorted(ours - own - {os.getpid()})]
        inside = [(p, comm(p), pss_kib(p)) for p in sorted(own)]
    except Unavailable as exc:
        not_measured("beside the container", None, f"not measured: {exc}")
        return
    finally:
        remove_container(ctx, DETACHED_NAME)
        stopped_after_rm(store.layout.run_root, store.layout.root)
    total = sum(kib for _, _, kib in beside)
    results.add_size(
        "run",
        "beside the container (conmon)",
        total,
        n=1,
        goal="<= 2 MiB beside each container",
        met=total <= GOAL_BESIDE_KIB,
        note=", ".join(f"{name} {p}: {kib} KiB" for p, name, kib in beside),
    )
    results.add_size(
        "run",
        "the container's own processes",
        sum(kib for _, _, kib in inside),
        n=1,
        note=", ".join(f"{name} {p}: {kib} KiB" for p, name, kib in inside),
    )
    for p, name, kib in beside + inside:
        print(f"    pid {p} {name}: {kib} KiB", flush=True)


def stopped_after_rm(*roots: str) -> None:
    """After 'rm -f': wait for the processes naming the store to go; kill (by pid) and report any that stay."""
    deadline = time.monotonic() + EXIT_WAIT_S
    while True:
        left = sorted({p for root in roots for p in processes_naming(Path(root))} - {os.getpid()})
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in left:
        print(f"bench: 'rm -f' left process {p} ({comm(p)}); killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def descendants(pid: int) -> set[int]:
    """pid and every process below it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as f:
                    # The ppid follows the command, which may hold spaces and parentheses.
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    found = {pid}
    grew = True
    while grew:
        below = {child for child, parent in parents.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return found


def pss_kib(pid: int) -> int:
    """The process's proportional set size (KiB), from /proc/PID/smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        raise Unavailable(f"no smaps_rollup for pid {pid}") from None


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"
