"""Crash consistency: every mutating verb, SIGKILLed at random instants.

One test per verb, each on its own store.  The verb's typical duration is
measured once (an unkilled run), and so is the time it takes to reach the
store (the same verb on an object that does not exist: start-up and
imports); then each round starts the verb through the CLI in a new session
and SIGKILLs its whole process group after a random delay between the two,
so that most kills land while the verb changes the store.  After every kill:

* ``check --json`` is clean, or ``check --repair`` makes a second check clean;
* every object reported done before (from complete command outputs) is still
  listed, with the same IDs; every listed image has all its layers;
* every layer that appeared is intact: ``layer export`` hashes to its diff_id;
* the killed verb's object is whole or absent (a container that exists
  inspects, mounts and unmounts; an image that exists has its tag and layers;
  a removed image leaves no layer that nothing uses);
* no mount, namespace pin, process, cgroup or veth is left (a killed ``run``
  is cleaned up by the next command that lists containers, as documented).

Knobs: OVERLAYCTL_STRESS_KILLS (all verbs together, default 210),
OVERLAYCTL_STRESS_SEED, OVERLAYCTL_STRESS_VERIFY_EVERY (rounds between full
verifications, default 10).
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import random
import re
import shutil
import statistics
import threading
import time
from collections import Counter

import pytest

from ._stress import (
    Result,
    StressStore,
    assert_clean,
    check_or_repair,
    knob,
    layer_digest,
    make_source,
    new_seed,
    say,
    wait_no_processes,
)

pytestmark = pytest.mark.root

KILLS = knob("OVERLAYCTL_STRESS_KILLS", 210)
VERIFY_EVERY = knob("OVERLAYCTL_STRESS_VERIFY_EVERY", 10)
LANES = knob("OVERLAYCTL_STRESS_LANES", max(2, min(4, os.cpu_count() or 1)))  # stores killed side by side
BLOB = 1 << 20  # bytes of random data in each generated source: a verb long enough to be hit mid-way
SAMPLE = 3  # done layers re-hashed and containers mounted at each full verification

VERBS = ["layer-create", "image-import", "container-create", "container-commit", "container-rm", "image-rm", "run-rm"]
ROUNDS = max(1, math.ceil(KILLS / len(VERBS)))
IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


class Crash:
    """One verb's store, what was reported done on it, and the checks after a kill."""

    def __init__(self, store, rng: random.Random, tmp_path, busybox_rootfs, verb: str, seed: int) -> None:
        self.store = store
        self.cli = store.cli
        self.rng = rng
        self.tmp = tmp_path
        self.busybox = str(busybox_rootfs)
        self.verb = verb
        self.seed = seed
        self.done_layers: dict[str, str] = {}  # layer ID -> diff_id
        self.done_tags: dict[str, str] = {}  # tag -> image ID
        self.done_containers: dict[str, str] = {}  # name -> container ID
        self.hashed: set[str] = set()  # layers whose export matched their diff_id
        self.stats: Counter = Counter()
        self.context = ""
        self.prefetched: dict[str, Result] = {}  # listings run side by side with check
        self.typical = 0.0  # the verb's measured duration
        self.window = (0.0, 0.0)  # of the kill delays
        self.problems: list[dict] = []  # what check found after the last kill

    LISTINGS = {
        "layers": ("layer", "ls", "--json"),
        "images": ("image", "ls", "--json"),
        "containers": ("container", "ls", "--json"),
    }

    def _listing(self, what: str):
        result = self.prefetched.pop(what, None) or self.cli.run(*self.LISTINGS[what])
        if not result.ok or result.traceback:
            self.fail(f"listing the store failed:\n{result.describe()}")
        return result.json()

    # -- listings ----------------------------------------------------------------

    def layers(self) -> dict[str, dict]:
        return {r["id"]: r for r in self._listing("layers")}

    def images(self) -> list[dict]:
        return self._listing("images")

    def containers(self) -> dict[str, dict]:
        """container ls --json by name (listing also cleans up after dead monitors)."""
        listed = {c["name"]: c for c in self._listing("containers")}
        self.store.container_ids.update(c["id"] for c in listed.values())
        return listed

    def source(self, i: int):
        path = self.tmp / "src" / f"{self.verb}-{i}"
        return str(make_source(path, self.rng, f"{self.verb}-{i}", BLOB))

    def drop_source(self, path: str) -> None:
        if path != self.busybox:
            shutil.rmtree(path, ignore_errors=True)

    # -- checks ------------------------------------------------------------------

    def fail(self, message: str) -> None:
        found = "".join(f"\n  {p['path']}: {p['message']}" for p in self.problems) or " none"
        pytest.fail(
            f"{self.context}{message}\n(check after the kill found:{found})\n"
            f"(replay: OVERLAYCTL_STRESS_SEED={self.seed})",
            pytrace=False,
        )

    def verify_layers(self, layers: dict[str, dict]) -> None:
        for layer_id, diff_id in self.done_layers.items():
            if layer_id not in layers:
                self.fail(f"layer {layer_id}, reported done, is gone")
            if layers[layer_id]["diff_id"] != diff_id:
                self.fail(f"layer {layer_id} changed its diff_id: {layers[layer_id]['diff_id']} != {diff_id}")

    def verify_images(self, layers: dict[str, dict], images: list[dict]) -> dict[str, str]:
        """Done layers and tags are all there; every image has its layers.  Returns {tag: image ID}."""
        self.verify_layers(layers)
        tags = {tag: image["id"] for image in images for tag in image["tags"]}
        for tag, image_id in self.done_tags.items():
            if tags.get(tag) != image_id:
                self.fail(f"tag {tag}, reported done as {image_id}, now resolves to {tags.get(tag)}")
        for image in images:
            missing = [layer for layer in image["layers"] if layer not in layers]
            if missing:
                self.fail(f"image {image['id']} {image['tags']} lists missing layers {missing}")
        return tags

    def verify_containers(self, containers: dict[str, dict]) -> None:
        for name, container_id in self.done_containers.items():
            if containers.get(name, {}).get("id") != container_id:
                self.fail(f"container {name} ({container_id}), reported done, is gone or changed")

    def rehash_new(self, layers: dict[str, dict]) -> None:
        """Every layer not checked yet exports to its diff_id (a half-written layer would not)."""
        for layer_id in sorted(set(layers) - self.hashed):
            self.rehash(layers, layer_id)

    def rehash(self, layers: dict[str, dict], layer_id: str) -> None:
        got = layer_digest(self.cli, layer_id)
        if got != layers[layer_id]["diff_id"]:
            self.fail(f"layer {layer_id} is not intact: its export hashes to {got}, not {layers[layer_id]['diff_id']}")
        self.hashed.add(layer_id)

    def exercise(self, name: str, listed: dict) -> None:
        """A container that exists is whole: it inspects, mounts and unmounts."""
        inspect = self.cli.run("container", "inspect", name, "--json")
        if not inspect.ok:
            self.fail(f"container {name} is listed but does not inspect:\n{inspect.describe()}")
        if listed.get("mounted"):
            self.cli.ok("container", "unmount", name)
        mount = self.cli.run("container", "mount", name)
        if not mount.ok:
            self.fail(f"container {name} is listed but does not mount:\n{mount.describe()}")
        self.cli.ok("container", "unmount", name)

    def record_image(self, tag: str, image_id: str, images: list[dict], layers: dict[str, dict]) -> None:
        self.done_tags[tag] = image_id
        (image,) = [i for i in images if i["id"] == image_id]
        for layer_id in image["layers"]:
            self.done_layers[layer_id] = layers[layer_id]["diff_id"]

    def full_verify(self, *, everything: bool = False) -> None:
        """All done objects, a sample of layers re-hashed and of containers mounted."""
        self.prefetched = dict(zip(self.LISTINGS, self.cli.run_parallel(*self.LISTINGS.values())))
        layers, images, containers = self.layers(), self.images(), self.containers()
        self.verify_images(layers, images)
        self.verify_containers(containers)
        done = sorted(self.done_layers)
        sample = done if everything and len(done) <= 3 * SAMPLE else self.rng.sample(done, min(SAMPLE, len(done)))
        for layer_id in sample:
            self.rehash(layers, layer_id)
        names = sorted(self.done_containers)
        for name in self.rng.sample(names, min(1 if not everything else SAMPLE, len(names))):
            self.exercise(name, containers[name])

    # -- one round ---------------------------------------------------------------------

    def after(self, result: Result, scenario) -> None:
        """Everything that must hold after a killed (or finished) command."""
        if result.traceback:
            self.fail(f"the command printed a traceback:\n{result.describe()}")
        if result.timed_out:
            self.fail(f"the command hung:\n{result.describe()}")
        if not result.killed:
            self.stats["finished before the kill"] += 1
            if not result.ok:
                self.fail(f"the command finished, with an error:\n{result.describe()}")
        else:
            self.stats["killed"] += 1
        self.store.note_containers()
        left = wait_no_processes(self.store.marker)
        if left:
            self.fail("processes outlived the kill of their group:\n" + "\n".join(left))
        # check, and the listings the verb's judge reads, side by side; not
        # 'container ls', which cleans up after dead monitors: it comes after check.
        reads = [w for w in scenario.lists if w != "containers"]
        first, *listed = self.cli.run_parallel(("check", "--json"), *(self.LISTINGS[w] for w in reads))
        self.prefetched = dict(zip(reads, listed))
        self.problems = []
        problems = self.problems = check_or_repair(self.cli, self.context, first)
        if problems:
            self.prefetched = {}  # list again, after the repair
            self.stats["needed check --repair"] += 1
            for p in problems:
                self.stats[f"repaired: {p['message'][:60]}"] += 1
        scenario.judge(result)
        self.prefetched = {}
        leaks = self.store.leaks(allow_pin_dirs=True)
        if leaks:
            self.fail("left behind after the kill and the next commands:\n" + "\n".join(leaks))

    def finish(self) -> None:
        """Full verification, then remove every container: nothing may be left at all."""
        self.full_verify(everything=True)
        for name, listed in self.containers().items():
            self.cli.ok("container", "rm", "-f", name)
        assert_clean(self.cli, self.context)
        leaks = self.store.leaks(allow_pin_dirs=False)
        if leaks:
            self.fail("left behind with every container removed:\n" + "\n".join(leaks))


# --- the verbs ----------------------------------------------------------------------------


class LayerCreate:
    """layer create --from DIR: a new layer exists whole (export == diff_id) or not at all."""

    lists = ("layers",)

    def __init__(self, crash: Crash) -> None:
        self.c = crash

    def prepare(self, i: int) -> tuple[str, ...]:
        self.src = self.c.source(i)
        return ("layer", "create", "--from", self.src, "--json")

    def judge(self, result: Result) -> None:
        c = self.c
        layers = c.layers()
        try:
            reported = result.json()
        except ValueError:
            reported = None
        if reported:
            if reported["id"] not in layers:
                c.fail(f"layer {reported['id']} was reported created and is not listed")
            c.done_layers[reported["id"]] = reported["diff_id"]
        c.verify_layers(layers)
        c.rehash_new(layers)
        c.drop_source(self.src)


class ImageImport:
    """image import SRC --tag x:N: the tag resolves to an image with all its layers, or nothing is left.

    "Nothing" includes an untagged image and a layer that no image uses: the
    import's own objects, which no later command would clean up.
    """

    tag_prefix = "x"
    lists = ("layers", "images")

    def __init__(self, crash: Crash) -> None:
        self.c = crash

    def prepare(self, i: int) -> tuple[str, ...]:
        # Every third import is of the base's rootfs: the layer is deduplicated.
        self.src = self.c.busybox if i % 3 == 1 else self.c.source(i)
        self.tag = f"{self.tag_prefix}:{i}"
        return ("image", "import", self.src, "--tag", self.tag)

    def judge(self, result: Result) -> None:
        c = self.c
        layers, images = c.layers(), c.images()
        tags = c.verify_images(layers, images)
        reported = result.stdout.strip()
        if IMAGE_ID.fullmatch(reported):
            if tags.get(self.tag) != reported:
                c.fail(f"{self.tag} was reported as {reported} and resolves to {tags.get(self.tag)}")
        if self.tag in tags:
            c.record_image(self.tag, tags[self.tag], images, layers)
        else:
            c.stats["object absent after the kill"] += 1
        # All of it or nothing: every image of this store has its tag, every layer an image.
        untagged = [i["id"] for i in images if not i["tags"]]
        if untagged:
            c.fail(f"the killed {c.verb} left an image without its tag {self.tag}: {untagged}")
        used = {layer for image in images for layer in image["layers"]}
        unused = sorted(set(layers) - used)
        if unused:
            c.fail(f"the killed {c.verb} left layers that no image uses: {unused}")
        c.rehash_new(layers)
        c.drop_source(self.src)


class ContainerCommit(ImageImport):
    """container commit work y:N (a new file in its upper each time): like an import."""

    tag_prefix = "y"

    def __init__(self, crash: Crash) -> None:
        super().__init__(crash)
        crash.cli.ok("container", "create", "base", "--name", "work")
        inspect = crash.cli.json("container", "inspect", "work", "--json")
        crash.done_containers["work"] = inspect["id"]
        self.upper = inspect["plan"]["upper"]
        self.previous = None

    def prepare(self, i: int) -> tuple[str, ...]:
        if self.previous:
            os.unlink(self.previous)
        self.previous = f"{self.upper}/new-{i}"
        with open(self.previous, "wb") as f:
            f.write(self.c.rng.randbytes(BLOB))
        self.src = self.c.busybox  # nothing to drop
        self.tag = f"{self.tag_prefix}:{i}"
        return ("container", "commit", "work", self.tag)


class ContainerCreate:
    """container create base --name cN: whole (inspects, mounts) or absent (the name is free again)."""

    lists = ("containers",)

    def __init__(self, crash: Crash) -> None:
        self.c = crash

    def prepare(self, i: int) -> tuple[str, ...]:
        self.name = f"c{i}"
        return ("container", "create", "base", "--name", self.name)

    def judge(self, result: Result) -> None:
        c = self.c
        containers = c.containers()
        c.verify_containers(containers)
        if result.stdout.strip() == self.name and self.name not in containers:
            c.fail(f"container {self.name} was reported created and is not listed")
        if self.name in containers:
            if result.killed:  # one that finished is checked with the other done ones
                c.exercise(self.name, containers[self.name])
            c.done_containers[self.name] = containers[self.name]["id"]
        else:
            c.stats["object absent after the kill"] += 1
            again = c.cli.run("container", "create", "base", "--name", self.name, "--json")
            if not again.ok:
                c.fail(f"container {self.name} is not listed, yet its name cannot be taken again:\n{again.describe()}")
            c.done_containers[self.name] = again.json()["id"]


class ContainerRm:
    """container rm [-f] rN (every other one mounted first): absent, or whole and removable."""

    lists = ("containers",)

    def __init__(self, crash: Crash) -> None:
        self.c = crash

    def prepare(self, i: int) -> tuple[str, ...]:
        self.name = f"r{i}"
        self.c.cli.ok("container", "create", "base", "--name", self.name)
        if i % 2:
            self.c.cli.ok("container", "mount", self.name)
            return ("container", "rm", "-f", self.name)
        return ("container", "rm", self.name)

    def judge(self, result: Result) -> None:
        c = self.c
        containers = c.containers()
        c.verify_containers(containers)
        if result.stdout.strip() == self.name and self.name in containers:
            c.fail(f"container {self.name} was reported removed and is still listed")
        if self.name in containers:
            c.stats["object whole after the kill"] += 1
            c.exercise(self.name, containers[self.name])
            again = c.cli.run("container", "rm", self.name)
            if not again.ok:
                c.fail(f"container {self.name}, left by a killed rm, cannot be removed:\n{again.describe()}")


class ImageRm:
    """image rm x:N of an image with a layer of its own: tagged and whole, or gone with its layer."""

    lists = ("layers", "images")

    def __init__(self, crash: Crash) -> None:
        self.c = crash

    def prepare(self, i: int) -> tuple[str, ...]:
        src = self.c.source(i)
        self.tag = f"x:{i}"
        self.image_id = self.c.cli.ok("image", "import", src, "--tag", self.tag).stdout.strip()
        self.c.drop_source(src)
        return ("image", "rm", self.tag)

    def judge(self, result: Result) -> None:
        c = self.c
        layers, images = c.layers(), c.images()
        tags = c.verify_images(layers, images)
        if f"Deleted: {self.image_id}" in result.stdout and self.image_id in {i["id"] for i in images}:
            c.fail(f"image {self.image_id} was reported deleted and is still listed")
        leftover = [i for i in images if i["id"] == self.image_id]
        if leftover and self.tag not in tags:
            c.fail(f"image rm {self.tag} was killed and left the image {self.image_id} without its tag")
        if self.tag in tags:
            c.stats["object whole after the kill"] += 1
            again = c.cli.run("image", "rm", self.tag)
            if not again.ok:
                c.fail(f"image {self.tag}, left by a killed rm, cannot be removed:\n{again.describe()}")
            layers, images = c.layers(), c.images()
        # Every layer of this store came with an image: one that no image uses is a leak.
        used = {layer for image in images for layer in image["layers"]}
        unused = sorted(set(layers) - used)
        if unused:
            c.fail(f"layers that no image uses are left behind and check does not report them: {unused}")


class RunRm:
    """run --rm base -- true: the container goes (after the next listing reaps it), or stays whole."""

    lists = ("containers",)

    def __init__(self, crash: Crash) -> None:
        self.c = crash

    def prepare(self, i: int) -> tuple[str, ...]:
        return ("run", "--rm", "base", "--", "true")

    def judge(self, result: Result) -> None:
        c = self.c
        containers = c.containers()
        c.verify_containers(containers)
        extra = {name: ctr for name, ctr in containers.items() if name not in c.done_containers}
        if result.ok and extra:
            c.fail(f"run --rm finished and left containers: {sorted(extra)}")
        for name, ctr in extra.items():
            c.stats["container left by a killed run --rm"] += 1
            if ctr.get("state") == "running":
                c.fail(f"container {name} of a killed run is still 'running' after a listing reaped:\n{ctr}")
            inspect = c.cli.run("container", "inspect", name, "--json")
            if not inspect.ok:
                c.fail(f"container {name}, left by a killed run, does not inspect:\n{inspect.describe()}")
            again = c.cli.run("container", "rm", "-f", name)
            if not again.ok:
                c.fail(f"container {name}, left by a killed run, cannot be removed:\n{again.describe()}")


# The same verb on something that does not exist: fails right where the real one starts its work.
PROBES = {
    "layer-create": ("layer", "create", "--from", "/nonexistent/source"),
    "image-import": ("image", "import", "/nonexistent/source", "--tag", "probe:1"),
    "container-create": ("container", "create", "nonexistent", "--name", "probe"),
    "container-commit": ("container", "commit", "nonexistent", "probe:1"),
    "container-rm": ("container", "rm", "nonexistent"),
    "image-rm": ("image", "rm", "nonexistent:1"),
    "run-rm": ("run", "--rm", "nonexistent", "--", "true"),
}

SCENARIOS = {
    "layer-create": LayerCreate,
    "image-import": ImageImport,
    "container-create": ContainerCreate,
    "container-commit": ContainerCommit,
    "container-rm": ContainerRm,
    "image-rm": ImageRm,
    "run-rm": RunRm,
}


def run_lane(verb: str, seed: int, lane: int, base, busybox_rootfs, rounds: int, stop: threading.Event) -> Crash:
    """One store, its verb killed rounds times; the Crash with its stats.  Cleans up whatever happens."""
    store = StressStore(base)
    try:
        rng = random.Random(f"{seed}-{verb}-{lane}")
        crash = Crash(store, rng, base, busybox_rootfs, verb, seed)
        cli = store.cli
        base_id = cli.ok("image", "import", str(busybox_rootfs), "--tag", "base").stdout.strip()
        crash.done_tags["base:latest"] = base_id
        crash.done_layers.update({lid: r["diff_id"] for lid, r in crash.layers().items()})
        scenario = SCENARIOS[verb](crash)

        # The window of the kills: from a little before the moment the verb reaches
        # the store (the time of the same verb on an object that does not exist:
        # the CLI's start-up and imports) to a little past its typical duration.
        # Each is the median of three runs (rounds 0, 1 and 2, unkilled).
        reach = statistics.median(cli.run(*PROBES[verb]).seconds for _ in range(3))
        durations = []
        for i in range(3):
            run = cli.run(*scenario.prepare(i))
            assert run.ok, run.describe()
            durations.append(run.seconds)
            crash.context = f"crash[{verb}] lane {lane}, measuring run: "
            scenario.judge(run)
        crash.typical = statistics.median(durations)
        crash.window = (0.9 * reach, max(1.1 * crash.typical, 1.2 * reach))

        for i in range(3, rounds + 3):
            if stop.is_set():
                break
            args = scenario.prepare(i)
            delay = rng.uniform(*crash.window)
            crash.context = (
                f"crash[{verb}] seed {seed}, lane {lane}, kill {i - 2}/{rounds} after {delay * 1000:.0f} ms: "
                f"{' '.join(args)}\n"
            )
            result = cli.kill_after(delay, *args)
            crash.after(result, scenario)
            if i % VERIFY_EVERY == 0:
                crash.full_verify()
        crash.context = f"crash[{verb}] seed {seed}, lane {lane}, at the end: "
        crash.finish()
        return crash
    finally:
        store.cleanup()


@pytest.mark.parametrize("verb", VERBS)
def test_killed_verb_leaves_a_consistent_store(verb, busybox_rootfs, tmp_path, capsys):
    """ROUNDS kills of one verb, on LANES stores side by side (one per CPU)."""
    seed = new_seed()
    say(capsys, f"crash[{verb}]: seed {seed}, {ROUNDS} kills on {LANES} stores (OVERLAYCTL_STRESS_SEED={seed})")
    started = time.monotonic()
    stop = threading.Event()
    per_lane = math.ceil(ROUNDS / LANES)
    with concurrent.futures.ThreadPoolExecutor(LANES) as pool:
        futures = [
            pool.submit(run_lane, verb, seed, lane, tmp_path / f"lane{lane}", busybox_rootfs, per_lane, stop)
            for lane in range(LANES)
        ]
        for future in concurrent.futures.as_completed(futures):
            if future.exception() is not None:
                stop.set()  # the first failure stops the other lanes
        crashes = [future.result() for future in futures]  # raises the first lane's failure
    stats = sum((c.stats for c in crashes), Counter())
    summary = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()))
    timing = "; ".join(
        f"verb {c.typical * 1000:.0f} ms, window {c.window[0] * 1000:.0f}-{c.window[1] * 1000:.0f} ms" for c in crashes
    )
    say(capsys, f"crash[{verb}]: {per_lane * LANES} kills in {time.monotonic() - started:.1f}s ({timing}): {summary}")
