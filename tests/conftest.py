"""Shared fixtures: root-only skips, and the end-of-suite leak check."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest


def _root_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: overlay mounts, trusted.* xattrs and mknod need CAP_SYS_ADMIN"
    try:
        with open("/proc/filesystems") as f:
            if "\toverlay\n" not in f.read():
                return "the kernel has no overlay filesystem (/proc/filesystems)"
    except OSError as exc:
        return f"cannot read /proc/filesystems: {exc}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _root_skip_reason()
    if reason is None:
        return
    for item in items:
        if "root" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def _mounts_under(base: str) -> list[str]:
    """Lines of the host's mountinfo that mention a path under base."""
    with open("/proc/self/mountinfo") as f:
        return [line.rstrip("\n") for line in f if base in line]


@pytest.fixture(scope="session", autouse=True)
def subids_as_they_were():
    """/etc/subuid and /etc/subgid as they were, at the end: --userns=auto adds overlayctl's range."""
    saved = {}
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path, "rb") as f:
                saved[path] = (f.read(), os.stat(path).st_mode)
        except FileNotFoundError:
            saved[path] = None
    try:
        yield
    finally:
        for path, before in saved.items():
            if before is None:
                if os.path.exists(path):
                    os.unlink(path)
            else:
                with open(path, "wb") as f:
                    f.write(before[0])
                os.chmod(path, before[1] & 0o7777)


def _container_cgroups() -> set[str]:
    """The container cgroups (``overlayctl/<id>``) in every hierarchy, v1 and v2."""
    found = set()
    for parent in [f"/sys/fs/cgroup/{h}/overlayctl" for h in os.listdir("/sys/fs/cgroup")] + [
        "/sys/fs/cgroup/overlayctl"
    ]:
        try:
            found |= {f"{parent}/{name}" for name in os.listdir(parent) if os.path.isdir(f"{parent}/{name}")}
        except OSError:
            continue
    return found


def _processes_naming(text: str) -> list[str]:
    """Live processes whose command line names text (conmon names its bundle and state dirs)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(pid) != os.getpid():
            found.append(f"{pid} {cmdline[:200]}")
    return found


@pytest.fixture(scope="session", autouse=True)
def no_leaked_mounts(tmp_path_factory):
    """After the whole suite: no mount, pin, container cgroup or monitor of the tests remains."""
    base = str(tmp_path_factory.getbasetemp())
    cgroups_before = _container_cgroups()
    yield
    leaked = _mounts_under(base)
    assert not leaked, "mounts left behind by the tests:\n" + "\n".join(leaked)
    cgroups = sorted(_container_cgroups() - cgroups_before)
    assert not cgroups, "container cgroups left behind by the tests:\n" + "\n".join(cgroups)
    processes = [p for p in _processes_naming(base) if "conmon" in p or "runc" in p]
    assert not processes, "monitors or runtimes left running by the tests:\n" + "\n".join(processes)


def _cleanup_store(store) -> None:
    """Unmount and unpin everything a test store made, even after a failure."""
    from overlayctl.kernel import mount as kmount
    from overlayctl.kernel import ns

    for state in store.containers.list():
        ns.remove_pin_file(store.layout.pin(state.record.id))
        while ns.is_mount_point(store.layout.merged(state.record.id)):
            kmount.unmount(store.layout.merged(state.record.id), detach=True)
    ns.release_pin_dir(store.layout.ns_dir)


@contextlib.contextmanager
def temporary_store(base: Path):
    """A LayerStore with its root and run root under base, cleaned up after (also when the test fails)."""
    from overlayctl import LayerStore

    s = LayerStore(root=str(base / "root"), run_root=str(base / "run"))
    try:
        yield s
    finally:
        _cleanup_store(s)


@pytest.fixture
def store(tmp_path):
    """A LayerStore in its own temporary root and run root."""
    with temporary_store(tmp_path) as s:
        yield s


def make_rootfs(path, files: dict[str, str] | None = None):
    """A small root filesystem: busybox when the host has it, plus files."""
    import shutil

    path.mkdir(parents=True, exist_ok=True)
    (path / "bin").mkdir(exist_ok=True)
    busybox = shutil.which("busybox")
    if busybox:
        shutil.copy2(busybox, path / "bin" / "busybox")
        for applet in ("sh", "ls", "cat", "echo"):
            (path / "bin" / applet).symlink_to("busybox")
    base = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
        "etc/motd": "welcome\n",
        "data/keep.txt": "keep\n",
        "data/old.txt": "old\n",
        "opt/app/one.txt": "one\n",
        "opt/app/two.txt": "two\n",
    }
    for rel, text in {**base, **(files or {})}.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return path


@pytest.fixture
def rootfs(tmp_path):
    return make_rootfs(tmp_path / "rootfs")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    """A root filesystem with the host's static busybox and all its applets."""
    from testkit.rootfs import build_busybox_rootfs

    root = tmp_path_factory.mktemp("busybox-rootfs")
    if build_busybox_rootfs(root) is None:
        pytest.skip("busybox is not installed (make test installs busybox-static)")
    return root


@pytest.fixture
def busybox(store, busybox_rootfs):
    """The store with busybox imported as busybox:latest."""
    store.images.import_rootfs(str(busybox_rootfs), tag="busybox")
    return store


@pytest.fixture
def busybox_searchable(busybox_rootfs):
    """A store holding busybox under a directory others may search (--userns=auto needs it; tmp_path is 0700)."""
    from overlayctl import LayerStore

    base = tempfile.mkdtemp(prefix="overlayctl-userns-", dir="/var/tmp")
    os.chmod(base, 0o711)
    store = LayerStore(root=f"{base}/root", run_root=f"{base}/run")
    try:
        store.images.import_rootfs(str(busybox_rootfs), tag="busybox")
        yield store
    finally:
        for state in store.containers.list():
            if state.run.status == "running":
                store.runtime.stop(state.record.id, timeout=0)
        _cleanup_store(store)
        shutil.rmtree(base)
