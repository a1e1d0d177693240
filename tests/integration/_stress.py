"""Shared helpers of the stress tests (crash, concurrency, disk full, damage).

Every overlayctl command runs as its own process through the real CLI, in a
new session (``start_new_session``), so that a test can SIGKILL it and
everything it started with one ``killpg``.  Every process gets a marker in
its environment, so that whatever survives is found in ``/proc`` afterwards.

Knobs (environment variables; defaults keep the whole set at a few minutes
on a 2-core machine):

    OVERLAYCTL_STRESS_SEED          seed of every random choice (printed by each test)
    OVERLAYCTL_STRESS_KILLS         SIGKILLs of test_crash.py, over all its verbs (210)
    OVERLAYCTL_STRESS_LANES         stores test_crash.py kills side by side (one per CPU, 2 to 4)
    OVERLAYCTL_STRESS_VERIFY_EVERY  test_crash.py rounds between full verifications (10)
    OVERLAYCTL_STRESS_SECONDS       duration of the mixed workload of test_concurrency.py (60)
    OVERLAYCTL_STRESS_WORKERS       concurrent workers of test_concurrency.py (8)
    OVERLAYCTL_STRESS_CMD_TIMEOUT   seconds one command may take before it counts as hung (30)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..cli import REPO, overlayctl_cmd

MARK_VAR = "OVERLAYCTL_STRESS_MARK"


def knob(name: str, default, kind=int):
    """An integer (or kind) from the environment, else default."""
    text = os.environ.get(name, "").strip()
    return kind(text) if text else default


CMD_TIMEOUT = knob("OVERLAYCTL_STRESS_CMD_TIMEOUT", 30.0, float)


def new_seed() -> int:
    """OVERLAYCTL_STRESS_SEED, or a fresh random seed (print it: it replays the test)."""
    text = os.environ.get("OVERLAYCTL_STRESS_SEED", "").strip()
    return int(text) if text else random.SystemRandom().randrange(1 << 32)


def say(capsys, text: str) -> None:
    """Print past pytest's capture, so the line shows in 'make test' output too."""
    with capsys.disabled():
        print(f"\n{text}", flush=True)


# --- one command ---------------------------------------------------------------


@dataclass
class Result:
    """A finished (or killed, or timed out) overlayctl command."""

    args: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    killed: bool = False  # SIGKILLed by the test before it exited
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr

    @property
    def clean_error(self) -> bool:
        """Exit code 1 and exactly one line on stderr, starting with 'error:'."""
        lines = self.stderr.strip().splitlines()
        return (
            self.returncode == 1
            and not self.traceback
            and len(lines) == 1
            and lines[0].startswith("error:")
            and not self.timed_out
        )

    def json(self):
        return json.loads(self.stdout)

    def describe(self) -> str:
        state = "timed out" if self.timed_out else ("killed" if self.killed else f"exit {self.returncode}")
        out = self.stdout if len(self.stdout) < 2000 else self.stdout[:2000] + "..."
        command = f"overlayctl {' '.join(self.args)} -> {state} in {self.seconds:.2f}s"
        return f"{command}\nstdout: {out!r}\nstderr: {self.stderr}"


class Cli:
    """overlayctl --root ROOT --run-root RUN as subprocesses, each in its own session."""

    def __init__(self, root: str, run_root: str, marker: str) -> None:
        self.root = root
        self.run_root = run_root
        self.marker = marker
        self.env = {**os.environ, MARK_VAR: marker}
        self.env.pop("OVERLAYCTL_DEBUG", None)
        self.live: dict[int, subprocess.Popen] = {}

    def argv(self, *args: str) -> list[str]:
        return overlayctl_cmd(self.root, self.run_root, *args)

    def start(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            self.argv(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=self.env,
            cwd=REPO,
        )
        self.live[proc.pid] = proc
        return proc

    def _finish(self, proc, args, started, timeout, killed=False) -> Result:
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc.pid)
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # a survivor outside the group holds the pipes
                proc.kill()
                out, err = b"", b"(its output pipes were held open by a process outside its group)"
        finally:
            self.live.pop(proc.pid, None)
        return Result(
            tuple(args),
            proc.returncode,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            time.monotonic() - started,
            killed=killed and proc.returncode == -signal.SIGKILL,
            timed_out=timed_out,
        )

    def run(self, *args: str, timeout: float = CMD_TIMEOUT) -> Result:
        started = time.monotonic()
        return self._finish(self.start(*args), args, started, timeout)

    def kill_after(self, delay: float, *args: str, timeout: float = CMD_TIMEOUT) -> Result:
        """Start the command, SIGKILL its whole process group after delay seconds."""
        started = time.monotonic()
        proc = self.start(*args)
        time.sleep(max(0.0, delay - (time.monotonic() - started)))
        # The leader is not reaped yet (a zombie at worst), so its pid, which is
        # the group's id, cannot have been reused.
        kill_group(proc.pid)
        return self._finish(proc, args, started, timeout, killed=True)

    def run_parallel(self, *commands: tuple[str, ...], timeout: float = CMD_TIMEOUT) -> list[Result]:
        """Run read-only commands side by side (the machine has more than one CPU)."""
        started = time.monotonic()
        procs = [(self.start(*args), args) for args in commands]
        return [self._finish(proc, args, started, timeout) for proc, args in procs]

    def ok(self, *args: str, timeout: float = CMD_TIMEOUT) -> Result:
        """Run a command that must succeed."""
        result = self.run(*args, timeout=timeout)
        assert result.ok and not result.traceback, result.describe()
        return result

    def json(self, *args: str):
        return self.ok(*args).json()

    def kill_all(self) -> None:
        for pid, proc in list(self.live.items()):
            kill_group(pid)
            with contextlib.suppress(Exception):
                proc.communicate(timeout=10)
        self.live.clear()


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# --- what a test leaves behind -----------------------------------------------------


def _unescape(text: str) -> str:
    """Undo mountinfo's octal escapes (\\040 for a space)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def mounts_under(base: str) -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount of ours at or below base."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = _unescape(fields[4])
            fstype = fields[fields.index("-") + 1]
            if point == base or point.startswith(base.rstrip("/") + "/"):
                found.append((point, fstype))
    return found


def marked_processes(marker: str) -> list[str]:
    """Live (non-zombie) processes whose environment carries marker, as "pid cmdline"."""
    needle = f"{MARK_VAR}={marker}".encode()
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if state != b"Z":
            found.append(f"{name} {cmdline}")
    return found


def session_processes(sids: set[int]) -> list[str]:
    """Live processes whose session is one of sids (a command started in its own session)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[3]) in sids:
            found.append(name)
    return found


def wait_no_processes(marker: str, seconds: float = 5.0) -> list[str]:
    """The marked processes still alive after waiting up to seconds for them to go."""
    deadline = time.monotonic() + seconds
    while True:
        left = marked_processes(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def cgroup_dirs(container_id: str) -> list[str]:
    """The cgroup directories of a container that exist (v2 and v1 layouts)."""
    candidates = [f"/sys/fs/cgroup/overlayctl/{container_id}"]
    with contextlib.suppress(OSError):
        for sub in os.listdir("/sys/fs/cgroup"):
            candidates.append(f"/sys/fs/cgroup/{sub}/overlayctl/{container_id}")
    return [c for c in candidates if os.path.isdir(c)]


def veth_of(container_id: str) -> str | None:
    """The host end of a container's veth pair, if it exists."""
    name = "veth" + container_id[:8]
    return name if os.path.exists(f"/sys/class/net/{name}") else None


# --- a store of one test ---------------------------------------------------------


class StressStore:
    """A store root and run root of one test, the CLI on them, and a cleanup that always works."""

    def __init__(self, base: Path, root: Path | None = None, run_root: Path | None = None) -> None:
        self.base = str(base)
        self.root = str(root or base / "root")
        self.run_root = str(run_root or base / "run")
        self.marker = uuid.uuid4().hex
        self.cli = Cli(self.root, self.run_root, self.marker)
        self.container_ids: set[str] = set()  # every container ID seen: what its cgroup/veth would be named
        self.own_mounts: set[str] = set()  # mounts the test made on purpose (a loop filesystem)

    @property
    def pin_dirs(self) -> set[str]:
        """The run root's pin directories: bind mounts of themselves, kept by design while in use."""
        return {f"{self.run_root}/ns", f"{self.run_root}/netns"}

    def note_containers(self) -> None:
        """Remember the IDs of the containers on disk now (they name cgroups and veths)."""
        with contextlib.suppress(OSError):
            self.container_ids.update(os.listdir(f"{self.root}/containers"))

    def leaks(self, *, allow_pin_dirs: bool = True, processes: bool = True) -> list[str]:
        """Mounts, namespace pins, processes, cgroups and veths left behind; [] when none."""
        found = []
        for point, fstype in mounts_under(self.base):
            if allow_pin_dirs and point in self.pin_dirs and fstype != "nsfs":
                continue
            if point in self.own_mounts:
                continue  # the filesystem the store itself lives on (test_diskfull)
            kind = "namespace pin" if fstype == "nsfs" else f"{fstype} mount"
            found.append(f"{kind} left at {point}")
        if processes:
            found += [f"process left: {p}" for p in wait_no_processes(self.marker)]
        for cid in sorted(self.container_ids):
            found += [f"cgroup left: {d}" for d in cgroup_dirs(cid)]
            if veth_of(cid):
                found.append(f"veth left: {veth_of(cid)}")
        return found

    def cleanup(self) -> None:
        """Kill every process and undo every mount, pin, cgroup and veth of the test.

        The test's own mounts (``own_mounts``) stay: their owner unmounts them.
        """
        self.cli.kill_all()
        for line in marked_processes(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        wait_no_processes(self.marker, 5)
        for point, _ in sorted(mounts_under(self.base), key=lambda m: len(m[0]), reverse=True):
            if point not in self.own_mounts:
                subprocess.run(["umount", "-l", point], capture_output=True)
        self.note_containers()
        for cid in self.container_ids:
            for d in cgroup_dirs(cid):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            if veth_of(cid):
                subprocess.run(["ip", "link", "del", veth_of(cid)], capture_output=True)


@pytest.fixture
def stress(tmp_path):
    """A StressStore in tmp_path, cleaned up however the test ends."""
    store = StressStore(tmp_path)
    try:
        yield store
    finally:
        store.cleanup()


# --- the store, as the CLI sees it ---------------------------------------------------


def check(cli: Cli, *extra: str, result: Result | None = None) -> tuple[Result, dict]:
    """overlayctl check --json [extra] (or its result, run already): the result and its report."""
    result = result or cli.run("check", "--json", *extra)
    assert not result.traceback and result.returncode in (0, 1), result.describe()
    try:
        report = result.json()
    except ValueError:
        raise AssertionError("check --json printed no JSON:\n" + result.describe()) from None
    return result, report


def assert_clean(cli: Cli, context: str = "") -> None:
    result, report = check(cli)
    assert result.returncode == 0 and report["problems"] == [], f"{context}the store is not consistent:\n" + (
        result.describe()
    )


def check_or_repair(cli: Cli, context: str = "", first: Result | None = None) -> list[dict]:
    """check is clean, or check --repair makes it clean; the problems found first.

    ``first``: the result of a ``check --json`` run already.
    """
    result, report = check(cli, result=first)
    if not report["problems"]:
        assert result.returncode == 0, result.describe()
        return []
    repair, _ = check(cli, "--repair")
    again, report2 = check(cli)
    assert again.returncode == 0 and report2["problems"] == [], (
        f"{context}check found problems that --repair does not fix:\nfirst: {result.describe()}\n"
        f"repair: {repair.describe()}\nafter repair: {again.describe()}"
    )
    return report["problems"]


def layer_digest(cli: Cli, layer_id: str) -> str:
    """sha256 of 'overlayctl layer export ID' (streamed to a pipe)."""
    proc = cli.start("layer", "export", layer_id)
    digest = hashlib.sha256()
    try:
        while chunk := proc.stdout.read(1 << 20):
            digest.update(chunk)
        err = proc.stderr.read().decode(errors="replace")
        proc.wait(timeout=CMD_TIMEOUT)
    finally:
        kill_group(proc.pid)
        cli.live.pop(proc.pid, None)
    assert proc.returncode == 0 and "Traceback" not in err, f"layer export {layer_id} failed: {err}"
    return "sha256:" + digest.hexdigest()


def make_source(path: Path, rng: random.Random, label: str, size: int) -> Path:
    """A small root filesystem with unique content: a label file, a random blob, a link, a subdir."""
    (path / "etc").mkdir(parents=True, exist_ok=True)
    (path / "data" / "sub").mkdir(parents=True, exist_ok=True)
    (path / "etc" / "label").write_text(f"{label}\n")
    (path / "data" / "blob").write_bytes(rng.randbytes(size))
    (path / "data" / "sub" / "small.txt").write_text(label * 3)
    if not (path / "data" / "link").is_symlink():
        (path / "data" / "link").symlink_to("blob")
    return path
