"""The container's users and commands, looked up in its own files (under its root)."""

from __future__ import annotations

import os

from ..errors import CommandNotFound, InvalidArgument, NotFound
from .ocispec import ProcessUser
from .spec import DEFAULT_PATH, parse_user_text


def inside(root: str, path: str) -> str:
    """The host path of a container path, refusing symlinks that lead out of root."""
    target = os.path.join(root, path.lstrip("/"))
    real = os.path.realpath(target)
    if real != root and not real.startswith(root + "/"):
        raise InvalidArgument(f"{path} leads outside the container (through a symlink)")
    return real


def _table(root: str, name: str) -> list[list[str]]:
    try:
        with open(inside(root, name)) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except (OSError, InvalidArgument):
        return []


def resolve_user(root: str, text: str) -> ProcessUser:
    """uid, gid, supplementary groups and home of USER[:GROUP], from the container's passwd and group."""
    passwd = _table(root, "/etc/passwd")
    if not text:
        entry = next((e for e in passwd if e[2:3] == ["0"]), None)
        return ProcessUser(0, 0, (), entry[5] if entry and len(entry) > 5 and entry[5] else "/root")
    user, group = parse_user_text(text)
    if user.isdigit():
        uid = int(user)
        entry = next((e for e in passwd if e[2:3] == [user]), None)
    else:
        entry = next((e for e in passwd if e[0] == user), None)
        if entry is None:
            raise NotFound(f"no user {user!r} in the container's /etc/passwd")
        uid = int(entry[2])
    gid = int(entry[3]) if entry and len(entry) > 3 and entry[3].isdigit() else uid
    if group is not None:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((e for e in _table(root, "/etc/group") if e[0] == group), None)
            if found is None:
                raise NotFound(f"no group {group!r} in the container's /etc/group")
            gid = int(found[2])
    home = entry[5] if entry and len(entry) > 5 and entry[5] else "/"
    return ProcessUser(uid, gid, (gid,), home)


def find_command(name: str, env: list[str]) -> str:
    """The path of the command as execvp would find it; run with the container's root as /."""
    if "/" in name:
        if os.path.isfile(name):
            return name
        raise CommandNotFound(f"command not found in the container: {name}")
    values = dict(item.partition("=")[::2] for item in env)
    searched = values.get("PATH", DEFAULT_PATH)
    for directory in searched.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CommandNotFound(f"command not found in the container: {name} (searched PATH={searched})")
