"""Transactions: one verb's changes to the store, all of them or none, even after SIGKILL.

A verb builds its new objects in ``staging/`` without the lock, then opens
a transaction (which takes the store lock) to publish them.  Before each
visible change the transaction writes its journal, ``<root>/journal.json``,
saying how to finish the verb's work should the process die:

* a verb that makes objects (import, commit, create) is *rolled back*: the
  paths it created are removed and the tags it changed get their old values;
* a verb that removes objects (``rm``) is *rolled forward*: the paths it
  meant to remove are removed and its tag changes applied.

Either way recovery is the same two steps, "remove these paths, set these
tags", so the journal is that list.  Only one transaction runs at a time
(the lock), so there is one journal; the next transaction, or ``check
--repair``, recovers it before doing anything else.

Removed objects are renamed into ``trash/<pid>-<random>/`` under the lock
and deleted after it is released, once nothing below them is a mount point
(the caller, which may ask the kernel, says what is mounted).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

from ..errors import InUse
from .atomic import abandoned, discard, fsync_dir, new_staging, write_atomic
from .layout import StoreLayout
from .lock import StoreLock
from .records import dump_json

ROLLBACK = "rollback"
ROLLFORWARD = "rollforward"


class Transaction:
    """The publishing step of one verb; changes go through its methods.

    Made by ``transaction()``; every store function that changes the disk
    takes one, which is how it knows that its caller holds the lock.
    """

    def __init__(self, layout: StoreLayout, lock: StoreLock, verb: str, on_crash: str) -> None:
        lock.require()
        self.layout = layout
        self.lock = lock
        self.verb = verb
        self.on_crash = on_crash
        self._paths: list[str] = []
        self._tags: dict[str, str | None] = {}
        self._journaled = False
        self.trash_dir: str | None = None

    def _journal(self) -> None:
        entry = {
            "verb": self.verb,
            "on_crash": self.on_crash,
            "pid": os.getpid(),
            "paths": self._paths,
            "tags": self._tags,
        }
        write_atomic(self.layout.journal, dump_json(entry))
        self._journaled = True

    def creating(self, *paths: str) -> None:
        """Journal new paths about to be created: rolling back removes them."""
        assert self.on_crash == ROLLBACK
        assert not any(os.path.lexists(p) for p in paths), "journaling a path that exists"
        self._paths.extend(os.path.relpath(p, self.layout.root) for p in paths)
        self._journal()

    def remove(self, paths: Sequence[str], *, untag: Iterable[str] = ()) -> None:
        """Journal the whole removal, then do it: drop the tags, make the paths disappear.

        One journal entry for the verb's whole plan, written before its first
        change, so that recovery finishes all of it wherever a kill lands.
        """
        from .images import read_tags, write_tags

        assert self.on_crash == ROLLFORWARD
        refs = list(untag)
        tags = read_tags(self.layout) if refs else {}
        self._paths.extend(os.path.relpath(p, self.layout.root) for p in paths)
        self._tags.update(dict.fromkeys(refs))
        self._journal()
        if refs:
            write_tags(self, _applied(tags, dict.fromkeys(refs)))
        for path in paths:
            self.trash(path)

    def trash(self, path: str) -> None:
        """Rename a directory into this transaction's trash; unlink a file or link."""
        if self.trash_dir is None:
            self.trash_dir = new_staging(self.layout.trash)
        move_to_trash(path, self.trash_dir)

    def set_tags(self, tags: dict[str, str], changes: dict[str, str | None]) -> None:
        """Apply changes ({ref: image ID, or None to untag}) to tags and write tags.json.

        Rolled back should the verb die: the journal keeps the old values.
        """
        from .images import write_tags

        assert self.on_crash == ROLLBACK
        for ref in changes:
            self._tags.setdefault(ref, tags.get(ref))
        self._journal()
        write_tags(self, _applied(tags, changes))

    def abort(self) -> None:
        """The verb failed: undo (or finish) what its journal names, as recovery after a kill would."""
        if self._journaled:
            self._journaled = False
            recover(self)

    def close(self) -> None:
        """The verb is done: drop its journal (its commit point)."""
        if self._journaled:
            os.unlink(self.layout.journal)
            fsync_dir(self.layout.root)
            self._journaled = False


def _applied(tags: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    result = dict(tags)
    for ref, value in changes.items():
        if value is None:
            result.pop(ref, None)
        else:
            result[ref] = value
    return result


@contextlib.contextmanager
def transaction(layout: StoreLayout, lock: StoreLock, verb: str, *, on_crash: str = ROLLBACK) -> Iterator[Transaction]:
    """Lock the store, finish any interrupted transaction, and run one of ours.

    On an exception the transaction is recovered at once (rolled back or
    forward), so a failed verb leaves the store as a killed one would after
    recovery.  The caller empties ``txn.trash_dir`` once the lock is released
    (``empty_trash``).
    """
    with lock:
        txn = Transaction(layout, lock, verb, on_crash)
        recover(txn)
        try:
            yield txn
        except BaseException:
            txn.abort()
            raise
        txn.close()


def pending(layout: StoreLayout) -> dict | None:
    """The journal of an interrupted transaction, or None."""
    try:
        with open(layout.journal, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError:
        # A journal is written by rename, so a torn one is never seen; a
        # zero-filled one (power loss) names nothing to undo.
        return {"verb": "?", "paths": [], "tags": {}}


def recover(txn: Transaction) -> dict | None:
    """Finish the interrupted transaction whose journal is on disk; that journal, or None.

    Its paths go to ``txn``'s trash and its tag values are applied.
    """
    layout = txn.layout
    journal = pending(layout)
    if journal is None:
        return None
    for rel in journal.get("paths") or []:
        path = os.path.normpath(os.path.join(layout.root, rel))
        if path.startswith(layout.root + "/"):
            txn.trash(path)
    changes = journal.get("tags") or {}
    if changes:
        from .images import read_tags, write_tags

        write_tags(txn, _applied(read_tags(layout, damaged_ok=True), changes))
    os.unlink(layout.journal)
    fsync_dir(layout.root)
    return journal


def move_to_trash(path: str, trash: str) -> None:
    """Make path disappear in one step: a directory is renamed into trash, a file or link unlinked."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rename(path, f"{trash}/{os.urandom(4).hex()}-{os.path.basename(path)}")
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def empty_trash(trash: str, mounted_below: Callable[[str], list[str]]) -> None:
    """Delete a trash directory, unless something below it is still mounted.

    A mount point below would make the delete walk into a live mount (a
    container's merged dir in a namespace we pinned, say): such an entry is
    refused, and stays for ``check`` to report.
    """
    busy = mounted_below(trash)
    if busy:
        raise InUse(
            f"not deleting {trash}: {busy[0]} is still mounted below it",
            hint="unmount it, then run 'overlayctl check --repair'",
        )
    discard(trash)


def sweep_trash(layout: StoreLayout, mounted_below: Callable[[str], list[str]]) -> list[str]:
    """Empty the trash directories of processes that died (their pid starts the name)."""
    try:
        names = [n for n in os.listdir(layout.trash) if abandoned(n)]
    except FileNotFoundError:
        return []
    done = []
    for name in names:
        with contextlib.suppress(InUse):
            empty_trash(f"{layout.trash}/{name}", mounted_below)
            done.append(f"{layout.trash}/{name}")
    return done
