"""The container's seccomp filter: a Docker-format profile turned into OCI ``linux.seccomp`` (pure).

A *profile* is a JSON file in the format of Docker and containers-common:
``defaultAction``, an ``archMap`` and ``syscalls`` entries whose
``includes``/``excludes`` conditions name capabilities, architectures and a
minimum kernel.  ``to_oci`` evaluates those conditions for one container, as
Docker's ``setupSeccomp`` does, and returns what runc 1.1 reads: the default
action and errno, the architectures, and plain ``{names, action, errnoRet,
args}`` rules.  A profile already in OCI form (``architectures``, no
conditions) passes through the same way.

The default profile is ours (``data/seccomp.json``): an allowlist at least
as strict as Docker's default.  containers-common's profile
(``HOST_PROFILE``) is not the default: Debian 12's (0.50.1) lets every
container call unshare(CLONE_NEWUSER), keyctl and AF_VSOCK sockets, which
Docker's default refuses; ``--security-opt seccomp=PATH`` picks it when
wanted.  Nothing here installs a filter; runc does.
"""

from __future__ import annotations

import errno as _errno
import json
import os
import platform
import re
from collections.abc import Callable, Collection
from typing import Any, NoReturn

from ..errors import InvalidArgument

HOST_PROFILE = "/usr/share/containers/seccomp.json"
PACKAGED_PROFILE = os.path.join(os.path.dirname(__file__), "data", "seccomp.json")
DEFAULT = "default"
UNCONFINED = "unconfined"

#: The actions and comparison operators runc 1.1 knows (libcontainer/seccomp/config.go).
ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
)

#: A machine (``platform.machine()``, or Docker's own name) -> (the name that
#: ``includes``/``excludes.arches`` use, which is Docker's libseccomp-style
#: name, and the SCMP_ARCH that selects the ``archMap`` entry).
_ARCHES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "amd64": ("amd64", "SCMP_ARCH_X86_64"),
    "i386": ("x86", "SCMP_ARCH_X86"),
    "i486": ("x86", "SCMP_ARCH_X86"),
    "i586": ("x86", "SCMP_ARCH_X86"),
    "i686": ("x86", "SCMP_ARCH_X86"),
    "x86": ("x86", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "arm64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv6l": ("arm", "SCMP_ARCH_ARM"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "armv8l": ("arm", "SCMP_ARCH_ARM"),
    "arm": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "ppc64": ("ppc64", "SCMP_ARCH_PPC64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "s390": ("s390", "SCMP_ARCH_S390"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "loongarch64": ("loongarch64", "SCMP_ARCH_LOONGARCH64"),
}

_ERRNO_NAMES = {name: getattr(_errno, name) for name in dir(_errno) if re.fullmatch(r"E[A-Z0-9]+", name)}
_MIN_KERNEL = re.compile(r"(\d+)\.(\d+)")


def default_profile_path() -> str:
    """The profile a container gets without --security-opt seccomp: the one shipped with overlayctl."""
    return PACKAGED_PROFILE


def load_profile(path: str | None = None) -> dict[str, Any]:
    """Read and check a profile (None: ``default_profile_path()``).

    Raises InvalidArgument naming the path when the file cannot be read, is
    not JSON, or is not a seccomp profile (unknown action or operator, a
    malformed entry).  Keys this module does not use are left in place.
    """
    if path is None:
        path = default_profile_path()
    where = f"seccomp profile {path}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise InvalidArgument(f"{where}: cannot read it: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{where}: not UTF-8 text") from exc
    try:
        profile = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    _check(profile, where)
    return profile


def to_oci(
    profile: dict[str, Any],
    *,
    capabilities: Collection[str],
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The ``linux.seccomp`` object for a container with these capabilities on this machine.

    capabilities is the container's bounding set (``CAP_SYS_ADMIN`` or
    ``SYS_ADMIN``); arch defaults to ``platform.machine()`` and kernel to
    ``os.uname().release`` (read only when an entry has a minKernel).

    Docker's rules: an entry applies when every ``includes`` condition holds
    (all its caps are in the set, the machine is one of its arches, the kernel
    is at least its minKernel) and no ``excludes`` condition does (none of its
    caps, not its arch, kernel below its minKernel).  Keys runc 1.1 does not
    read are dropped, and so are ``flags``, which it refuses; containers-common's
    ``errno``/``defaultErrno`` names, which take precedence there and which runc
    would ignore, become ``errnoRet``/``defaultErrnoRet``.  Raises InvalidArgument
    for a malformed profile.
    """
    if isinstance(capabilities, str):
        raise TypeError("capabilities must be a collection of names, not one string")
    _check(profile, "seccomp profile")
    native, scmp_arch = _ARCHES.get(arch or platform.machine(), (arch or platform.machine(), ""))
    caps = frozenset(_cap_name(c) for c in capabilities)
    kernel_of = (lambda: kernel) if kernel is not None else _running_kernel

    oci: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    default_errno = _errno_value(profile.get("defaultErrno"), profile.get("defaultErrnoRet"))
    if default_errno is not None:
        oci["defaultErrnoRet"] = default_errno
    architectures = list(profile.get("architectures") or ())
    for entry in profile.get("archMap") or ():
        if entry["architecture"] == scmp_arch:
            architectures = [scmp_arch, *(entry.get("subArchitectures") or ())]
            break
    if architectures:
        oci["architectures"] = architectures
    for key in ("listenerPath", "listenerMetadata"):
        if profile.get(key):
            oci[key] = profile[key]

    rules = []
    for entry in profile.get("syscalls") or ():
        if not _applies(entry, native, caps, kernel_of):
            continue
        names = list(entry.get("names") or ()) or ([entry["name"]] if entry.get("name") else [])
        if not names:
            continue
        rule: dict[str, Any] = {"names": names, "action": entry["action"]}
        errno_ret = _errno_value(entry.get("errno"), entry.get("errnoRet"))
        if errno_ret is not None:
            rule["errnoRet"] = errno_ret
        if entry.get("args"):
            rule["args"] = [
                {"index": a["index"], "value": a["value"], "valueTwo": a.get("valueTwo") or 0, "op": a["op"]}
                for a in entry["args"]
            ]
        rules.append(rule)
    oci["syscalls"] = rules
    return oci


def resolve(
    option: str | None,
    *,
    capabilities: Collection[str],
    privileged: bool,
    arch: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """The ``linux.seccomp`` object for a ``--security-opt seccomp=`` value, or None for no filter.

    None or ``default``: the default profile; ``unconfined``: no filter;
    anything else is a profile's path.  A privileged container gets no filter
    unless a profile is named, as with Docker's ``--privileged``.
    """
    if option == UNCONFINED or (option is None and privileged):
        return None
    if option == "":
        raise InvalidArgument("empty seccomp profile", hint=f"name a file, {DEFAULT!r} or {UNCONFINED!r}")
    profile = load_profile(None if option in (None, DEFAULT) else option)
    return to_oci(profile, capabilities=capabilities, arch=arch, kernel=kernel)


# --- evaluation ----------------------------------------------------------------


def _applies(
    entry: dict[str, Any], native: str, caps: frozenset[str], kernel_of: Callable[[], tuple[int, int]]
) -> bool:
    """Whether a syscalls entry is in force: the order and rules of Docker's setupSeccomp."""
    excludes = entry.get("excludes") or {}
    if native in (excludes.get("arches") or ()):
        return False
    if any(c in caps for c in excludes.get("caps") or ()):
        return False
    if excludes.get("minKernel") and kernel_of() >= _parse_min_kernel(excludes["minKernel"]):
        return False
    includes = entry.get("includes") or {}
    if includes.get("arches") and native not in includes["arches"]:
        return False
    if not all(c in caps for c in includes.get("caps") or ()):
        return False
    if includes.get("minKernel") and kernel_of() < _parse_min_kernel(includes["minKernel"]):
        return False
    return True


def _running_kernel() -> tuple[int, int]:
    """(version, major revision) of the running kernel; "6.1.0-18-amd64" -> (6, 1), as Docker reads it."""
    release = os.uname().release
    match = _MIN_KERNEL.match(release)
    if match is None:
        raise InvalidArgument(f"cannot read the kernel version from {release!r} for a seccomp minKernel")
    return int(match[1]), int(match[2])


def _parse_min_kernel(text: str) -> tuple[int, int]:
    match = _MIN_KERNEL.fullmatch(text)
    assert match is not None, text  # _check refused any other form
    return int(match[1]), int(match[2])


def _errno_value(name: object, number: object) -> int | None:
    """containers-common's rule: an ``errno`` name (or number as text) wins over ``errnoRet``."""
    if isinstance(name, str) and name:
        return int(name) if name.isdigit() else _ERRNO_NAMES[name]
    return number if isinstance(number, int) else None


def _cap_name(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else f"CAP_{name}"


# --- shape ------------------------------------------------------------------------


def _check(profile: object, where: str) -> None:
    """Raise InvalidArgument (one line, naming where and the key) unless profile has a seccomp profile's shape."""

    def fail(key: str, problem: str) -> NoReturn:
        raise InvalidArgument(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")

    def check_list(key: str, value: object, *, strings: bool = False) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list) or (strings and not all(isinstance(v, str) for v in value)):
            fail(key, "not a list of strings" if strings else "not a list")
        return value

    def check_int(key: str, value: object, limit: int) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit):
            fail(key, f"not an integer from 0 to {limit - 1}")

    def check_errno(key: str, value: object) -> None:
        if value not in (None, "") and not (isinstance(value, str) and (value.isdigit() or value in _ERRNO_NAMES)):
            fail(key, f"unknown errno {value!r}")

    def check_action(key: str, value: object) -> None:
        if value not in ACTIONS:
            fail(key, f"unknown action {value!r}" if value is not None else "missing")

    if not isinstance(profile, dict):
        fail("", "not a JSON object")
    check_action("defaultAction", profile.get("defaultAction"))
    check_int("defaultErrnoRet", profile.get("defaultErrnoRet"), 4096)
    check_errno("defaultErrno", profile.get("defaultErrno"))
    architectures = check_list("architectures", profile.get("architectures"), strings=True)
    arch_map = check_list("archMap", profile.get("archMap"))
    if architectures and arch_map:
        fail("", "both 'architectures' and 'archMap' are given; use one")
    for i, entry in enumerate(arch_map):
        key = f"archMap[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), str):
            fail(key, "not an object with an 'architecture'")
        check_list(f"{key}.subArchitectures", entry.get("subArchitectures"), strings=True)
    for i, entry in enumerate(check_list("syscalls", profile.get("syscalls"))):
        key = f"syscalls[{i}]"
        if not isinstance(entry, dict):
            fail(key, "not an object")
        names = check_list(f"{key}.names", entry.get("names"), strings=True)
        name = entry.get("name")
        if name is not None and not isinstance(name, str):
            fail(f"{key}.name", "not a string")
        if name and names:
            fail(key, "both 'name' and 'names' are given; use 'names'")
        if "name" not in entry and "names" not in entry:
            fail(key, "no 'names'")
        check_action(f"{key}.action", entry.get("action"))
        check_int(f"{key}.errnoRet", entry.get("errnoRet"), 4096)
        check_errno(f"{key}.errno", entry.get("errno"))
        for j, arg in enumerate(check_list(f"{key}.args", entry.get("args"))):
            arg_key = f"{key}.args[{j}]"
            if not isinstance(arg, dict) or "index" not in arg or "value" not in arg:
                fail(arg_key, "not an object with 'index', 'value' and 'op'")
            check_int(f"{arg_key}.index", arg["index"], 6)
            check_int(f"{arg_key}.value", arg["value"], 1 << 64)
            check_int(f"{arg_key}.valueTwo", arg.get("valueTwo"), 1 << 64)
            if arg.get("op") not in OPERATORS:
                fail(f"{arg_key}.op", f"unknown operator {arg.get('op')!r}")
        for part in ("includes", "excludes"):
            condition = entry.get(part)
            if condition is None:
                continue
            if not isinstance(condition, dict):
                fail(f"{key}.{part}", "not an object")
            check_list(f"{key}.{part}.caps", condition.get("caps"), strings=True)
            check_list(f"{key}.{part}.arches", condition.get("arches"), strings=True)
            min_kernel = condition.get("minKernel")
            if min_kernel not in (None, "") and not (
                isinstance(min_kernel, str) and _MIN_KERNEL.fullmatch(min_kernel) and min_kernel != "0.0"
            ):
                fail(f"{key}.{part}.minKernel", f"{min_kernel!r} is not of the form '4.8'")
