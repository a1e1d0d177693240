"""Family ``run``: ``overlayctl run`` against ``docker run`` of ``true`` on the same busybox rootfs.

``overlayctl run --rm busybox:bench -- true`` and ``docker run --rm
--network none overlayctl-bench/busybox true``, both as subprocesses (wall
time), the rootfs imported into the bench store and into Docker (``docker
import``), plus ``LayerStore.run`` in-process.  Docker comes from
``testkit.dockerd``: the host's daemon when the client reaches one, else a
private dockerd in the bench's temp dir, stopped and swept at the end.
Without Docker only overlayctl's rows are printed, with the reason.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from testkit.dockerd import (
    DEBIAN_DOCKER,
    DOCKER_CALL_TIMEOUT,
    Docker,
    DockerUnavailable,
    docker_engine,
    last_line,
    signals_deferred,
)

from .context import Bench
from .harness import fmt_time, print_ratio, ratio, reps_or, sample
from .results import Results, header, not_measured

NAME = "run"
SUMMARY = "'overlayctl run --rm IMAGE true' vs 'docker run --rm --network none IMAGE true' (starts dockerd if needed)"

RUN_TAG = "busybox:bench"  # the busybox rootfs in the bench store
DOCKER_IMAGE = "overlayctl-bench/busybox:latest"  # the same rootfs in Docker
RUN_REPS = 20
RUN_WARMUP = 2
GOAL_RUN_VS_DOCKER = 1 / 3  # overlayctl run within 1/3 of docker run's median
NOTE = "busybox rootfs, 1 layer + init layer"


def measure(ctx: Bench, results: Results, reps: int | None) -> None:
    """overlayctl run (CLI and in-process) and docker run of 'true' on the same busybox rootfs."""
    store = ctx.store()
    rootfs, _ = ctx.busybox_rootfs()
    count = reps_or(RUN_REPS, reps)
    start = time.perf_counter()
    store.images.import_rootfs(str(rootfs), tag=RUN_TAG)
    imported = time.perf_counter() - start
    header(
        "run: overlayctl run --rm IMAGE true vs docker run --rm --network none IMAGE true"
        f" (wall time; store import took {fmt_time(imported)})"
    )
    before = {state.record.id for state in store.containers.list()}

    def api_run() -> None:
        code = store.runtime.run(RUN_TAG, ["true"], remove=True)
        if code != 0:
            raise RuntimeError(f"LayerStore.run of 'true' exited {code}")

    ours = sample(lambda: ctx.cli("run", "--rm", RUN_TAG, "--", "true"), count, warmup=RUN_WARMUP)
    in_process = sample(api_run, count, warmup=RUN_WARMUP)
    docker_times, docker_note = docker_run_times(ctx.base / "dockerd", rootfs, count)
    goal = met = None
    if docker_times:
        to_docker = ratio(ours, docker_times)
        goal, met = "<= 1/3 of docker run", to_docker <= GOAL_RUN_VS_DOCKER
    row = results.add("run", "overlayctl run --rm IMAGE true", ours, n=1, lowers=2, goal=goal, met=met, note=NOTE)
    if docker_times:
        row["ratio_to_docker"] = to_docker
        results.add("run", "docker run --rm --network none", docker_times, note=docker_note)
        print_ratio("overlayctl run / docker run", to_docker, goal=GOAL_RUN_VS_DOCKER)
    else:
        row["note"] = f"{NOTE}; {docker_note}"
        not_measured("docker run --rm --network none", None, f"not measured: {docker_note}")
    results.add("run", "LayerStore.run (in-process)", in_process, n=1, lowers=2, note=f"{NOTE}; no docker equivalent")
    left = [state.record.name for state in store.containers.list() if state.record.id not in before]
    if left:
        print(f"bench: 'run --rm' left containers {left} in the store", file=sys.stderr)


def docker_run_times(tmp: Path, rootfs: Path, count: int) -> tuple[list[float], str]:
    """docker run's wall times and the row's note; no times, and the reason, when Docker is unavailable."""
    try:
        with docker_engine(tmp) as docker:
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

                times = sample(docker_run, count, warmup=RUN_WARMUP)
            finally:
                with signals_deferred():
                    docker_remove_image(docker)
            client = "Debian's client" if docker.client == DEBIAN_DOCKER else docker.client
            return times, f"docker {docker.version}, {docker.where}, {client}"
    except DockerUnavailable as exc:
        return [], str(exc)


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
    with contextlib.suppress(DockerUnavailable):
        ids = docker.call("ps", "-aq", "--filter", f"ancestor={DOCKER_IMAGE}").stdout.split()
        if ids:
            print(f"bench: removing {len(ids)} docker containers left by 'docker run --rm'", file=sys.stderr)
            docker.call("rm", "-f", *ids)
    with contextlib.suppress(DockerUnavailable):
        docker.call("rmi", DOCKER_IMAGE)
