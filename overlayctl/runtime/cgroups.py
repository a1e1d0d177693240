"""Resource limits of a container (memory, pids, cpus) in cgroup v1 or v2.

The values are spelled as Docker spells them (``--memory 64m``, ``--pids-limit 20``,
``--cpus 1.5``).  The parsing functions at the top are pure.  The OCI runtime
makes, fills and removes a container's cgroup (``overlayctl/<container-id>``
under each hierarchy, from the config's cgroupsPath); ``Cgroup`` only reads
it: where it is, whether the OOM killer struck, the memory peak.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

from ..errors import InvalidArgument

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "overlayctl"
MIN_MEMORY = 6 * 1024 * 1024  # Docker's floor for --memory
CPU_PERIOD_US = 100_000  # Docker's CFS period
# The kernel refuses a CFS quota below 1 ms (Documentation/scheduler/sched-bwc.rst).
MIN_CPU_QUOTA_US = 1000
V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
# Docker also takes "64mib" and "64 m"; all units are binary.
_MEMORY_RE = re.compile(r"(\d+(?:\.\d+)?) ?(?:([kmgtp])i?)?b?", re.IGNORECASE)


# --- pure parsing ------------------------------------------------------------


def parse_memory(text: str | int) -> int:
    """Bytes from Docker's ``--memory`` forms: 1048576, 512k, 64m, 1.5g, 64MB."""
    match = _MEMORY_RE.fullmatch(str(text).strip())
    if match is None:
        raise InvalidArgument(f"--memory {text!r} is not a size (examples: 64m, 1.5g, 1048576)")
    from decimal import Decimal  # exact "1.5g", and only on this path

    size = int(Decimal(match[1]) * _UNITS[(match[2] or "").lower()])
    if size < MIN_MEMORY:
        raise InvalidArgument("--memory must be at least 6m")
    return size


def _number(value: object, kind: type, flag: str):
    if isinstance(value, bool) or (kind is int and isinstance(value, float)):
        value = str(value)  # True is an int to Python and 1.5 would truncate; neither is ours
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(f"{flag} {value!r} is not a number") from None


def parse_pids(value: int | str) -> int:
    """A positive ``--pids-limit``."""
    pids = _number(value, int, "--pids-limit")
    if pids < 1:
        raise InvalidArgument(f"--pids-limit must be a positive integer, not {pids}")
    return pids


def parse_cpus(value: str | float) -> float:
    """``--cpus``: from 0.01 (a quota of 1 ms, the kernel's least) up to the CPU count."""
    cpus, top = _number(value, float, "--cpus"), os.cpu_count() or 1
    if not MIN_CPU_QUOTA_US / CPU_PERIOD_US <= cpus <= top:  # also refuses nan
        raise InvalidArgument(f"--cpus must be between 0.01 and {top} (the CPUs of this machine)")
    return cpus


def parse_v1_mounts(text: str) -> dict[str, str]:
    """Map each v1 mount option (controller names among them) to its mount point.

    Works for one controller per mount (``/sys/fs/cgroup/cpu``) and for
    co-mounted ones (``/sys/fs/cgroup/cpu,cpuacct``).
    """
    found: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup":
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
            for option in fields[3].split(","):
                found.setdefault(option, point)
    return found


def read_counter(text: str, key: str) -> int:
    """The value of a ``key N`` line (memory.events, memory.oom_control); 0 if absent."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


@dataclass(frozen=True, slots=True)
class Limits:
    """What a container may use; None means unlimited."""

    memory: int | None = None  # bytes; swap cannot extend it
    pids: int | None = None
    cpus: float | None = None

    @classmethod
    def parse(cls, memory: str | None = None, pids: int | str | None = None, cpus: str | float | None = None) -> Limits:
        """Limits from command-line text; raises InvalidArgument naming the flag."""
        return cls(
            memory=None if memory is None else parse_memory(memory),
            pids=None if pids is None else parse_pids(pids),
            cpus=None if cpus is None else parse_cpus(cpus),
        )

    def to_json(self) -> dict:
        return {"memory": self.memory, "pids": self.pids, "cpus": self.cpus}

    @classmethod
    def from_json(cls, data: dict) -> Limits:
        return cls(memory=data.get("memory"), pids=data.get("pids"), cpus=data.get("cpus"))


# --- the cgroup filesystem ---------------------------------------------------


@functools.cache
def version() -> int:
    """2 on a pure cgroup v2 host, else 1.

    A hybrid host (v1 controllers plus an empty v2 tree at /sys/fs/cgroup/unified)
    counts as 1: a controller bound to v1 cannot be enabled in v2.
    """
    return 2 if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers") else 1


@functools.cache
def _v1_mounts() -> dict[str, str]:
    with open("/proc/self/mounts") as f:
        return parse_v1_mounts(f.read())


def _paths(container_id: str) -> dict[str, str]:
    if "/" in container_id or container_id in ("", ".", ".."):
        raise ValueError(f"bad container id for a cgroup name: {container_id!r}")
    if version() == 2:
        return {"unified": os.path.join(CGROUP_ROOT, PARENT, container_id)}
    mounts = _v1_mounts()
    return {c: os.path.join(mounts[c], PARENT, container_id) for c in V1_CONTROLLERS if c in mounts}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@dataclass(frozen=True, slots=True)
class Cgroup:
    """A container's cgroup: ``paths`` maps each v1 controller (or ``unified``) to its dir."""

    version: int
    paths: dict[str, str]
    limits: Limits = Limits()

    @classmethod
    def of(cls, container_id: str, limits: Limits = Limits()) -> Cgroup:
        """The cgroup the OCI runtime made for a container (its cgroupsPath is /overlayctl/ID)."""
        return cls(version(), _paths(container_id), limits)

    @property
    def path(self) -> str:
        """The main dir: v2's only one, v1's memory controller dir."""
        return self.paths["unified" if self.version == 2 else "memory"]

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this cgroup."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            return read_counter(_read(f"{self.path}/{name}"), "oom_kill") > 0
        except FileNotFoundError:
            return False

    def memory_peak(self) -> int | None:
        """The most memory the cgroup used, in bytes; None if the kernel does not say."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int(_read(f"{self.path}/{name}"))
        except (FileNotFoundError, ValueError):
            return None

    def to_json(self) -> dict:
        return {"version": self.version, "paths": dict(self.paths), "limits": self.limits.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> Cgroup:
        return cls(int(data["version"]), dict(data["paths"]), Limits.from_json(data.get("limits") or {}))
