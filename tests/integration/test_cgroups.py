"""Where a container's cgroup is: the runtime makes it from config.json's cgroupsPath, overlayctl reads it."""

from __future__ import annotations

import os

import pytest

from overlayctl.runtime import cgroups

pytestmark = pytest.mark.root


def test_version_matches_the_host():
    expected = 2 if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else 1
    assert cgroups.version() == expected


def test_the_runtime_makes_the_cgroup_where_overlayctl_reads_it(busybox):
    """The limits the runtime wrote are in the directories Cgroup.of names, and gone after the container."""
    record = busybox.runtime.create("busybox", ["sleep", "30"], name="cg", memory="64m", pids_limit=20)
    busybox.runtime.start(record.id)
    try:
        cgroup = cgroups.Cgroup.of(record.id)
        if cgroup.version == 2:
            assert open(f"{cgroup.path}/memory.max").read().strip() == str(64 << 20)
            assert open(f"{cgroup.path}/pids.max").read().strip() == "20"
        else:
            assert open(f"{cgroup.paths['memory']}/memory.limit_in_bytes").read().strip() == str(64 << 20)
            assert open(f"{cgroup.paths['pids']}/pids.max").read().strip() == "20"
        pid = busybox.containers.get("cg").run.pid
        assert str(pid) in open(f"{cgroup.path}/cgroup.procs").read().split()
        assert not cgroup.oom_killed() and cgroup.memory_peak() is not None
    finally:
        busybox.runtime.remove("cg", force=True)
    assert not any(os.path.exists(path) for path in cgroup.paths.values())
