"""A Docker engine for the bench and the Docker oracle tests.

``docker_engine(tmp)`` yields a ``Docker``: the host's daemon when the
docker client already reaches one (DOCKER_HOST or the default socket), used
as it is; otherwise a private dockerd started for the caller (no iptables, no
bridge, an empty config file of its own, its data root, exec root, pid file,
socket and key file in ``tmp``) whose socket every docker call then names.
The client is Debian's ``/usr/bin/docker`` (docker.io, the daemon's own
release and API version; a newer client first on PATH also works, by
negotiating the API down), else the first on PATH.  It raises
``DockerUnavailable`` with the real reason when there is neither.

On exit, also after an error or Ctrl-C (deferred while this runs), the
private daemon is stopped by its pid (SIGTERM, SIGKILL after 20 s), the
processes it left that name its temp dir are killed by pid, whatever it left
mounted in its temp dir is unmounted and the temp dir deleted, with the empty
directories it made on the host (``/run/docker``, ``/run/containerd``, the
``docker`` cgroups) when they were not there before.  What the caller made
in the daemon (images, containers) is the caller's to remove.

Used by the bench (``python -m bench``, family ``run``) and by
``tests/docker``; both import it from the repository root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DEBIAN_DOCKER = "/usr/bin/docker"  # docker.io's client, the release of its dockerd
DOCKERD_START_TIMEOUT = 30.0
DOCKERD_STOP_TIMEOUT = 20.0
DOCKER_CALL_TIMEOUT = 120.0


class DockerUnavailable(Exception):
    """Docker cannot be used; the message says why."""


class Docker:
    """A docker client and the daemon socket it talks to (None: the client's default)."""

    def __init__(self, client: str, host: str | None, *, where: str) -> None:
        self.client = client
        self.host = host
        self.where = where  # "private dockerd" or "the host's daemon"
        self.version = ""

    def argv(self, *args: str) -> list[str]:
        return [self.client, *(("-H", self.host) if self.host else ()), *args]

    def call(self, *args: str, timeout: float = DOCKER_CALL_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
        """Run a docker command, its output captured; raises DockerUnavailable when it fails."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        try:
            done = subprocess.run(
                self.argv(*args), check=False, capture_output=True, text=True, timeout=timeout, **kwargs
            )
        except subprocess.TimeoutExpired:
            raise DockerUnavailable(f"docker {args[0]}: no answer within {timeout:.0f} s") from None
        if done.returncode != 0:
            raise DockerUnavailable(f"docker {args[0]}: {last_line(done.stderr) or f'exit {done.returncode}'}")
        return done

    def answers(self) -> bool:
        """Whether the daemon answers ``docker version``; remembers its version."""
        try:
            self.version = self.call("version", "--format", "{{.Server.Version}}", timeout=5).stdout.strip()
        except DockerUnavailable:
            return False
        return True


def last_line(text: str) -> str:
    """The last non-empty line of text, shortened for a note."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def docker_client() -> str | None:
    """Debian's docker CLI (docker.io: the release of its dockerd), else the first on PATH."""
    if os.access(DEBIAN_DOCKER, os.X_OK):
        return DEBIAN_DOCKER
    return shutil.which("docker")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a teardown runs; they arrive right after it."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def mounts_under(base: Path) -> list[str]:
    """Mount points of the caller's namespace strictly below base."""
    prefix = f"{base}/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ", 5)[4]
            if point.startswith(prefix):
                points.append(point)
    return points


class PrivateDockerd:
    """A dockerd of the caller's own: its state in tmp, stopped and swept by stop()."""

    def __init__(self, dockerd: str, client: str, tmp: Path) -> None:
        self.dockerd = dockerd
        self.tmp = tmp
        self.log = tmp / "dockerd.log"
        self.docker = Docker(client, f"unix://{tmp / 'docker.sock'}", where="private dockerd")
        self.proc: subprocess.Popen | None = None
        self.host_dirs_before: set[Path] = set()

    def start(self) -> Docker:
        """Start the daemon; its client once it answers (DockerUnavailable if it does not)."""
        self.host_dirs_before = set(docker_host_dirs())
        self.tmp.mkdir()
        config = self.tmp / "daemon.json"
        # Not /etc/docker/daemon.json, and the key file in tmp, not /etc/docker.
        config.write_text(json.dumps({"deprecated-key-path": str(self.tmp / "key.json")}) + "\n")
        argv = [
            self.dockerd,
            "--config-file",
            str(config),
            "--iptables=false",
            "--bridge=none",
            "--data-root",
            str(self.tmp / "docker"),
            "--exec-root",
            str(self.tmp / "docker-exec"),
            "--pidfile",
            str(self.tmp / "docker.pid"),
            "-H",
            self.docker.host,
        ]
        with open(self.log, "wb") as log:
            # A session of its own: Ctrl-C reaches the caller, which stops it in order.
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT
        while not self.docker.answers():
            if self.proc.poll() is not None:
                raise DockerUnavailable(f"dockerd exited ({self.proc.returncode}): {self.error_line()}")
            if time.monotonic() > deadline:
                raise DockerUnavailable(
                    f"dockerd did not answer within {DOCKERD_START_TIMEOUT:.0f} s: {self.error_line()}"
                )
            time.sleep(0.2)
        return self.docker

    def error_line(self) -> str:
        """dockerd's last error line (else its last line) from its log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if "level=error" in line or "level=fatal" in line]
        # Its errors are logged (time="..." level=error msg=...), or plain lines when it fails to start.
        plain = [line for line in lines if not line.startswith('time="')]
        found = errors[-1].split(" ", 1)[-1] if errors else " ".join(plain[-2:]) if plain else last_line(text)
        return found[:200] or "(empty log)"

    def stop(self) -> None:
        """Stop the daemon by its pid, then unmount and delete what it left behind."""
        from overlayctl.kernel import _libc

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(DOCKERD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(
                    f"dockerd: {self.proc.pid} ignored SIGTERM for {DOCKERD_STOP_TIMEOUT:.0f} s; SIGKILL",
                    file=sys.stderr,
                )
                self.proc.kill()
                self.proc.wait()
        # A daemon killed hard leaves its containerd and shims: their command
        # lines name sockets in tmp, so they are ours.
        for pid in processes_naming(self.tmp):
            print(f"dockerd: killing process {pid} left by the private dockerd", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for point in sorted(mounts_under(self.tmp), reverse=True):
            with contextlib.suppress(OSError):
                _libc.umount2(point, _libc.MNT_DETACH)
        left = mounts_under(self.tmp)
        if left:
            print(f"dockerd: could not unmount {left}; leaving {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for path in sorted(set(docker_host_dirs()) - self.host_dirs_before, reverse=True):
            remove_empty_tree(path)


def docker_host_dirs() -> list[Path]:
    """Directories a dockerd makes outside its roots, whatever its options."""
    cgroups = Path("/sys/fs/cgroup")
    found = [path for path in (Path("/run/docker"), Path("/run/containerd"), cgroups / "docker") if path.is_dir()]
    return found + sorted(path for path in cgroups.glob("*/docker") if path.is_dir())


def remove_empty_tree(path: Path) -> None:
    """rmdir path and its subdirectories, deepest first; a non-empty one stays (with its parents)."""
    for sub, _, _ in sorted(os.walk(path), key=lambda entry: entry[0].count("/"), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(sub)


def processes_naming(path: Path) -> list[int]:
    """PIDs of the processes whose command line names a path under path."""
    needle = f"{path}/".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
            if needle in f.read():
                pids.append(int(entry))
    return pids


@contextlib.contextmanager
def docker_engine(tmp: Path) -> Iterator[Docker]:
    """A Docker engine: the host's daemon if the client reaches one, else a private dockerd in tmp.

    tmp must not exist yet (the private daemon creates it).  Raises
    DockerUnavailable (with the reason) when there is neither.
    """
    client = docker_client()
    if client is None:
        raise DockerUnavailable("docker: not installed ('make deps' installs docker.io)")
    host = Docker(client, None, where="the host's daemon")
    if host.answers():
        yield host
        return
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.access("/usr/sbin/dockerd", os.X_OK) else None)
    if dockerd is None:
        raise DockerUnavailable("docker: no daemon answers and dockerd is not installed")
    daemon = PrivateDockerd(dockerd, client, tmp)
    try:
        yield daemon.start()
    finally:
        with signals_deferred():
            daemon.stop()
