"""The security profile of a container, as plain data (pure, no syscalls).

The default is Docker's: 14 capabilities, masked and read-only /proc and /sys
paths, and a device cgroup that lets through only the usual character
devices.  The flags of ``run`` (``--cap-add``, ``--cap-drop``,
``--privileged``, ``--device``) change it the way Docker's do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InvalidArgument

#: Every capability Linux 6.x knows, in bit order.
ALL_CAPS = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)

#: Docker's default set.
DEFAULT_CAPS = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
)

MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


@dataclass(frozen=True, slots=True)
class Device:
    """A host device node given to the container (``--device``)."""

    host: str
    path: str
    access: str = "rwm"

    @classmethod
    def parse(cls, text: str) -> Device:
        """HOST[:CONTAINER][:rwm], as Docker's --device."""
        parts = text.split(":")
        if len(parts) == 1:
            parts += [parts[0], "rwm"]
        elif len(parts) == 2:
            parts = [parts[0], parts[0], parts[1]] if _is_access(parts[1]) else [*parts, "rwm"]
        host, path, access = parts if len(parts) == 3 else ("", "", "")
        if not (os.path.isabs(host) and os.path.isabs(path) and _is_access(access)):
            raise InvalidArgument(f"invalid --device {text!r}", hint="use HOST[:CONTAINER][:rwm] with absolute paths")
        return cls(host, os.path.normpath(path), access)

    def to_json(self) -> str:
        return f"{self.host}:{self.path}:{self.access}"


def _is_access(text: str) -> bool:
    return bool(text) and set(text) <= set("rwm") and len(set(text)) == len(text)


#: Character devices the device cgroup lets through by default: (major, minor), minor None = all.
DEFAULT_ALLOWED_DEVICES = (
    (1, 3),  # null
    (1, 5),  # zero
    (1, 7),  # full
    (1, 8),  # random
    (1, 9),  # urandom
    (5, 0),  # tty
    (5, 1),  # console
    (5, 2),  # ptmx
    (136, None),  # pts
)


def cap_name(text: str) -> str:
    """A capability as Docker accepts it (sys_admin, CAP_SYS_ADMIN, ALL) in our spelling."""
    name = text.strip().upper()
    name = name.removeprefix("CAP_")
    if name != "ALL" and name not in ALL_CAPS:
        raise InvalidArgument(f"unknown capability {text!r}", hint="use a name such as NET_ADMIN, or ALL")
    return name


def capabilities(add: Iterable[str] = (), drop: Iterable[str] = (), *, privileged: bool = False) -> list[str]:
    """The container's capability set (``CAP_`` names), as Docker computes it.

    Added ones go in first; then dropped ones go out, except that a
    capability both added and dropped by name stays (Docker's rule).
    """
    added = [cap_name(c) for c in add]
    dropped = [cap_name(c) for c in drop]
    if privileged:
        return [f"CAP_{c}" for c in ALL_CAPS]
    base = list(ALL_CAPS) if "ALL" in added else list(DEFAULT_CAPS)
    base += [c for c in added if c != "ALL" and c not in base]
    if "ALL" in dropped:
        kept = [c for c in base if c in added]
    else:
        kept = [c for c in base if c not in dropped or c in added]
    return [f"CAP_{c}" for c in ALL_CAPS if c in kept]


def parse_security_opts(options: Iterable[str]) -> tuple[str | None, bool]:
    """``--security-opt`` values: (seccomp profile or "unconfined" or None, no-new-privileges)."""
    seccomp, no_new_privileges = None, False
    for option in options:
        key, sep, value = option.partition("=")
        if key == "no-new-privileges" and (not sep or value in ("true", "false")):
            no_new_privileges = value != "false"
        elif key == "seccomp" and value:
            seccomp = value if value == "unconfined" else os.path.abspath(value)
        else:
            raise InvalidArgument(
                f"invalid --security-opt {option!r}", hint="use seccomp=PATH, seccomp=unconfined or no-new-privileges"
            )
    return seccomp, no_new_privileges
