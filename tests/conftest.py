"""Shared fixtures: root-only skips, and the end-of-suite leak check."""

from __future__ import annotations

import os

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
def no_leaked_mounts(tmp_path_factory):
    """After the whole suite: no overlay mount or namespace pin of the tests remains."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    leaked = _mounts_under(base)
    assert not leaked, "mounts left behind by the tests:\n" + "\n".join(leaked)


def _cleanup_store(store) -> None:
    """Unmount and unpin everything a test store made, even after a failure."""
    from overlayctl.kernel import mount as kmount
    from overlayctl.kernel import ns

    for state in store.containers.list():
        ns.remove_pin_file(store.layout.pin(state.record.id))
        while ns.is_mount_point(store.layout.merged(state.record.id)):
            kmount.unmount(store.layout.merged(state.record.id), detach=True)
    ns.release_pin_dir(store.layout.ns_dir)


@pytest.fixture
def store(tmp_path):
    """A LayerStore in its own temporary root and run root."""
    from overlayctl import LayerStore

    s = LayerStore(root=str(tmp_path / "root"), run_root=str(tmp_path / "run"))
    try:
        yield s
    finally:
        _cleanup_store(s)


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
