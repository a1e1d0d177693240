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

    def layer_start(self, layer: str, size: int | None) -> None:
        """A layer (its blob digest, or ID) starts: its bytes follow as advance(n, layer)."""

    def advance(self, nbytes: int, layer: str | None = None) -> None:
        """nbytes more of the layers' bytes were read (load, pull) or written (save, push); of layer when named."""

    def layer_done(self, layer: str | None = None) -> None:
        """One more layer is done (unpacked, written, or found in the store already)."""

    def finish(self) -> None:
        """All done."""


class Serialized(Progress):
    """Another Progress's calls behind a lock, so worker threads may report at once."""

    def __init__(self, inner: Progress) -> None:
        import inspect

        self._inner = inner
        self._lock = threading.Lock()
        # A Progress written before layers were named takes no layer argument: it gets none.
        self._named = all(
            "layer" in inspect.signature(method).parameters for method in (inner.advance, inner.layer_done)
        )

    def start(self, total_layers: int, total_bytes: int | None) -> None:
        with self._lock:
            self._inner.start(total_layers, total_bytes)

    def layer_start(self, layer: str, size: int | None) -> None:
        with self._lock:
            self._inner.layer_start(layer, size)

    def advance(self, nbytes: int, layer: str | None = None) -> None:
        if nbytes:
            with self._lock:
                self._inner.advance(nbytes, layer) if self._named else self._inner.advance(nbytes)

    def layer_done(self, layer: str | None = None) -> None:
        with self._lock:
            self._inner.layer_done(layer) if self._named else self._inner.layer_done()

    def finish(self) -> None:
        with self._lock:
            self._inner.finish()


def serialized(progress: Progress | None) -> Progress:
    """What the API calls: the caller's progress behind a lock, or one that does nothing."""
    return Progress() if progress is None else Serialized(progress)
