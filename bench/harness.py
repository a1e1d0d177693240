"""The timing harness: samples, medians, side-by-side timing and ratio lines.

Everything that takes a time lives here, so every family measures the same
way: ``perf_counter`` around the call, warm-up runs dropped, the median
reported.  This VM drifts by tens of percent between the phases of a run,
so a ratio between two things is only fair when their samples were taken
side by side: ``side_by_side`` (and ``interleaved`` for more than two)
run one sample of each in turn, round after round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


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


def interleaved(*steps: Callable[[], object], reps: int, warmup: int = 3) -> list[list[float]]:
    """Time each step in turn, reps rounds (after warm-up rounds); one list of times per step.

    A step that returns a float reports its own time instead (a raw mount
    timed without its unmount, for instance); any other return is ignored.
    """
    times: list[list[float]] = [[] for _ in steps]
    for i in range(warmup + reps):
        for step, found in zip(steps, times):
            start = time.perf_counter()
            own = step()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                found.append(own if isinstance(own, float) else elapsed)
    return times


def side_by_side(
    a: Callable[[], object], b: Callable[[], object], reps: int, *, warmup: int = 3
) -> tuple[list[float], list[float]]:
    """Samples of a and b taken in turn, round after round: the fair basis of a ratio on a drifting VM."""
    times_a, times_b = interleaved(a, b, reps=reps, warmup=warmup)
    return times_a, times_b


def median(times: list[float]) -> float:
    return statistics.median(times)


def ratio(times: list[float], base: list[float]) -> float:
    """The ratio of the medians: times over base."""
    return median(times) / median(base)


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def print_ratio(text: str, value: float, *, goal: float | None = None) -> None:
    """A ratio line under the table's rows, with its goal when it has one."""
    aim = "" if goal is None else f" (goal <= {goal:.2f}: {'ok' if value <= goal else 'MISSED'})"
    print(f"  {text}: {value:.2f}x{aim}", flush=True)


def reps_or(default: int, override: int | None) -> int:
    """A family's repetition count: --reps when given, else the family's own."""
    return default if override is None else override
