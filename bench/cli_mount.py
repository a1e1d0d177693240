"""Family ``cli``: ``overlayctl container mount NAME`` as a subprocess (wall time).

The container's image has N layers (N = 500: 499, plus the init layer);
each sample is unmounted in-process, untimed.
"""

from __future__ import annotations

from .context import Bench, image_for
from .harness import median, reps_or, sample
from .results import Results, header

NAME = "cli"
SUMMARY = "'overlayctl container mount NAME' as a subprocess, N-layer images (wall time)"

CLI_NS = (1, 10, 100, 125, 500)
GOAL_CLI_MOUNT = 0.10  # CLI container mount at N = 125, seconds


def measure(ctx: Bench, results: Results, reps: int | None) -> None:
    store = ctx.deep_store()
    names = {n: ctx.container("cli", n) for n in CLI_NS}
    header("overlayctl CLI: 'overlayctl container mount NAME' as a subprocess (wall time)")
    for n in CLI_NS:
        _, depth = image_for(n)
        name = names[n]
        count = reps_or(30 if n <= 125 else 20, reps)
        times = sample(
            lambda: ctx.cli("container", "mount", name), count, warmup=2, after=lambda: store.containers.unmount(name)
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
