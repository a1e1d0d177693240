"""Seccomp profiles: our packaged allowlist, Docker's evaluation rules, the OCI output runc 1.1 reads."""

from __future__ import annotations

import json
import os

import pytest

from overlayctl.errors import InvalidArgument
from overlayctl.runtime import seccomp
from overlayctl.runtime.seccomp import HOST_PROFILE, PACKAGED_PROFILE, load_profile, resolve, to_oci

#: Docker's default capability set (and runc's, once the config builder asks for it).
DEFAULT_CAPS = (
    "CAP_CHOWN CAP_DAC_OVERRIDE CAP_FSETID CAP_FOWNER CAP_MKNOD CAP_NET_RAW CAP_SETGID CAP_SETUID CAP_SETFCAP "
    "CAP_SETPCAP CAP_NET_BIND_SERVICE CAP_SYS_CHROOT CAP_KILL CAP_AUDIT_WRITE"
).split()
ALL_CAPS = (
    DEFAULT_CAPS
    + (
        "CAP_SYS_ADMIN CAP_DAC_READ_SEARCH CAP_SYS_BOOT CAP_SYS_MODULE CAP_SYS_PACCT CAP_SYS_PTRACE CAP_SYS_RAWIO "
        "CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_SYS_NICE CAP_SYSLOG CAP_BPF CAP_PERFMON"
    ).split()
)

#: Never allowed, without an argument check, to a container with the default capabilities.
DENIED = (
    "mount umount umount2 unshare setns clone clone3 pivot_root keyctl add_key request_key bpf perf_event_open "
    "kexec_load kexec_file_load init_module finit_module delete_module reboot swapon swapoff open_by_handle_at "
    "name_to_handle_at userfaultfd acct personality iopl ioperm lookup_dcookie move_pages migrate_pages mbind "
    "set_mempolicy get_mempolicy set_mempolicy_home_node quotactl quotactl_fd settimeofday clock_settime "
    "clock_settime64 stime syslog vhangup nfsservctl uselib ustat sysfs _sysctl fanotify_init kcmp pidfd_getfd "
    "process_madvise io_uring_setup io_uring_enter io_uring_register fsopen fsmount fsconfig fspick move_mount "
    "open_tree mount_setattr sethostname setdomainname lsm_set_self_attr vmsplice"
).split()

#: The namespace flags of clone(2), <linux/sched.h>: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

#: Syscalls added to Linux (5.14 to 6.13) after containers-common 0.50's list was written: that file
#: gives them its default action (ENOSYS, "unknown") rather than denying them, so the coverage test
#: lets our profile allow them where Docker's does.
NEWER_THAN_HOST = set(
    "quotactl_fd futex_waitv set_mempolicy_home_node cachestat fchmodat2 map_shadow_stack futex_wake futex_wait "
    "futex_requeue statmount listmount lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal uretprobe "
    "setxattrat getxattrat listxattrat removexattrat".split()
)
RUNC_KEYS = {"defaultAction", "defaultErrnoRet", "architectures", "listenerPath", "listenerMetadata", "syscalls"}

needs_host_profile = pytest.mark.skipif(
    not os.access(HOST_PROFILE, os.R_OK), reason=f"no containers-common profile at {HOST_PROFILE}"
)


def allowed(oci: dict) -> tuple[set[str], set[str]]:
    """(names allowed whatever the arguments, names allowed only for some arguments)."""
    plain: set[str] = set()
    checked: set[str] = set()
    for rule in oci["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            (checked if rule.get("args") else plain).update(rule["names"])
    return plain, checked


def rules_for(oci: dict, name: str) -> list[dict]:
    return [rule for rule in oci["syscalls"] if name in rule["names"]]


def ours(caps=DEFAULT_CAPS, arch="x86_64", kernel=(6, 1)) -> dict:
    return to_oci(load_profile(PACKAGED_PROFILE), capabilities=caps, arch=arch, kernel=kernel)


# --- the packaged profile ------------------------------------------------------------


def test_packaged_profile_loads():
    profile = load_profile(PACKAGED_PROFILE)
    assert (profile["defaultAction"], profile["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    assert PACKAGED_PROFILE.endswith(os.path.join("overlayctl", "runtime", "data", "seccomp.json"))


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_default_caps_deny_the_dangerous_calls(arch):
    oci = ours(arch=arch)
    plain, checked = allowed(oci)
    assert not plain & set(DENIED)
    assert checked == {"clone", "personality", "socket"}
    assert "chroot" in plain  # CAP_SYS_CHROOT is a default capability, as in Docker


def test_clone_only_without_namespace_flags():
    (rule,) = rules_for(ours(), "clone")
    assert rule["args"] == [{"index": 0, "value": CLONE_NEW_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    assert rules_for(ours(arch="s390x"), "clone")[0]["args"][0]["index"] == 1  # s390 swaps the first two


def test_clone3_says_enosys_so_libc_falls_back_to_clone():
    assert rules_for(ours(), "clone3") == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]


def test_personality_only_safe_values():
    values = {rule["args"][0]["value"] for rule in rules_for(ours(), "personality")}
    assert values == {0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF}


def test_socket_without_af_alg_and_af_vsock():
    conditions = {(r["args"][0]["op"], r["args"][0]["value"]) for r in rules_for(ours(), "socket")}
    assert conditions == {("SCMP_CMP_LT", 38), ("SCMP_CMP_EQ", 39), ("SCMP_CMP_GT", 40)}


def test_sys_admin_reenables_mounts_and_namespaces():
    plain, _ = allowed(ours(DEFAULT_CAPS + ["CAP_SYS_ADMIN"]))
    assert {"mount", "umount2", "unshare", "setns", "clone", "clone3", "sethostname", "fsopen"} <= plain
    assert not rules_for(ours(DEFAULT_CAPS + ["CAP_SYS_ADMIN"]), "clone3")[0].get("errnoRet")


@pytest.mark.parametrize(
    "cap, name",
    [
        ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
        ("CAP_SYS_BOOT", "reboot"),
        ("CAP_SYS_MODULE", "finit_module"),
        ("CAP_SYS_PACCT", "acct"),
        ("CAP_SYS_PTRACE", "kcmp"),
        ("CAP_SYS_RAWIO", "iopl"),
        ("CAP_SYS_TIME", "clock_settime"),
        ("CAP_SYS_TTY_CONFIG", "vhangup"),
        ("CAP_SYS_NICE", "mbind"),
        ("CAP_SYSLOG", "syslog"),
        ("CAP_BPF", "bpf"),
        ("CAP_PERFMON", "perf_event_open"),
    ],
    ids=lambda v: v.lower(),
)
def test_capability_gates(cap, name):
    assert name not in allowed(ours())[0]
    assert name in allowed(ours(DEFAULT_CAPS + [cap]))[0]


@pytest.mark.parametrize(
    "kernel, caps, expected",
    [((4, 4), DEFAULT_CAPS, False), ((4, 8), DEFAULT_CAPS, True), ((4, 4), DEFAULT_CAPS + ["CAP_SYS_PTRACE"], True)],
    ids=["4.4", "4.8", "4.4-with-sys-ptrace"],
)
def test_ptrace_from_kernel_4_8(kernel, caps, expected):
    assert ("ptrace" in allowed(ours(caps, kernel=kernel))[0]) is expected


@pytest.mark.parametrize(
    "arch, architectures, present, absent",
    [
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], {"arch_prctl", "modify_ldt"}, {"set_tls"}),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], {"set_tls", "cacheflush"}, {"arch_prctl"}),
        ("riscv64", None, {"riscv_flush_icache"}, {"arch_prctl", "set_tls"}),
    ],
    ids=["x86_64", "aarch64", "riscv64-not-in-archmap"],
)
def test_architectures(arch, architectures, present, absent):
    oci = ours(arch=arch)
    assert oci.get("architectures") == architectures
    plain, _ = allowed(oci)
    assert present <= plain and not absent & plain


def test_gated_names_are_not_also_allowed_to_everyone():
    profile = load_profile(PACKAGED_PROFILE)
    everyone = {
        name
        for entry in profile["syscalls"]
        if entry["action"] == "SCMP_ACT_ALLOW" and not ({"args", "includes", "excludes"} & entry.keys())
        for name in entry["names"]
    }
    gated = {name for entry in profile["syscalls"] if "caps" in entry.get("includes", {}) for name in entry["names"]}
    assert not everyone & gated


# --- evaluation rules, on small profiles ---------------------------------------------


def rule(names="x", **fields):
    return {"names": names.split(), "action": "SCMP_ACT_ALLOW", **fields}


@pytest.mark.parametrize(
    "entry, applies",
    [
        (rule(includes={"caps": ["CAP_A", "CAP_B"]}), True),
        (rule(includes={"caps": ["CAP_A", "CAP_C"]}), False),
        (rule(excludes={"caps": ["CAP_C", "CAP_B"]}), False),
        (rule(excludes={"caps": ["CAP_C"]}), True),
        (rule(includes={"arches": ["arm64", "amd64"]}), True),
        (rule(includes={"arches": ["arm64"]}), False),
        (rule(includes={"arches": ["x86_64"]}), False),
        (rule(excludes={"arches": ["amd64"]}), False),
        (rule(includes={"minKernel": "5.10"}), True),
        (rule(includes={"minKernel": "5.11"}), False),
        (rule(includes={"minKernel": "4.19"}), True),
        (rule(excludes={"minKernel": "5.10"}), False),
        (rule(excludes={"minKernel": "6.0"}), True),
        (rule(includes={"caps": ["CAP_A"], "minKernel": "6.0"}, excludes={"arches": ["s390x"]}), False),
        (rule(includes={}, excludes={}), True),
        (rule(includes=None, excludes=None), True),
    ],
    ids=[
        "includes-all-caps",
        "includes-one-cap-missing",
        "excludes-any-cap",
        "excludes-cap-absent",
        "includes-arch",
        "includes-other-arch",
        "arches-use-docker-names",
        "excludes-arch",
        "min-kernel-equal",
        "min-kernel-above",
        "min-kernel-compares-numbers",
        "excludes-min-kernel-reached",
        "excludes-min-kernel-not-reached",
        "every-include-must-hold",
        "empty-conditions",
        "null-conditions",
    ],
)
def test_conditions(entry, applies):
    oci = to_oci(
        {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [entry]},
        capabilities=["CAP_A", "CAP_B"],
        arch="x86_64",
        kernel=(5, 10),
    )
    assert (oci["syscalls"] == [{"names": ["x"], "action": "SCMP_ACT_ALLOW"}]) is applies


def test_capability_names_with_or_without_prefix():
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule(includes={"caps": ["CAP_SYS_ADMIN"]})]}
    for caps in (["CAP_SYS_ADMIN"], ["SYS_ADMIN"], ["sys_admin"]):
        assert to_oci(profile, capabilities=caps, arch="x86_64")["syscalls"]


def test_conversion_keeps_what_runc_reads():
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrno": "ENOSYS",
        "defaultErrnoRet": 1,
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "archMap": [{"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": None}],
        "syscalls": [
            {"name": "a", "action": "SCMP_ACT_ERRNO", "errno": "EPERM", "errnoRet": 22, "comment": "c"},
            {"names": ["b"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": []},
            {"names": ["c"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 2, "op": "SCMP_CMP_GE"}]},
            {"names": [], "action": "SCMP_ACT_ALLOW"},
        ],
    }
    assert to_oci(profile, capabilities=[], arch="aarch64") == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["a"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["b"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {
                "names": ["c"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 1, "value": 2, "valueTwo": 0, "op": "SCMP_CMP_GE"}],
            },
        ],
    }


def test_oci_profile_passes_through():
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["reboot"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    assert to_oci(profile, capabilities=[], arch="aarch64") == profile


# --- the host's containers-common profile ------------------------------------------


@needs_host_profile
def test_host_profile_converts():
    oci = to_oci(load_profile(HOST_PROFILE), capabilities=DEFAULT_CAPS, arch="x86_64", kernel=(6, 1))
    assert set(oci) <= RUNC_KEYS
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    for converted in oci["syscalls"]:
        assert set(converted) <= {"names", "action", "errnoRet", "args"}
        assert isinstance(converted.get("errnoRet", 0), int)
    assert not {"kexec_load", "init_module", "open_by_handle_at"} & allowed(oci)[0]


@needs_host_profile
@pytest.mark.parametrize(
    "caps", [DEFAULT_CAPS, DEFAULT_CAPS + ["CAP_SYS_ADMIN"], ALL_CAPS], ids=["default", "sys-admin", "all"]
)
def test_ours_is_at_least_as_strict_as_the_host_profile(caps):
    host_profile = load_profile(HOST_PROFILE)
    known = {name for entry in host_profile["syscalls"] for name in entry.get("names") or [entry.get("name")]}
    host_plain, host_checked = allowed(to_oci(host_profile, capabilities=caps, arch="x86_64", kernel=(6, 1)))
    our_plain, our_checked = allowed(ours(caps))
    assert (our_plain | our_checked) - known <= NEWER_THAN_HOST
    assert not (our_plain - host_plain) & known, "allowed for any arguments by us, not by the host's profile"
    assert not ((our_plain | our_checked) - (host_plain | host_checked)) & known


# --- defaults, options and bad files --------------------------------------------------


def test_the_default_is_ours_even_beside_a_host_profile():
    """containers-common's profile is looser than Docker's default: it is used only when named."""
    assert seccomp.default_profile_path() == PACKAGED_PROFILE


def test_resolve(tmp_path):
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps({"defaultAction": "SCMP_ACT_LOG"}))
    caps = dict(capabilities=DEFAULT_CAPS, arch="x86_64", kernel=(6, 1))
    assert resolve(None, privileged=False, **caps) == resolve("default", privileged=True, **caps) == ours()
    assert resolve("unconfined", privileged=False, **caps) is None
    assert resolve(None, privileged=True, **caps) is None
    assert resolve(str(custom), privileged=True, **caps) == {"defaultAction": "SCMP_ACT_LOG", "syscalls": []}
    with pytest.raises(InvalidArgument, match="empty seccomp profile"):
        resolve("", privileged=False, **caps)


@pytest.mark.parametrize(
    "text, problem",
    [
        (None, "cannot read it: No such file or directory"),
        ('{\n  "defaultAction": "SCMP_ACT_ERRNO",\n  "syscalls": [,]\n}', r"not valid JSON \(line 3"),
        ("[]", "not a JSON object"),
        ("{}", "defaultAction: missing"),
        ('{"defaultAction": "SCMP_ACT_DENY"}', "defaultAction: unknown action 'SCMP_ACT_DENY'"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}', "defaultErrnoRet: not an integer"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {}}', "syscalls: not a list"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}', r"syscalls\[0\]: no"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]}',
            "both 'name' and 'names'",
        ),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"]}]}', r"syscalls\[0\]\.action: missing"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", '
            '"errno": "EWHAT"}]}',
            "unknown errno 'EWHAT'",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", '
            '"args": [{"index": 0, "value": 1, "op": "SCMP_CMP_IN"}]}]}',
            r"args\[0\]\.op: unknown operator 'SCMP_CMP_IN'",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", '
            '"args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
            r"args\[0\]\.index: not an integer from 0 to 5",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", '
            '"includes": {"minKernel": "4"}}]}',
            "includes.minKernel: '4' is not of the form",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], '
            '"archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}',
            "both 'architectures' and 'archMap'",
        ),
    ],
    ids=[
        "missing",
        "bad-json",
        "not-object",
        "no-default-action",
        "unknown-action",
        "negative-errno",
        "syscalls-not-list",
        "no-names",
        "name-and-names",
        "no-action",
        "unknown-errno-name",
        "unknown-operator",
        "argument-index",
        "min-kernel-form",
        "architectures-and-archmap",
    ],
)
def test_bad_profiles(tmp_path, text, problem):
    path = tmp_path / "profile.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(InvalidArgument, match=problem) as info:
        load_profile(str(path))
    assert info.value.message.startswith(f"seccomp profile {path}: ")
    assert "\n" not in info.value.message
