"""Progress events of a long load or save, for a caller that wants to show them.

The API knows nothing of terminals: ``images.load`` and ``images.save`` take
an optional ``progress`` object and call its four methods; the CLI's
renderer (``cli._progress``) draws a bar from them.  Subclass ``Progress``
and override what you need (each method does nothing here).

Calls come one at a time (the API serialises them, even when layers are
unpacked in parallel), in this order: ``start`` once, then ``advance`` and
``layer_done`` any number of times, then ``finish`` once if the verb
succeeded (not after an error).
"""

from __future__ import annotations

import threading


class Progress:
    """The events: start(total_layers, total_bytes), advance(bytes), layer_done(), finish()."""

    def start(self, total_layers: int, total_bytes: int | None) -> None:
        """The work ahead: layers to go through, and their bytes (None when unknown before they are written)."""

    def advance(self, nbytes: int) -> None:
        """nbytes more of the layers' bytes were read (load) or written (save)."""

    def layer_done(self) -> None:
        """One more layer is done (unpacked, written, or found in the store already)."""

    def finish(self) -> None:
        """All done."""


class Serialized(Progress):
    """Another Progress's calls behind a lock, so worker threads may report at once."""

    def __init__(self, inner: Progress) -> None:
        self._inner = inner
        self._lock = threading.Lock()

    def start(self, total_layers: int, total_bytes: int | None) -> None:
        with self._lock:
            self._inner.start(total_layers, total_bytes)

    def advance(self, nbytes: int) -> None:
        if nbytes:
            with self._lock:
                self._inner.advance(nbytes)

    def layer_done(self) -> None:
        with self._lock:
            self._inner.layer_done()

    def finish(self) -> None:
        with self._lock:
            self._inner.finish()


def serialized(progress: Progress | None) -> Progress:
    """What the API calls: the caller's progress behind a lock, or one that does nothing."""
    return Progress() if progress is None else Serialized(progress)
