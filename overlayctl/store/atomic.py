"""Crash-safe writes: staging directories, fsync, rename.

An object is built in ``staging/<pid>-<random>`` and renamed into place in
one step, so a half-built object never appears under its real name.  A
staging entry whose process is gone is garbage and is swept.
"""

from __future__ import annotations

import contextlib
import os
import shutil

#: Temporary files of write_atomic are named <path><TMP_MARK><pid>.
TMP_MARK = ".tmp-"


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Write data to path through a temporary file, fsync and rename."""
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        # A full disk fails the write: leave no half-written temporary behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path))


def symlink_atomic(target: str, path: str) -> None:
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.rename(tmp, path)


def new_staging(staging_root: str) -> str:
    """A fresh private directory under staging/, named after this process."""
    os.makedirs(staging_root, mode=0o700, exist_ok=True)
    path = f"{staging_root}/{os.getpid()}-{os.urandom(6).hex()}"
    os.mkdir(path, 0o700)
    return path


def publish(staged: str, final: str) -> None:
    """Move a finished staging directory to its final name in one rename."""
    os.rename(staged, final)
    fsync_dir(os.path.dirname(final))


def discard(path: str) -> None:
    """Remove a directory tree (staged, or in the trash), ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
        os.unlink(path)


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def abandoned(name: str) -> bool:
    """Whether a staging entry's process (its name starts with the pid) is gone."""
    pid_text = name.split("-", 1)[0]
    if not pid_text.isdigit():
        return True
    return int(pid_text) != os.getpid() and not pid_alive(int(pid_text))


def sweep_staging(staging_root: str) -> list[str]:
    """Delete staging entries left by processes that no longer run."""
    try:
        names = [name for name in os.listdir(staging_root) if abandoned(name)]
    except FileNotFoundError:
        return []
    for name in names:
        discard(f"{staging_root}/{name}")
    return names
