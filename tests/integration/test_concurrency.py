"""Concurrency: WORKERS workers on one store, a random mix of mutating verbs, for SECONDS.

Each worker runs one overlayctl command at a time through the CLI: image
import (half of them of the same rootfs, so layers are shared and
deduplicated), container create (from anyone's image), container commit,
container rm (now and then of another worker's container), image rm (of its
own tags) and run --rm.  Then:

* no command hangs (each finishes within OVERLAYCTL_STRESS_CMD_TIMEOUT) and
  none gives up on the store lock: a lock timeout is a failure;
* no traceback, ever; an error is fine only when it is an expected race
  ("no such container", "no such image", "is used by container", "is the
  parent of image") printed as one line, with exit code 1;
* no corruption: check is clean at the end, with nothing to repair;
* no lost tag: every tag a worker made and did not remove still resolves to
  the image it reported, with all its layers;
* nothing left: no process, mount or pin.

Throughput (ops/s) and latency percentiles are printed (also in 'make test').
Knobs: OVERLAYCTL_STRESS_SECONDS (default 60), OVERLAYCTL_STRESS_WORKERS
(default 8), OVERLAYCTL_STRESS_SEED, OVERLAYCTL_STRESS_CMD_TIMEOUT.
"""

from __future__ import annotations

import random
import re
import shutil
import statistics
import threading
import time
from collections import Counter, defaultdict

import pytest

from ._stress import CMD_TIMEOUT, Result, assert_clean, knob, make_source, new_seed, say, stress  # noqa: F401

pytestmark = pytest.mark.root

SECONDS = knob("OVERLAYCTL_STRESS_SECONDS", 60.0, float)
WORKERS = knob("OVERLAYCTL_STRESS_WORKERS", 8)
SHARED_SOURCES = 3  # small rootfs directories every worker imports (shared, deduplicated layers)
OPS = {"import": 3, "create": 3, "commit": 2, "container-rm": 2, "image-rm": 2, "run": 1}
EXPECTED_RACES = re.compile(r"no such container|no such image|is used by container|is the parent of image")


class Shared:
    """What all workers see: live tags and containers by owner, the failures, the stop flag."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tags: dict[str, tuple[int, str]] = {}  # tag -> (owner, image ID)
        self.containers: dict[str, int] = {}  # name -> owner
        self.failures: list[str] = []
        self.stop = threading.Event()


class Worker(threading.Thread):
    def __init__(self, n: int, cli, rng: random.Random, sources: list[str], shared: Shared, deadline: float) -> None:
        super().__init__(name=f"worker-{n}", daemon=True)
        self.n = n
        self.cli = cli
        self.rng = rng
        self.sources = sources
        self.shared = shared
        self.deadline = deadline
        self.count = 0
        self.latencies: list[tuple[str, float]] = []
        self.outcomes: Counter = Counter()

    # -- bookkeeping ---------------------------------------------------------------

    def fresh(self) -> str:
        self.count += 1
        return f"w{self.n}-{self.count}"

    def my_tags(self) -> list[str]:
        with self.shared.lock:
            return sorted(t for t, (owner, _) in self.shared.tags.items() if owner == self.n)

    def my_containers(self) -> list[str]:
        with self.shared.lock:
            return sorted(c for c, owner in self.shared.containers.items() if owner == self.n)

    def any_image(self) -> str:
        with self.shared.lock:
            tags = sorted(self.shared.tags)
        return self.rng.choice(tags + ["base:latest"])

    def command(self, op: str, *args: str) -> Result | None:
        """Run one command; the result if it succeeded, None after an expected race."""
        result = self.cli.run(*args)
        self.latencies.append((op, result.seconds))
        if result.timed_out:
            outcome = "hung"
        elif result.traceback:
            outcome = "traceback"
        elif result.ok:
            self.outcomes[f"{op}: ok"] += 1
            return result
        elif "locked" in result.stderr:
            outcome = "lock timeout"
        elif result.clean_error and EXPECTED_RACES.search(result.stderr):
            self.outcomes[f"{op}: {EXPECTED_RACES.search(result.stderr)[0]}"] += 1
            return None
        else:
            outcome = "unexpected error"
        with self.shared.lock:
            self.shared.failures.append(f"[{self.name}] {outcome}: {result.describe()}")
        return None

    # -- the operations ------------------------------------------------------------------

    def op_import(self) -> None:
        tag = self.fresh()
        source = self.rng.choice(self.sources)
        result = self.command("import", "image", "import", source, "--tag", tag)
        if result:
            with self.shared.lock:
                self.shared.tags[f"{tag}:latest"] = (self.n, result.stdout.strip())

    def op_create(self) -> None:
        name = self.fresh()
        if self.command("create", "container", "create", self.any_image(), "--name", name):
            with self.shared.lock:
                self.shared.containers[name] = self.n

    def op_commit(self) -> None:
        mine = self.my_containers()
        if not mine:
            return self.op_create()
        tag = self.fresh()
        result = self.command("commit", "container", "commit", self.rng.choice(mine), tag)
        if result:
            with self.shared.lock:
                self.shared.tags[f"{tag}:latest"] = (self.n, result.stdout.strip())

    def op_container_rm(self) -> None:
        with self.shared.lock:
            everyone = sorted(self.shared.containers)
        mine = self.my_containers()
        pool = everyone if (self.rng.random() < 0.2 or not mine) else mine
        if not pool:
            return self.op_create()
        name = self.rng.choice(pool)
        if self.command("container-rm", "container", "rm", name):
            with self.shared.lock:
                self.shared.containers.pop(name, None)

    def op_image_rm(self) -> None:
        mine = self.my_tags()
        if not mine:
            return self.op_import()
        tag = self.rng.choice(mine)
        if self.command("image-rm", "image", "rm", tag):
            with self.shared.lock:
                self.shared.tags.pop(tag, None)

    def op_run(self) -> None:
        self.command("run", "run", "--rm", self.any_image(), "--", "true")

    def run(self) -> None:
        ops, weights = list(OPS), list(OPS.values())
        try:
            while time.monotonic() < self.deadline and not self.shared.stop.is_set():
                op = self.rng.choices(ops, weights)[0]
                getattr(self, "op_" + op.replace("-", "_"))()
        except BaseException as exc:  # a bug of the test itself: report it, stop everyone
            with self.shared.lock:
                self.shared.failures.append(f"[{self.name}] worker crashed: {exc!r}")
            self.shared.stop.set()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else 0.0


def test_workers_on_one_store(stress, busybox_rootfs, tmp_path, capsys):  # noqa: F811
    seed = new_seed()
    say(capsys, f"concurrency: seed {seed}, {WORKERS} workers for {SECONDS:g}s (OVERLAYCTL_STRESS_SEED={seed})")
    rng = random.Random(seed)
    cli = stress.cli
    cli.ok("image", "import", str(busybox_rootfs), "--tag", "base")
    # Every image is runnable: the sources are busybox, or busybox plus a few files of their own.
    shared_sources = []
    for i in range(SHARED_SOURCES):
        shutil.copytree(busybox_rootfs, tmp_path / f"src{i}", symlinks=True)
        shared_sources.append(str(make_source(tmp_path / f"src{i}", rng, f"shared-{i}", 64 << 10)))
    sources = [str(busybox_rootfs)] * SHARED_SOURCES + shared_sources

    shared = Shared()
    started = time.monotonic()
    workers = [Worker(n, cli, random.Random(f"{seed}-{n}"), sources, shared, started + SECONDS) for n in range(WORKERS)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            # A worker ends its last command within the command timeout (then it counts as hung).
            w.join(SECONDS + 2 * CMD_TIMEOUT + 60)
        hung = [w.name for w in workers if w.is_alive()]
        assert not hung, f"workers did not finish: {hung}"
    finally:
        shared.stop.set()
    elapsed = time.monotonic() - started

    latencies = [s for w in workers for _, s in w.latencies]
    by_op: dict[str, list[float]] = defaultdict(list)
    for w in workers:
        for op, s in w.latencies:
            by_op[op].append(s)
    outcomes = sum((w.outcomes for w in workers), Counter())
    lines = [
        f"concurrency: {len(latencies)} commands by {WORKERS} workers in {elapsed:.1f}s: "
        f"{len(latencies) / elapsed:.1f} ops/s, latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    ]
    for op, values in sorted(by_op.items()):
        lines.append(
            f"  {op:13} {len(values):5} ops  p50 {statistics.median(values) * 1000:6.0f} ms"
            f"  p99 {percentile(values, 99) * 1000:6.0f} ms"
        )
    lines.append("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    say(capsys, "\n".join(lines))

    if shared.failures:
        first = "\n".join(shared.failures[:10])
        pytest.fail(f"{len(shared.failures)} failed commands (seed {seed}); the first ones:\n{first}", pytrace=False)
    assert_clean(cli, f"seed {seed}: ")
    # No lost tag: each one a worker made and did not remove resolves to its image, with all its layers.
    images = cli.json("image", "ls", "--json")
    layers = {r["id"] for r in cli.json("layer", "ls", "--json")}
    tags = {tag: image["id"] for image in images for tag in image["tags"]}
    lost = {tag: (want, tags.get(tag)) for tag, (_, want) in shared.tags.items() if tags.get(tag) != want}
    assert not lost, f"tags lost or moved (tag: (reported, now)), seed {seed}: {lost}"
    for image in images:
        missing = [layer for layer in image["layers"] if layer not in layers]
        assert not missing, f"image {image['id']} {image['tags']} lists missing layers {missing}"
    stress.note_containers()
    leaks = stress.leaks(allow_pin_dirs=True)
    assert not leaks, "left behind:\n" + "\n".join(leaks)
    for ctr in cli.json("container", "ls", "--json"):
        cli.ok("container", "rm", "-f", ctr["name"])
    assert_clean(cli, f"seed {seed}, every container removed: ")
    leaks = stress.leaks(allow_pin_dirs=False)
    assert not leaks, "left behind with every container removed:\n" + "\n".join(leaks)
