"""overlayctl benchmarks: mount times against the kernel's own floor, run against Docker.

Run as root with ``make bench`` (or ``.venv/bin/python bench/bench.py``).
Prints a table of median times and writes the same figures to
``bench/results.json``.  Slow numbers are reported, never fatal: the exit
status is 0 unless the benchmark itself breaks.

What is measured:

* floor: the raw kernel mount of the same N layer directories overlayctl
  mounts (the store's diff dirs of the N-layer image, plus an init dir, an
  upper and a work dir), by the new mount API (fsopen, one ``fsconfig
  lowerdir+`` per layer with the absolute path, fsmount, move_mount) and by
  classic mount(2) with the store's short relative links; the floor is the
  API overlayctl uses on this kernel (the new one where the kernel has
  ``lowerdir+``), mount(2) is printed beside it for reference.  Only the
  mount call is timed; each sample is unmounted afterwards.
* api: ``LayerStore.mount`` / ``LayerStore.unmount`` of a container whose
  image has N layers (the container adds its init layer, so the mount has
  N + 1 lowers; N = 500 uses an image of 499 layers: 500 lowers, the
  kernel's limit).  Each sample is followed by a raw kernel mount of the
  same lowers (with its own upper, work and target), and the goal's ratio
  compares those samples taken side by side: this VM drifts by tens of
  percent between the phases of a run.
* cli: ``overlayctl container mount`` as a subprocess (wall time), and
  ``overlayctl --help``.
* busybox: ``container create`` + ``container mount`` of a busybox image,
  in-process and through the CLI.
* run: ``overlayctl run --rm busybox:bench -- true`` against
  ``docker run --rm --network none overlayctl-bench/busybox true``, both as
  subprocesses (wall time) on the same busybox root filesystem (imported
  into the bench store, and into Docker by ``docker import``), plus
  ``LayerStore.run`` in-process.  Docker is optional: without it (or when
  no daemon can be started) only overlayctl's rows are printed, with the
  reason.

Docker (the engine helpers live in ``tests/dockerd.py``, shared with the
Docker oracle tests): a daemon the docker client already reaches (DOCKER_HOST
or the default socket) is used as it is.  Otherwise the bench starts a private
dockerd for itself (no iptables, no bridge, an empty config file of its own,
its data root, exec root, pid file, socket and key file in a temp dir) and
passes that socket to every docker call.  The client is Debian's
``/usr/bin/docker`` (docker.io, the daemon's own release and API version;
a newer client first on PATH also works, by negotiating the API down, but
would time another program), else the first on PATH.  At the end, also
after an error or Ctrl-C (deferred while this runs), the imported image is
removed, the private daemon is stopped by its pid (SIGTERM, SIGKILL after
20 s), whatever it left mounted in its temp dir is unmounted and the temp
dir deleted, with the empty directories it made on the host (``/run/docker``,
``/run/containerd``, the ``docker`` cgroups) when they were not there before.

The floor runs in a forked child that moves into a private mount namespace
of its own, so its mounts never reach the host and die with it.  overlayctl
itself runs in the caller's namespace, as a user runs it: its mounts live in
the containers' own namespaces, pinned under a temp run root.  Everything is
unmounted and deleted at the end, also after an error or Ctrl-C.

Why not move the whole benchmark into a private namespace: on Linux 6.18
mount namespace IDs come from per-CPU batches, so a namespace made later can
have a smaller ID than the caller's; the kernel then refuses to bind-mount
its nsfs file there (the mount-namespace loop check compares the IDs) and
overlayctl's namespace pin fails with EINVAL, depending on which CPUs the two
unshare() calls ran on.  From the initial namespace (ID 4 here) it never fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The bench runs as a script (python bench/bench.py): sys.path[0] is bench/.
# The repository root makes the Docker engine helpers of tests/dockerd.py
# importable, shared with the Docker oracle tests.
sys.path.insert(0, str(HERE.parent))

from tests.dockerd import (  # noqa: E402  (needs the repository root on sys.path)
    DEBIAN_DOCKER,
    DOCKER_CALL_TIMEOUT,
    Docker,
    DockerUnavailable,
    docker_engine,
    last_line,
    mounts_under,
    signals_deferred,
)

RESULTS = HERE / "results.json"
CLI = os.environ.get("OVERLAYCTL") or str(Path(sys.executable).parent / "overlayctl")

FLOOR_NS = (1, 10, 100, 125, 500)
API_NS = (1, 10, 100, 500)
CLI_NS = (1, 10, 100, 125, 500)
FLOOR_REPS = 100
MAX_IMAGE_LAYERS = 499  # plus the container's init layer: 500 lowers

GOAL_API_RATIO = 1.5  # in-process mount within 1.5x of the floor at N = 100
GOAL_CLI_MOUNT = 0.10  # CLI container mount at N = 125, seconds
GOAL_HELP = 0.08  # overlayctl --help, seconds
GOAL_RUN_VS_DOCKER = 1 / 3  # overlayctl run within 1/3 of docker run's median

RUN_TAG = "busybox:bench"  # the busybox rootfs in the bench store
DOCKER_IMAGE = "overlayctl-bench/busybox:latest"  # the same rootfs in Docker
RUN_REPS = 20
RUN_WARMUP = 2


def reps_for(n: int) -> int:
    """Repetitions: many for fast mounts, fewer for the 500-layer ones."""
    return 50 if n <= 10 else 30 if n <= 125 else 20


# -- measuring ----------------------------------------------------------------


def sample(
    action: Callable[[], object], reps: int, *, warmup: int = 3, after: Callable[[], object] | None = None
) -> list[float]:
    """Time action reps times (after warm-up runs); after() runs untimed after each."""
    times: list[float] = []
    for i in range(warmup + reps):
        start = time.perf_counter()
        action()
        elapsed = time.perf_counter() - start
        if after is not None:
            after()
        if i >= warmup:
            times.append(elapsed)
    return times


def median(times: list[float]) -> float:
    return statistics.median(times)


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


class Results:
    """Rows of the table, kept in order, and their JSON form."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.floor: dict[int, float] = {}
        self.floor_side_by_side: dict[int, float] = {}

    def add(
        self,
        group: str,
        name: str,
        times: list[float],
        *,
        n: int | None = None,
        lowers: int | None = None,
        floor_n: int | None = None,
        goal: str | None = None,
        met: bool | None = None,
        note: str = "",
    ) -> dict:
        med = median(times)
        floor = self.floor.get(floor_n) if floor_n is not None else None
        row = {
            "group": group,
            "name": name,
            "n": n,
            "lowers": lowers,
            "reps": len(times),
            "median_s": med,
            "min_s": min(times),
            "floor_n": floor_n,
            "ratio_to_floor": med / floor if floor else None,
            "goal": goal,
            "goal_met": met,
            "note": note,
        }
        self.rows.append(row)
        ratio = f"{row['ratio_to_floor']:.1f}x" if row["ratio_to_floor"] is not None else "-"
        mark = "" if met is None else ("  ok" if met else "  MISSED")
        print(
            f"  {name:34} {'' if n is None else n:>4} {fmt_time(med):>10} {fmt_time(min(times)):>10} {ratio:>8}"
            f"  {goal or ''}{mark}",
            flush=True,
        )
        return row

    def to_json(self) -> dict:
        return {
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "floor_s": {str(n): t for n, t in self.floor.items()},
            "rows": self.rows,
        }


def header(title: str) -> None:
    print(f"\n{title}", flush=True)
    print(f"  {'benchmark':34} {'N':>4} {'median':>10} {'min':>10} {'/floor':>8}  goal", flush=True)


# -- the floor: raw kernel mounts ---------------------------------------------


def bench_floor(results: Results, base: Path, store) -> None:
    """The floor, measured in a child process in a private mount namespace.

    The child also mounts overlayctl's own plans (kernel calls only), which
    splits overlayctl's cost into the kernel's part and its own.
    """
    sys.stdout.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(read_fd)
            enter_private_namespace()
            child = Results()
            _floor(child, base, store)
            _plan_apply(child, store)
            os.write(write_fd, json.dumps({"rows": child.rows, "floor": child.floor}).encode())
            status = 0
        except KeyboardInterrupt:
            status = 130
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
    finally:
        _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code == 130:
        raise KeyboardInterrupt
    if code != 0 or not data:
        raise RuntimeError(f"the floor benchmark failed (exit {code})")
    found = json.loads(data)
    results.rows.extend(found["rows"])
    results.floor.update({int(n): t for n, t in found["floor"].items()})


def _floor(results: Results, base: Path, store) -> None:
    """Raw overlay mounts of the same lower directories overlayctl mounts.

    For each N: the N layer directories of the store's image (plus an init
    directory, as a container has), an upper and a work dir, mounted by the
    raw system calls with no overlayctl code in between: the new API with
    the layers' absolute paths, and mount(2) with the store's short relative
    links.  The floor is the API overlayctl uses on this kernel.
    """
    from overlayctl.kernel import _libc
    from overlayctl.kernel.mount import MountApi, default_api
    from overlayctl.plan.options import DEFAULT_OPTIONS
    from overlayctl.store.layers import layer_link

    work = base / "floor"
    for sub in ("init", "u", "w", "m"):
        (work / sub).mkdir(parents=True)
    # The same feature options overlayctl passes: compare like with like.
    options = [(k, v) for k, v in DEFAULT_OPTIONS]
    option_text = ",".join(k if v is None else f"{k}={v}" for k, v in options)
    target = str(work / "m")

    def layers_of(n: int) -> list[str]:
        return store.image(image_for(n)[0]).layers[::-1]

    def classic(n: int) -> Callable[[], None]:
        links = [os.path.relpath(work / "init", store.layout.root)]
        links += [f"l/{layer_link(layer)}" for layer in layers_of(n)]
        data = f"lowerdir={':'.join(links)},upperdir={work}/u,workdir={work}/w,{option_text}"

        if len(data) > 4095:
            # mount(2) would silently cut the string at one page.
            raise OSError(0, f"options take {len(data)} bytes, mount(2) takes one page (4095)")

        def run() -> None:
            _libc.mount("overlay", target, "overlay", 0, data)

        return run

    def new_api(n: int) -> Callable[[], None]:
        paths = [str(work / "init")] + store.layout.diffs(layers_of(n))
        return lambda: raw_new_api_mount(paths, f"{work}/u", f"{work}/w", target, options)

    def unmount() -> None:
        _libc.umount2(target, 0)

    header("floor: raw kernel mount of the same N layer dirs + init + upper + work (mount call only)")
    cwd = os.getcwd()
    os.chdir(store.layout.root)  # the short links are relative to the store root
    try:
        for n in FLOOR_NS:
            lowers = image_for(n)[1] + 1
            # Cheap and noisy: many samples, back to back (a pause between
            # samples makes every mount slower on this VM, not steadier).
            t_new = sample(new_api(n), FLOOR_REPS, warmup=5, after=unmount)
            r_new = results.add("floor", "fsopen/lowerdir+/fsmount/move_mount", t_new, n=n, lowers=lowers)
            try:
                t_classic = sample(classic(n), FLOOR_REPS, warmup=5, after=unmount)
                r_classic = results.add("floor", "mount(2), short relative links", t_classic, n=n, lowers=lowers)
            except OSError as exc:
                r_classic = None
                print(f"  {'mount(2), short relative links':34} {n:>4}  (not possible: {exc.strerror})", flush=True)
            # The floor is the kernel interface overlayctl itself uses (the new
            # API where the kernel has lowerdir+); mount(2) is shown beside it.
            floor = r_new if default_api() is MountApi.NEW or r_classic is None else r_classic
            results.floor[n] = floor["median_s"]
    finally:
        with contextlib.suppress(OSError):
            _libc.umount2(target, _libc.MNT_DETACH)
        os.chdir(cwd)


def _plan_apply(results: Results, store) -> None:
    """kernel.mount.apply of the api-N containers' plans: the store's paths, no namespace, no store work."""
    from overlayctl.errors import TooManyLayers
    from overlayctl.kernel import mount as kmount

    header("kernel part of overlayctl: kernel.mount.apply(plan) of a container, both APIs")
    for n in API_NS:
        plan = store.plan(f"api-{n}", links=True)
        apis = (
            (kmount.MountApi.NEW, "apply(plan), new API"),
            (kmount.MountApi.CLASSIC, "apply(plan), classic + short links"),
        )
        for api, label in apis:
            try:
                times = sample(lambda: kmount.apply(plan, api), reps_for(n), after=lambda: kmount.unmount(plan.target))
            except TooManyLayers as exc:
                print(f"  {label:34} {n:>4}  (not possible: {exc.message})", flush=True)
                continue
            results.add("kernel", label, times, n=n, lowers=len(plan.lowers), floor_n=n)


# -- a store with deep images -------------------------------------------------


def build_store(base: Path):
    """A store with one chain of 499 layers, images at the depths we need, their containers."""
    from overlayctl import LayerStore

    store = LayerStore(root=str(base / "store"), run_root=str(base / "run"))
    depths = sorted({min(n, MAX_IMAGE_LAYERS) for n in API_NS + CLI_NS})
    src = base / "layer-src"
    src.mkdir()
    start = time.perf_counter()
    parent = None
    for depth in range(1, max(depths) + 1):
        for old in src.iterdir():
            old.unlink()
        (src / f"file{depth}").write_text(f"layer {depth}\n")
        parent = store.create_layer(str(src), parent=parent).id
        if depth in depths:
            store.create_image(parent, tag=f"deep:{depth}")
    for n in API_NS:
        store.create_container(image_for(n)[0], name=f"api-{n}")
    for n in CLI_NS:
        store.create_container(image_for(n)[0], name=f"cli-{n}")
    print(f"(store: a chain of {max(depths)} layers built in {time.perf_counter() - start:.1f} s)", flush=True)
    return store


def image_for(n: int) -> tuple[str, int]:
    """The tag and image depth for N: N layers, but 499 at N = 500."""
    depth = min(n, MAX_IMAGE_LAYERS)
    return f"deep:{depth}", depth


def bench_api(results: Results, store) -> None:
    header("overlayctl in-process: LayerStore.plan / mount / unmount (mount: new pinned namespace)")
    for n in API_NS:
        _, depth = image_for(n)
        name = f"api-{n}"
        reps = reps_for(n)
        note = f"image of {depth} layers + init layer"
        plans = sample(lambda: store.plan(name), reps)
        results.add("api", "LayerStore.plan (no mount)", plans, n=n, lowers=depth + 1, floor_n=n, note=note)
        mounts: list[float] = []
        unmounts: list[float] = []
        floors: list[float] = []
        raw = raw_mount_of(store, name)
        # The raw kernel mount of the same lowers, taken in turn with overlayctl's
        # samples: this VM's timing drifts by tens of percent between phases,
        # so only samples taken side by side make a fair ratio.
        for i in range(3 + reps):
            t0 = time.perf_counter()
            store.mount(name)
            t1 = time.perf_counter()
            store.unmount(name)
            t2 = time.perf_counter()
            floor = raw()
            if i >= 3:
                mounts.append(t1 - t0)
                unmounts.append(t2 - t1)
                floors.append(floor)
        results.add("api", "raw mount, same lowers, side by side", floors, n=n, lowers=depth + 1, note=note)
        results.floor_side_by_side[n] = median(floors)
        goal = met = None
        if n == 100:
            ratio = median(mounts) / median(floors)
            goal, met = f"<= {GOAL_API_RATIO}x side-by-side floor", ratio <= GOAL_API_RATIO
        row = results.add(
            "api", "LayerStore.mount", mounts, n=n, lowers=depth + 1, floor_n=n, goal=goal, met=met, note=note
        )
        row["ratio_side_by_side"] = median(mounts) / median(floors)
        print(f"  {'':34} {'':>4} side by side with the raw mount: {row['ratio_side_by_side']:.2f}x", flush=True)
        results.add("api", "LayerStore.unmount", unmounts, n=n, lowers=depth + 1, floor_n=n, note=note)


def raw_mount_of(store, name: str) -> Callable[[], float]:
    """A timed raw mount of a container's lowers, with scratch upper, work and target.

    Each call mounts, times the mount alone, and unmounts.
    """
    from overlayctl.kernel import _libc

    plan = store.plan(name)
    scratch = Path(store.layout.root).parent / f"raw-{name}"
    for sub in ("u", "w", "m"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    target = str(scratch / "m")

    def run() -> float:
        start = time.perf_counter()
        raw_new_api_mount(plan.lowers, str(scratch / "u"), str(scratch / "w"), target, plan.options)
        elapsed = time.perf_counter() - start
        _libc.umount2(target, 0)
        return elapsed

    return run


def raw_new_api_mount(lowers, upper: str, work: str, target: str, options) -> None:
    """The kernel's own overlay mount, no overlayctl code between: fsopen,
    one ``fsconfig lowerdir+`` per layer, upper, work, options, fsmount, move_mount."""
    from overlayctl.kernel import _libc

    fd = _libc.fsopen("overlay")
    try:
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "source", "overlay")
        for path in lowers:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "lowerdir+", path)
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "upperdir", upper)
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "workdir", work)
        for key, value in options:
            if value is None:
                _libc.fsconfig(fd, _libc.FSCONFIG_SET_FLAG, key)
            else:
                _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, key, value)
        _libc.fsconfig(fd, _libc.FSCONFIG_CMD_CREATE)
        mfd = _libc.fsmount(fd)
        try:
            _libc.move_mount(mfd, "", _libc.AT_FDCWD, target, _libc.MOVE_MOUNT_F_EMPTY_PATH)
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def cli(store, *args: str) -> None:
    subprocess.run(
        [CLI, "--root", store.layout.root, "--run-root", store.layout.run_root, *args],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def bench_cli(results: Results, store) -> None:
    header("overlayctl CLI: 'overlayctl container mount NAME' as a subprocess (wall time)")
    for n in CLI_NS:
        _, depth = image_for(n)
        name = f"cli-{n}"
        reps = 30 if n <= 125 else 20
        times = sample(
            lambda: cli(store, "container", "mount", name), reps, warmup=2, after=lambda: store.unmount(name)
        )
        goal = met = None
        if n == 125:
            goal, met = f"<= {GOAL_CLI_MOUNT:.2f} s", median(times) <= GOAL_CLI_MOUNT
        results.add(
            "cli",
            "overlayctl container mount",
            times,
            n=n,
            lowers=depth + 1,
            floor_n=n,
            goal=goal,
            met=met,
            note=f"image of {depth} layers + init layer",
        )
    times = sample(lambda: subprocess.run([CLI, "--help"], check=True, stdout=subprocess.DEVNULL), 50, warmup=3)
    results.add("cli", "overlayctl --help", times, goal=f"<= {GOAL_HELP:.2f} s", met=median(times) <= GOAL_HELP)


# -- busybox: create + mount --------------------------------------------------


def make_busybox_rootfs(path: Path) -> int:
    """The tests' busybox rootfs: the host's busybox with its applet links."""
    from tests.rootfs import build_busybox_rootfs

    applets = build_busybox_rootfs(path)
    if applets is None:
        raise SystemExit("bench: no busybox on this host; install busybox-static (make deps)")
    return applets


def bench_busybox(results: Results, store, base: Path) -> Path:
    """Create + mount of a busybox image; returns the rootfs (the run benchmark reuses it)."""
    rootfs = base / "busybox-rootfs"
    applets = make_busybox_rootfs(rootfs)
    start = time.perf_counter()
    store.import_image(str(rootfs), tag="busybox:base")
    imported = time.perf_counter() - start
    header(f"busybox image ({applets} applet links; import took {fmt_time(imported)}): create + mount")
    counter = iter(range(10**6))

    def create_and_mount(create, mount, reps: int, warmup: int) -> tuple[list[float], list[float], list[float]]:
        creates, mounts, totals = [], [], []
        for i in range(warmup + reps):
            name = f"bb-{next(counter)}"
            t0 = time.perf_counter()
            create(name)
            t1 = time.perf_counter()
            mount(name)
            t2 = time.perf_counter()
            store.remove_container(name, force=True)
            if i >= warmup:
                creates.append(t1 - t0)
                mounts.append(t2 - t1)
                totals.append(t2 - t0)
        return creates, mounts, totals

    note = "image of 1 layer + init layer"
    creates, mounts, totals = create_and_mount(
        lambda name: store.create_container("busybox:base", name=name), store.mount, reps=30, warmup=3
    )
    results.add("busybox", "api create_container", creates, n=1, lowers=2, note=note)
    results.add("busybox", "api mount", mounts, n=1, lowers=2, floor_n=1, note=note)
    results.add("busybox", "api create + mount", totals, n=1, lowers=2, floor_n=1, note=note)

    creates, mounts, totals = create_and_mount(
        lambda name: cli(store, "container", "create", "busybox:base", "--name", name),
        lambda name: cli(store, "container", "mount", name),
        reps=20,
        warmup=2,
    )
    results.add("busybox", "cli container create", creates, n=1, lowers=2, note=note)
    results.add("busybox", "cli container mount", mounts, n=1, lowers=2, floor_n=1, note=note)
    results.add("busybox", "cli create + mount", totals, n=1, lowers=2, floor_n=1, note=note)
    return rootfs


# -- run: overlayctl run vs docker run ----------------------------------------


def docker_import(docker: Docker, rootfs: Path) -> None:
    """tar -C rootfs -c . | docker import - IMAGE"""
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        docker.call("import", "-", DOCKER_IMAGE, stdin=tar.stdout)
    finally:
        tar.stdout.close()
        if tar.wait() != 0:
            raise DockerUnavailable(f"tar of {rootfs} failed (exit {tar.returncode})")


def docker_remove_image(docker: Docker) -> None:
    """Remove the bench's image and any container of it (none, after --rm)."""
    with contextlib.suppress(DockerUnavailable):
        ids = docker.call("ps", "-aq", "--filter", f"ancestor={DOCKER_IMAGE}").stdout.split()
        if ids:
            print(f"bench: removing {len(ids)} docker containers left by 'docker run --rm'", file=sys.stderr)
            docker.call("rm", "-f", *ids)
    with contextlib.suppress(DockerUnavailable):
        docker.call("rmi", DOCKER_IMAGE)


def bench_run(results: Results, store, base: Path, rootfs: Path) -> None:
    """overlayctl run (CLI and in-process) and docker run of 'true' on the same busybox rootfs."""
    start = time.perf_counter()
    store.import_image(str(rootfs), tag=RUN_TAG)
    imported = time.perf_counter() - start
    header(
        "run: overlayctl run --rm IMAGE true vs docker run --rm --network none IMAGE true"
        f" (wall time; store import took {fmt_time(imported)})"
    )
    before = {state.record.id for state in store.containers()}

    def overlayctl_run() -> None:
        cli(store, "run", "--rm", RUN_TAG, "--", "true")

    def api_run() -> None:
        code = store.run(RUN_TAG, ["true"], remove=True)
        if code != 0:
            raise RuntimeError(f"LayerStore.run of 'true' exited {code}")

    ours = sample(overlayctl_run, RUN_REPS, warmup=RUN_WARMUP)
    in_process = sample(api_run, RUN_REPS, warmup=RUN_WARMUP)
    docker_times, docker_note = bench_docker_run(base, rootfs)
    goal = met = None
    note = "busybox rootfs, 1 layer + init layer"
    if docker_times:
        ratio = median(ours) / median(docker_times)
        goal, met = "<= 1/3 of docker run", ratio <= GOAL_RUN_VS_DOCKER
    row = results.add("run", "overlayctl run --rm IMAGE true", ours, n=1, lowers=2, goal=goal, met=met, note=note)
    if docker_times:
        row["ratio_to_docker"] = ratio
        results.add("run", "docker run --rm --network none", docker_times, note=docker_note)
        print(f"  overlayctl / docker: {ratio:.2f} (goal <= {GOAL_RUN_VS_DOCKER:.2f})", flush=True)
    else:
        row["note"] = f"{note}; {docker_note}"
        print(f"  {'docker run --rm --network none':34}  (not measured: {docker_note})", flush=True)
    results.add("run", "LayerStore.run (in-process)", in_process, n=1, lowers=2, note=f"{note}; no docker equivalent")
    left = [state.record.name for state in store.containers() if state.record.id not in before]
    if left:
        print(f"bench: 'run --rm' left containers {left} in the store", file=sys.stderr)


def bench_docker_run(base: Path, rootfs: Path) -> tuple[list[float], str]:
    """docker run's wall times and the row's note; no times, and the reason, when Docker is unavailable."""
    try:
        with docker_engine(base / "dockerd") as docker:
            try:
                docker_import(docker, rootfs)
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

                times = sample(docker_run, RUN_REPS, warmup=RUN_WARMUP)
            finally:
                with signals_deferred():
                    docker_remove_image(docker)
            client = "Debian's client" if docker.client == DEBIAN_DOCKER else docker.client
            return times, f"docker {docker.version}, {docker.where}, {client}"
    except DockerUnavailable as exc:
        return [], str(exc)


# -- setup and cleanup --------------------------------------------------------


def enter_private_namespace() -> None:
    """Move this process into a private mount namespace (the floor's child)."""
    from overlayctl.kernel import _libc

    _libc.unshare(_libc.CLONE_NEWNS)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)


def cleanup(store, base: Path) -> None:
    """Remove every container, unmount everything under base, delete base."""
    from overlayctl.kernel import _libc, ns

    if store is not None:
        with contextlib.suppress(Exception):
            for state in store.containers():
                with contextlib.suppress(Exception):
                    store.remove_container(state.record.id, force=True)
        with contextlib.suppress(Exception):
            ns.release_pin_dir(store.layout.ns_dir)
    for point in sorted(mounts_under(base), reverse=True):
        with contextlib.suppress(OSError):
            _libc.umount2(point, _libc.MNT_DETACH)
    left = mounts_under(base)
    if left:
        print(f"bench: could not unmount {left}; leaving {base}", file=sys.stderr)
        return
    shutil.rmtree(base, ignore_errors=True)


def print_summary(results: Results) -> None:
    print("\ngoals:")
    for row in results.rows:
        if row["goal"]:
            state = "ok" if row["goal_met"] else "MISSED"
            ratio = f" ({row['ratio_to_floor']:.2f}x floor)" if row["ratio_to_floor"] else ""
            if row.get("ratio_side_by_side"):
                ratio = f" ({row['ratio_side_by_side']:.2f}x the raw mount side by side)"
            if row.get("ratio_to_docker"):
                ratio = f" ({row['ratio_to_docker']:.2f}x docker run)"
            where = f"N={row['n']}" if row["n"] is not None else "-"
            print(f"  {row['name']} ({where}): {fmt_time(row['median_s'])}{ratio}, goal {row['goal']}: {state}")


def _interrupt(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, through main's cleanup."""
    raise KeyboardInterrupt


def main() -> int:
    if os.geteuid() != 0:
        print("bench: skipped: overlay mounts need root (run 'make bench' as root)")
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    base = Path(tempfile.mkdtemp(prefix="overlayctl-bench."))
    results = Results()
    store = None
    started = time.perf_counter()
    print(f"overlayctl bench: Linux {platform.release()}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print("medians of 20-50 runs (floor: 100) after a warm-up")
    print("N = the image's layers; a container adds its init layer (N = 500: an image of 499 layers)")
    try:
        store = build_store(base)
        bench_floor(results, base, store)
        bench_api(results, store)
        bench_cli(results, store)
        rootfs = bench_busybox(results, store, base)
        bench_run(results, store, base, rootfs)
    except KeyboardInterrupt:
        print("\nbench: interrupted", file=sys.stderr)
        return 130
    finally:
        cleanup(store, base)
    print_summary(results)
    RESULTS.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    print(
        f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}"
        f" ({time.perf_counter() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
