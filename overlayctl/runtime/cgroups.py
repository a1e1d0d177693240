"""Resource limits of a container (memory, pids, cpus) in cgroup v1 or v2.

The values are spelled as Docker spells them (``--memory 64m``, ``--pids-limit 20``,
``--cpus 1.5``).  The parsing functions at the top are pure; the rest touches
``/sys/fs/cgroup``.  A container's cgroup is ``overlayctl/<container-id>`` under
each hierarchy; the shared ``overlayctl`` parent is left in place.

Lifecycle: ``Cgroup.create(id, limits)`` -> ``add(pid)`` before the workload runs
-> at exit ``oom_killed()`` -> ``kill_all()`` -> ``remove()``.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import InUse, InvalidArgument, KernelError, from_oserror

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "overlayctl"
MIN_MEMORY = 6 * 1024 * 1024  # Docker's floor for --memory
CPU_PERIOD_US = 100_000  # Docker's CFS period
# The kernel refuses a CFS quota below 1 ms (Documentation/scheduler/sched-bwc.rst).
MIN_CPU_QUOTA_US = 1000
V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")
V2_CONTROLLERS = ("memory", "pids", "cpu")

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

    def controllers(self) -> set[str]:
        """The controllers these limits cannot do without."""
        return {name for name, value in (("memory", self.memory), ("pids", self.pids), ("cpu", self.cpus)) if value}


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


def _write(path: str, value: object) -> None:
    # One write(2) per value: a cgroup file parses each write on its own.
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None


@contextmanager
def _kernel_errors(what: str):
    """Turn an OSError into one line, naming the cgroup file.

    A missing cgroup file means the kernel lacks that controller or feature,
    so ENOENT is a KernelError with a hint, not a NotFound.
    """
    try:
        yield
    except OSError as exc:
        hint = "the kernel lacks this cgroup feature" if exc.errno == errno.ENOENT else None
        raise from_oserror(exc, call="cgroupfs", what=what, hint=hint, missing=KernelError) from exc


def _missing(controller: str, how: str) -> KernelError:
    return KernelError(
        f"the {controller} cgroup controller is not {how}",
        call="cgroupfs",
        hint=f"enable the {controller} controller or drop the matching limit",
    )


def _enable_v2(needed: set[str]) -> None:
    """Enable the controllers in the root's and the parent's cgroup.subtree_control.

    cgroup v2 gives a child only the controllers its parent enabled
    (Documentation/admin-guide/cgroup-v2.rst, "Enabling and Disabling").
    """
    available = _read(f"{CGROUP_ROOT}/cgroup.controllers").split()
    missing = sorted(needed - set(available))
    if missing:
        raise _missing(missing[0], "available in cgroup v2")
    parent = os.path.join(CGROUP_ROOT, PARENT)
    os.makedirs(parent, exist_ok=True)
    for directory in (CGROUP_ROOT, parent):
        enabled = _read(f"{directory}/cgroup.subtree_control").split()
        for name in V2_CONTROLLERS:
            if name in available and name not in enabled:
                try:
                    _write(f"{directory}/cgroup.subtree_control", f"+{name}")
                except OSError:
                    if name in needed:  # an unneeded one (e.g. cpu next to RT tasks) may fail
                        raise


@dataclass(frozen=True, slots=True)
class Cgroup:
    """A container's cgroup: ``paths`` maps each v1 controller (or ``unified``) to its dir."""

    version: int
    paths: dict[str, str]
    limits: Limits = Limits()

    @classmethod
    def create(cls, container_id: str, limits: Limits) -> Cgroup:
        """Make the dirs and write the limits; an existing cgroup is reused and rewritten.

        Raises NotPermitted without root, KernelError when a controller is missing.
        """
        paths = _paths(container_id)
        what = f"cannot set up the cgroup of container {container_id}"
        with _kernel_errors(what):
            if version() == 2:
                _enable_v2(limits.controllers())
            else:
                missing = sorted((limits.controllers() | {"memory"}) - paths.keys())
                if missing:
                    raise _missing(missing[0], "mounted (cgroup v1)")
            for directory in dict.fromkeys(paths.values()):
                os.makedirs(directory, exist_ok=True)
            cgroup = cls(version(), paths, limits)
            cgroup._write_limits()
        return cgroup

    @staticmethod
    def exists(container_id: str) -> bool:
        main = _paths(container_id).get("unified" if version() == 2 else "memory")
        return main is not None and os.path.isdir(main)

    @property
    def path(self) -> str:
        """The main dir: v2's only one, v1's memory controller dir."""
        return self.paths["unified" if self.version == 2 else "memory"]

    def _dirs(self) -> list[str]:
        return list(dict.fromkeys(self.paths.values()))  # co-mounted controllers share a dir

    def _write_limits(self) -> None:
        memory, pids, cpus = self.limits.memory, self.limits.pids, self.limits.cpus
        quota = round(cpus * CPU_PERIOD_US) if cpus else None
        if self.version == 2:
            settings = [
                ("memory.max", memory or "max"),
                ("memory.swap.max", 0 if memory else "max"),  # swap may not extend --memory
                ("pids.max", pids or "max"),
                ("cpu.max", f"{quota or 'max'} {CPU_PERIOD_US}"),
            ]
            for name, value in settings:
                if os.path.exists(f"{self.path}/{name}"):  # a missing, needed one was refused above
                    _write(f"{self.path}/{name}", value)
            return
        mem = self.path
        # v1 insists memsw.limit >= limit at every step, so raise memsw first and lower it
        # last (Documentation/admin-guide/cgroup-v1/memory.rst, section 2.4).
        files = ["memory.limit_in_bytes"]
        if os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):  # only with swap accounting
            raising = memory is None or memory > int(_read(f"{mem}/memory.limit_in_bytes"))
            files = ["memory.memsw.limit_in_bytes", *files] if raising else [*files, "memory.memsw.limit_in_bytes"]
        for name in files:
            _write(f"{mem}/{name}", memory or -1)
        if "pids" in self.paths:
            _write(f"{self.paths['pids']}/pids.max", pids or "max")
        if "cpu" in self.paths and (quota or os.path.exists(f"{self.paths['cpu']}/cpu.cfs_quota_us")):
            _write(f"{self.paths['cpu']}/cpu.cfs_period_us", CPU_PERIOD_US)
            _write(f"{self.paths['cpu']}/cpu.cfs_quota_us", quota or -1)

    def add(self, pid: int) -> None:
        """Move a process (all its threads) into the cgroup; its children follow it."""
        with _kernel_errors(f"cannot move process {pid} into cgroup {self.path}"):
            for directory in self._dirs():
                _write(f"{directory}/cgroup.procs", pid)

    def pids(self) -> list[int]:
        """The processes in the cgroup (exited ones awaiting their parent are not listed)."""
        try:
            return sorted(int(pid) for pid in _read(f"{self.path}/cgroup.procs").split())
        except FileNotFoundError:
            return []

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

    def _freeze(self, frozen: bool) -> bool:
        """Freeze or thaw so no process can fork while we signal; False if not possible."""
        if self.version == 2:
            control, state, want = f"{self.path}/cgroup.freeze", f"{self.path}/cgroup.events", f"frozen {int(frozen)}"
            value: object = int(frozen)
        elif "freezer" in self.paths:
            control = state = f"{self.paths['freezer']}/freezer.state"
            value = want = "FROZEN" if frozen else "THAWED"
        else:
            return False
        if not os.path.exists(control):
            return False
        _write(control, value)
        # Freezing is asynchronous: v1 reads FREEZING and v2 reports "frozen 0" until done.
        deadline = time.monotonic() + 1.0
        while want not in _read(state).splitlines() and time.monotonic() < deadline:
            time.sleep(0.005)
        return True

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 5.0) -> None:
        """Signal every process in the cgroup; with SIGKILL, wait until none is left.

        Raises InUse if processes remain after timeout (e.g. stuck in the kernel).
        """
        with _kernel_errors(f"cannot kill the processes of cgroup {self.path}"):
            if not os.path.isdir(self.path):
                return
            if self.version == 2 and sig == signal.SIGKILL and os.path.exists(f"{self.path}/cgroup.kill"):
                _write(f"{self.path}/cgroup.kill", 1)  # the kernel kills new forks too (5.14+)
            else:
                frozen = self._freeze(True)
                try:
                    # Frozen tasks keep the signal pending and take it when thawed.
                    self._signal(sig)
                finally:
                    if frozen:
                        self._freeze(False)
            if sig != signal.SIGKILL:
                return
            deadline = time.monotonic() + timeout
            while self.pids():
                if time.monotonic() > deadline:
                    raise InUse(f"cgroup {self.path} still holds processes {self.pids()} after SIGKILL")
                self._signal(sig)  # stragglers forked before the freeze took hold
                time.sleep(0.01)

    def _signal(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 5.0) -> None:
        """Delete the container's dirs (absent ones are fine); the ``overlayctl`` parent stays.

        rmdir fails with EBUSY while a process is in the cgroup, and briefly after it
        exits; retry until timeout, then raise InUse.
        """
        deadline = time.monotonic() + timeout
        with _kernel_errors(f"cannot remove cgroup {self.path}"):
            for directory in self._dirs():
                while True:
                    try:
                        os.rmdir(directory)
                        break
                    except FileNotFoundError:
                        break
                    except OSError as exc:
                        if exc.errno != errno.EBUSY:
                            raise
                        if time.monotonic() > deadline:
                            raise InUse(f"cgroup {directory} still holds processes", hint="kill_all() first") from exc
                        time.sleep(0.01)

    def to_json(self) -> dict:
        return {"version": self.version, "paths": dict(self.paths), "limits": self.limits.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> Cgroup:
        return cls(int(data["version"]), dict(data["paths"]), Limits.from_json(data.get("limits") or {}))
