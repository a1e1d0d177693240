"""The probe table: what a process inside a container must not be able to do, as plain data.

Each ``Probe`` is a busybox ``sh`` snippet that prints one line, ``ALLOWED``
or ``BLOCKED``, and a ``needs``: what legitimately allows it in Docker's
model (a capability for ``--cap-add``, ``privileged``, a ``--security-opt``,
or None: never, not even ``--privileged``).  ``table_script()`` joins the
table into one ``sh -c`` script that prints ``name=RESULT`` lines, so one
container answers every probe; ``parse_results()`` reads them back and
``expected()`` says what each probe should print under given run flags.

The probes must not harm the host even when the container is real root
under ``--privileged``:

- nothing is written to /proc, /sys or a device: a probe only *opens* for
  append (``true >> FILE`` is one ``openat(O_WRONLY|O_CREAT|O_APPEND)`` and no
  write(2), checked with strace; the file is tested to exist first so
  O_CREAT creates nothing) and opens devices read-only without reading;
- mounts go on fresh empty directories under the container's /tmp and are
  unmounted at once;
- ``hostname`` and ``ip link`` set the value they already have, and only
  after checking that the UTS / network namespace is not the caller's
  (``HOST_UTS`` / ``HOST_NET`` are the caller's namespace links, set by
  ``table_script()``).  A probe that finds itself in a namespace of the
  caller prints ALLOWED without touching anything: sharing it is the
  breach (the ``host_namespaces`` probe says which).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from overlayctl.runtime.profile import ALL_CAPS

ALLOWED = "ALLOWED"
BLOCKED = "BLOCKED"

# Docker's default capability set, kept here apart from overlayctl's runtime/profile.py
# on purpose: the probes are the oracle that profile is checked against.
DOCKER_DEFAULT_CAPS = (
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

# Capability names by bit number (linux/capability.h), without CAP_: a kernel fact, not a policy.
CAPABILITIES = ALL_CAPS

DOCKER_DEFAULT_CAP_MASK = sum(1 << CAPABILITIES.index(cap) for cap in DOCKER_DEFAULT_CAPS)  # 0x00000000a80425fb

# The commands the probes run, besides the shell's builtins (busybox applets).
APPLETS = (
    "awk", "cat", "dmesg", "find", "grep", "head", "hostname", "ip", "ls", "mknod", "mktemp", "mount", "od",
    "readlink", "renice", "rm", "rmdir", "sh", "tr", "umount", "unshare",
)  # fmt: skip

# The variable the tests set in the caller's environment; a probe looks for its name inside.
SECRET_ENV = "OVERLAYCTL_PROBE_SECRET"

# What ``needs`` may say besides a capability name (Docker's spelling, without CAP_).
PRIVILEGED = "privileged"
ANY_CAP = "any-cap"  # any capability beyond Docker's defaults (or --privileged)
UNCONFINED = "seccomp=unconfined"


@dataclass(frozen=True, slots=True)
class Probe:
    """One thing a contained process must not do.

    ``script`` prints exactly ``ALLOWED`` or ``BLOCKED`` (its stderr is
    discarded; it runs in a subshell of table_script's shell).  ``needs`` is
    what allows it, in Docker's model as found with Docker 20.10: a
    capability name (``--cap-add`` it, or ``--privileged``), ``privileged``
    (only ``--privileged``), ``any-cap`` (any capability beyond Docker's
    defaults), ``seccomp=unconfined`` (that ``--security-opt``, or
    ``--privileged``); needs joined by ``+`` must all be met, choices joined
    by ``|`` are alternatives; None: nothing allows it, not even
    ``--privileged``.  ``available`` is a read-only ``sh`` test run on the
    host: when it fails, the host lacks what the probe looks at (no
    /proc/kcore, no cgroup v1 hierarchy) and the probe is BLOCKED everywhere.
    """

    name: str
    script: str
    needs: str | None
    available: str = "true"


def _caps(field: str, *, allow_default: bool = True) -> str:
    """A probe of one Cap* line of /proc/self/status: BLOCKED when within Docker's defaults (or 0)."""
    mask = f"~{DOCKER_DEFAULT_CAP_MASK:#x}" if allow_default else "-1"
    return (
        f"v=$(awk '/^{field}:/ {{print $2}}' /proc/self/status)\n"
        f'[ -n "$v" ] || {{ echo ALLOWED; exit; }}\n'  # no such line: cannot tell, so not contained
        f"[ $(( 0x$v & {mask} )) -eq 0 ] && echo BLOCKED || echo ALLOWED"
    )


def _mount(fstype: str, options: str = "") -> str:
    """A probe mounting fstype on a fresh directory under /tmp (only in a mount namespace not the caller's)."""
    return (
        '[ "$(readlink /proc/self/ns/mnt)" != "$HOST_MNT" ] || { echo ALLOWED; exit; }\n'
        "d=$(mktemp -d /tmp/probe.XXXXXX) || { echo BLOCKED; exit; }\n"
        f'if mount -t {fstype} {options} probe "$d"; then umount "$d"; echo ALLOWED; else echo BLOCKED; fi\n'
        'rmdir "$d"'
    )


def _open_append(*paths: str) -> str:
    """A probe opening the first existing path for append, writing nothing (see the module docstring)."""
    candidates = " ".join(paths)
    return (
        f'for f in {candidates}; do [ -e "$f" ] && break; f=; done\n'
        '[ -n "$f" ] || { echo BLOCKED; exit; }\n'
        'if true >> "$f"; then echo ALLOWED; else echo BLOCKED; fi'
    )


def _readable(path: str) -> str:
    """A probe reading the first byte of path: BLOCKED when missing, unreadable or empty (masked by /dev/null)."""
    return f'[ -n "$(head -c 1 {path} | od -An -c)" ] && echo ALLOWED || echo BLOCKED'


# The first cgroup v1 hierarchy with a controller, as its mount options (all
# its co-mounted controllers: asking for a subset of them is EBUSY).
_CGROUP1_OPTIONS = (
    "h=$(awk 'NR > 1 && $2 > 0 && $4 == 1 {print $2; exit}' /proc/cgroups)\n"
    '[ -n "$h" ] || { echo BLOCKED; exit; }\n'
    'o=$(awk -v h="$h" \'NR > 1 && $2 == h {printf "%s%s", s, $1; s = ","}\' /proc/cgroups)\n'
)

# Root-writable sysfs files, the first that exists is opened (uevent_helper: the classic way out).
_SYS_FILES = ("/sys/kernel/uevent_helper", "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/profiling")

PROBES: list[Probe] = [
    # Capabilities: Docker's 14 or fewer; ambient always empty.
    Probe("cap_eff", _caps("CapEff"), ANY_CAP),
    Probe("cap_prm", _caps("CapPrm"), ANY_CAP),
    Probe("cap_bnd", _caps("CapBnd"), ANY_CAP),
    Probe("cap_inh", _caps("CapInh"), None),
    Probe("cap_amb", _caps("CapAmb", allow_default=False), None),
    # A seccomp filter is on (mode 2).
    Probe(
        "seccomp_off", "grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status && echo BLOCKED || echo ALLOWED", UNCONFINED
    ),
    # The namespaces are the container's own (HOST_* are the caller's, see table_script; --network host shares one).
    Probe(
        "host_namespaces",
        'for ns in mnt:"$HOST_MNT" uts:"$HOST_UTS" ipc:"$HOST_IPC" pid:"$HOST_PID" net:"$HOST_NET"; do\n'
        '  [ "$(readlink /proc/self/ns/${ns%%:*})" = "${ns#*:}" ] && { echo ALLOWED; exit; }\n'
        "done\n"
        "echo BLOCKED",
        None,
    ),
    # Mounts (CAP_SYS_ADMIN; Docker's seccomp allows mount(2) only with it).
    Probe("mount_tmpfs", _mount("tmpfs"), "SYS_ADMIN"),
    Probe("mount_proc", _mount("proc"), "SYS_ADMIN"),
    Probe("mount_sysfs", _mount("sysfs"), "SYS_ADMIN"),
    Probe(
        "mount_cgroup",
        _CGROUP1_OPTIONS + _mount("cgroup", '-o "$o"'),
        "SYS_ADMIN",
        available="awk 'NR > 1 && $2 > 0 && $4 == 1 {found = 1} END {exit !found}' /proc/cgroups",
    ),
    Probe("mount_cgroup2", _mount("cgroup2"), "SYS_ADMIN", available="grep -qw cgroup2 /proc/filesystems"),
    # New namespaces (Docker's seccomp allows unshare(2) only with CAP_SYS_ADMIN).
    Probe("unshare_mnt", "unshare -m true && echo ALLOWED || echo BLOCKED", "SYS_ADMIN"),
    # (A user namespace needs no capability: only the seccomp filter stands in the way.)
    Probe("unshare_user", "unshare -U true && echo ALLOWED || echo BLOCKED", f"SYS_ADMIN|{UNCONFINED}"),
    # sethostname(2), to the name it already has, in a UTS namespace not the caller's.
    Probe(
        "sethostname",
        '[ "$(readlink /proc/self/ns/uts)" != "$HOST_UTS" ] || { echo ALLOWED; exit; }\n'
        'hostname "$(hostname)" && echo ALLOWED || echo BLOCKED',
        "SYS_ADMIN",
    ),
    # An interface's MTU, set to the value it has, in a network namespace not the caller's.
    Probe(
        "ip_link_set",
        '[ "$(readlink /proc/self/ns/net)" != "$HOST_NET" ] || { echo ALLOWED; exit; }\n'
        'ip link set lo mtu "$(cat /sys/class/net/lo/mtu)" && echo ALLOWED || echo BLOCKED',
        "NET_ADMIN",
    ),
    # Kernel settings: /proc/sys and /proc/sysrq-trigger are read-only, /sys too.
    Probe("proc_sys_core_pattern", _open_append("/proc/sys/kernel/core_pattern"), PRIVILEGED),
    Probe("proc_sys_drop_caches", _open_append("/proc/sys/vm/drop_caches"), PRIVILEGED),
    Probe(
        "proc_sysrq_trigger", _open_append("/proc/sysrq-trigger"), PRIVILEGED, available="[ -e /proc/sysrq-trigger ]"
    ),
    Probe("sys_write", _open_append(*_SYS_FILES), PRIVILEGED, available=f"ls {' '.join(_SYS_FILES)} | grep -q ."),
    Probe(
        "cgroupfs_write",
        "f=$(find /sys/fs/cgroup -maxdepth 3 -name cgroup.procs | head -n 1)\n" + _open_append('"$f"'),
        PRIVILEGED,
    ),
    # Devices: mknod works (CAP_MKNOD) but the device cgroup refuses the open.
    Probe(
        "device_kmsg",
        "d=$(mktemp -d /tmp/probe.XXXXXX) || { echo BLOCKED; exit; }\n"
        'if mknod "$d/kmsg" c 1 11 && true < "$d/kmsg"; then echo ALLOWED; else echo BLOCKED; fi\n'
        'rm -rf "$d"',
        PRIVILEGED,
    ),
    Probe(
        "device_disk",
        "set -- $(ls /sys/dev/block)\n"
        '[ -n "$1" ] || { echo BLOCKED; exit; }\n'
        "d=$(mktemp -d /tmp/probe.XXXXXX) || { echo BLOCKED; exit; }\n"
        'if mknod "$d/disk" b "${1%:*}" "${1#*:}" && true < "$d/disk"; then echo ALLOWED; else echo BLOCKED; fi\n'
        'rm -rf "$d"',
        PRIVILEGED,
        available='[ -n "$(ls /sys/dev/block)" ]',
    ),
    # Kernel information: masked paths (Docker binds /dev/null or an empty tmpfs over them).
    Probe("proc_keys", _readable("/proc/keys"), PRIVILEGED, available="[ -e /proc/keys ]"),
    Probe("proc_timer_list", _readable("/proc/timer_list"), PRIVILEGED, available="[ -e /proc/timer_list ]"),
    Probe("proc_kcore", _readable("/proc/kcore"), PRIVILEGED, available="[ -e /proc/kcore ]"),
    Probe(
        "sys_firmware",
        '[ -n "$(ls -A /sys/firmware)" ] && echo ALLOWED || echo BLOCKED',
        PRIVILEGED,
        available='[ -n "$(ls -A /sys/firmware)" ]',
    ),
    # Kernel addresses and the kernel log: CAP_SYSLOG (Docker's seccomp blocks syslog(2) without it; the
    # addresses are shown without it only where kptr_restrict is 0 and perf_event_paranoid <= 1).
    Probe(
        "kallsyms_addresses",
        "grep -m 1 ' [Tt] ' /proc/kallsyms | grep -qv '^0*[[:space:]]' && echo ALLOWED || echo BLOCKED",
        "SYSLOG",
        available='[ "$(cat /proc/sys/kernel/kptr_restrict)" != 2 ]',
    ),
    Probe(
        "dmesg",
        "dmesg > /dev/null && echo ALLOWED || echo BLOCKED",
        "SYSLOG",
    ),
    # A better nice value (CAP_SYS_NICE), for a shell that only exits.
    Probe("renice_negative", "sh -c 'renice -n -1 -p $$' && echo ALLOWED || echo BLOCKED", "SYS_NICE"),
    # Nothing of the caller gets in: no fd beyond 0-2 in PID 1 or the shell but the shell's own pipes
    # (the tests leave a directory fd of the host inheritable in the caller), ...
    Probe(
        "inherited_fds",
        "for f in /proc/1/fd/* /proc/$$/fd/*; do\n"
        "  case ${f##*/} in 0|1|2) continue;; esac\n"
        '  t=$(readlink "$f") || continue\n'
        "  case $t in pipe:*) ;; *) echo ALLOWED; exit;; esac\n"
        "done\n"
        "echo BLOCKED",
        None,
    ),
    # ... no runtime process or command line as PID 1 ...
    Probe(
        "pid1_cmdline",
        "tr '\\0' ' ' < /proc/1/cmdline | grep -qiE 'overlay[c]tl|pytho[n]|pytes[t]|conmo[n]|/run[c]'"
        " && echo ALLOWED || echo BLOCKED",
        None,
    ),
    # ... and none of the caller's environment (the name is split so this script does not contain it).
    Probe(
        "caller_environ",
        f"grep -q '{SECRET_ENV[:8]}[{SECRET_ENV[8]}]{SECRET_ENV[9:]}' /proc/1/environ /proc/$$/environ"
        " && echo ALLOWED || echo BLOCKED",
        None,
    ),
]


@contextlib.contextmanager
def caller_leaks(directory: str | os.PathLike) -> Iterator[dict]:
    """subprocess.run keyword arguments that tempt a runtime to leak the caller into a container.

    A directory fd of the host left inheritable (``pass_fds``: the fd a
    CVE-2024-21626-style escape walks out through) and ``SECRET_ENV`` set in
    the environment; the inherited_fds and caller_environ probes look for them.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)  # os.open's fds are non-inheritable ...
    os.set_inheritable(fd, True)  # ... until told
    try:
        yield {"pass_fds": (fd,), "env": {**os.environ, SECRET_ENV: secrets.token_hex(8)}}
    finally:
        os.close(fd)


def host_namespaces(pid: int | str = "self") -> dict[str, str]:
    """The caller's namespace links (``mnt:[4026531840]``) as the HOST_* variables of table_script."""
    return {f"HOST_{ns.upper()}": os.readlink(f"/proc/{pid}/ns/{ns}") for ns in ("mnt", "uts", "ipc", "pid", "net")}


def table_script(probes: Iterable[Probe] = PROBES, host: Mapping[str, str] | None = None) -> str:
    """One ``sh -c`` script running every probe in a subshell; it prints ``name=RESULT`` lines, in order.

    It first checks that the image has every applet the probes use and exits
    127 (saying which on stderr) when one is missing: a missing command would
    otherwise read as BLOCKED.
    """
    host = host_namespaces() if host is None else host
    lines = [f"{key}='{value}'" for key, value in host.items()]
    lines.append(
        f"for a in {' '.join(APPLETS)}; do\n"
        '  command -v "$a" > /dev/null || { echo "the image has no $a: the probes cannot run" >&2; exit 127; }\n'
        "done"
    )
    for probe in probes:
        lines.append(f"r=$( (\n{probe.script}\n) 2>/dev/null </dev/null)")
        lines.append(f'echo "{probe.name}=$r"')
    return "\n".join(lines) + "\n"


def parse_results(output: str) -> dict[str, str]:
    """The ``name=RESULT`` lines of table_script's output as a dict (other lines are ignored)."""
    results = {}
    for line in output.splitlines():
        name, sep, result = line.partition("=")
        if sep and name.replace("_", "").isalnum():
            results[name] = result
    return results


@functools.cache
def available_on_host(probe: Probe) -> bool:
    """Whether the host has what the probe looks at: its ``available`` test, run by /bin/sh here (it only reads)."""
    done = subprocess.run(
        ["/bin/sh", "-c", probe.available], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return done.returncode == 0


@dataclass(frozen=True, slots=True)
class RunFlags:
    """The flags of a ``run`` command line that decide what a probe may do."""

    privileged: bool = False
    cap_add: frozenset[str] = frozenset()
    cap_drop: frozenset[str] = frozenset()
    security_opt: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, argv: Sequence[str]) -> RunFlags:
        """``--privileged``, ``--cap-add X``, ``--cap-drop X``, ``--security-opt X`` (also ``--flag=X``) of argv."""
        found: dict[str, set[str]] = {"--cap-add": set(), "--cap-drop": set(), "--security-opt": set()}
        privileged = False
        args = iter(argv)
        for arg in args:
            flag, eq, value = arg.partition("=")
            if flag == "--privileged":
                privileged = True
            elif flag in found:
                found[flag].add(value if eq else next(args))
        return cls(
            privileged,
            frozenset(_cap_name(c) for c in found["--cap-add"]),
            frozenset(_cap_name(c) for c in found["--cap-drop"]),
            frozenset(found["--security-opt"]),
        )

    def meets(self, need: str) -> bool:
        """Whether one need (no ``|`` or ``+``) is met."""
        if self.privileged:
            return True
        if need == PRIVILEGED:
            return False
        if need == UNCONFINED:
            return UNCONFINED in self.security_opt
        if need == ANY_CAP:
            added = set(CAPABILITIES) if "ALL" in self.cap_add else set(self.cap_add)
            return bool(added - set(DOCKER_DEFAULT_CAPS) - self.cap_drop)
        return (need in self.cap_add or "ALL" in self.cap_add) and need not in self.cap_drop


def missing_from_bounding_set() -> list[str]:
    """Capabilities the kernel knows that this process's bounding set lacks: --privileged cannot give them.

    (A sandbox may run its root without some, e.g. SYS_RESOURCE; runc then fails
    "unable to apply caps" for --privileged and --cap-add ALL, in Docker too.)
    """
    with open("/proc/sys/kernel/cap_last_cap") as f:
        every = (1 << (int(f.read()) + 1)) - 1
    with open("/proc/self/status") as f:
        bounding = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return cap_names(every & ~bounding)


def all_caps_flags() -> list[str]:
    """``--cap-add ALL`` and a ``--cap-drop`` for each capability the host cannot give (missing_from_bounding_set)."""
    return ["--cap-add", "ALL", *(arg for cap in missing_from_bounding_set() for arg in ("--cap-drop", cap))]


def _cap_name(name: str) -> str:
    name = name.upper()
    return name[4:] if name.startswith("CAP_") else name


def expected(probe: Probe, argv: Sequence[str] = (), *, available: bool = True) -> str:
    """What the probe prints in a container run with argv's flags, in Docker's meaning.

    ``available=False`` (see available_on_host): BLOCKED whatever the flags.
    """
    if probe.needs is None or not available:
        return BLOCKED
    flags = RunFlags.parse(argv)
    met = any(all(flags.meets(need) for need in choice.split("+")) for choice in probe.needs.split("|"))
    return ALLOWED if met else BLOCKED


def cap_names(mask: int) -> list[str]:
    """The capability names of a CapEff-style bit mask (``CAP_`` left off; unknown bits as their number)."""
    return [CAPABILITIES[bit] if bit < len(CAPABILITIES) else str(bit) for bit in range(64) if mask >> bit & 1]
