"""kernel/probe.py, pure parts: which backing filesystems can hold upper layers."""

from __future__ import annotations

import pytest

from overlayctl.kernel.probe import BackingFs, backing_problems, magic_name

ALL_OK = dict(d_type=True, trusted_xattr=True, whiteout=True)


@pytest.mark.parametrize(
    ("fs", "features", "expected"),
    [
        ("ext4", ALL_OK, []),
        ("xfs", ALL_OK, []),
        ("btrfs", ALL_OK, []),
        ("tmpfs", ALL_OK, []),
        ("0x12345678", ALL_OK, []),
        ("overlay", ALL_OK, ["overlay filesystem"]),
        ("nfs", ALL_OK, ["nfs, a network"]),
        ("cifs", ALL_OK, ["cifs, a network"]),
        ("smb2", ALL_OK, ["smb2, a network"]),
        ("fuse", ALL_OK, ["FUSE"]),
        ("xfs", dict(ALL_OK, d_type=False), ["ftype=1"]),
        ("ext4", dict(ALL_OK, trusted_xattr=False), ["trusted.*"]),
        ("ext4", dict(ALL_OK, whiteout=False), ["whiteout"]),
        ("nfs", dict(d_type=True, trusted_xattr=False, whiteout=False), ["network", "trusted.*", "whiteout"]),
        (
            "overlay",
            dict(d_type=False, trusted_xattr=False, whiteout=False),
            ["overlay", "d_type", "trusted.*", "whiteout"],
        ),
    ],
    ids=[
        "ext4",
        "xfs-ftype1",
        "btrfs",
        "tmpfs",
        "unknown-magic",
        "overlay",
        "nfs",
        "cifs",
        "smb2",
        "fuse",
        "xfs-ftype0-no-dtype",
        "no-trusted-xattr",
        "no-mknod",
        "nfs-unprivileged",
        "overlay-everything-missing",
    ],
)
def test_backing_problems(fs, features, expected):
    problems = backing_problems(fs, **features)
    assert len(problems) == len(expected)
    for sentence, needle in zip(problems, expected):
        assert needle in sentence


def test_overlay_sentence_is_exact():
    assert backing_problems("overlay", **ALL_OK) == (
        "the store is on an overlay filesystem; an upper layer cannot live on overlayfs",
    )


@pytest.mark.parametrize(
    ("magic", "name"),
    [
        (0xEF53, "ext4"),
        (0x58465342, "xfs"),
        (0x9123683E, "btrfs"),
        (0x01021994, "tmpfs"),
        (0x794C7630, "overlay"),
        (0x6969, "nfs"),
        (0x65735546, "fuse"),
        (0xFF534D42, "cifs"),
        (0xFE534D42, "smb2"),
        (0x2FC12FC1, "zfs"),
        (0xF2F52010, "f2fs"),
        (0x12345678, "0x12345678"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_magic_name(magic, name):
    assert magic_name(magic) == name


def test_backing_fs_json_and_usable():
    fs = BackingFs("/s", "nfs", 0x6969, True, True, True, backing_problems("nfs", **ALL_OK))
    assert not fs.usable
    assert fs.to_json() == {
        "path": "/s",
        "fs_type": "nfs",
        "magic": "0x00006969",
        "d_type": True,
        "trusted_xattr": True,
        "whiteout": True,
        "usable": False,
        "problems": list(fs.problems),
    }
    assert BackingFs("/s", "ext4", 0xEF53, True, True, True).usable
