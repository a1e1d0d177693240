"""The load/save progress bar's text, without a terminal: sizes, rate, time left, throttling, the line's end."""

from __future__ import annotations

import io
import threading

import pytest

from overlayctl.api._progress import Progress, Serialized, serialized
from overlayctl.cli._progress import ProgressBar, duration, eta_text, rate_text, terminal_progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def bar(width: int = 120, interval: float = 0.1) -> tuple[ProgressBar, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return (
        ProgressBar("Loading", out, done_verb="Loaded", clock=clock, width=lambda: width, interval=interval),
        out,
        clock,
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0:00"),
        (0.4, "0:00"),
        (4.6, "0:05"),
        (59, "0:59"),
        (61, "1:01"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (3 * 3600 + 62, "3:01:02"),
        (-5, "0:00"),
    ],
)
def test_durations(seconds, text):
    assert duration(seconds) == text


def test_rate_and_time_left():
    assert rate_text(45_200_000, 1.0) == "45.2 MB/s"
    assert rate_text(3_000, 2.0) == "1.5 kB/s"
    assert rate_text(100, 0) == "-- B/s"
    assert eta_text(100_000_000, 300_000_000, 2.0) == "0:04 left"  # 50 MB/s, 200 MB to go
    assert eta_text(0, 300, 2.0) == "--:-- left"
    assert eta_text(10, None, 2.0) == "--:-- left"
    assert eta_text(300, 300, 2.0) == "0:00 left"


def test_a_load_line_shows_layers_bytes_rate_and_time_left():
    progress, out, clock = bar()
    progress.start(4, 300_000_000)
    progress.layer_done()  # a reused layer: done at once
    clock.now += 2
    progress.advance(100_000_000)
    line = out.getvalue().split("\r")[-1].rstrip()
    assert line.startswith("Loading [")
    assert line.endswith("] 1/4 layers  100.0 MB / 300.0 MB  50.0 MB/s  0:04 left"), line
    cells = line[line.index("[") + 1 : line.index("]")]
    assert cells.startswith("=" * (len(cells) // 3)) and ">" in cells and len(cells) == 30


def test_finish_draws_the_whole_bar_and_ends_the_line():
    progress, out, clock = bar()
    progress.start(2, 1000)
    clock.now += 0.5
    progress.advance(1000)
    progress.layer_done()
    progress.layer_done()
    clock.now += 0.5
    progress.finish()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    last = text.rstrip("\n").split("\r")[-1].rstrip()
    assert last == "Loaded [" + "=" * 30 + "] 2/2 layers  1.0 kB / 1.0 kB  1.0 kB/s  in 0:01"
    progress.close()  # nothing more to end
    assert out.getvalue() == text


def test_unknown_total_bytes_shows_bytes_so_far_and_fills_by_layers():
    progress, out, clock = bar()
    progress.start(2, None)
    clock.now += 1
    progress.advance(2_500_000)
    progress.layer_done()  # too soon after the last redraw to draw again
    assert "0/2 layers" in out.getvalue().split("\r")[-1]
    line = progress.line(clock.now)
    assert "[" + "=" * 15 + ">" in line
    assert line.endswith("1/2 layers  2.5 MB  2.5 MB/s  --:-- left"), line


def test_redraws_are_throttled_to_ten_a_second():
    progress, out, clock = bar()
    progress.start(1, 10_000)
    for _ in range(100):  # 100 reads in 0.78 s (steps exact in binary): 7 redraws, one each 0.1 s, not 100
        clock.now += 1 / 128
        progress.advance(100)
    assert progress.draws == 1 + 7
    assert out.getvalue().count("\r") == progress.draws
    assert progress.bytes == 10_000
    progress.finish()  # always drawn, however soon
    assert progress.draws == 9


def test_a_shorter_line_overwrites_a_longer_one_and_the_width_is_kept():
    progress, out, clock = bar(width=60)
    progress.start(1, 10**12)
    clock.now += 1
    progress.advance(10**11)  # the line grows: "100.0 GB / 1000.0 GB" ...
    drawn = out.getvalue().split("\r")[1:]
    assert all(len(d) <= 59 for d in drawn), drawn
    narrow, out, clock = bar(width=30)
    narrow.start(3, 100)
    assert "[" not in out.getvalue() and len(out.getvalue()) <= 30  # no room for a bar: the words, cut
    long = ProgressBar("Saving", io.StringIO(), clock=Clock(), width=lambda: 200)
    long.start(1, 5)
    long.stream.truncate(0)
    long._shown = 80  # a longer line on screen is blanked out by the next one
    long._draw(long.clock())
    assert len(long.stream.getvalue()) >= 81


def test_close_ends_a_bar_left_without_finish_so_an_error_starts_a_line():
    progress, out, _ = bar()
    progress.start(3, 30)
    progress.close()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


class FakeTty(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_only_a_terminal_without_json_gets_a_bar():
    for tty, quiet, shown in [(True, False, True), (True, True, False), (False, False, False)]:
        stream = FakeTty(tty)
        with terminal_progress("Saving", "Saved", quiet=quiet, stream=stream) as progress:
            assert (progress is not None) == shown
            if progress is not None:
                progress.start(1, None)
        assert stream.getvalue().endswith("\n") if shown else stream.getvalue() == ""


def test_the_api_serialises_calls_from_worker_threads():
    class Counting(Progress):
        def __init__(self) -> None:
            self.total = 0
            self.inside = 0
            self.overlapped = False

        def advance(self, nbytes: int) -> None:
            self.inside += 1
            self.overlapped |= self.inside > 1
            self.total += nbytes
            self.inside -= 1

    inner = Counting()
    events = serialized(inner)
    assert isinstance(events, Serialized)
    threads = [threading.Thread(target=lambda: [events.advance(1) for _ in range(20_000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inner.total == 80_000 and not inner.overlapped
    quiet = serialized(None)  # no caller's progress: events go nowhere
    quiet.start(1, 1)
    quiet.advance(1)
    quiet.layer_done()
    quiet.finish()


def test_one_line_per_layer_above_the_bar():
    """per_layer (pull, push): a line per layer, redrawn in place above the bar with cursor-up."""
    out, clock = io.StringIO(), Clock()
    progress = ProgressBar("Pulling", out, done_verb="Pulled", clock=clock, width=lambda: 120, per_layer=True)
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    progress.start(2, 3000)
    progress.layer_start(a, 1000)
    progress.layer_start(b, 2000)
    clock.now += 1
    progress.advance(1000, a)
    progress.layer_done(a)
    clock.now += 1
    progress.advance(500, b)
    assert progress.rows() == ["aaaaaaaaaaaa  done    1.0 kB", "bbbbbbbbbbbb  500 B / 2.0 kB"]
    progress.advance(1500, b)
    progress.layer_done(b)
    progress.finish()
    screen = out.getvalue()
    assert "\x1b[2A" in screen  # back up over the two layer lines
    assert screen.rstrip("\n").endswith(
        "Pulled [==============================] 2/2 layers  3.0 kB / 3.0 kB  1.5 kB/s  in 0:02"
    )
    assert screen.endswith("\n")
