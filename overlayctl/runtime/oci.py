"""The OCI runtime program (runc or crun): which one runs, and its verbs.

overlayctl writes a bundle; the runtime does the last step (namespaces,
capabilities, seccomp, devices, pivot_root) and ``conmon`` watches the
process.  Each verb here is one call of the runtime's command line, under a
state directory of overlayctl's own (``<run root>/runtime``), so Docker's or
podman's containers are never seen.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidArgument, NotFound, OverlayctlError

#: Tried in this order when neither --runtime nor OVERLAYCTL_RUNTIME names one.
CANDIDATES = ("crun", "runc")
ENV_RUNTIME = "OVERLAYCTL_RUNTIME"
CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True, slots=True)
class RuntimeChoice:
    """The runtime program a container runs with, and why it was chosen."""

    name: str
    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path, "version": _version(self.path), "reason": self.reason}


def is_hybrid_cgroups() -> bool:
    """v1 controllers with a cgroup2 tree beside them at /sys/fs/cgroup/unified."""
    return not os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers") and os.path.exists(
        f"{CGROUP_ROOT}/unified/cgroup.controllers"
    )


def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    first = out.splitlines()[0] if out else ""
    return first.split()[-1] if first else ""


def _refusal(name: str, path: str) -> str:
    """Why a runtime cannot run containers on this host ('' when it can)."""
    if name == "crun" and is_hybrid_cgroups():
        version = _version(path)
        major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if major_minor < (1, 9):
            return f"crun {version} refuses hybrid cgroups (v1 controllers plus a cgroup2 mount)"
    return ""


@functools.cache
def choose(requested: str = "") -> RuntimeChoice:
    """The runtime for a container: the requested name or path, else the first that works here.

    Only crun's version is asked for (its refusal depends on it): each
    ``--version`` is a process start on the path of every ``run``.
    """
    requested = requested or os.environ.get(ENV_RUNTIME, "")
    if requested:
        path = requested if "/" in requested else shutil.which(requested)
        if not path or not os.access(path, os.X_OK):
            raise NotFound(f"OCI runtime {requested!r} not found", hint="install runc or crun, or give a path")
        refusal = _refusal(os.path.basename(path), path)
        if refusal:
            raise InvalidArgument(f"cannot use {requested}: {refusal}", hint="use --runtime runc")
        return RuntimeChoice(os.path.basename(path), path, "chosen with --runtime or " + ENV_RUNTIME)
    skipped = []
    for name in CANDIDATES:
        path = shutil.which(name)
        if not path:
            skipped.append(f"{name} is not installed")
            continue
        refusal = _refusal(name, path)
        if refusal:
            skipped.append(refusal)
            continue
        return RuntimeChoice(name, path, "; ".join([*skipped, f"{name} is the first usable"]))
    raise NotFound("no OCI runtime found: " + "; ".join(skipped), hint="apt install runc")


def conmon_path() -> str:
    path = shutil.which("conmon")
    if not path:
        raise NotFound("conmon is not installed", hint="apt install conmon")
    return path


class OciRuntime:
    """The verbs of one runtime program over overlayctl's state directory."""

    def __init__(self, choice: RuntimeChoice, state_dir: str) -> None:
        self.choice = choice
        self.state_dir = state_dir

    def argv(self, *args: str) -> list[str]:
        return [self.choice.path, "--root", self.state_dir, *args]

    def _call(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(*args), capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            message = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise OverlayctlError(f"{self.choice.name} {args[0]} failed: {message}")
        return result

    def start(self, container_id: str) -> None:
        self._call("start", container_id)

    def kill(self, container_id: str, signal: int, *, all_processes: bool = False) -> bool:
        """Send a signal; False when the container is not running (any more)."""
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signal)]
        return self._call(*args, check=False).returncode == 0

    def delete(self, container_id: str) -> None:
        """Forget the container (killing what is left of it); nothing when it is unknown."""
        self._call("delete", "--force", container_id, check=False)

    def state(self, container_id: str) -> dict | None:
        result = self._call("state", container_id, check=False)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def exec_argv(self, container_id: str, process_file: str, *, tty: bool, pid_file: str = "") -> list[str]:
        extra = [*(["--tty"] if tty else []), *(["--pid-file", pid_file] if pid_file else [])]
        return self.argv("exec", "--process", process_file, *extra, container_id)

    def run_argv(self, container_id: str, bundle: str, pid_file: str) -> Sequence[str]:
        return self.argv("run", "--bundle", bundle, "--pid-file", pid_file, container_id)


def describe() -> dict[str, object]:
    """For ``info``: the runtime containers run with and why, or why none can; the monitor."""
    runtime: dict[str, object]
    try:
        runtime = choose().to_json()
    except OverlayctlError as exc:
        runtime = {"error": exc.message}
    monitor_path = shutil.which("conmon")
    monitor = {"name": "conmon", "path": monitor_path or "", "version": _version(monitor_path) if monitor_path else ""}
    return {"runtime": runtime, "monitor": monitor, "hybrid_cgroups": is_hybrid_cgroups()}
