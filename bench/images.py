"""Family ``images``: ``overlayctl image load/save`` against docker, podman and GNU tar, and the disk they use.

On the two archives of ``bench/imagedata.py`` (built once into
``bench/.cache/``: A, a Debian minbase and three change layers with
whiteouts; B, one layer of 20,000 small files and 3 x 50 MiB), side by
side, round after round (one warm-up round first), each step from an empty
store or a freshly removed image:

- load: ``overlayctl image load -i A`` into a fresh ``--root``; ``docker
  load -i A`` after ``docker rmi``; ``podman load -i A`` into fresh storage
  of its own (``--root``/``--runroot`` in a ``mkdtemp(prefix="ovp-")``
  dir, overlay driver); the floor, GNU ``tar -x`` of the same layer tars
  (copied out of the archive beforehand) into fresh dirs, then ``sync``.
  Every step is followed by an untimed ``sync`` so none pays for the
  previous one's writeback.
- save: ``overlayctl image save`` vs ``docker save`` of the same image to a file.
- disk: ``du -sk`` of the overlayctl store vs Docker's data root
  ``overlay2`` + ``image`` dirs (and podman's storage), each holding only
  that image.

Docker comes from ``testkit.dockerd`` (a private dockerd unless the host's
answers).  Goals (never fatal): load <= 0.5 x docker load and <= 2 x the tar
floor; save <= docker save; disk <= Docker's.  Podman's storage is
unmounted (``umount -l``) and deleted at the end, also after an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testkit.dockerd import Docker, DockerUnavailable, docker_engine, last_line, mounts_under

from . import imagedata
from .context import CLI, Bench
from .harness import median, print_ratio, reps_or
from .results import Results, header, not_measured

NAME = "images"
SUMMARY = (
    "'overlayctl image load/save' vs docker/podman load, docker save, tar -x + sync; disk vs Docker (cached archives)"
)

IMAGE_REPS = 3
WARMUP = 1
CALL_TIMEOUT = 900.0
GOAL_LOAD_VS_DOCKER = 0.5
GOAL_LOAD_VS_TAR = 2.0
GOAL_SAVE_VS_DOCKER = 1.0
GOAL_DISK_VS_DOCKER = 1.0


def run(argv: list[str], what: str) -> None:
    """Run a command quietly; raises RuntimeError with its last error line when it fails."""
    try:
        done = subprocess.run(
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=CALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: no end within {CALL_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"{what}: {last_line(done.stderr) or f'exit {done.returncode}'}")


def du_kib(*paths: Path) -> int:
    """du -sk of the paths together (hard links counted once)."""
    existing = [str(path) for path in paths if path.exists()]
    if not existing:
        return 0
    out = subprocess.run(["du", "-sck", *existing], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


@dataclass
class Step:
    """One timed thing of a round: prepare and after run untimed; a step that fails is dropped with its reason."""

    name: str
    action: Callable[[], object]
    prepare: Callable[[], object] = lambda: None
    after: Callable[[bool], object] = lambda last: None
    optional: bool = False  # docker and podman: a failure drops the step, not the family
    times: list[float] = field(default_factory=list)
    failed: str = ""


def rounds(steps: list[Step], count: int, warmup: int = WARMUP) -> None:
    """Each step in turn, warmup + count rounds; a sync after every prepare and every step, untimed."""
    total = warmup + count
    for i in range(total):
        for step in steps:
            if step.failed:
                continue
            try:
                step.prepare()
                os.sync()
                start = time.perf_counter()
                step.action()
                elapsed = time.perf_counter() - start
                step.after(i == total - 1)
                os.sync()
            except (RuntimeError, DockerUnavailable, OSError) as exc:
                if not step.optional:
                    raise
                step.failed = str(exc)
                print(f"  ({step.name} dropped: {exc})", flush=True)
                continue
            if i >= warmup:
                step.times.append(elapsed)


class Podman:
    """podman with storage of its own per load: fresh dirs, unmounted (umount -l) and deleted after."""

    def __init__(self) -> None:
        self.binary = shutil.which("podman")
        self.dirs: list[Path] = []

    def fresh(self) -> Path:
        # Its runroot must be at most 50 characters: a short temp dir in /tmp.
        path = Path(tempfile.mkdtemp(prefix="ovp-"))
        self.dirs.append(path)
        return path

    def argv(self, path: Path, *args: str) -> list[str]:
        return [
            str(self.binary),
            "--root",
            str(path / "root"),
            "--runroot",
            str(path / "run"),
            "--storage-driver",
            "overlay",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            *args,
        ]

    def drop(self, path: Path) -> None:
        for point in sorted(mounts_under(path), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        left = mounts_under(path)
        if left:
            print(f"bench: podman left {left} mounted; leaving {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)
        if path in self.dirs:
            self.dirs.remove(path)

    def cleanup(self) -> None:
        for path in list(self.dirs):
            self.drop(path)


def drop_store(root: Path) -> None:
    """Delete a bench store (nothing may be mounted below it)."""
    if mounts_under(root):
        raise RuntimeError(f"mounts left under {root}: {mounts_under(root)}")
    shutil.rmtree(root)


def measure(ctx: Bench, results: Results, reps: int | None) -> None:
    count = reps_or(IMAGE_REPS, reps)
    podman = Podman()
    with contextlib.ExitStack() as stack:
        stack.callback(podman.cleanup)
        docker: Docker | None = None
        docker_note = ""
        try:
            docker = stack.enter_context(docker_engine(ctx.base / "dockerd-images"))
        except DockerUnavailable as exc:
            docker_note = str(exc)
        start = time.perf_counter()
        built = bool(imagedata.missing())
        notes = imagedata.ensure(docker, ctx.base / "images-build")
        if built:
            print(f"(images: data built in {time.perf_counter() - start:.0f} s, cached in bench/.cache/)", flush=True)
        else:
            print("(images: archives from bench/.cache/; delete it to rebuild)", flush=True)
        data_root = None
        if docker is not None:
            info = docker.call("info", "--format", "{{.DockerRootDir}} {{.Driver}}").stdout.split()
            data_root, driver = Path(info[0]), info[1]
            docker_note = f"docker {docker.version}, {docker.where}, {driver}"
        podman_note = "" if podman.binary else "podman not installed"
        for label, archive in (("A", imagedata.LAYERED), ("B", imagedata.SMALL)):
            one_archive(
                ctx, results, count, label, archive, notes.get(archive.name, ""),
                docker, docker_note, data_root, podman, podman_note,
            )  # fmt: skip


def one_archive(
    ctx: Bench,
    results: Results,
    count: int,
    label: str,
    archive: Path,
    note: str,
    docker: Docker | None,
    docker_note: str,
    data_root: Path | None,
    podman: Podman,
    podman_note: str,
) -> None:
    work = ctx.base / f"images-{label}"
    tags, layers = imagedata.archive_layers(archive, work / "layers")
    tag = tags[0]
    with tarfile.open(archive) as tar:
        config = json.load(tar.extractfile("manifest.json"))[0]["Config"]  # type: ignore[arg-type]
    image_id = "sha256:" + Path(config).name.removesuffix(".json").removeprefix("sha256:")
    size = archive.stat().st_size / (1 << 20)
    header(
        f"images {label}: {archive.name}, {len(layers)} layers, {size:.0f} MiB: {note}\n"
        f"  (wall time; each load from an empty store / a removed image; an untimed sync after every step;"
        f" {WARMUP} warm-up round)"
    )
    n = len(layers)
    stores: list[Path] = []
    podman_dirs: list[Path] = []

    def ours_load() -> None:
        root = work / f"store{len(stores)}"
        stores.append(root)
        run(
            [CLI, "--root", root / "store", "--run-root", root / "run", "image", "load", "-i", archive],
            "overlayctl load",
        )

    def ours_after(last: bool) -> None:
        if not last:
            drop_store(stores[-1])

    def docker_rmi() -> None:
        assert docker is not None
        with contextlib.suppress(DockerUnavailable):
            docker.call("rmi", "-f", image_id)

    def podman_load() -> None:
        path = podman.fresh()
        podman_dirs.append(path)
        run(podman.argv(path, "load", "-q", "-i", str(archive)), "podman load")

    def podman_after(last: bool) -> None:
        if not last:
            podman.drop(podman_dirs[-1])

    floor_dir = work / "tar-floor"

    def tar_prepare() -> None:
        shutil.rmtree(floor_dir, ignore_errors=True)
        floor_dir.mkdir()

    def tar_floor() -> None:
        for i, layer in enumerate(layers):
            dest = floor_dir / str(i)
            dest.mkdir()
            run(["tar", "-x", "-f", layer, "-C", dest], "tar -x")
        os.sync()

    load_steps = [Step("overlayctl image load", ours_load, after=ours_after)]
    if docker is not None:
        load_steps.append(
            Step("docker load", lambda: run(docker.argv("load", "-q", "-i", str(archive)), "docker load"),
                 prepare=docker_rmi, optional=True)
        )  # fmt: skip
    if podman.binary:
        load_steps.append(Step("podman load", podman_load, after=podman_after, optional=True))
    load_steps.append(Step("tar -x layers + sync (floor)", tar_floor, prepare=tar_prepare))
    rounds(load_steps, count)
    shutil.rmtree(floor_dir, ignore_errors=True)
    ours = load_steps[0]
    by_name = {step.name: step for step in load_steps}
    docker_load = by_name.get("docker load")
    podman_step = by_name.get("podman load")
    floor = by_name["tar -x layers + sync (floor)"]
    to_floor = median(ours.times) / median(floor.times)
    to_docker = median(ours.times) / median(docker_load.times) if docker_load and docker_load.times else None
    met = to_floor <= GOAL_LOAD_VS_TAR and (to_docker is None or to_docker <= GOAL_LOAD_VS_DOCKER)
    goal = (
        f"<= {GOAL_LOAD_VS_DOCKER}x docker, <= {GOAL_LOAD_VS_TAR:.0f}x tar"
        if to_docker is not None
        else f"<= {GOAL_LOAD_VS_TAR:.0f}x tar"
    )
    row = results.add("images", f"{label} load: overlayctl image load", ours.times, n=n, goal=goal, met=met)
    row["ratio_note"] = f"{to_floor:.2f}x tar -x + sync" + (
        f", {to_docker:.2f}x docker load" if to_docker is not None else ""
    )
    if to_docker is not None:
        row["ratio_to_docker"] = to_docker
    for tool, step, why in (("docker", docker_load, docker_note), ("podman", podman_step, podman_note)):
        if step is None:
            not_measured(f"{label} load: {tool} load", n, why)
        elif step.times:
            results.add("images", f"{label} load: {step.name}", step.times, n=n, note=why)
        else:
            not_measured(f"{label} load: {step.name}", n, f"failed: {step.failed}")
    results.add(
        "images", f"{label} load floor: tar -x + sync", floor.times, n=n, note="GNU tar, each layer a fresh dir"
    )
    if to_docker is not None:
        print_ratio(f"{label}: overlayctl load / docker load", to_docker, goal=GOAL_LOAD_VS_DOCKER)
    if podman_step is not None and podman_step.times:
        print_ratio(f"{label}: overlayctl load / podman load", median(ours.times) / median(podman_step.times))
    print_ratio(f"{label}: overlayctl load / (tar -x + sync)", to_floor, goal=GOAL_LOAD_VS_TAR)

    # save: both hold the image from the last load round
    store_root = stores[-1]
    out = work / "saved.tar"

    def unlink(last: bool) -> None:
        out.unlink(missing_ok=True)

    save_steps = [
        Step(
            "overlayctl image save",
            lambda: run(
                [
                    CLI,
                    "--root",
                    store_root / "store",
                    "--run-root",
                    store_root / "run",
                    "image",
                    "save",
                    tag,
                    "-o",
                    out,
                ],
                "overlayctl save",
            ),
            after=unlink,
        )
    ]
    docker_loaded = docker is not None and docker_load is not None and bool(docker_load.times)
    if docker_loaded:
        assert docker is not None
        save_steps.append(
            Step("docker save", lambda: run(docker.argv("save", "-o", str(out), tag), "docker save"),
                 after=unlink, optional=True)
        )  # fmt: skip
    rounds(save_steps, count)
    ours_save = save_steps[0]
    docker_save = save_steps[1] if len(save_steps) > 1 and save_steps[1].times else None
    if docker_save is not None:
        to_docker = median(ours_save.times) / median(docker_save.times)
        row = results.add(
            "images", f"{label} save: overlayctl image save", ours_save.times, n=n,
            goal="<= docker save", met=to_docker <= GOAL_SAVE_VS_DOCKER,
        )  # fmt: skip
        row["ratio_to_docker"] = to_docker
        row["ratio_note"] = f"{to_docker:.2f}x docker save"
        results.add("images", f"{label} save: docker save", docker_save.times, n=n, note=docker_note)
        print_ratio(f"{label}: overlayctl save / docker save", to_docker, goal=GOAL_SAVE_VS_DOCKER)
    else:
        results.add("images", f"{label} save: overlayctl image save", ours_save.times, n=n)
        not_measured(f"{label} save: docker save", n, save_steps[1].failed if len(save_steps) > 1 else docker_note)

    # disk: each holds only this image now
    ours_kib = du_kib(store_root)
    if docker_loaded and data_root is not None:
        driver = docker.call("info", "--format", "{{.Driver}}").stdout.strip() if docker else "overlay2"
        docker_kib = du_kib(data_root / driver, data_root / "image")
        to_docker = ours_kib / docker_kib
        row = results.add_size(
            "images", f"{label} disk: overlayctl store (du -sk)", ours_kib, n=n,
            goal="<= Docker's", met=to_docker <= GOAL_DISK_VS_DOCKER,
        )  # fmt: skip
        row["ratio_to_docker"] = to_docker
        row["ratio_note"] = f"{to_docker:.2f}x Docker's dirs"
        results.add_size("images", f"{label} disk: docker {driver} + image dirs", docker_kib, n=n, note=docker_note)
    else:
        results.add_size("images", f"{label} disk: overlayctl store (du -sk)", ours_kib, n=n)
        to_docker = None
    if podman_step is not None and podman_step.times and podman_dirs:
        results.add_size("images", f"{label} disk: podman storage", du_kib(podman_dirs[-1] / "root"), n=n)
    if to_docker is not None:
        print_ratio(f"{label}: overlayctl store / Docker's dirs", to_docker, goal=GOAL_DISK_VS_DOCKER)

    # leave nothing of this archive behind for the next
    if docker is not None:
        docker_rmi()
    if podman_dirs:
        podman.drop(podman_dirs[-1])
    drop_store(store_root)
    shutil.rmtree(work, ignore_errors=True)
