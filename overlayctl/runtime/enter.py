"""exec: join a running container's namespaces, cgroup and root, and run a command."""

from __future__ import annotations

import os
import signal

from ..kernel import _libc
from ..store.records import ContainerRecord
from ..store.state import RunState
from . import process
from .spec import RunSpec

#: Joined in this order; the mount namespace last, since it changes what /proc shows.
NAMESPACES = (
    ("ipc", _libc.CLONE_NEWIPC),
    ("uts", _libc.CLONE_NEWUTS),
    ("net", _libc.CLONE_NEWNET),
    ("pid", _libc.CLONE_NEWPID),
    ("mnt", _libc.CLONE_NEWNS),
)


def exec_in(record: ContainerRecord, state: RunState, argv: list[str], *, interactive: bool = False) -> int:
    """Run argv in the container as its spec says (env, user, workdir); its exit code."""
    spec = RunSpec.from_json(record.spec or {}).with_changes(argv=tuple(argv), interactive=interactive)
    if not argv:
        from ..errors import InvalidArgument

        raise InvalidArgument("give a command to run", hint=f"overlayctl exec {record.name} -- sh")
    fds = [(os.open(f"/proc/{state.pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag) for name, flag in NAMESPACES]
    if state.cgroup:
        from .cgroups import Cgroup

        Cgroup.from_json(state.cgroup).add(os.getpid())
    for fd, flag in fds:
        _libc.setns(fd, flag)
        os.close(fd)
    # Now in the container's root: read its passwd and PATH from there.
    uid, gid, groups, home = process.resolve_user(spec.user)
    env = process.environment(spec, record.hostname, home)
    path = process.find_command(argv[0], env)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()  # the child is the one in the container's PID namespace
    if child == 0:
        os.close(status_r)
        process.run_child(lambda: process.exec_command(path, spec, env, uid, gid, groups, status_w), status_w)
    os.close(status_w)
    previous = {sig: signal.signal(sig, lambda signum, frame: _forward(child, signum)) for sig in process.FORWARDED}
    try:
        error = process.read_until_eof(status_r)
        _, status = os.waitpid(child, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = process.exit_code_of(status)
    if error:
        from ..errors import ContainerFailed

        raise ContainerFailed(error, code)
    return code


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
