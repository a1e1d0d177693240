"""Family ``api``: in-process ``LayerStore.plan`` / ``mount`` / ``unmount`` against the raw kernel mount.

For a container whose image has N layers (the container adds its init
layer, so the mount has N + 1 lowers; N = 500 uses an image of 499
layers: 500 lowers, the kernel's limit).  Each mount sample is followed by
its unmount and by a raw kernel mount of the same lowers (with its own
upper, work and target), round after round: the goal's ratio compares
those samples taken side by side, since this VM drifts by tens of percent
between the phases of a run.
"""

from __future__ import annotations

from .context import Bench, image_for, reps_for
from .harness import interleaved, median, print_ratio, ratio, reps_or, sample
from .rawmount import raw_mount_of
from .results import Results, header

NAME = "api"
SUMMARY = "in-process LayerStore.mount/unmount vs the raw kernel mount of the same lowers, side by side"

API_NS = (1, 10, 100, 500)
GOAL_API_RATIO = 1.5  # in-process mount within 1.5x of the side-by-side raw mount at N = 100


def measure(ctx: Bench, results: Results, reps: int | None) -> None:
    store = ctx.deep_store()
    names = {n: ctx.container("api", n) for n in API_NS}
    header("overlayctl in-process: LayerStore.plan / mount / unmount (mount: new pinned namespace)")
    for n in API_NS:
        _, depth = image_for(n)
        name = names[n]
        count = reps_or(reps_for(n), reps)
        note = f"image of {depth} layers + init layer"
        plans = sample(lambda: store.containers.plan(name), count)
        results.add("api", "LayerStore.plan (no mount)", plans, n=n, lowers=depth + 1, floor_n=n, note=note)
        # raw() times its own mount (its unmount untimed); mount, unmount, raw in turn.
        mounts, unmounts, floors = interleaved(
            lambda: store.containers.mount(name),
            lambda: store.containers.unmount(name),
            raw_mount_of(store, name),
            reps=count,
        )
        results.add("api", "raw mount, same lowers, side by side", floors, n=n, lowers=depth + 1, note=note)
        side = ratio(mounts, floors)
        goal = met = None
        if n == 100:
            goal, met = f"<= {GOAL_API_RATIO}x side-by-side floor", side <= GOAL_API_RATIO
        row = results.add(
            "api", "LayerStore.mount", mounts, n=n, lowers=depth + 1, floor_n=n, goal=goal, met=met, note=note
        )
        row["ratio_side_by_side"] = side
        row["raw_side_by_side_s"] = median(floors)
        print_ratio("LayerStore.mount / raw mount side by side", side)
        results.add("api", "LayerStore.unmount", unmounts, n=n, lowers=depth + 1, floor_n=n, note=note)
