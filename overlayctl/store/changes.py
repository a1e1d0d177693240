"""What a container changed: A/C/D per path, read from its upper directory.

Like ``docker diff``: a path in the upper that also exists below is changed
(C), one that does not is added (A), a whiteout is a deletion (D), and an
opaque directory hides every lower child it does not replace (each a D).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # "A", "C" or "D"
    path: str  # absolute inside the container, e.g. "/etc/hosts"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path}


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def lower_exists(lowers: list[str], rel: str) -> bool:
    """Whether rel is visible in the union of the lower layers (top first)."""
    parts = rel.split("/")
    for layer in lowers:
        try:
            st = os.lstat(os.path.join(layer, rel))
        except OSError:
            st = None
        if st is not None:
            return not _is_whiteout(st)
        # An opaque ancestor in this layer hides everything below it.
        for i in range(1, len(parts)):
            if _is_opaque(os.path.join(layer, *parts[:i])):
                return False
    return False


def lower_children(lowers: list[str], rel: str) -> set[str]:
    """Names visible below rel in the union of the lowers."""
    names: set[str] = set()
    for layer in lowers:
        try:
            entries = os.listdir(os.path.join(layer, rel))
        except OSError:
            continue
        names.update(entries)
        if _is_opaque(os.path.join(layer, rel)):
            break
    return {n for n in names if lower_exists(lowers, f"{rel}/{n}" if rel else n)}


def upper_changes(upper: str, lowers: list[str]) -> list[Change]:
    """Changes recorded in upper relative to lowers (top first), sorted by path."""
    changes: list[Change] = []

    def walk(rel: str) -> bool:
        """Record the changes below rel; whether there were any."""
        directory = os.path.join(upper, rel) if rel else upper
        names = sorted(os.listdir(directory))
        before = len(changes)
        if rel and _is_opaque(directory):
            for hidden in sorted(lower_children(lowers, rel) - set(names)):
                changes.append(Change("D", f"/{rel}/{hidden}"))
        for name in names:
            child = f"{rel}/{name}" if rel else name
            st = os.lstat(os.path.join(upper, child))
            if _is_whiteout(st):
                if lower_exists(lowers, child):
                    changes.append(Change("D", "/" + child))
                continue
            if not lower_exists(lowers, child):
                changes.append(Change("A", "/" + child))
                if stat.S_ISDIR(st.st_mode):
                    walk(child)
                continue
            if not stat.S_ISDIR(st.st_mode):
                changes.append(Change("C", "/" + child))
                continue
            # A lower directory copied up: changed if anything below it
            # changed or its owner or mode did (its mtime alone is no
            # change, as docker diff has it).
            here = len(changes)
            if walk(child) or _is_opaque(os.path.join(upper, child)) or _metadata_differs(st, lowers, child):
                changes.insert(here, Change("C", "/" + child))
        return len(changes) > before

    walk("")
    return sorted(changes, key=lambda c: c.path)


def _metadata_differs(st: os.stat_result, lowers: list[str], rel: str) -> bool:
    for layer in lowers:
        try:
            below = os.lstat(os.path.join(layer, rel))
        except OSError:
            continue
        return (st.st_mode, st.st_uid, st.st_gid) != (below.st_mode, below.st_uid, below.st_gid)
    return True
