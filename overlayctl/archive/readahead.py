"""A stream read in a thread of its own, a few chunks ahead of its consumer.

A layer pulled or loaded compressed passes through network reads, the blob's
digest, the download cache and zlib before its tar is unpacked.  Those steps
run in C with the GIL released, so doing them in a second thread overlaps
them with the unpacking, which is mostly file creation and Python.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

CHUNK = 1 << 20
DEPTH = 8  # chunks read ahead at most


class ReadAhead:
    """Reads source in a thread, CHUNK bytes at a time; read() gives them back in order, errors included.

    close() stops the thread and waits for it: only then may the caller
    touch source again.
    """

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=DEPTH)
        self._stop = threading.Event()
        self._chunk = b""
        self._offset = 0
        self._ended = False
        self._thread = threading.Thread(target=self._fill, name="overlayctl-readahead", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(CHUNK)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, which raises it)
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        while self._offset >= len(self._chunk):
            if self._ended:
                return b""
            item = self._chunks.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if not item:
                self._ended = True
                return b""
            self._chunk, self._offset = item, 0
        data = self._chunk[self._offset : self._offset + size]
        self._offset += len(data)
        return data

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
