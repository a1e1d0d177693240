"""Limits as Docker spells them: --memory, --pids-limit, --cpus; mount and counter parsing."""

from __future__ import annotations

import os

import pytest

from overlayctl.errors import InvalidArgument
from overlayctl.runtime.cgroups import (
    Limits,
    parse_cpus,
    parse_memory,
    parse_pids,
    parse_v1_mounts,
    read_counter,
)

MiB = 1024 * 1024


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1048576000", 1048576000),
        ("6291456", 6 * MiB),
        ("8192k", 8 * MiB),
        ("8192K", 8 * MiB),
        ("64m", 64 * MiB),
        ("64M", 64 * MiB),
        ("64mb", 64 * MiB),
        ("64MB", 64 * MiB),
        ("64MiB", 64 * MiB),
        ("64 m", 64 * MiB),
        ("1g", 1024 * MiB),
        ("1.5g", 1536 * MiB),
        ("1.5G", 1536 * MiB),
        ("1t", 1024 * 1024 * MiB),
        ("6m", 6 * MiB),
        ("10485760b", 10 * MiB),
        (" 64m\n", 64 * MiB),
        (67108864, 64 * MiB),
    ],
    ids=[
        "bytes",
        "bytes-at-floor",
        "k",
        "K",
        "m",
        "M",
        "mb",
        "MB",
        "MiB",
        "space",
        "g",
        "fraction",
        "fraction-upper",
        "t",
        "floor",
        "bytes-with-b",
        "whitespace",
        "int",
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("5m", "--memory must be at least 6m"),
        ("1048576", "--memory must be at least 6m"),
        ("0", "--memory must be at least 6m"),
        ("", "--memory '' is not a size"),
        ("m", "--memory 'm' is not a size"),
        ("-64m", "--memory '-64m' is not a size"),
        ("64x", "--memory '64x' is not a size"),
        ("64mm", "--memory '64mm' is not a size"),
        ("1.5.5g", "--memory '1.5.5g' is not a size"),
        ("1e9", "--memory '1e9' is not a size"),
        ("sixty", "--memory 'sixty' is not a size"),
    ],
    ids=[
        "5m",
        "1MiB",
        "zero",
        "empty",
        "unit-only",
        "negative",
        "bad-unit",
        "two-units",
        "two-dots",
        "exponent",
        "word",
    ],
)
def test_parse_memory_refuses(text, message):
    with pytest.raises(InvalidArgument) as info:
        parse_memory(text)
    assert info.value.message.startswith(message)
    assert "\n" not in info.value.message and info.value.exit_code == 2


@pytest.mark.parametrize(
    "value, expected",
    [("20", 20), (20, 20), ("1", 1), (" 7 ", 7), ("100000", 100000)],
    ids=["text", "int", "one", "whitespace", "large"],
)
def test_parse_pids(value, expected):
    assert parse_pids(value) == expected


@pytest.mark.parametrize(
    "value",
    ["0", 0, "-1", -5, "1.5", 1.5, "many", "", True],
    ids=["zero-text", "zero", "minus-one", "negative", "fraction-text", "float", "word", "empty", "bool"],
)
def test_parse_pids_refuses(value):
    with pytest.raises(InvalidArgument, match="^--pids-limit"):
        parse_pids(value)


def test_parse_cpus_accepts_the_range():
    top = os.cpu_count() or 1
    assert parse_cpus("0.01") == 0.01
    assert parse_cpus("0.5") == 0.5
    assert parse_cpus(1) == 1.0
    assert parse_cpus(str(top)) == float(top)


@pytest.mark.parametrize(
    "value",
    ["0", "0.001", "-1", "nan", "inf", "lots", "", str((os.cpu_count() or 1) + 1), True],
    ids=["zero", "below-1ms-quota", "negative", "nan", "inf", "word", "empty", "more-than-the-machine", "bool"],
)
def test_parse_cpus_refuses(value):
    with pytest.raises(InvalidArgument, match="^--cpus"):
        parse_cpus(value)


def test_limits_parse_and_json_round_trip():
    limits = Limits.parse(memory="64m", pids="20", cpus="0.5")
    assert limits == Limits(memory=64 * MiB, pids=20, cpus=0.5)
    assert limits.to_json() == {"memory": 64 * MiB, "pids": 20, "cpus": 0.5}
    assert Limits.from_json(limits.to_json()) == limits


def test_limits_none_means_unlimited():
    assert Limits.parse(None, None, None) == Limits()
    assert Limits.from_json(Limits().to_json()) == Limits()
    assert Limits.from_json({}) == Limits()


@pytest.mark.parametrize(
    "kwargs, flag",
    [({"memory": "1k"}, "--memory"), ({"pids": "0"}, "--pids-limit"), ({"cpus": "0"}, "--cpus")],
    ids=["memory", "pids", "cpus"],
)
def test_limits_parse_names_the_flag(kwargs, flag):
    with pytest.raises(InvalidArgument, match=f"^{flag}"):
        Limits.parse(**kwargs)


MOUNTS_SEPARATE = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
MOUNTS_JOINED = """\
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/my\\040freezer cgroup rw,freezer 0 0
"""


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            MOUNTS_SEPARATE,
            {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct", "pids": "/sys/fs/cgroup/pids"},
        ),
        (
            MOUNTS_JOINED,
            {
                "cpu": "/sys/fs/cgroup/cpu,cpuacct",
                "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                "freezer": "/sys/fs/cgroup/my freezer",
            },
        ),
    ],
    ids=["one-controller-per-mount", "cpu-cpuacct-joined-and-escaped"],
)
def test_parse_v1_mounts(text, expected):
    found = parse_v1_mounts(text)
    assert {name: found.get(name) for name in expected} == expected
    assert "/sys/fs/cgroup/unified" not in found.values()  # cgroup2 is not a v1 hierarchy


@pytest.mark.parametrize(
    "text, expected",
    [
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", 3),
        ("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n", 1),
        ("oom_kill_disable 0\nunder_oom 0\n", 0),
    ],
    ids=["v1-oom_control", "v2-memory.events", "old-kernel-without-line"],
)
def test_read_counter(text, expected):
    assert read_counter(text, "oom_kill") == expected
