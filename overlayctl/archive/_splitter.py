"""Recording a layer's tar-split while its tar is extracted, in the same pass.

The ``Splitter`` sees every uncompressed byte of the stream, in order, as the
``HashingReader`` that computes the diff_id reads it (``feed``), and is told
where the content of each regular file written to ``diff/`` lies
(``add_file``, just before that content is copied). Every other byte is raw:
headers, PAX and GNU long-name blocks, padding, the content of entries the
extractor does not write as files (whiteout and opaque markers with data),
the end-of-archive blocks and any zero blocks after them. The format of the
file is in ``tarsplit``.

``tarfile`` reads ahead, so a fed byte is kept until it is known to be raw:
raw up to ``settle(offset)`` (no file content starts before the next header,
which is at ``offset``) or up to the start of the next file's content. File
content is dropped as it is fed. Raw bytes are written out when the next
file's content starts or once ``_FLUSH`` bytes are kept, so what is kept is
at most that plus a header or two and tarfile's read-ahead (10 KiB).

Not every tar gets a tar-split: the recording is given up (the layer then
exports its canonical tar) when a file already referenced is replaced or
removed by a later entry of the same tar (its bytes are no longer in
``diff/``), or when more than ``MAX_PENDING`` bytes would have to be kept.
Sparse files never reach this point: the extractor refuses them.
"""

from __future__ import annotations

import contextlib
import os
from typing import BinaryIO

from overlayctl.archive.tarsplit import TarSplitWriter

Parts = tuple[str, ...]

MAX_PENDING = 32 << 20
_FLUSH = 1 << 20


class Splitter:
    """Writes the tar-split of the stream being extracted to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.skipped = ""  # why no tar-split is kept, once given up
        self._file: BinaryIO | None = open(path, "xb")  # noqa: SIM115 (closed in finish/discard)
        self._writer = TarSplitWriter(self._file)
        self._pending = bytearray()  # fed bytes not yet classified, from offset _done
        self._done = 0  # stream offset up to which bytes are written or skipped
        self._frontier = 0  # bytes before it that are not file content are raw
        self._hole_end = -1  # end of the file content being skipped; -1: none
        self._refs: set[Parts] = set()

    # -- the stream ----------------------------------------------------------
    # While a file's content is being dropped, nothing is pending. Raw bytes
    # go out in one piece per file (fewer calls: this runs once per entry).

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the uncompressed stream (the reader calls this)."""
        if self.skipped:
            return
        if self._hole_end >= 0:
            n = min(self._hole_end - self._done, len(chunk))  # file content: dropped as it comes
            self._skip(n)
            if n:
                chunk = memoryview(chunk)[n:]
        if chunk:
            self._pending += chunk
            if len(self._pending) > _FLUSH:
                self._advance()
                if len(self._pending) > MAX_PENDING:
                    self.give_up(f"more than {MAX_PENDING} bytes of tar headers before one entry")

    def settle(self, offset: int) -> None:
        """No file content starts before ``offset``: what comes before it is raw."""
        self._frontier = max(self._frontier, offset)

    def add_file(self, offset: int, size: int, parts: Parts) -> None:
        """The ``size`` bytes at ``offset`` become the content of the file ``parts`` in diff/."""
        if self.skipped or size == 0:
            return  # an empty file is all header: nothing to leave out
        self.settle(offset)
        self._advance()
        if self._done != offset or self._hole_end >= 0:
            self.give_up(f"file content at offset {offset} out of order")
            return
        self._writer.file(os.fsencode("/".join(parts)), size)
        self._refs.add(parts)
        self._hole_end = offset + size
        taken = min(size, len(self._pending))
        if taken:
            del self._pending[:taken]
            self._skip(taken)

    def removed(self, parts: Parts, is_dir: bool) -> None:
        """The extractor is about to remove ``parts`` (a later entry replaces it)."""
        if self.skipped:
            return
        gone = any(ref[: len(parts)] == parts for ref in self._refs) if is_dir else parts in self._refs
        if gone:
            self.give_up(f"a later entry replaces {'/'.join(parts)!r}, whose content it refers to")

    def _skip(self, n: int) -> None:
        self._done += n
        if self._done == self._hole_end:
            self._hole_end = -1

    def _advance(self) -> None:
        """Write out the pending bytes that are known to be raw."""
        pending = self._pending
        n = min(self._frontier - self._done, len(pending))
        if n <= 0:
            return
        if n == len(pending):
            self._writer.raw(pending)
            pending.clear()
        else:
            self._writer.raw(pending[:n])
            del pending[:n]
        self._done += n

    # -- the end -------------------------------------------------------------

    def give_up(self, why: str) -> None:
        """Stop recording: this layer gets no tar-split."""
        if not self.skipped:
            self.skipped = why
            self._pending.clear()
            self._refs.clear()

    def finish(self, total: int, digest: bytes) -> bool:
        """After the whole stream was read: write the end record; whether a tar-split was kept."""
        self.settle(total)
        if not self.skipped:
            self._advance()
        if not self.skipped and (self._done != total or self._pending or self._hole_end >= 0):
            self.give_up(f"recorded {self._done} of {total} bytes")
        if self.skipped:
            self.discard()
            return False
        assert self._file is not None
        self._writer.end(digest)
        if self._writer.total != total:
            self.discard()
            raise AssertionError(f"a tar-split of {self._writer.total} bytes for a tar of {total}")
        self._file.flush()
        os.fsync(self._file.fileno())  # published with the layer: whole, or absent
        self._file.close()
        self._file = None
        return True

    def discard(self) -> None:
        """Close and remove the file (after an error, or when recording was given up)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
