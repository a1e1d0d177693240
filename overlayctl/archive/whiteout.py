"""The rules that map overlay metadata to OCI layer entries and back.

This is the one table that ``extract`` (OCI -> overlay) and ``generate``
(overlay -> OCI) both ask. It holds values and makes no system calls.

=====================================  =============================================
overlay layer directory                OCI layer tar
=====================================  =============================================
char device 0/0 ``NAME``               empty regular file ``.wh.NAME``
dir with ``trusted.overlay.opaque=y``  the dir, then empty file ``DIR/.wh..wh..opq``
``trusted.overlay.*``/``user.overlay.*``  never written; refused when read
other xattr ``NAME``                   PAX record ``SCHILY.xattr.NAME``
(nothing)                              ``.wh..wh.*`` (AUFS metadata): skipped
=====================================  =============================================

Sources: OCI image-spec ``layer.md`` (whiteouts, opaque whiteouts) and the kernel's
``Documentation/filesystems/overlayfs.rst`` (whiteouts, opaque and alternative
whiteouts, redirect, metacopy).
"""

from __future__ import annotations

import enum
import stat

from overlayctl.errors import ArchiveError, UnsafeArchive

WHITEOUT_PREFIX = ".wh."
# AUFS kept its own bookkeeping under this prefix (e.g. .wh..wh.plnk); Docker and
# containerd skip such entries, and so do we.
META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"

# A whiteout on disk is what overlayfs itself creates: a char device 0/0, mode 0000.
WHITEOUT_MODE = stat.S_IFCHR
WHITEOUT_DEVICE = 0  # os.makedev(0, 0)

OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
OPAQUE_XATTR = "trusted.overlay.opaque"
OPAQUE_VALUE = b"y"
# Kernel >= 6.7: "x" marks a dir that may hold alternative whiteouts, which are
# empty regular files carrying ALT_WHITEOUT_XATTR. It does not make the dir opaque.
ALT_OPAQUE_VALUE = b"x"
ALT_WHITEOUT_XATTR = "trusted.overlay.whiteout"
# An upper carrying these is not a complete changeset: a redirected dir holds
# only what changed, and a metacopy file holds no data
# (https://docs.kernel.org/filesystems/overlayfs.html, "Renaming directories"
# and "Metadata only copy up").
INCOMPLETE_XATTRS = frozenset(
    prefix + suffix for prefix in OVERLAY_XATTR_PREFIXES for suffix in ("redirect", "metacopy")
)

PAX_XATTR_PREFIX = "SCHILY.xattr."

# Fixed attributes of the empty marker files an export writes, so that the same
# tree always gives the same bytes. Docker writes whiteouts as -rw------- too.
MARKER_MODE = 0o600
MARKER_MTIME = 0


class EntryKind(enum.Enum):
    """What an archive entry's base name asks the importer to do."""

    ENTRY = "entry"  # an ordinary file, dir, link or device
    WHITEOUT = "whiteout"  # hide a lower entry: make a char device 0/0
    OPAQUE = "opaque"  # hide all lower children of the parent dir
    AUFS_META = "aufs-meta"  # AUFS bookkeeping: skip


def whiteout_to_oci(name: str) -> str:
    """The tar base name that hides the lower entry ``name``."""
    return WHITEOUT_PREFIX + name


def whiteout_from_oci(basename: str) -> tuple[EntryKind, str]:
    """Classify a tar entry's base name; return the kind and the name it targets.

    For WHITEOUT the second value is the hidden name; otherwise it is ``basename``.
    Raises ArchiveError for ``.wh.`` alone and UnsafeArchive for ``.wh..``/``.wh...``.
    """
    if basename == OPAQUE_MARKER:
        return EntryKind.OPAQUE, basename
    if basename.startswith(META_PREFIX):
        return EntryKind.AUFS_META, basename
    if not basename.startswith(WHITEOUT_PREFIX):
        return EntryKind.ENTRY, basename
    target = basename[len(WHITEOUT_PREFIX) :]
    if not target:
        raise ArchiveError(f"invalid whiteout {basename!r}: it names no entry")
    if target in (".", ".."):
        raise UnsafeArchive(f"invalid whiteout {basename!r}: it names {target!r}")
    return EntryKind.WHITEOUT, target


def is_whiteout_mode(st_mode: int, st_rdev: int) -> bool:
    """True for an overlay whiteout: a character device with number 0/0."""
    return stat.S_ISCHR(st_mode) and st_rdev == WHITEOUT_DEVICE


def forbidden_xattr(name: str) -> bool:
    """True for overlay metadata xattrs, which an archive must never set."""
    return name.startswith(OVERLAY_XATTR_PREFIXES)


def incomplete_diff_xattr(name: str) -> bool:
    """True if an upper carrying this xattr cannot be exported as a diff."""
    return name in INCOMPLETE_XATTRS


def xattr_to_pax(name: str) -> str:
    """The PAX record keyword that carries xattr ``name``."""
    return PAX_XATTR_PREFIX + name


def xattr_from_pax(keyword: str) -> str | None:
    """The xattr name a PAX record keyword carries, or None for other records."""
    if keyword.startswith(PAX_XATTR_PREFIX):
        return keyword[len(PAX_XATTR_PREFIX) :]
    return None
