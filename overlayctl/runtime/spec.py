"""RunSpec: how a container's process runs, as plain data (pure, no syscalls).

Built from the image's config and the flags of ``run`` (as Docker merges
them): Entrypoint + Cmd, Env, WorkingDir and User from the image, each
overridden by the command line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidArgument, NotFound
from .profile import Device, capabilities, parse_security_opts

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORKS = ("none", "host", "bridge")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Volume:
    """A bind mount: a host path at a path inside the container."""

    source: str
    target: str
    readonly: bool = False

    def to_json(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.readonly else "")

    @classmethod
    def parse(cls, text: str) -> Volume:
        parts = text.split(":")
        if (
            len(parts) not in (2, 3)
            or not parts[0]
            or not parts[1]
            or (len(parts) == 3 and parts[2] not in ("ro", "rw"))
        ):
            raise InvalidArgument(f"invalid --volume {text!r}", hint="use HOST:CONTAINER[:ro]")
        source, target = parts[0], parts[1]
        if not os.path.isabs(target) or ".." in target.split("/"):
            raise InvalidArgument(f"invalid --volume {text!r}: the container path must be absolute, without '..'")
        return cls(os.path.abspath(source), os.path.normpath(target), len(parts) == 3 and parts[2] == "ro")


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything the container's process needs besides its root filesystem."""

    argv: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    workdir: str = "/"
    user: str = ""
    volumes: tuple[Volume, ...] = ()
    network: str = "none"
    limits: dict[str, Any] = field(default_factory=dict)
    interactive: bool = False
    auto_remove: bool = False
    tty: bool = False
    init: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    seccomp: str | None = None  # None: the default profile; "unconfined"; or a profile's path
    no_new_privileges: bool = False
    devices: tuple[Device, ...] = ()
    read_only: bool = False
    tmpfs: tuple[str, ...] = ()
    userns: str = ""  # "" (the host's) or "auto"
    runtime: str = ""  # "" for the store's default

    def capabilities(self) -> list[str]:
        return capabilities(self.cap_add, self.cap_drop, privileged=self.privileged)

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "env": list(self.env),
            "workdir": self.workdir,
            "user": self.user,
            "volumes": [v.to_json() for v in self.volumes],
            "network": self.network,
            "limits": dict(self.limits),
            "interactive": self.interactive,
            "auto_remove": self.auto_remove,
            "tty": self.tty,
            "init": self.init,
            "cap_add": list(self.cap_add),
            "cap_drop": list(self.cap_drop),
            "privileged": self.privileged,
            "seccomp": self.seccomp,
            "no_new_privileges": self.no_new_privileges,
            "devices": [d.to_json() for d in self.devices],
            "read_only": self.read_only,
            "tmpfs": list(self.tmpfs),
            "userns": self.userns,
            "runtime": self.runtime,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        return cls(
            argv=tuple(data.get("argv", ())),
            env=tuple(data.get("env", ())),
            workdir=data.get("workdir") or "/",
            user=data.get("user", ""),
            volumes=tuple(Volume.parse(v) for v in data.get("volumes", ())),
            network=data.get("network", "none"),
            limits=dict(data.get("limits", {})),
            interactive=bool(data.get("interactive", False)),
            auto_remove=bool(data.get("auto_remove", False)),
            tty=bool(data.get("tty", False)),
            init=bool(data.get("init", False)),
            cap_add=tuple(data.get("cap_add", ())),
            cap_drop=tuple(data.get("cap_drop", ())),
            privileged=bool(data.get("privileged", False)),
            seccomp=data.get("seccomp"),
            no_new_privileges=bool(data.get("no_new_privileges", False)),
            devices=tuple(Device.parse(d) for d in data.get("devices", ())),
            read_only=bool(data.get("read_only", False)),
            tmpfs=tuple(data.get("tmpfs", ())),
            userns=data.get("userns", ""),
            runtime=data.get("runtime", ""),
        )

    def with_changes(self, **changes: Any) -> RunSpec:
        return replace(self, **changes)

    def check_sources(self) -> None:
        """Refuse a volume, device or seccomp profile missing on the host (before anything is made or started)."""
        for volume in self.volumes:
            if not os.path.exists(volume.source):
                raise NotFound(f"volume source {volume.source} does not exist")
        for device in self.devices:
            if not os.path.exists(device.host):
                raise NotFound(f"device {device.host} does not exist")
        if self.seccomp not in (None, "unconfined") and not os.path.isfile(self.seccomp):
            raise NotFound(f"seccomp profile {self.seccomp} does not exist")


def _merge_pairs(base: Iterable[str], overrides: Iterable[str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for item in (*base, *overrides):
        key, sep, value = item.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key):
            raise InvalidArgument(f"invalid environment variable {item!r}", hint="use KEY=VALUE")
        merged[key] = value
    return merged


def merge_env(base: Iterable[str], overrides: Iterable[str]) -> tuple[str, ...]:
    """KEY=VALUE lists merged key by key, later wins; a default PATH if none."""
    merged = _merge_pairs(base, overrides)
    merged.setdefault("PATH", DEFAULT_PATH)
    return tuple(f"{k}={v}" for k, v in merged.items())


def parse_command(text: str | None) -> list[str] | None:
    """A Cmd/Entrypoint from the command line: a JSON array or shell words."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("["):
        import json

        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"invalid JSON command {text!r}: {exc.msg}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"invalid command {text!r}: a JSON array of strings is needed")
        return value
    try:
        import shlex

        return shlex.split(text)
    except ValueError as exc:
        raise InvalidArgument(f"invalid command {text!r}: {exc}") from None


def runtime_changes(
    *,
    cmd: str | None = None,
    entrypoint: str | None = None,
    env: Sequence[str] = (),
    workdir: str | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An image's runtime config with the changes of --cmd/--entrypoint/--env/--workdir."""
    config = dict(base or {})
    if cmd is not None:
        config["Cmd"] = parse_command(cmd)
    if entrypoint is not None:
        config["Entrypoint"] = parse_command(entrypoint)
    if env:
        config["Env"] = [f"{k}={v}" for k, v in _merge_pairs(config.get("Env") or [], env).items()]
    if workdir is not None:
        if not os.path.isabs(workdir):
            raise InvalidArgument(f"--workdir must be an absolute path: {workdir!r}")
        config["WorkingDir"] = workdir
    return config


def build_spec(
    image_config: dict[str, Any],
    *,
    command: Sequence[str] = (),
    env: Sequence[str] = (),
    workdir: str | None = None,
    user: str | None = None,
    volumes: Sequence[str] = (),
    network: str = "none",
    limits: dict[str, Any] | None = None,
    interactive: bool = False,
    auto_remove: bool = False,
    tty: bool = False,
    init: bool = False,
    cap_add: Sequence[str] = (),
    cap_drop: Sequence[str] = (),
    privileged: bool = False,
    security_opt: Sequence[str] = (),
    devices: Sequence[str] = (),
    read_only: bool = False,
    tmpfs: Sequence[str] = (),
    userns: str = "",
    runtime: str = "",
) -> RunSpec:
    """The RunSpec of ``run``: image defaults, overridden by the flags."""
    entrypoint = list(image_config.get("Entrypoint") or [])
    argv = entrypoint + (list(command) or list(image_config.get("Cmd") or []))
    if not argv:
        raise InvalidArgument("no command given and the image has no Cmd or Entrypoint", hint="add -- CMD")
    if network not in NETWORKS:
        raise InvalidArgument(f"invalid --network {network!r}", hint="use none, host or bridge")
    workdir = workdir or image_config.get("WorkingDir") or "/"
    if not os.path.isabs(workdir):
        raise InvalidArgument(f"--workdir must be an absolute path: {workdir!r}")
    if user:
        parse_user_text(user)
    capabilities(cap_add, cap_drop)  # refuses unknown names now, not at start
    seccomp, no_new_privileges = parse_security_opts(security_opt)
    for path in tmpfs:
        if not os.path.isabs(path) or ".." in path.split("/"):
            raise InvalidArgument(f"invalid --tmpfs {path!r}: the container path must be absolute, without '..'")
    if userns not in ("", "host", "auto"):
        raise InvalidArgument(f"invalid --userns {userns!r}", hint="use auto or host")
    return RunSpec(
        argv=tuple(argv),
        env=merge_env(image_config.get("Env") or [], env),
        workdir=workdir,
        user=user or image_config.get("User") or "",
        volumes=tuple(Volume.parse(v) for v in volumes),
        network=network,
        limits=dict(limits or {}),
        interactive=interactive,
        auto_remove=auto_remove,
        tty=tty,
        init=init,
        cap_add=tuple(cap_add),
        cap_drop=tuple(cap_drop),
        privileged=privileged,
        seccomp=seccomp,
        no_new_privileges=no_new_privileges,
        devices=tuple(Device.parse(d) for d in devices),
        read_only=read_only,
        tmpfs=tuple(os.path.normpath(p) for p in tmpfs),
        userns="" if userns == "host" else userns,
        runtime=runtime,
    )


def parse_user_text(text: str) -> tuple[str, str | None]:
    """Split USER[:GROUP]; each a name or a number."""
    user, _, group = text.partition(":")
    if (
        not user
        or not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", user)
        or (group and not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", group))
    ):
        raise InvalidArgument(f"invalid --user {text!r}", hint="use UID[:GID] or NAME[:GROUP]")
    return user, group or None
