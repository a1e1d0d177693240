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
