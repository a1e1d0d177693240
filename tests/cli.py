"""Running the overlayctl CLI in tests: in-process as a user sees it, or as a real process (as root or as nobody)."""

from __future__ import annotations

import fcntl
import inspect
import os
import pty
import struct
import subprocess
import sys
import termios
import warnings
from collections.abc import Sequence

import click
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
# Settings a user's shell could carry into a test run; each call below states its own.
_ENV_UNSET = {"OVERLAYCTL_DEBUG": None, "OVERLAYCTL_ROOT": None, "OVERLAYCTL_RUN_ROOT": None}


def overlayctl_cmd(root: str, run_root: str | None, *args: str) -> list[str]:
    """``python -m overlayctl --root ROOT [--run-root RUN] ARGS``."""
    cmd = [sys.executable, "-m", "overlayctl", "--root", root]
    if run_root is not None:
        cmd += ["--run-root", run_root]
    return cmd + list(args)


def store_cmd(store, *args: str) -> list[str]:
    """The command line of ``overlayctl ARGS`` against a test store."""
    return overlayctl_cmd(store.layout.root, store.layout.run_root, *args)


def run_as_nobody(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run cmd as the unprivileged user nobody, with no capabilities, finding this checkout."""
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(NOBODY + cmd, check=False, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)


class _Main(click.Command):
    """``overlayctl.cli.main`` as a click command, so CliRunner runs the real entry point.

    main() is what turns our errors into one ``error:`` line and an exit code
    (and shows warnings as one ``warning:`` line); invoking the ``cli`` group
    directly would skip it and surface our errors as exceptions.
    """

    def __init__(self) -> None:
        super().__init__("overlayctl")

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra) -> None:
        from overlayctl.cli import main

        # A fresh process's warning filters: registries from an earlier call
        # must not hide a warning, and main()'s showwarning hook is undone after.
        with warnings.catch_warnings():
            warnings.resetwarnings()
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            main(list(args or ()))


def _runner() -> CliRunner:
    # Separate stdout and stderr: click < 8.2 mixes them unless told not to.
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False, env=_ENV_UNSET)
    return CliRunner(env=_ENV_UNSET)


def run_cli(root: str, run_root: str | None, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """``overlayctl --root ROOT [--run-root RUN] ARGS`` in this process, through main().

    The result has a process's shape (returncode, stdout, stderr) so a test
    reads it the same way as a subprocess's.  An exception main() lets
    through (a bug: a user would see a traceback) is raised, not captured.
    """
    argv = ["--root", root] + (["--run-root", run_root] if run_root is not None else []) + list(args)
    where = (os.readlink("/proc/self/ns/mnt"), os.getcwd())
    result = _runner().invoke(_Main(), argv, input=input, catch_exceptions=False)
    # A verb that setns()ed or chdir()ed for good belongs in a subprocess: later calls would run elsewhere.
    assert (os.readlink("/proc/self/ns/mnt"), os.getcwd()) == where, f"overlayctl {args} moved the test process"
    return subprocess.CompletedProcess(["overlayctl", *argv], result.exit_code, result.stdout, result.stderr)


def store_cli(store, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """``overlayctl ARGS`` against a test store, in this process (see run_cli)."""
    return run_cli(store.layout.root, store.layout.run_root, *args, input=input)


def _read_until_closed(leader: int) -> bytes:
    """What a pseudo-terminal shows until every process holding its other end closed it (EIO)."""
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: every writer closed the terminal
            return shown
        if not chunk:
            return shown
        shown += chunk


def run_on_a_terminal(cmd: list[str], rows: int = 24, cols: int = 80) -> tuple[int, str]:
    """Run cmd with a pseudo-terminal of this size as its stdin, stdout and stderr; its exit code and the screen."""
    leader, follower = pty.openpty()
    try:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, start_new_session=True)
        os.close(follower)
        follower = -1
        shown = _read_until_closed(leader)
        return proc.wait(timeout=120), shown.decode(errors="replace")
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def with_stderr_on_a_terminal(cmd: list[str]) -> tuple[subprocess.CompletedProcess, str]:
    """Run cmd with a pseudo-terminal as its stderr (stdout piped); the result and what the terminal showed."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = -1
        shown = _read_until_closed(master)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, b""), shown.decode(errors="replace")
