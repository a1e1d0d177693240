"""Names inside an archive: normalised, never leaving it, symlinks resolved inside it."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ArchiveError, UnsafeArchive

#: More symlinks than this on the way to one file is a loop.
MAX_LINKS = 40


def normalize(name: str, where: str) -> str:
    """``./a//b/`` -> ``a/b``; UnsafeArchive for an absolute name, ``..``, NUL or nothing."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise UnsafeArchive(f"{where}: invalid path {name!r}")
    if name.startswith("/"):
        raise UnsafeArchive(f"{where}: path {name!r} leaves the archive (absolute)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{where}: path {name!r} leaves the archive ('..')")
    if not parts:
        raise UnsafeArchive(f"{where}: invalid path {name!r}")
    return "/".join(parts)


def resolve(path: str, link_of: Callable[[str], str | None], where: str) -> tuple[str, bool]:
    """Follow the symlinks on a normalised path, inside the archive.

    ``link_of(p)`` is the target of ``p`` when it is a symlink, else None.
    Returns the path with no symlink left on it, and whether one was
    followed.  UnsafeArchive when a link leads out (absolute target, or
    ``..`` above the root); ArchiveError for a loop.
    """
    pending = path.split("/")
    done: list[str] = []
    followed = 0
    while pending:
        head = pending.pop(0)
        target = link_of("/".join([*done, head]))
        if target is None:
            done.append(head)
            continue
        followed += 1
        if followed > MAX_LINKS:
            raise ArchiveError(f"{where}: too many symlinks on the way to {path!r}")
        via = "/".join([*done, head])
        if not target or target.startswith("/"):
            raise UnsafeArchive(f"{where}: path {path!r} leaves the archive through the symlink {via!r} -> {target!r}")
        joined: list[str] = []
        for part in [*done, *target.split("/")]:
            if part in ("", "."):
                continue
            if part == "..":
                if not joined:
                    raise UnsafeArchive(
                        f"{where}: path {path!r} leaves the archive through the symlink {via!r} -> {target!r}"
                    )
                joined.pop()
            else:
                joined.append(part)
        pending = joined + pending
        done = []
    return "/".join(done), followed > 0
