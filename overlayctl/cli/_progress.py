"""A progress bar on stderr for long loads and saves: one line, redrawn in place.

    Loading [=========>          ] 2/4 layers  120.5 MB / 300.0 MB  45.2 MB/s  0:04 left

Plain text and ``\\r`` (no dependency), at most about ten redraws a second,
cut to the terminal's width.  With ``per_layer`` (pull, push), one line per
layer goes above it, as ``docker pull`` shows them, redrawn in place with the
cursor-up escape sequence::

    3f2a9c1e4d5b  1.2 MB / 2.8 MB
    8d0c4b1a9e72  done    5.0 MB
    Pulling [=========>          ] 1/2 layers  6.2 MB / 7.8 MB  45.2 MB/s  0:01 left

Shown only when stderr is a terminal and the output is not --json (``terminal_progress``); the API
reports the events (``api._progress.Progress``) and knows nothing of this.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from ..api._progress import Progress
from ._output import human_size

#: Seconds between redraws at least (start and finish are always drawn).
INTERVAL = 0.1


def duration(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def rate_text(nbytes: int, elapsed: float) -> str:
    """Bytes per second, human readable ("45.2 MB/s"); "-- B/s" before any time has passed."""
    if elapsed <= 0:
        return "-- B/s"
    return f"{human_size(int(nbytes / elapsed))}/s"


def eta_text(done: int, total: int | None, elapsed: float) -> str:
    """Time left at the rate so far ("0:04 left"), "--:-- left" when it cannot be told."""
    if not total or elapsed <= 0 or done <= 0:
        return "--:-- left"
    rate = done / elapsed
    return f"{duration(max(0, total - done) / rate)} left"


def terminal_width(stream: TextIO) -> int:
    """The columns of the terminal stream is on (80 when it cannot be told)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return columns or shutil.get_terminal_size((80, 24)).columns or 80


class ProgressBar(Progress):
    """Draws the events as one line on stream; ``close`` ends the line if the work ended without finish."""

    def __init__(
        self,
        verb: str,
        stream: TextIO,
        *,
        done_verb: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: Callable[[], int] | None = None,
        interval: float = INTERVAL,
        per_layer: bool = False,
    ) -> None:
        self.verb = verb
        self.per_layer = per_layer
        self.layer_rows: dict[str, list] = {}  # layer: [bytes, size or None, done]
        self._rows_shown = 0  # layer lines on screen above the bar
        self.done_verb = done_verb or verb
        self.stream = stream
        self.clock = clock
        self.width = width or (lambda: terminal_width(stream))
        self.interval = interval
        self.total_layers = 0
        self.total_bytes: int | None = None
        self.layers = 0
        self.bytes = 0
        self.started = 0.0
        self.finished = False
        self.draws = 0  # lines drawn (for tests)
        self._last_draw: float | None = None
        self._shown = 0  # length of the line on screen; 0 when none is

    # The events.

    def start(self, total_layers: int, total_bytes: int | None) -> None:
        self.total_layers, self.total_bytes = total_layers, total_bytes
        self.started = self.clock()
        self._draw(self.started)

    def layer_start(self, layer: str, size: int | None) -> None:
        self.layer_rows.setdefault(layer, [0, size, False])
        self._maybe_draw()

    def advance(self, nbytes: int, layer: str | None = None) -> None:
        self.bytes += nbytes
        if layer in self.layer_rows:
            self.layer_rows[layer][0] += nbytes
        self._maybe_draw()

    def layer_done(self, layer: str | None = None) -> None:
        self.layers += 1
        if layer in self.layer_rows:
            self.layer_rows[layer][2] = True
        self._maybe_draw()

    def finish(self) -> None:
        self.finished = True
        self._draw(self.clock())
        self.close()

    def close(self) -> None:
        """End the bar's line (after finish, or before an error message)."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0

    # Drawing.

    def _maybe_draw(self) -> None:
        now = self.clock()
        if self._last_draw is None or now - self._last_draw >= self.interval:
            self._draw(now)

    def _draw(self, now: float) -> None:
        line = self.line(now)[: max(10, self.width() - 1)]
        if self.per_layer:
            rows = [text[: max(10, self.width() - 1)] for text in self.rows()]
            up = f"\x1b[{self._rows_shown}A" if self._rows_shown else ""
            # New rows push the bar down: the lines it took are written over, the rest added.
            self.stream.write("\r" + up + "".join(f"{text}\x1b[K\n" for text in rows))
            self._rows_shown = len(rows)
            self._shown = 0
        self.stream.write("\r" + line.ljust(self._shown))
        self.stream.flush()
        self._shown = max(len(line), 1)
        self._last_draw = now
        self.draws += 1

    def rows(self) -> list[str]:
        """One line per layer: its short digest, and its bytes so far (of its size)."""
        lines = []
        for layer, (done_bytes, size, done) in self.layer_rows.items():
            name = layer.split(":")[-1][:12]
            if done:
                lines.append(f"{name}  done    {human_size(done_bytes)}")
            else:
                lines.append(f"{name}  {human_size(done_bytes)}" + (f" / {human_size(size)}" if size else ""))
        return lines

    def line(self, now: float) -> str:
        """The bar's text at time now."""
        elapsed = now - self.started
        total = self.total_bytes
        if total:
            fraction = self.bytes / total
        elif self.total_layers:
            fraction = self.layers / self.total_layers
        else:
            fraction = 1.0 if self.finished else 0.0
        fraction = 1.0 if self.finished else min(1.0, fraction)
        sizes = f"{human_size(self.bytes)} / {human_size(total)}" if total else human_size(self.bytes)
        tail = f"in {duration(elapsed)}" if self.finished else eta_text(self.bytes, total, elapsed)
        verb = self.done_verb if self.finished else self.verb
        text = f"{self.layers}/{self.total_layers} layers  {sizes}  {rate_text(self.bytes, elapsed)}  {tail}"
        room = self.width() - 1 - len(verb) - len(text) - 5
        if room < 10:
            return f"{verb} {text}"
        cells = min(room, 30)
        filled = int(cells * fraction)
        bar = "=" * filled + (">" if filled < cells else "") + " " * (cells - filled - 1)
        return f"{verb} [{bar}] {text}"


@contextlib.contextmanager
def terminal_progress(
    verb: str, done_verb: str, *, quiet: bool, stream: TextIO | None = None, per_layer: bool = False
) -> Iterator[ProgressBar | None]:
    """A ProgressBar on stderr when it is a terminal and not quiet (--json), else None; its line ended after."""
    stream = sys.stderr if stream is None else stream
    try:
        shown = not quiet and stream.isatty()
    except (AttributeError, ValueError):
        shown = False
    if not shown:
        yield None
        return
    bar = ProgressBar(verb, stream, done_verb=done_verb, per_layer=per_layer)
    try:
        yield bar
    finally:
        bar.close()
