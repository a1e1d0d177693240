"""The OCI <-> overlay rule table (overlayctl.archive.whiteout), without root."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from overlayctl.archive import whiteout as wh
from overlayctl.archive.whiteout import EntryKind
from overlayctl.errors import ArchiveError, UnsafeArchive

FROM_OCI = [
    ("plain", "passwd", EntryKind.ENTRY, "passwd"),
    ("dotfile", ".bashrc", EntryKind.ENTRY, ".bashrc"),
    ("wh-without-dot", "wh.file", EntryKind.ENTRY, "wh.file"),
    ("prefix-in-middle", "a.wh.b", EntryKind.ENTRY, "a.wh.b"),
    ("whiteout", ".wh.passwd", EntryKind.WHITEOUT, "passwd"),
    ("whiteout-of-dotfile", ".wh..bashrc", EntryKind.WHITEOUT, ".bashrc"),
    ("whiteout-with-spaces", ".wh.my file", EntryKind.WHITEOUT, "my file"),
    ("opaque", ".wh..wh..opq", EntryKind.OPAQUE, ".wh..wh..opq"),
    ("aufs-plnk", ".wh..wh.plnk", EntryKind.AUFS_META, ".wh..wh.plnk"),
    ("aufs-other", ".wh..wh.aufs", EntryKind.AUFS_META, ".wh..wh.aufs"),
    ("opaque-lookalike", ".wh..wh..opq2", EntryKind.AUFS_META, ".wh..wh..opq2"),
]


@pytest.mark.parametrize(
    ("basename", "kind", "target"), [row[1:] for row in FROM_OCI], ids=[row[0] for row in FROM_OCI]
)
def test_whiteout_from_oci(basename, kind, target):
    assert wh.whiteout_from_oci(basename) == (kind, target)


BAD_WHITEOUTS = [
    ("names-nothing", ".wh.", ArchiveError),
    ("names-dot", ".wh..", UnsafeArchive),
    ("names-dotdot", ".wh...", UnsafeArchive),
]


@pytest.mark.parametrize(
    ("basename", "error"), [row[1:] for row in BAD_WHITEOUTS], ids=[row[0] for row in BAD_WHITEOUTS]
)
def test_whiteout_from_oci_refuses(basename, error):
    with pytest.raises(error) as info:
        wh.whiteout_from_oci(basename)
    assert basename in info.value.message


@pytest.mark.parametrize("name", ["passwd", ".hidden", "x", "name with spaces", "caf\udce9"])
def test_whiteout_round_trip(name):
    assert wh.whiteout_from_oci(wh.whiteout_to_oci(name)) == (EntryKind.WHITEOUT, name)


def test_whiteout_to_oci():
    assert wh.whiteout_to_oci("passwd") == ".wh.passwd"


MODES = [
    ("overlay-whiteout", stat.S_IFCHR, 0, True),
    ("whiteout-with-perms", stat.S_IFCHR | 0o644, 0, True),
    ("dev-null", stat.S_IFCHR | 0o666, os.makedev(1, 3), False),
    ("minor-only", stat.S_IFCHR, os.makedev(0, 1), False),
    ("major-only", stat.S_IFCHR, os.makedev(1, 0), False),
    ("block-0-0", stat.S_IFBLK, 0, False),
    ("regular", stat.S_IFREG | 0o600, 0, False),
    ("fifo", stat.S_IFIFO, 0, False),
    ("dir", stat.S_IFDIR | 0o755, 0, False),
]


@pytest.mark.parametrize(("mode", "rdev", "expected"), [row[1:] for row in MODES], ids=[row[0] for row in MODES])
def test_is_whiteout_mode(mode, rdev, expected):
    assert wh.is_whiteout_mode(mode, rdev) is expected


XATTRS = [
    # name, forbidden on import, makes an upper unexportable
    ("trusted.overlay.opaque", True, False),
    ("trusted.overlay.redirect", True, True),
    ("trusted.overlay.metacopy", True, True),
    ("trusted.overlay.origin", True, False),
    ("trusted.overlay.whiteout", True, False),
    ("user.overlay.opaque", True, False),
    ("user.overlay.redirect", True, True),
    ("trusted.overlayfs.metacopy", False, False),
    ("trusted.other", False, False),
    ("user.mime_type", False, False),
    ("security.capability", False, False),
    ("system.posix_acl_access", False, False),
]


@pytest.mark.parametrize(("name", "forbidden", "incomplete"), XATTRS, ids=[row[0] for row in XATTRS])
def test_xattr_rules(name, forbidden, incomplete):
    assert wh.forbidden_xattr(name) is forbidden
    assert wh.incomplete_diff_xattr(name) is incomplete


@pytest.mark.parametrize("name", ["user.a", "security.capability", "trusted.x.y=z"])
def test_xattr_pax_round_trip(name):
    keyword = wh.xattr_to_pax(name)
    assert keyword.startswith("SCHILY.xattr.")
    assert wh.xattr_from_pax(keyword) == name


@pytest.mark.parametrize("keyword", ["path", "linkpath", "mtime", "SCHILY.acl.access", "LIBARCHIVE.xattr.user.a"])
def test_xattr_from_pax_ignores_other_records(keyword):
    assert wh.xattr_from_pax(keyword) is None


def test_importing_the_rules_loads_no_tarfile():
    code = "import sys, overlayctl.archive, overlayctl.archive.whiteout; sys.exit('tarfile' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
