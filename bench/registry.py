"""Family ``registry``: ``overlayctl pull/push`` against ``docker pull/push`` and ``podman pull``, one local registry.

Two images, pushed by Docker to a docker-registry of our own on 127.0.0.1
(so the registry holds what Docker writes): A, archive A of
``bench/imagedata.py`` (a Debian minbase and three change layers), and T,
an image of 20 layers (``TWENTY``, built once with tarfile into
``bench/.cache/``).  Each has a base image, its bottom layer alone, pushed
first, so the image's bottom blob is the same blob.

Side by side, round after round (one warm-up round first):

- cold: a pull into an empty store (overlayctl: a new ``--root``; docker:
  after ``docker rmi`` of the image and its base; podman: fresh storage),
  each tool removing its previous copy just before, untimed (this VM's disk
  writes slowly for a while after a large removal: each pays its own);
- base present: the same, with the base image pulled first (untimed);
- all present: a pull of an image the store holds, against the floor of
  the manifest round trips (GET of the manifest and of the config, from
  this process, on one connection);
- push: ``overlayctl push`` of the image loaded with ``image load`` (its
  layers gzip-compressed on the way, as Docker's are) vs ``docker push`` of
  the same image, each to a registry started afresh for the round.

Goals (never fatal): cold pull <= 0.5 x docker pull; a pull with all layers
present <= 0.1 s beyond the manifest round trips; push <= docker push.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Callable
from pathlib import Path

from testkit.dockerd import Docker, DockerUnavailable, docker_engine
from testkit.registry import Registry, RegistryUnavailable

from . import imagedata
from .context import CLI, Bench
from .harness import median, print_ratio, reps_or
from .images import Podman, Step, drop_store, rounds, run
from .results import Results, header, not_measured

NAME = "registry"
SUMMARY = "'overlayctl pull/push' vs docker pull/push and podman pull: cold, base present, all present (local registry)"

REPS = 5
GOAL_COLD_VS_DOCKER = 0.5
GOAL_PRESENT_BEYOND_ROUND_TRIPS = 0.1  # seconds
GOAL_PUSH_VS_DOCKER = 1.0

TWENTY = imagedata.CACHE / "twenty-layers.tar"
TWENTY_TAG = "overlayctl-bench/twenty:latest"
TWENTY_LAYERS = 20
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def build_twenty() -> None:
    """The 20-layer archive: each layer 100 small files, 1 MiB random and 1 MiB of text (docker save's form)."""
    rng = random.Random(20)
    words = b"overlay layer registry blob manifest digest config push pull "
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    partial = TWENTY.with_suffix(".partial")
    diff_ids, layers = [], []
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as out:
        for i in range(TWENTY_LAYERS):
            raw = io.BytesIO()
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as layer:
                for j in range(100):
                    _add(layer, f"layer{i}/small{j}", rng.randbytes(rng.randrange(4096)))
                _add(layer, f"layer{i}/random", rng.randbytes(1 << 20))
                _add(layer, f"layer{i}/text", (words * ((1 << 20) // len(words)))[: 1 << 20])
            data = raw.getvalue()
            diff_ids.append(_sha256(data))
            layers.append(f"{i}/layer.tar")
            _add(out, layers[-1], data)
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": [{"created_by": f"layer {i}"} for i in range(TWENTY_LAYERS)],
            }
        ).encode()
        config_name = f"{_sha256(config)[7:]}.json"
        _add(out, config_name, config)
        _add(
            out,
            "manifest.json",
            json.dumps([{"Config": config_name, "RepoTags": [TWENTY_TAG], "Layers": layers}]).encode(),
        )
    partial.rename(TWENTY)


def write_base(archive: Path, out: Path, tag: str) -> None:
    """An archive of the image's bottom layer alone (config cut to it), tagged tag: the base image."""
    with tarfile.open(archive) as tar, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as base:
        entry = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(entry["Config"]))  # type: ignore[arg-type]
        config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:1]
        history = config.get("history") or []
        first = next((i for i, h in enumerate(history) if not h.get("empty_layer")), len(history))
        config["history"] = history[: first + 1]
        raw = json.dumps(config).encode()
        bottom = tar.getmember(entry["Layers"][0])
        layer = tar.extractfile(bottom)
        assert layer is not None
        base.addfile(bottom, layer)
        _add(base, f"{_sha256(raw)[7:]}.json", raw)
        manifest = [{"Config": f"{_sha256(raw)[7:]}.json", "RepoTags": [tag], "Layers": [entry["Layers"][0]]}]
        _add(base, "manifest.json", json.dumps(manifest).encode())


class Seeded:
    """An image and its base in the registry, pushed by Docker: their references and Docker's local names."""

    def __init__(self, docker: Docker, registry: Registry, archive: Path, name: str, work: Path) -> None:
        self.docker = docker
        self.ref = f"{registry.host}/bench/{name}:latest"
        self.base_ref = f"{registry.host}/bench/{name}-base:latest"
        base_archive = work / f"{name}-base.tar"
        write_base(archive, base_archive, f"overlayctl-bench/{name}-base:latest")
        self.local: list[str] = []
        for source, ref in ((base_archive, self.base_ref), (archive, self.ref)):  # the base first: Docker mounts it
            loaded = docker.call("load", "-i", str(source), timeout=900).stdout
            tag = loaded.strip().splitlines()[-1].split("Loaded image: ")[-1].strip()
            docker.call("tag", tag, ref)
            docker.call("push", ref, timeout=900)
            self.local += [tag, ref]
        base_archive.unlink()
        self.remove()

    def remove(self) -> None:
        """No local copy of the image or its base in Docker: its next pull is cold."""
        for name in (*self.local, self.ref, self.base_ref):
            with contextlib.suppress(DockerUnavailable):
                self.docker.call("rmi", "-f", name)


def round_trips(registry: Registry, ref: str) -> None:
    """What every pull asks at least: the manifest, then the config, on one connection."""
    repository, _, tag = ref.split("/", 1)[1].rpartition(":")
    conn = registry.connection()
    try:
        conn.request("GET", f"/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT})
        reply = conn.getresponse()
        manifest = json.loads(reply.read())
        conn.request("GET", f"/v2/{repository}/blobs/{manifest['config']['digest']}")
        conn.getresponse().read()
    finally:
        conn.close()


def measure(ctx: Bench, results: Results, reps: int | None) -> None:
    count = reps_or(REPS, reps)
    podman = Podman()
    parent = ctx.base / "registries"
    parent.mkdir()
    with contextlib.ExitStack() as stack:
        stack.callback(podman.cleanup)
        try:
            docker = stack.enter_context(docker_engine(ctx.base / "dockerd-registry"))
            registry = stack.enter_context(Registry(parent))
        except (DockerUnavailable, RegistryUnavailable) as exc:
            not_measured("registry: all", None, f"needs Docker (to push what Docker writes) and a registry: {exc}")
            return
        imagedata.ensure(docker, ctx.base / "images-build")
        if not TWENTY.is_file():
            build_twenty()
        for label, archive, name in (("A", imagedata.LAYERED, "layered"), ("T", TWENTY, "twenty")):
            work = ctx.base / f"registry-{label}"
            work.mkdir()
            seeded = Seeded(docker, registry, archive, name, work)
            one_image(ctx, results, count, label, archive, seeded, registry, parent, podman, work)


def one_image(
    ctx: Bench,
    results: Results,
    count: int,
    label: str,
    archive: Path,
    seeded: Seeded,
    registry: Registry,
    parent: Path,
    podman: Podman,
    work: Path,
) -> None:
    docker = seeded.docker
    with tarfile.open(archive) as tar:
        entry = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
    n, tag = len(entry["Layers"]), entry["RepoTags"][0]
    header(
        f"registry {label}: {archive.name} ({n} layers) pushed by Docker to {registry.host}\n"
        f"  (wall time; pulls into an empty store unless said; 1 warm-up round; docker {docker.version}, {docker.where})"
    )
    stores: list[Path] = []
    podman_dirs: list[Path] = []

    def ours(*args: str | Path) -> Callable[[], None]:
        return lambda: run([CLI, "--root", stores[-1] / "store", "--run-root", stores[-1] / "run", *args], "overlayctl")

    # Each tool removes its previous copy in its own prepare step (docker: rmi), so that each pull
    # follows a removal of its own: on this VM's disk, writes right after a large removal are slower.
    def drop_ours() -> None:
        if stores and stores[-1].exists():
            drop_store(stores[-1])

    def new_store(base: bool) -> Callable[[], None]:
        def prepare() -> None:
            drop_ours()
            stores.append(work / f"store{len(stores)}")
            if base:
                ours("pull", seeded.base_ref)()

        return prepare

    def docker_prepare(base: bool) -> Callable[[], None]:
        def prepare() -> None:
            seeded.remove()
            if base:
                docker.call("pull", seeded.base_ref, timeout=900)

        return prepare

    def podman_pull(ref: str) -> Callable[[], None]:
        return lambda: run(podman.argv(podman_dirs[-1], "pull", "-q", "--tls-verify=false", ref), "podman pull")

    def drop_podman() -> None:
        if podman_dirs and podman_dirs[-1] in podman.dirs:
            podman.drop(podman_dirs[-1])

    def podman_prepare(base: bool) -> Callable[[], None]:
        def prepare() -> None:
            drop_podman()
            podman_dirs.append(podman.fresh())
            if base:
                podman_pull(seeded.base_ref)()

        return prepare

    def pull_steps(base: bool) -> list[Step]:
        return [
            Step("overlayctl pull", ours("pull", seeded.ref), prepare=new_store(base)),
            Step("docker pull", lambda: run(docker.argv("pull", "-q", seeded.ref), "docker pull"),
                 prepare=docker_prepare(base), optional=True),
            Step("podman pull", podman_pull(seeded.ref), prepare=podman_prepare(base), optional=True),
        ]  # fmt: skip

    for scenario, base in (("cold", False), ("base present", True)):
        steps = pull_steps(base)
        rounds(steps, count)
        drop_ours()
        drop_podman()
        report_pulls(results, label, scenario, n, steps, goal=GOAL_COLD_VS_DOCKER if not base else None)

    # all present: one store, one docker, one podman storage holding the image
    stores.append(work / "present")
    ours("pull", seeded.ref)()
    docker.call("pull", seeded.ref, timeout=900)
    podman_dirs.append(podman.fresh())
    podman_pull(seeded.ref)()
    present = [
        Step("overlayctl pull", ours("pull", seeded.ref)),
        Step("docker pull", lambda: run(docker.argv("pull", "-q", seeded.ref), "docker pull"), optional=True),
        Step("podman pull", podman_pull(seeded.ref), optional=True),
        Step("manifest round trips (floor)", lambda: round_trips(registry, seeded.ref)),
    ]
    rounds(present, count)
    report_present(results, label, n, present)
    podman.drop(podman_dirs[-1])

    # push: the image as loaded from its archive (no compressed blob to reuse) to a new registry each round
    ours("image", "load", "-i", archive)()
    docker.call("load", "-i", str(archive), timeout=900)
    targets: list[Registry] = []

    def new_registry() -> None:
        targets.append(Registry(parent))
        targets[-1].start()

    def stop_registry(last: bool) -> None:
        targets[-1].close()

    def docker_push() -> None:
        ref = f"{targets[-1].host}/bench/pushed:latest"
        docker.call("tag", tag, ref)
        try:
            run(docker.argv("push", ref), "docker push")
        finally:
            docker.call("rmi", ref)

    push = [
        Step("overlayctl push", lambda: ours("push", tag, f"{targets[-1].host}/bench/pushed:latest")(),
             prepare=new_registry, after=stop_registry),
        Step("docker push", docker_push, prepare=new_registry, after=stop_registry, optional=True),
    ]  # fmt: skip
    try:
        rounds(push, count)
    finally:
        for target in targets:
            target.close()
    report_push(results, label, n, push)
    with contextlib.suppress(DockerUnavailable):
        docker.call("rmi", "-f", tag)
    seeded.remove()
    drop_store(stores[-1])


def _row(results: Results, label: str, step: Step, what: str, n: int, **goal) -> dict | None:
    name = f"{label} {what}: {step.name}"
    if not step.times:
        not_measured(name, n, f"failed: {step.failed}" if step.failed else "not run")
        return None
    return results.add("registry", name, step.times, n=n, **goal)


def report_pulls(results: Results, label: str, scenario: str, n: int, steps: list[Step], *, goal: float | None) -> None:
    ours, docker, podman = steps
    to_docker = median(ours.times) / median(docker.times) if docker.times else None
    aim = {}
    if goal is not None and to_docker is not None:
        aim = {"goal": f"<= {goal}x docker pull", "met": to_docker <= goal}
    row = _row(results, label, ours, scenario, n, **aim)
    if row is not None and to_docker is not None:
        row["ratio_to_docker"] = to_docker
        row["ratio_note"] = f"{to_docker:.2f}x docker pull"
    _row(results, label, docker, scenario, n)
    _row(results, label, podman, scenario, n)
    if to_docker is not None:
        print_ratio(f"{label} {scenario}: overlayctl pull / docker pull", to_docker, goal=goal)
    if podman.times:
        print_ratio(f"{label} {scenario}: overlayctl pull / podman pull", median(ours.times) / median(podman.times))


def report_present(results: Results, label: str, n: int, steps: list[Step]) -> None:
    ours, docker, podman, floor = steps
    beyond = median(ours.times) - median(floor.times)
    row = _row(
        results, label, ours, "all present", n,
        goal=f"<= manifest round trips + {GOAL_PRESENT_BEYOND_ROUND_TRIPS} s",
        met=beyond <= GOAL_PRESENT_BEYOND_ROUND_TRIPS,
    )  # fmt: skip
    if row is not None:
        row["ratio_note"] = f"{beyond * 1000:.0f} ms beyond the round trips"
    for step in (docker, podman, floor):
        _row(results, label, step, "all present", n)
    print(f"  {label} all present: overlayctl pull takes {beyond * 1000:.0f} ms beyond the round trips", flush=True)


def report_push(results: Results, label: str, n: int, steps: list[Step]) -> None:
    ours, docker = steps
    to_docker = median(ours.times) / median(docker.times) if docker.times else None
    aim = {"goal": "<= docker push", "met": to_docker <= GOAL_PUSH_VS_DOCKER} if to_docker is not None else {}
    row = _row(results, label, ours, "push", n, **aim)
    if row is not None and to_docker is not None:
        row["ratio_to_docker"] = to_docker
        row["ratio_note"] = f"{to_docker:.2f}x docker push"
    _row(results, label, docker, "push", n)
    if to_docker is not None:
        print_ratio(f"{label} push: overlayctl push / docker push", to_docker, goal=GOAL_PUSH_VS_DOCKER)
