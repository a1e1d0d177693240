"""Containment of ``overlayctl run``: the probe table (testkit/probes.py) and the security flags, Docker's meaning.

Each table test runs every probe in one container (``sh -c`` of
``table_script()``) and compares each line with ``expected()``: BLOCKED by
default, ALLOWED where the run's flags legitimately allow it.  The caller
leaves a directory fd inheritable and a secret in its environment for every
run, so the fd and environ probes check that nothing of the caller gets in.
"""

from __future__ import annotations

import os

import pytest

from testkit.probes import (
    ALLOWED,
    BLOCKED,
    CAPABILITIES,
    DOCKER_DEFAULT_CAP_MASK,
    PROBES,
    SECRET_ENV,
    all_caps_flags,
    available_on_host,
    caller_leaks,
    cap_names,
    expected,
    missing_from_bounding_set,
    parse_results,
    table_script,
)

from . import test_run

ctl = test_run.ctl  # the fixture: overlayctl as a real process against a store holding busybox

pytestmark = pytest.mark.root


MISSING_CAPS = missing_from_bounding_set()

# One container each: the flags, and the table expected() derives from them.
TABLE_RUNS = {
    "default": [],
    "cap-add-SYS_ADMIN": ["--cap-add", "SYS_ADMIN"],
    "cap-add-NET_ADMIN": ["--cap-add", "NET_ADMIN"],
    "cap-add-SYSLOG": ["--cap-add", "CAP_SYSLOG"],
    "cap-add-SYS_NICE": ["--cap-add", "SYS_NICE"],
    "seccomp-unconfined": ["--security-opt", "seccomp=unconfined"],
    "cap-add-SYS_ADMIN-cap-drop-ALL": ["--cap-drop", "ALL", "--cap-add", "SYS_ADMIN"],
    # Every capability this host can give, and no seccomp filter: --privileged but for its paths and devices.
    "all-caps-unconfined": [*all_caps_flags(), "--security-opt", "seccomp=unconfined"],
    "privileged": ["--privileged"],
}


def run_table(
    ctl,
    tmp_path,
    *flags: str,
    verb: tuple[str, ...] = ("run", "--rm"),
    image: str = "busybox",
    prefix: str = "",
    argv0: tuple[str, ...] = (),
) -> dict[str, str]:
    """Every probe in one container (``overlayctl run --rm FLAGS busybox -- sh -c SCRIPT``); name -> result."""
    script = prefix + table_script()
    with caller_leaks(tmp_path) as leaks:
        done = ctl(*verb, *flags, image, "--", "sh", "-c", script, *argv0, check=False, **leaks)
    assert done.returncode == 0, f"overlayctl {verb[0]} {' '.join(flags)} failed ({done.returncode}): {done.stderr}"
    results = parse_results(done.stdout)
    assert list(results) == [p.name for p in PROBES], f"the table did not run to its end:\n{done.stdout}{done.stderr}"
    odd = {name: r for name, r in results.items() if r not in (ALLOWED, BLOCKED)}
    assert not odd, f"probes printed neither ALLOWED nor BLOCKED: {odd}"
    return results


def mismatches(results: dict[str, str], flags: list[str]) -> list[str]:
    """'probe: expected X, got Y' for each probe whose result is not what the flags allow."""
    wrong = []
    for probe in PROBES:
        want = expected(probe, flags, available=available_on_host(probe))
        if results[probe.name] != want:
            wrong.append(f"{probe.name}: expected {want}, got {results[probe.name]} (needs {probe.needs})")
    return wrong


@pytest.mark.parametrize("flags", TABLE_RUNS.values(), ids=TABLE_RUNS.keys())
def test_probe_table(ctl, tmp_path, flags):
    """BLOCKED by default; ALLOWED exactly where --cap-add, --security-opt or --privileged allow it in Docker."""
    if flags == ["--privileged"] and MISSING_CAPS:
        done = ctl("run", "--rm", *flags, "busybox", "--", "true", check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["(no message)"]
            pytest.skip(f"this process's bounding set lacks {', '.join(MISSING_CAPS)}: {lines[0]}")
    results = run_table(ctl, tmp_path, *flags)
    wrong = mismatches(results, flags)
    assert not wrong, f"overlayctl run {' '.join(flags)}:\n" + "\n".join(wrong)


class TestUsernsAuto:
    """--userns auto: root in the container is an unprivileged user of the host, and as contained as ever."""

    @pytest.fixture
    def busybox(self, busybox_searchable):
        """The store of ``ctl``: one under a directory others may search."""
        return busybox_searchable

    def test_probe_table(self, ctl, tmp_path):
        """Every probe BLOCKED, as in a default container."""
        results = run_table(ctl, tmp_path, "--userns", "auto")
        wrong = mismatches(results, [])
        assert not wrong, "overlayctl run --userns auto:\n" + "\n".join(wrong)

    def test_root_is_not_the_hosts(self, ctl):
        uid_map = ctl("run", "--rm", "--userns", "auto", "busybox", "--", "cat", "/proc/self/uid_map").stdout.split()
        assert uid_map[0] == "0" and uid_map[1] != "0", uid_map  # container root is mapped to a host uid not 0


def test_the_never_allowed_probes_can_say_allowed(ctl, tmp_path):
    """The probes nothing allows do see a breach when one is put there on purpose.

    The host's network namespace (--network host), a directory fd in PID 1, the
    runtime's name in PID 1's command line ($0), the secret in the environment (-e).
    """
    results = run_table(
        ctl,
        tmp_path,
        "--network",
        "host",
        "-e",
        f"{SECRET_ENV}=given",
        prefix="exec 9</\n",  # a directory fd in PID 1
        argv0=("overlayctl",),  # sh -c SCRIPT overlayctl: $0 in PID 1's command line
    )
    never = ("host_namespaces", "inherited_fds", "pid1_cmdline", "caller_environ")
    assert {name: results[name] for name in never} == dict.fromkeys(never, ALLOWED)


STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")


def status_of(text: str) -> dict[str, int]:
    """The STATUS_FIELDS lines of /proc/PID/status, as numbers (Cap* are hex)."""
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            found[key] = int(value.strip(), 16 if key.startswith("Cap") else 10)
    return found


STATUS = "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status"
DEFAULT = DOCKER_DEFAULT_CAP_MASK
ADMIN = 1 << CAPABILITIES.index("SYS_ADMIN")
CHOWN = 1 << CAPABILITIES.index("CHOWN")

# Docker 20.10's answers: the inheritable and ambient sets are always empty,
# a non-root user keeps the bounding set but has no permitted or effective capability.
STATUS_RUNS = {
    "default": ([], dict(CapPrm=DEFAULT, CapEff=DEFAULT, CapBnd=DEFAULT, NoNewPrivs=0, Seccomp=2)),
    "cap-drop-ALL": (["--cap-drop", "ALL"], dict(CapPrm=0, CapEff=0, CapBnd=0, NoNewPrivs=0, Seccomp=2)),
    "user-1000": (["--user", "1000"], dict(CapPrm=0, CapEff=0, CapBnd=DEFAULT, NoNewPrivs=0, Seccomp=2)),
    "cap-add-CAP_SYS_ADMIN-cap-drop-chown": (
        ["--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "chown"],
        dict(CapPrm=DEFAULT + ADMIN - CHOWN, CapEff=DEFAULT + ADMIN - CHOWN, CapBnd=DEFAULT + ADMIN - CHOWN),
    ),
    "no-new-privileges": (["--security-opt", "no-new-privileges"], dict(CapEff=DEFAULT, NoNewPrivs=1, Seccomp=2)),
    "seccomp-unconfined": (["--security-opt", "seccomp=unconfined"], dict(CapEff=DEFAULT, Seccomp=0)),
}


def described(status: dict[str, int]) -> dict[str, str]:
    """Cap masks as names, for a readable assertion message."""
    return {k: (",".join(cap_names(v)) or "-") if k.startswith("Cap") else str(v) for k, v in status.items()}


@pytest.mark.parametrize("flags, want", STATUS_RUNS.values(), ids=STATUS_RUNS.keys())
def test_capability_sets_and_flags(ctl, flags, want):
    """The Cap*, NoNewPrivs and Seccomp lines of /proc/self/status are Docker's for the same flags."""
    status = status_of(ctl("run", "--rm", *flags, "busybox", "--", "sh", "-c", STATUS).stdout)
    want = {"CapInh": 0, "CapAmb": 0, **want}
    got = {key: status.get(key) for key in want}
    assert described(got) == described(want)


def test_exec_gets_the_containers_profile(ctl, tmp_path):
    """A process exec'd into a running default container is as contained as its first process."""
    ctl("run", "-d", "--name", "probed", "busybox", "--", "sleep", "60")
    try:
        first = status_of(ctl("exec", "probed", "--", "sh", "-c", "cat /proc/1/status").stdout)
        execd = status_of(ctl("exec", "probed", "--", "sh", "-c", STATUS).stdout)
        assert execd == first
        assert execd["CapEff"] == DEFAULT and execd["Seccomp"] == 2
        results = run_table(ctl, tmp_path, verb=("exec",), image="probed")
        wrong = mismatches(results, [])
        assert not wrong, "overlayctl exec:\n" + "\n".join(wrong)
    finally:
        ctl("stop", "-t", "0", "probed", check=False)
        ctl("rm", "-f", "probed", check=False)


def test_read_only_root_with_a_writable_tmpfs(ctl):
    """--read-only: / refuses writes, a --tmpfs takes them; without it / is the writable upper."""
    script = "touch /probe && echo root=rw || echo root=ro; touch /scratch/probe && echo scratch=rw || echo scratch=ro"
    out = ctl("run", "--rm", "--read-only", "--tmpfs", "/scratch", "busybox", "--", "sh", "-c", script).stdout
    assert out.split() == ["root=ro", "scratch=rw"]
    out = ctl("run", "--rm", "busybox", "--", "sh", "-c", script.replace("/scratch", "/tmp")).stdout
    assert out.split() == ["root=rw", "scratch=rw"]


def test_a_device_appears_under_its_container_path_and_opens(ctl):
    """--device HOST:CTR makes the node at CTR and lets the device cgroup open it; without it there is none."""
    script = "stat -c '%F %t:%T' /dev/mynull && true < /dev/mynull && true >> /dev/mynull && echo opened"
    out = ctl("run", "--rm", "--device", "/dev/null:/dev/mynull", "busybox", "--", "sh", "-c", script).stdout
    assert out.splitlines() == ["character special file 1:3", "opened"]
    assert ctl("run", "--rm", "busybox", "--", "test", "-e", "/dev/mynull", check=False).returncode == 1


def test_init_is_pid_1_in_front_of_the_command(ctl):
    """--init: PID 1 is tini (or the like) and the command its child; without it, the command is PID 1."""
    script = "echo $$; grep PPid /proc/$$/status; tr '\\0' ' ' < /proc/1/cmdline"
    out = ctl("run", "--rm", "--init", "busybox", "--", "sh", "-c", script).stdout.splitlines()
    assert int(out[0]) > 1 and out[1].split() == ["PPid:", "1"]
    pid1 = out[2].split()  # e.g. /dev/init -- sh -c echo $$; ...
    assert os.path.basename(pid1[0]) in ("init", "tini", "tini-static", "docker-init", "catatonit"), pid1
    assert "sh" in pid1[1:]
    assert ctl("run", "--rm", "busybox", "--", "sh", "-c", "echo $$").stdout == "1\n"
