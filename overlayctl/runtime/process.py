"""The process tree of a running container.

::

    monitor (overlayctl)          waits, forwards signals, cleans up
      └─ keeper                   unshares the namespaces, relays PID 1's exit status
           └─ init  (PID 1)       mounts the root filesystem, reaps zombies, forwards signals
                └─ command        the container's process (PID 2)

The keeper and init die with their parent (PR_SET_PDEATHSIG), so a killed
monitor takes the whole container with it, and nothing but pins and
cgroups (which the next overlayctl command sweeps) can outlive it.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from ..errors import CommandNotFound, OverlayctlError, from_oserror
from ..kernel import _libc
from ..plan.mountplan import MountPlan
from .spec import DEFAULT_PATH, RunSpec

#: Signals the monitor and init pass on to the command.
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)

#: Exit codes for failures before the command runs (as Docker's).
EXIT_SETUP_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


@dataclass(frozen=True, slots=True)
class Launched:
    """A started container: host pids, and the pipe ends the monitor still holds."""

    pid: int  # the container's PID 1, as the host sees it
    keeper: int
    go_fd: int  # write one byte: init may go on
    status_fd: int  # read: an error message, or EOF once the command was exec'd


def launch(plan: MountPlan, spec: RunSpec, hostname: str) -> Launched:
    """Fork the keeper and PID 1; PID 1 waits for ``go`` before it does anything."""
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    monitor = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    keeper = os.fork()
    if keeper == 0:
        # The monitor's ends must not stay open here: EOF is how each side learns the other is gone.
        for fd in (pid_r, go_w, status_r):
            os.close(fd)
        run_child(lambda: _keeper_main(monitor, plan, spec, hostname, pid_w, go_r, status_w), status_w)
    for fd in (pid_w, go_r, status_w):
        os.close(fd)
    with os.fdopen(pid_r, "rb") as pipe:
        text = pipe.read().strip()
    if not text:
        os.close(go_w)
        message = read_until_eof(status_r)
        os.waitpid(keeper, 0)
        raise OverlayctlError(message or "the container's namespaces could not be made")
    return Launched(int(text), keeper, go_w, status_r)


def run_child(main, status_w: int) -> None:
    """Run main in a forked child; never return, report errors on the status pipe."""
    code = EXIT_SETUP_FAILED
    try:
        main()
    except OverlayctlError as exc:
        if isinstance(exc, CommandNotFound):
            code = EXIT_NOT_FOUND
        _report(status_w, exc.message)
    except OSError as exc:
        _report(status_w, from_oserror(exc).message)
    except BaseException as exc:  # noqa: BLE001 - a child must never unwind into the parent's code
        _report(status_w, f"internal error: {exc!r}")
    finally:
        os._exit(code)


def _report(fd: int, message: str) -> None:
    try:
        os.write(fd, message.encode(errors="replace")[:4000])
    except OSError:
        pass


def read_until_eof(fd: int) -> str:
    chunks = []
    while True:
        data = os.read(fd, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace").strip()


def _keeper_main(
    monitor: int, plan: MountPlan, spec: RunSpec, hostname: str, pid_w: int, go_r: int, status_w: int
) -> None:
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    _libc.set_process_name("overlayctl-keep")
    if os.getppid() != monitor:  # the monitor died before the prctl
        os._exit(1)
    os.setsid()  # terminal signals reach the monitor only, which forwards them once
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN)
    flags = _libc.CLONE_NEWNS | _libc.CLONE_NEWUTS | _libc.CLONE_NEWIPC | _libc.CLONE_NEWPID
    if spec.network != "host":
        flags |= _libc.CLONE_NEWNET
    _libc.unshare(flags)
    init = os.fork()
    if init == 0:
        os.close(pid_w)
        run_child(lambda: _init_main(plan, spec, hostname, go_r, status_w), status_w)
    os.write(pid_w, f"{init}\n".encode())
    for fd in (pid_w, go_r, status_w):
        os.close(fd)
    _, status = os.waitpid(init, 0)
    os._exit(exit_code_of(status))


def exit_code_of(status: int) -> int:
    """A wait status as a shell would report it: the code, or 128 + signal."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _init_main(plan: MountPlan, spec: RunSpec, hostname: str, go_r: int, status_w: int) -> None:
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    _libc.set_process_name("overlayctl-init")
    if not os.read(go_r, 1):  # the monitor gave up
        os._exit(EXIT_SETUP_FAILED)
    os.close(go_r)
    _build_root(plan, spec, hostname)
    uid, gid, groups, home = resolve_user(spec.user)
    env = environment(spec, hostname, home)
    path = find_command(spec.argv[0], env)
    command = os.fork()
    if command == 0:
        run_child(lambda: exec_command(path, spec, env, uid, gid, groups, status_w), status_w)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, frame: _forward(command, signum))
    os.close(status_w)
    _reap_until(command)


def _build_root(plan: MountPlan, spec: RunSpec, hostname: str) -> None:
    from ..kernel import mount as kmount
    from . import rootfs

    rootfs.make_private()
    kmount.apply(plan)
    rootfs.bind_volumes(plan.target, spec.volumes)
    rootfs.mount_proc_sys(plan.target, own_sysfs=spec.network != "host")
    rootfs.mount_dev(plan.target)
    _libc.sethostname(hostname)
    if spec.network != "host":
        from ..kernel.netif import loopback_up

        loopback_up()
    rootfs.pivot(plan.target)
    workdir = spec.workdir or "/"
    os.makedirs(workdir, exist_ok=True)  # as Docker does for a missing WorkingDir


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _reap_until(command: int) -> None:
    """PID 1's loop: reap every child; leave with the command's exit status."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(EXIT_SETUP_FAILED)
        if pid == command:
            os._exit(exit_code_of(status))


def exec_command(
    path: str, spec: RunSpec, env: dict[str, str], uid: int, gid: int, groups: list[int], status_w: int
) -> None:
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if not spec.interactive:
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    os.chdir(spec.workdir or "/")
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    try:
        os.execve(path, list(spec.argv), env)
    except OSError as exc:
        _report(status_w, f"cannot run {spec.argv[0]} ({path}): {exc.strerror}")
        os._exit(EXIT_CANNOT_EXECUTE)


def environment(spec: RunSpec, hostname: str, home: str) -> dict[str, str]:
    env = dict(item.partition("=")[::2] for item in spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    env.setdefault("HOME", home)
    return env


def find_command(name: str, env: dict[str, str]) -> str:
    """The path of the command inside the container (after pivot_root), as execvp searches."""
    if "/" in name:
        if os.path.isfile(name):
            return name
        raise CommandNotFound(f"command not found in the container: {name}")
    searched = env.get("PATH", DEFAULT_PATH)
    for directory in searched.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CommandNotFound(f"command not found in the container: {name} (searched PATH={searched})")


def resolve_user(text: str) -> tuple[int, int, list[int], str]:
    """uid, gid, supplementary groups and home of USER[:GROUP] from the container's files."""
    from .spec import parse_user_text

    if not text:
        return 0, 0, [], _home_of(0) or "/root"
    user, group = parse_user_text(text)
    passwd = _table("/etc/passwd")
    if user.isdigit():
        uid = int(user)
        entry = next((e for e in passwd if e[2] == user), None)
    else:
        entry = next((e for e in passwd if e[0] == user), None)
        if entry is None:
            raise OverlayctlError(f"no user {user!r} in the container's /etc/passwd")
        uid = int(entry[2])
    gid = int(entry[3]) if entry and len(entry) > 3 and entry[3].isdigit() else uid
    if group is not None:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((e for e in _table("/etc/group") if e[0] == group), None)
            if found is None:
                raise OverlayctlError(f"no group {group!r} in the container's /etc/group")
            gid = int(found[2])
    home = entry[5] if entry and len(entry) > 5 and entry[5] else "/"
    return uid, gid, [gid], home


def _home_of(uid: int) -> str | None:
    entry = next((e for e in _table("/etc/passwd") if e[2] == str(uid)), None)
    return entry[5] if entry and len(entry) > 5 else None


def _table(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []
