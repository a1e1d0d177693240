"""Family ``busybox``: ``container create`` + ``container mount`` of a busybox image, in-process and by the CLI.

The image is the tests' busybox rootfs (the host's static busybox with its
applet links), imported once as ``busybox:base``: one layer, so each mount
has two lowers with the container's init layer.  Each container is removed
after its sample, untimed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from .context import Bench
from .harness import fmt_time, reps_or
from .results import Results, header

NAME = "busybox"
SUMMARY = "container create + mount of a busybox image, in-process and through the CLI"

API_REPS = 30
CLI_REPS = 20
NOTE = "image of 1 layer + init layer"


def measure(ctx: Bench, results: Results, reps: int | None) -> None:
    store = ctx.store()
    rootfs, applets = ctx.busybox_rootfs()
    start = time.perf_counter()
    store.images.import_rootfs(str(rootfs), tag="busybox:base")
    imported = time.perf_counter() - start
    header(f"busybox image ({applets} applet links; import took {fmt_time(imported)}): create + mount")
    counter = itertools.count()

    def create_and_mount(
        create: Callable[[str], object], mount: Callable[[str], object], count: int, warmup: int
    ) -> tuple[list[float], list[float], list[float]]:
        creates: list[float] = []
        mounts: list[float] = []
        totals: list[float] = []
        for i in range(warmup + count):
            name = f"bb-{next(counter)}"
            t0 = time.perf_counter()
            create(name)
            t1 = time.perf_counter()
            mount(name)
            t2 = time.perf_counter()
            store.containers.remove(name, force=True)
            if i >= warmup:
                creates.append(t1 - t0)
                mounts.append(t2 - t1)
                totals.append(t2 - t0)
        return creates, mounts, totals

    creates, mounts, totals = create_and_mount(
        lambda name: store.containers.create("busybox:base", name=name),
        lambda name: store.containers.mount(name),
        reps_or(API_REPS, reps),
        warmup=3,
    )
    results.add("busybox", "api create_container", creates, n=1, lowers=2, note=NOTE)
    results.add("busybox", "api mount", mounts, n=1, lowers=2, floor_n=1, note=NOTE)
    results.add("busybox", "api create + mount", totals, n=1, lowers=2, floor_n=1, note=NOTE)

    creates, mounts, totals = create_and_mount(
        lambda name: ctx.cli("container", "create", "busybox:base", "--name", name),
        lambda name: ctx.cli("container", "mount", name),
        reps_or(CLI_REPS, reps),
        warmup=2,
    )
    results.add("busybox", "cli container create", creates, n=1, lowers=2, note=NOTE)
    results.add("busybox", "cli container mount", mounts, n=1, lowers=2, floor_n=1, note=NOTE)
    results.add("busybox", "cli create + mount", totals, n=1, lowers=2, floor_n=1, note=NOTE)
