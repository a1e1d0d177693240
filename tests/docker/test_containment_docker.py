"""Containment against Docker as the oracle: the probe table in ``docker run`` and ``overlayctl run``, flag for flag.

The same busybox root filesystem is in both (``docker_busybox``, ``busybox``);
the same ``table_script()`` runs in one container of each per set of flags.
Docker's default profile is the target: wherever Docker blocks a probe,
overlayctl must block it too.  Docker's answers are also checked against the
probe table's ``needs`` (testkit/probes.py), which were found this way.
``pytest -s`` shows the tables side by side.
"""

from __future__ import annotations

import subprocess

import pytest

from testkit.dockerd import DockerUnavailable
from testkit.probes import (
    ALLOWED,
    BLOCKED,
    PROBES,
    all_caps_flags,
    available_on_host,
    caller_leaks,
    expected,
    parse_results,
    table_script,
)

from ..cli import store_cmd

pytestmark = [pytest.mark.root, pytest.mark.docker]

# One container of each engine per entry: docker run --network none FLAGS / overlayctl run FLAGS (network none).
FLAG_SETS = {
    "default": [],
    "cap-add-SYS_ADMIN": ["--cap-add", "SYS_ADMIN"],
    "cap-add-NET_ADMIN": ["--cap-add", "NET_ADMIN"],
    "cap-add-SYSLOG": ["--cap-add", "SYSLOG"],
    "cap-add-SYS_NICE": ["--cap-add", "SYS_NICE"],
    "seccomp-unconfined": ["--security-opt", "seccomp=unconfined"],
    "cap-add-SYS_ADMIN-seccomp-unconfined": ["--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined"],
    # Every capability this host can give, and no seccomp filter: --privileged but for its paths and devices.
    "all-caps-unconfined": [*all_caps_flags(), "--security-opt", "seccomp=unconfined"],
    "privileged": ["--privileged"],
}


def overlayctl_run(store, flags: list[str], script: str, **kwargs) -> subprocess.CompletedProcess:
    """``overlayctl run --rm FLAGS busybox -- sh -c SCRIPT`` as a real process; it must succeed."""
    cmd = store_cmd(store, "run", "--rm", *flags, "busybox", "--", "sh", "-c", script)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, **kwargs)
    assert done.returncode == 0, f"overlayctl run {' '.join(flags)} failed ({done.returncode}): {done.stderr}"
    return done


def checked(output: str, where: str) -> dict[str, str]:
    """The table's results, after checking it ran to its end with one ALLOWED/BLOCKED per probe."""
    results = parse_results(output)
    assert list(results) == [p.name for p in PROBES], f"the table did not run to its end in {where}:\n{output}"
    assert set(results.values()) <= {ALLOWED, BLOCKED}, f"{where}: {results}"
    return results


@pytest.fixture(scope="module")
def docker_tables(docker, docker_busybox, tmp_path_factory) -> dict[str, dict[str, str] | str]:
    """The table in Docker for every FLAG_SETS entry: its results, or why Docker refused to run it."""
    tables: dict[str, dict[str, str] | str] = {}
    for key, flags in FLAG_SETS.items():
        argv = ["run", "--rm", "--network", "none", *flags, docker_busybox.ref, "sh", "-c", table_script()]
        try:
            with caller_leaks(tmp_path_factory.getbasetemp()) as leaks:
                done = docker.call(*argv, **leaks)
        except DockerUnavailable as exc:
            tables[key] = str(exc)
        else:
            tables[key] = checked(done.stdout, f"docker run {' '.join(flags)}")
    return tables


def docker_table(docker_tables, key: str) -> dict[str, str]:
    table = docker_tables[key]
    if isinstance(table, str):
        pytest.skip(f"Docker cannot run {' '.join(FLAG_SETS[key])} here: {table}")
    return table


@pytest.mark.parametrize("key", FLAG_SETS)
def test_docker_agrees_with_the_probe_table(docker_tables, key):
    """What each probe's ``needs`` says is what Docker does (so the table measures Docker's profile)."""
    table = docker_table(docker_tables, key)
    flags = FLAG_SETS[key]
    wrong = [
        f"{p.name}: table says {want}, Docker {table[p.name]} (needs {p.needs})"
        for p in PROBES
        if table[p.name] != (want := expected(p, flags, available=available_on_host(p)))
    ]
    assert not wrong, f"docker run {' '.join(flags)}:\n" + "\n".join(wrong)


def side_by_side(title: str, docker: dict[str, str] | None, ours: dict[str, str]) -> str:
    """The table as printed for the lead: probe, docker, overlayctl, and where they differ."""
    lines = [title, f"  {'probe':<24}{'docker':<10}overlayctl"]
    for probe in PROBES:
        theirs = docker[probe.name] if docker else "-"
        mark = ""
        if docker and theirs != ours[probe.name]:
            mark = "<- weaker than Docker" if theirs == BLOCKED else "<- stricter than Docker"
        lines.append(f"  {probe.name:<24}{theirs:<10}{ours[probe.name]:<12}{mark}".rstrip())
    return "\n".join(lines)


@pytest.mark.parametrize("key", FLAG_SETS)
def test_overlayctl_blocks_whatever_docker_blocks(busybox, docker_tables, key, tmp_path):
    """Each probe Docker blocks under these flags, overlayctl blocks too (it may block more); prints both tables."""
    flags = FLAG_SETS[key]
    with caller_leaks(tmp_path) as leaks:
        done = overlayctl_run(busybox, flags, table_script(), **leaks)
    ours = checked(done.stdout, f"overlayctl run {' '.join(flags)}")
    theirs = docker_tables[key] if isinstance(docker_tables[key], dict) else None
    print("\n" + side_by_side(f"run {' '.join(flags) or '(default)'}", theirs, ours))
    theirs = docker_table(docker_tables, key)
    weaker = [
        f"{name}: Docker BLOCKED, overlayctl {ours[name]}" for name in theirs if ours[name] != theirs[name] == BLOCKED
    ]
    assert not weaker, f"overlayctl run {' '.join(flags)} allows what Docker blocks:\n" + "\n".join(weaker)


STATUS = "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status"
STATUS_FLAGS = {
    "default": [],
    "user-1000": ["--user", "1000"],
    "cap-drop-ALL": ["--cap-drop", "ALL"],
    "cap-add-CAP_SYS_ADMIN-cap-drop-chown": ["--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "chown"],
    "no-new-privileges": ["--security-opt", "no-new-privileges"],
    "seccomp-unconfined": ["--security-opt", "seccomp=unconfined"],
}


@pytest.mark.parametrize("key", STATUS_FLAGS)
def test_capability_sets_and_flags_are_dockers(busybox, docker, docker_busybox, key):
    """The Cap*, NoNewPrivs and Seccomp lines of /proc/self/status, the same in both engines."""
    flags = STATUS_FLAGS[key]
    theirs = docker.call("run", "--rm", "--network", "none", *flags, docker_busybox.ref, "sh", "-c", STATUS).stdout
    assert overlayctl_run(busybox, flags, STATUS).stdout == theirs
