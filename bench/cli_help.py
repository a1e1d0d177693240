"""Family ``help``: the CLI's start-up, ``overlayctl --help`` as a subprocess (wall time).

Needs no store and no root: the cheapest family.
"""

from __future__ import annotations

import subprocess

from .context import CLI, Bench
from .harness import median, reps_or, sample
from .results import Results, header

NAME = "help"
SUMMARY = "CLI start-up: 'overlayctl --help' as a subprocess (wall time)"

HELP_REPS = 50
GOAL_HELP = 0.08  # overlayctl --help, seconds


def measure(ctx: Bench, results: Results, reps: int | None) -> None:
    header("overlayctl CLI start-up: 'overlayctl --help' as a subprocess (wall time)")
    times = sample(
        lambda: subprocess.run([CLI, "--help"], check=True, stdout=subprocess.DEVNULL), reps_or(HELP_REPS, reps)
    )
    results.add("cli", "overlayctl --help", times, goal=f"<= {GOAL_HELP:.2f} s", met=median(times) <= GOAL_HELP)
