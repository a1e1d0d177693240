"""A container's OCI runtime config (``config.json``), as plain data (pure, no syscalls).

This is the one place where a container's profile is decided: process,
mounts, namespaces, resources and security.  ``container spec`` writes it
out, and any OCI runtime can run the bundle by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .cgroups import CPU_PERIOD_US
from .profile import DEFAULT_ALLOWED_DEVICES, MASKED_PATHS, READONLY_PATHS
from .spec import DEFAULT_PATH, RunSpec

OCI_VERSION = "1.0.2"
#: Where ``--init`` puts the init binary: /dev is a tmpfs, so nothing lands in the upper.
INIT_PATH = "/dev/init"
_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]


@dataclass(frozen=True, slots=True)
class ProcessUser:
    """The numeric user of the container's process, and its home."""

    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    home: str = "/root"


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What the config needs from the host: filled in by the caller, so this module stays pure."""

    rootfs: str
    hostname: str
    cgroups_path: str
    own_network: bool = True  # a new network namespace, or the host's
    capabilities: tuple[str, ...] = ()
    seccomp: dict[str, Any] | None = None
    init_binary: str | None = None
    devices: tuple[dict[str, Any], ...] = ()  # linux.devices entries of --device / --privileged
    id_mappings: tuple[tuple[int, int, int], ...] = ()  # (container, host, size) for --userns=auto


def environment(spec: RunSpec, hostname: str, home: str) -> list[str]:
    env = dict(item.partition("=")[::2] for item in spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    env.setdefault("HOME", home)
    if spec.tty:
        env.setdefault("TERM", "xterm")
    return [f"{k}={v}" for k, v in env.items()]


def process(spec: RunSpec, user: ProcessUser, facts: HostFacts) -> dict[str, Any]:
    """The process object: also what ``exec`` runs with, with its own argv."""
    caps = list(facts.capabilities)
    args = [INIT_PATH, "--", *spec.argv] if spec.init else list(spec.argv)
    return {
        "terminal": spec.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.groups)},
        "args": args,
        "env": environment(spec, facts.hostname, user.home),
        "cwd": spec.workdir or "/",
        # Inheritable and ambient stay empty: a file capability cannot grow what exec gives.
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []},
        "noNewPrivileges": spec.no_new_privileges,
    }


def _mount(destination: str, kind: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": options}


def mounts(spec: RunSpec, facts: HostFacts) -> list[dict[str, Any]]:
    """/proc, a small /dev, /sys (read-only), then volumes, tmpfs and the init binary."""
    result = [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
        _mount("/dev/shm", "tmpfs", "shm", [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"]),
        _mount("/dev/mqueue", "mqueue", "mqueue", _NOSUID_NOEXEC_NODEV),
    ]
    # As Docker: /sys read-only, and no cgroupfs, unless --privileged.
    access = "rw" if spec.privileged else "ro"
    if facts.own_network or facts.id_mappings:
        # sysfs shows the network devices of the namespace that mounts it.
        result.append(_mount("/sys", "sysfs", "sysfs", [*_NOSUID_NOEXEC_NODEV, access]))
    else:
        result.append(_mount("/sys", "bind", "/sys", ["rbind", *_NOSUID_NOEXEC_NODEV, access]))
    if spec.privileged:
        result.append(_mount("/sys/fs/cgroup", "cgroup", "cgroup", [*_NOSUID_NOEXEC_NODEV, "rw"]))
    for volume in spec.volumes:
        result.append(_mount(volume.target, "bind", volume.source, ["rbind", "ro" if volume.readonly else "rw"]))
    for path in spec.tmpfs:
        result.append(_mount(path, "tmpfs", "tmpfs", [*_NOSUID_NOEXEC_NODEV, "mode=1777"]))
    if spec.init and facts.init_binary:
        result.append(_mount(INIT_PATH, "bind", facts.init_binary, ["bind", "ro", "nosuid", "nodev"]))
    return result


def device_rules(spec: RunSpec) -> list[dict[str, Any]]:
    """The device cgroup: deny all, then the usual character devices, then --device ones."""
    if spec.privileged:
        return [{"allow": True, "access": "rwm"}]
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for major, minor in DEFAULT_ALLOWED_DEVICES:
        rule = {"allow": True, "type": "c", "major": major, "access": "rwm"}
        if minor is not None:
            rule["minor"] = minor
        rules.append(rule)
    return rules


def resources(spec: RunSpec, devices: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    rules = device_rules(spec)
    if not spec.privileged:
        for device in devices:
            access = device.get("access", "rwm")
            rules.append(
                {
                    "allow": True,
                    "type": device["type"],
                    "major": device["major"],
                    "minor": device["minor"],
                    "access": access,
                }
            )
    result: dict[str, Any] = {"devices": rules}
    limits = spec.limits
    if limits.get("memory"):
        # Swap may not extend --memory: memory+swap is the same limit.
        result["memory"] = {"limit": limits["memory"], "swap": limits["memory"]}
    if limits.get("pids"):
        result["pids"] = {"limit": limits["pids"]}
    if limits.get("cpus"):
        result["cpu"] = {"quota": round(limits["cpus"] * CPU_PERIOD_US), "period": CPU_PERIOD_US}
    return result


def namespaces(facts: HostFacts) -> list[dict[str, str]]:
    result = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount", "cgroup")]
    if facts.own_network:
        result.append({"type": "network"})
    if facts.id_mappings:
        result.append({"type": "user"})
    return result


def build_config(spec: RunSpec, user: ProcessUser, facts: HostFacts) -> dict[str, Any]:
    """The whole config.json of a container."""
    linux: dict[str, Any] = {
        "namespaces": namespaces(facts),
        "cgroupsPath": facts.cgroups_path,
        "resources": resources(spec, facts.devices),
        "devices": [{k: v for k, v in d.items() if k != "access"} for d in facts.devices],
    }
    if facts.id_mappings:
        mappings = [{"containerID": c, "hostID": h, "size": n} for c, h, n in facts.id_mappings]
        linux["uidMappings"] = mappings
        linux["gidMappings"] = mappings
    if not spec.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    if facts.seccomp is not None:
        linux["seccomp"] = facts.seccomp
    return {
        "ociVersion": OCI_VERSION,
        "process": process(spec, user, facts),
        "root": {"path": facts.rootfs, "readonly": spec.read_only},
        "hostname": facts.hostname,
        "mounts": mounts(spec, facts),
        "linux": linux,
    }
