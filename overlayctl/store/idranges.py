"""Host ID ranges for user-namespaced containers: overlayctl's subordinate IDs and who holds which range.

Two pieces of state:

``/etc/subuid`` and ``/etc/subgid`` (subuid(5), lines ``name:start:count``)
    reserve host IDs for a name.  overlayctl reserves its pool under the name
    ``overlayctl`` (as podman does under ``containers``), so that useradd,
    usermod and other tools that read these files hand none of those IDs to
    anyone else.  No passwd user is made: these files only need the name.
    newuidmap(1) would check that the name is the caller's, but overlayctl
    runs as root and writes ``/proc/PID/uid_map`` itself, which the kernel
    allows to a writer with CAP_SETUID in the parent namespace.  The pool is
    the IDs subordinate to overlayctl in *both* files, so that one range
    serves as uids and gids.

``<root>/idranges.json``::

    {"ranges": {"<container-id>": {"start": 196608, "size": 65536}, ...}}

    the range each container holds inside the pool.  A missing file means
    none.  Changes happen under the store lock (the caller's: these
    functions check that it is held) and are written with write_atomic, so
    two containers of a store never share a range.  Stores under other roots
    do not see each other's file: give each its own pool (``user=``).

Nothing here touches the kernel; ``kernel.idmap`` makes the user namespace
and the idmapped mounts from a range.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import StoreError
from ..plan.idmap import DEFAULT_RANGE_SIZE, MAX_ID, IdRange
from .atomic import pid_alive, write_atomic
from .layout import StoreLayout
from .lock import StoreLock
from .records import dump_json, load_json

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
#: The name overlayctl's subordinate IDs are reserved under.
SUBID_USER = "overlayctl"
#: 1024 containers of 65536 IDs each.
SUBID_COUNT = DEFAULT_RANGE_SIZE * 1024
#: Where a new reservation may start: above the ``<user>:100000:65536`` line
#: that guides tell people to write by hand (unchecked for overlaps), like
#: shadow's SUB_UID_MIN (login.defs) otherwise.
SUBID_MIN = 165536
#: New reservations start on a multiple of this, so that host IDs read well
#: (container ID N of the k-th range is k*65536 + N).
SUBID_ALIGN = 65536
#: shadow's own lock protocol (lib/commonio.c): the lock file <path>.lock
#: holds the holder's pid; 15 tries a second apart.
_LOCK_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class SubIdEntry:
    """One line of /etc/subuid or /etc/subgid: owner (a name or a uid), start, count."""

    owner: str
    start: int
    count: int

    @property
    def range(self) -> IdRange:
        return IdRange(self.start, self.count)

    def format(self) -> str:
        return f"{self.owner}:{self.start}:{self.count}\n"


# --- /etc/subuid and /etc/subgid -------------------------------------------------


def parse_subids(text: str) -> list[SubIdEntry]:
    """The entries of a subuid/subgid file; lines that are not ``name:start:count`` are skipped."""
    entries = []
    for line in text.splitlines():
        owner, sep1, rest = line.strip().partition(":")
        start, sep2, count = rest.partition(":")
        if not (owner and sep1 and sep2 and start.isdigit() and count.isdigit()):
            continue
        try:
            reserved = IdRange(int(start), int(count))
        except ValueError:
            continue  # an empty or out-of-range reservation reserves nothing
        entries.append(SubIdEntry(owner, reserved.start, reserved.size))
    return entries


def read_subids(path: str) -> list[SubIdEntry]:
    """The entries of the file at path; none when it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return parse_subids(f.read())
    except FileNotFoundError:
        return []


def subid_pool(user: str = SUBID_USER, *, subuid: str = SUBUID, subgid: str = SUBGID) -> list[IdRange]:
    """The IDs subordinate to user in both files (uids and gids), as sorted disjoint ranges."""
    return _pool(user, read_subids(subuid), read_subids(subgid))


def _pool(user: str, uid_entries: list[SubIdEntry], gid_entries: list[SubIdEntry]) -> list[IdRange]:
    uids = _merge(e.range for e in uid_entries if e.owner == user)
    gids = _merge(e.range for e in gid_entries if e.owner == user)
    pool = []
    for u in uids:
        for g in gids:
            start, end = max(u.start, g.start), min(u.end, g.end)
            if start < end:
                pool.append(IdRange(start, end - start))
    return pool


def _merge(ranges: Iterable[IdRange]) -> list[IdRange]:
    """Sorted, disjoint ranges covering the same IDs."""
    merged: list[IdRange] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if merged and r.start <= merged[-1].end:
            last = merged.pop()
            r = IdRange(last.start, max(last.end, r.end) - last.start)
        merged.append(r)
    return merged


def free_start(taken: Iterable[IdRange], count: int, *, minimum: int = SUBID_MIN, align: int = SUBID_ALIGN) -> int:
    """The lowest multiple of align at or above minimum where count IDs overlap nothing taken.

    Raises StoreError when no such place is left below 2**32 - 1.
    """
    start = -(-minimum // align) * align
    for r in _merge(taken):
        if start + count <= r.start:
            break
        if r.end > start:
            start = -(-r.end // align) * align
    if start + count - 1 > MAX_ID:
        raise StoreError(
            f"no room for {count} more subordinate IDs in /etc/subuid and /etc/subgid",
            hint=f"add a line '{SUBID_USER}:START:COUNT' to both files by hand",
        )
    return start


def ensure_subids(
    user: str = SUBID_USER, count: int = SUBID_COUNT, *, subuid: str = SUBUID, subgid: str = SUBGID
) -> list[IdRange]:
    """user's pool (see subid_pool), reserving one first when it is empty; never empty.

    The reservation is one line ``user:start:count`` appended to both files,
    at the first place free in both (``free_start``); the files' other bytes
    stay as they were.  Takes shadow's lock on each file (``<path>.lock``),
    so useradd and usermod never interleave with it.  A missing file is made.
    Raises StoreError when a file stays locked or no room is left.
    """
    pool = subid_pool(user, subuid=subuid, subgid=subgid)
    if pool:
        return pool
    with _shadow_lock(subuid), _shadow_lock(subgid):
        uid_entries, gid_entries = read_subids(subuid), read_subids(subgid)
        pool = _pool(user, uid_entries, gid_entries)
        if pool:
            return pool  # another process reserved it meanwhile
        entry = SubIdEntry(user, free_start((e.range for e in uid_entries + gid_entries), count), count)
        for path in (subuid, subgid):
            _rewrite(path, lambda text: text + ("" if not text or text.endswith("\n") else "\n") + entry.format())
    return [entry.range]


def remove_subids(
    user: str = SUBID_USER, *, only: IdRange | None = None, subuid: str = SUBUID, subgid: str = SUBGID
) -> bool:
    """Drop user's lines from both files (with only, just the line of that range); False when none was there.

    Every other byte stays.  Containers that still hold a range keep their
    IDs, which other tools may then hand out: remove them first.
    """
    removed = False
    with _shadow_lock(subuid), _shadow_lock(subgid):
        for path in (subuid, subgid):

            def drop(text: str) -> str:
                nonlocal removed
                kept = []
                for line in text.splitlines(keepends=True):
                    entries = parse_subids(line)
                    if entries and entries[0].owner == user and only in (None, entries[0].range):
                        removed = True
                        continue
                    kept.append(line)
                return "".join(kept)

            if os.path.exists(path):
                _rewrite(path, drop)
    return removed


def _rewrite(path: str, change) -> None:
    """Replace the file's text with change(text), atomically, keeping its mode and owner."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        st = os.stat(path)
    except FileNotFoundError:
        text, st = "", None
    new = change(text)
    if new == text and st is not None:
        return
    write_atomic(path, new.encode("utf-8", "surrogateescape"))
    if st is not None:
        if st.st_mode & 0o7777 != 0o644:
            os.chmod(path, st.st_mode & 0o7777)
        if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            os.chown(path, st.st_uid, st.st_gid)


@contextlib.contextmanager
def _shadow_lock(path: str) -> Iterator[None]:
    """shadow's lock on path (lib/commonio.c do_lock_file): link <path>.<pid> to <path>.lock.

    A lock whose holder is gone is removed, as shadow does.
    """
    lock, mine = f"{path}.lock", f"{path}.{os.getpid()}"
    fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
    try:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                os.link(mine, lock)
                break
            except FileExistsError:
                holder = _lock_holder(lock)
                if holder is not None and not pid_alive(holder):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock)
                    continue
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{path} is locked by process {holder}",
                        hint="wait for the useradd or usermod holding it, or remove a stale " + lock,
                    ) from None
                time.sleep(0.1)
    finally:
        os.unlink(mine)
    try:
        yield
    finally:
        os.unlink(lock)


def _lock_holder(lock: str) -> int | None:
    try:
        with open(lock, "rb") as f:
            return int(f.read(32).strip() or b"0") or None
    except (FileNotFoundError, ValueError):
        return None


# --- ranges handed to containers ----------------------------------------------------


def held(layout: StoreLayout) -> dict[str, IdRange]:
    """The ranges containers hold, {container id: range}.

    Needs no lock: the file is only ever replaced by a rename.
    """
    try:
        data = load_json(layout.idranges_json)
    except FileNotFoundError:
        return {}
    try:
        return {str(cid): IdRange.from_json(r) for cid, r in (data.get("ranges") or {}).items()}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"damaged record {layout.idranges_json}: {exc}", hint="run 'overlayctl check'") from exc


def range_of(layout: StoreLayout, container_id: str) -> IdRange | None:
    """The range the container holds, or None."""
    return held(layout).get(container_id)


def _save(layout: StoreLayout, ranges: dict[str, IdRange]) -> None:
    write_atomic(layout.idranges_json, dump_json({"ranges": {c: r.to_json() for c, r in ranges.items()}}))


def allocate(
    layout: StoreLayout,
    lock: StoreLock,
    container_id: str,
    size: int = DEFAULT_RANGE_SIZE,
    *,
    user: str = SUBID_USER,
    subuid: str = SUBUID,
    subgid: str = SUBGID,
) -> IdRange:
    """Hand the container the lowest free range of size IDs in user's pool.

    The pool is reserved in /etc/subuid and /etc/subgid first when it is
    missing (``ensure_subids``).  The range overlaps no range another
    container holds.  Asking again for the same container returns the range
    it already has, whatever the size.  Raises StoreError when the pool has
    no free range that large.
    """
    lock.require()
    if size < 1:
        raise ValueError(f"an ID range holds at least one ID, not {size}")
    ranges = held(layout)
    if container_id in ranges:
        return ranges[container_id]
    taken = _merge(ranges.values())
    for segment in ensure_subids(user, subuid=subuid, subgid=subgid):
        start = segment.start
        for r in taken:
            if start + size <= r.start:
                break
            start = max(start, r.end)
        if start + size <= segment.end:
            ranges[container_id] = IdRange(start, size)
            _save(layout, ranges)
            return ranges[container_id]
    raise StoreError(
        f"no free range of {size} IDs among the subordinate IDs of {user} ({len(ranges)} held)",
        hint=f"remove stopped containers, or give {user} more IDs in {subuid} and {subgid}",
    )


def release(layout: StoreLayout, lock: StoreLock, container_id: str) -> bool:
    """Give back the container's range.  False when it held none."""
    lock.require()
    ranges = held(layout)
    if ranges.pop(container_id, None) is None:
        return False
    _save(layout, ranges)
    return True
