"""Container cgroups on this kernel: limits written, memory and pids enforced, clean removal."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from overlayctl.errors import InUse, KernelError
from overlayctl.runtime import cgroups
from overlayctl.runtime.cgroups import Cgroup, Limits

pytestmark = pytest.mark.root

MiB = 1024 * 1024
UNLIMITED_V1 = 2**62  # v1 shows "no limit" as a page-rounded LONG_MAX

# Each waits for a line on stdin, so add() happens before the workload runs.
WAIT = "import sys; sys.stdin.readline()"
ALLOCATE = WAIT + "; b = bytearray(200 * 1024 * 1024); [b.__setitem__(i, 1) for i in range(0, len(b), 4096)]"
FORK = """
import os, sys, time
sys.stdin.readline()
made = failed = 0
for _ in range(100):
    try:
        pid = os.fork()
    except BlockingIOError:  # EAGAIN: pids.max reached
        failed += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    made += 1
print(made, failed, flush=True)
sys.stdin.readline()
"""


class Harness:
    """One container id per test; every process and cgroup it makes is cleaned up."""

    def __init__(self) -> None:
        self.id = "test-" + secrets.token_hex(8)
        self.procs: list[subprocess.Popen] = []
        self.cgroups: list[Cgroup] = []

    def create(self, limits: Limits) -> Cgroup:
        cgroup = Cgroup.create(self.id, limits)
        self.cgroups.append(cgroup)
        return cgroup

    def start(self, *argv: str) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                stream.close()
        for cgroup in self.cgroups:
            cgroup.kill_all()
            cgroup.remove()


@pytest.fixture
def harness():
    h = Harness()
    try:
        yield h
    finally:
        h.cleanup()
        assert not Cgroup.exists(h.id)


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


def read(cgroup: Cgroup, controller: str, name: str) -> str:
    directory = cgroup.path if cgroup.version == 2 else cgroup.paths[controller]
    with open(os.path.join(directory, name)) as f:
        return f.read().strip()


def test_version_matches_the_host():
    expected = 2 if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else 1
    assert cgroups.version() == expected


@pytest.mark.parametrize("cpus, quota", [(0.5, 50000), (0.01, 1000), (1.0, 100000)], ids=["half", "least", "one"])
def test_create_writes_the_limits(harness, cpus, quota):
    cgroup = harness.create(Limits.parse(memory="64m", pids=20, cpus=str(cpus)))
    assert Cgroup.exists(harness.id)
    assert cgroup.path.endswith(f"/overlayctl/{harness.id}")
    if cgroup.version == 1:
        assert set(cgroup.paths) >= {"memory", "pids", "cpu"}
        assert read(cgroup, "memory", "memory.limit_in_bytes") == str(64 * MiB)
        if os.path.exists(f"{cgroup.path}/memory.memsw.limit_in_bytes"):
            assert read(cgroup, "memory", "memory.memsw.limit_in_bytes") == str(64 * MiB)
        assert read(cgroup, "cpu", "cpu.cfs_period_us") == "100000"
        assert read(cgroup, "cpu", "cpu.cfs_quota_us") == str(quota)
    else:
        assert read(cgroup, "memory", "memory.max") == str(64 * MiB)
        if os.path.exists(f"{cgroup.path}/memory.swap.max"):
            assert read(cgroup, "memory", "memory.swap.max") == "0"
        assert read(cgroup, "cpu", "cpu.max") == f"{quota} 100000"
    assert read(cgroup, "pids", "pids.max") == "20"


def test_create_again_rewrites_the_limits(harness):
    """Raising and lowering both work: v1 needs memsw raised first and lowered last."""
    for memory in ("32m", "64m", "16m"):
        cgroup = harness.create(Limits.parse(memory=memory, pids=10, cpus="0.5"))
        expected = str(cgroups.parse_memory(memory))
        assert read(cgroup, "memory", "memory.limit_in_bytes" if cgroup.version == 1 else "memory.max") == expected
    cgroup = harness.create(Limits())  # no limits: everything back to unlimited
    assert read(cgroup, "pids", "pids.max") == "max"
    if cgroup.version == 1:
        assert int(read(cgroup, "memory", "memory.limit_in_bytes")) > UNLIMITED_V1
        assert read(cgroup, "cpu", "cpu.cfs_quota_us") == "-1"
    else:
        assert read(cgroup, "memory", "memory.max") == "max"
        assert read(cgroup, "cpu", "cpu.max") == "max 100000"


def test_add_moves_the_process_into_every_controller(harness):
    cgroup = harness.create(Limits(pids=50))
    proc = harness.start(sys.executable, "-c", WAIT)
    cgroup.add(proc.pid)
    assert cgroup.pids() == [proc.pid]
    with open(f"/proc/{proc.pid}/cgroup") as f:
        lines = f.read().splitlines()
    inside = {line.split(":")[1] for line in lines if line.endswith(f"/overlayctl/{harness.id}")}
    assert inside == ({""} if cgroup.version == 2 else set(cgroup.paths))


def test_memory_limit_kills_the_process_and_reports_oom(harness):
    cgroup = harness.create(Limits.parse(memory="32m", pids=None, cpus=None))
    assert not cgroup.oom_killed()
    proc = harness.start(sys.executable, "-c", ALLOCATE)
    cgroup.add(proc.pid)
    go(proc)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert cgroup.oom_killed()
    peak = cgroup.memory_peak()
    assert peak is None or peak <= 32 * MiB


def test_pids_limit_stops_forks_then_kill_all_and_remove(harness):
    cgroup = harness.create(Limits(pids=20))
    proc = harness.start(sys.executable, "-c", FORK)
    cgroup.add(proc.pid)
    go(proc)
    made, failed = map(int, proc.stdout.readline().split())
    assert made == 19 and failed == 81  # the forker itself is the 20th
    assert len(cgroup.pids()) == 20
    assert int(read(cgroup, "pids", "pids.current")) <= 20
    cgroup.kill_all()
    assert cgroup.pids() == []
    if "freezer" in cgroup.paths:
        assert read(cgroup, "freezer", "freezer.state") == "THAWED"
    assert proc.wait(timeout=5) == -signal.SIGKILL
    cgroup.remove()
    assert not any(os.path.exists(path) for path in cgroup.paths.values())
    assert all(os.path.isdir(os.path.dirname(path)) for path in cgroup.paths.values())  # parent stays


def test_kill_all_catches_a_fork_loop(harness):
    """Processes forking while we kill them cannot escape (the freeze stops forks)."""
    cgroup = harness.create(Limits(pids=64))
    proc = harness.start("sh", "-c", "read x; while :; do sleep 5 & done")
    cgroup.add(proc.pid)
    go(proc)
    deadline = time.monotonic() + 5
    while len(cgroup.pids()) < 10 and time.monotonic() < deadline:
        time.sleep(0.001)
    cgroup.kill_all()
    assert cgroup.pids() == []
    cgroup.remove()
    assert not Cgroup.exists(harness.id)


def test_kill_all_with_another_signal(harness):
    cgroup = harness.create(Limits())
    proc = harness.start("sleep", "30")
    cgroup.add(proc.pid)
    cgroup.kill_all(signal.SIGTERM)
    assert proc.wait(timeout=5) == -signal.SIGTERM


def test_remove_before_the_parent_reaps(harness):
    """A killed but unreaped child (a zombie) does not keep the cgroup busy."""
    cgroup = harness.create(Limits())
    proc = harness.start("sleep", "30")
    cgroup.add(proc.pid)
    cgroup.kill_all()
    cgroup.remove()
    assert not Cgroup.exists(harness.id)
    assert proc.wait(timeout=5) == -signal.SIGKILL


def test_remove_refuses_while_a_process_lives(harness):
    cgroup = harness.create(Limits())
    proc = harness.start("sleep", "30")
    cgroup.add(proc.pid)
    with pytest.raises(InUse, match="still holds processes"):
        cgroup.remove(timeout=0.1)
    assert Cgroup.exists(harness.id)


def test_json_round_trip_finds_the_cgroup_again(harness):
    cgroup = harness.create(Limits.parse(memory="64m", pids=5, cpus="0.5"))
    again = Cgroup.from_json(cgroup.to_json())
    assert again == cgroup
    assert again.to_json()["version"] == cgroups.version()
    assert again.to_json()["limits"] == {"memory": 64 * MiB, "pids": 5, "cpus": 0.5}
    again.remove()
    assert not Cgroup.exists(harness.id)
    again.remove()  # absent dirs are fine
    cgroup.kill_all()  # and so is killing in a removed cgroup


def test_missing_controller_is_one_line_with_a_hint(harness, monkeypatch):
    if cgroups.version() == 2:
        monkeypatch.setattr(cgroups, "_read", lambda path: "memory cpu\n")  # as if pids were absent
    else:
        mounts = {k: v for k, v in cgroups._v1_mounts().items() if k != "pids"}
        monkeypatch.setattr(cgroups, "_v1_mounts", lambda: mounts)
    with pytest.raises(KernelError) as info:
        harness.create(Limits(pids=10))
    assert "pids cgroup controller" in info.value.message and info.value.hint
    assert "\n" not in info.value.format()


def test_v2_code_on_the_hybrid_unified_tree(harness, monkeypatch):
    """The cgroup v2 paths, run on the controller-less v2 tree of a hybrid host."""
    unified = "/sys/fs/cgroup/unified"
    if cgroups.version() == 2:
        pytest.skip("pure cgroup v2 host: the other tests run the v2 code")
    if not os.path.exists(f"{unified}/cgroup.controllers"):
        pytest.skip(f"no cgroup v2 tree at {unified}")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", unified)
    monkeypatch.setattr(cgroups, "version", lambda: 2)
    cgroup = harness.create(Limits())  # no controllers here, so no limits
    assert cgroup.paths == {"unified": f"{unified}/overlayctl/{harness.id}"} and Cgroup.exists(harness.id)
    proc = harness.start("sleep", "30")
    cgroup.add(proc.pid)
    assert cgroup.pids() == [proc.pid] and not cgroup.oom_killed()
    cgroup.kill_all(signal.SIGTERM)  # by freeze, signal, thaw
    assert proc.wait(timeout=5) == -signal.SIGTERM
    assert read(cgroup, "unified", "cgroup.freeze") == "0"
    proc = harness.start("sleep", "30")
    cgroup.add(proc.pid)
    cgroup.kill_all()  # by cgroup.kill
    assert cgroup.pids() == [] and proc.wait(timeout=5) == -signal.SIGKILL
    cgroup.remove()
    assert not Cgroup.exists(harness.id)
    with pytest.raises(KernelError, match="pids cgroup controller is not available"):
        harness.create(Limits(pids=10))
