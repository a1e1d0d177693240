"""overlayctl's own child processes: signals passed on, waits, a command looked up in a root."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from ..errors import CommandNotFound, ContainerFailed, OverlayctlError
from ..kernel.proc import is_alive

#: Signals a foreground run passes on to the container.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

#: Exit codes for failures before the command runs (as Docker's).
EXIT_SETUP_FAILED = 125
EXIT_NOT_FOUND = 127


class SignalForwarder:
    """Pass the signals overlayctl gets on to a process; those that come before it is known, once it is."""

    def __init__(self, *, active: bool = True) -> None:
        self.active = active
        self.target: int | None = None
        self.pending: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalForwarder:
        if self.active:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in FORWARDED}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.target is None:
            self.pending.append(signum)
        else:
            forward(self.target, signum)

    def point_at(self, pid: int | None) -> None:
        self.target = pid
        for signum in self.pending:
            forward(pid, signum)
        self.pending.clear()


def waitpid(pid: int) -> int:
    """The wait status of a child (Python retries the call when a signal handler interrupts it)."""
    return os.waitpid(pid, 0)[1]


def forward(pid: int | None, signum: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def check_command(root: str, name: str, env: list[str]) -> None:
    """Fail with exit 127 and a clear line when the command is not in the container (chroot in a fork)."""
    from .users import find_command

    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        code = 0
        try:
            os.close(read_fd)
            os.chroot(root)
            os.chdir("/")
            find_command(name, env)
        except CommandNotFound as exc:
            os.write(write_fd, exc.message.encode())
            code = EXIT_NOT_FOUND
        except BaseException as exc:  # noqa: BLE001 - a forked child never returns into the caller
            os.write(write_fd, str(exc).encode(errors="replace"))
            code = EXIT_SETUP_FAILED
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    status = os.waitstatus_to_exitcode(waitpid(child))
    if status == EXIT_NOT_FOUND:
        raise ContainerFailed(message, EXIT_NOT_FOUND)
    if status:
        raise OverlayctlError(f"cannot look up {name} in the container: {message or 'unknown error'}")


def wait_for_file(path: str, alive: int, timeout: float = 30.0) -> str:
    """The content of a file another process writes, once it is there (while that process lives)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            text = open(path).read().strip()
            if text:
                return text
        if not is_alive(alive):
            break
        time.sleep(0.005)
    raise OverlayctlError(f"the container did not start (no {os.path.basename(path)} written)")
