"""Detached containers: a daemon monitor, its log, and the handshake with start."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ..errors import ContainerFailed, OverlayctlError, from_oserror
from ..store.records import ContainerRecord
from . import monitor

if TYPE_CHECKING:
    from ..api._context import StoreContext


def start_detached(ctx: StoreContext, record: ContainerRecord) -> int:
    """Fork a daemon that monitors the container; return PID 1 once its command runs.

    The daemon writes one line back: ``ok PID`` or ``error CODE MESSAGE``.
    The line ends the handshake: the container's processes inherit the pipe,
    so waiting for EOF would wait for the container.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        _daemonize_and_run(ctx, record, write_fd)
    os.close(write_fd)
    os.waitpid(child, 0)
    line = _read_line(read_fd)
    kind, _, rest = line.partition(" ")
    if kind == "ok":
        return int(rest)
    if kind == "error":
        code, _, message = rest.partition(" ")
        raise ContainerFailed(message, int(code))
    raise OverlayctlError(
        f"the monitor of container {record.name} died while starting it", hint=f"see {ctx.layout.log(record.id)}"
    )


def _read_line(fd: int) -> str:
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.decode(errors="replace").strip()


def _daemonize_and_run(ctx: StoreContext, record: ContainerRecord, write_fd: int) -> None:
    code = 1
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        null = os.open("/dev/null", os.O_RDWR)
        log = os.open(ctx.layout.log(record.id), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        for target, fd in ((0, null), (1, log), (2, log)):
            os.dup2(fd, target)
        os.chdir("/")

        def started(pid: int) -> None:
            os.write(write_fd, f"ok {pid}\n".encode())

        try:
            code = monitor.run(ctx, record, detached=True, on_started=started)
        except (OverlayctlError, OSError) as exc:
            error = exc if isinstance(exc, OverlayctlError) else from_oserror(exc)
            message = error.message.replace("\n", " ")
            os.write(write_fd, f"error {error.exit_code} {message}\n".encode())
    except BaseException:  # noqa: BLE001 - the daemon must never return into the CLI
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)
