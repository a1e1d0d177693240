"""The results table: rows printed as they come, the goals' summary, the JSON file.

A row is one benchmark at one N: its median and minimum, its ratio to the
floor of the same N when the floor family ran, and its goal when it has
one.  Goals are reported, never fatal.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from .harness import fmt_time, median

Row = dict[str, Any]


def fmt_size(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def header(title: str) -> None:
    """A family's title and the table's column heads."""
    print(f"\n{title}", flush=True)
    print(f"  {'benchmark':38} {'N':>4} {'median':>10} {'min':>10} {'/floor':>8}  goal", flush=True)


def not_measured(name: str, n: int | None, why: str) -> None:
    """A row that could not be measured, and why (printed in parentheses)."""
    print(f"  {name:38} {'' if n is None else n:>4}  ({why})", flush=True)


class Results:
    """Rows of the table, kept in order, the floor's medians by N, and their JSON form."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.floor: dict[int, float] = {}

    def add(
        self,
        group: str,
        name: str,
        times: list[float],
        *,
        n: int | None = None,
        lowers: int | None = None,
        floor_n: int | None = None,
        goal: str | None = None,
        met: bool | None = None,
        note: str = "",
    ) -> Row:
        """Record a row and print it."""
        med = median(times)
        floor = self.floor.get(floor_n) if floor_n is not None else None
        row: Row = {
            "group": group,
            "name": name,
            "n": n,
            "lowers": lowers,
            "reps": len(times),
            "median_s": med,
            "min_s": min(times),
            "floor_n": floor_n,
            "ratio_to_floor": med / floor if floor else None,
            "goal": goal,
            "goal_met": met,
            "note": note,
        }
        self.rows.append(row)
        ratio = f"{row['ratio_to_floor']:.1f}x" if row["ratio_to_floor"] is not None else "-"
        mark = "" if met is None else ("  ok" if met else "  MISSED")
        print(
            f"  {name:38} {'' if n is None else n:>4} {fmt_time(med):>10} {fmt_time(min(times)):>10} {ratio:>8}"
            f"  {goal or ''}{mark}",
            flush=True,
        )
        return row

    def add_size(
        self,
        group: str,
        name: str,
        kib: int,
        *,
        n: int | None = None,
        goal: str | None = None,
        met: bool | None = None,
        note: str = "",
    ) -> Row:
        """Record a row of disk space (KiB, in the median column) and print it."""
        row: Row = {
            "group": group,
            "name": name,
            "n": n,
            "lowers": None,
            "reps": 1,
            "median_s": None,
            "min_s": None,
            "size_kib": kib,
            "floor_n": None,
            "ratio_to_floor": None,
            "goal": goal,
            "goal_met": met,
            "note": note,
        }
        self.rows.append(row)
        mark = "" if met is None else ("  ok" if met else "  MISSED")
        print(
            f"  {name:38} {'' if n is None else n:>4} {fmt_size(kib):>10} {'':>10} {'-':>8}  {goal or ''}{mark}",
            flush=True,
        )
        return row

    def print_summary(self) -> None:
        """Every goal's row: its median, its ratio, met or missed."""
        goals = [row for row in self.rows if row["goal"]]
        if not goals:
            return
        print("\ngoals:")
        for row in goals:
            state = "ok" if row["goal_met"] else "MISSED"
            ratio = f" ({row['ratio_to_floor']:.2f}x floor)" if row["ratio_to_floor"] else ""
            if row.get("ratio_side_by_side"):
                ratio = f" ({row['ratio_side_by_side']:.2f}x the raw mount side by side)"
            if row.get("ratio_to_docker"):
                ratio = f" ({row['ratio_to_docker']:.2f}x docker run)"
            if row.get("ratio_note"):
                ratio = f" ({row['ratio_note']})"
            where = f"N={row['n']}" if row["n"] is not None else "-"
            value = fmt_size(row["size_kib"]) if row.get("size_kib") is not None else fmt_time(row["median_s"])
            print(f"  {row['name']} ({where}): {value}{ratio}, goal {row['goal']}: {state}")

    def to_json(self, families: list[str], reps: int | None) -> dict[str, Any]:
        return {
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "families": families,
            "reps": reps,
            "floor_s": {str(n): t for n, t in self.floor.items()},
            "rows": self.rows,
        }
