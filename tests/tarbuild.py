"""Building layer tars in memory for tests, from short entry descriptions.

An entry is an ``Entry`` or a tuple of its first fields, e.g.::

    build_tar([
        ("etc", "dir"),
        ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\\n", 0o644),
        ("etc/.wh.shadow", "file"),
        ("bin/sh", "symlink", "busybox"),
        ("bin/ash", "hardlink", "bin/busybox"),
        ("data", "dir", b"", 0o755, {"user.note": b"kept"}),
    ])

``pax`` sets raw PAX records (they win over the ones tarfile would write), which
is how the hostile and corrupt cases forge names, sizes and xattrs.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field

_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_FORMATS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}
MTIME = 1_700_000_000


@dataclass
class Entry:
    path: str | bytes
    type: str = "file"
    data: bytes | str = b""  # file content, or the target of a link
    mode: int | None = None  # default: 0o755 for dirs, 0o777 for symlinks, else 0o644
    xattrs: dict[str, bytes] = field(default_factory=dict)
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    device: tuple[int, int] = (0, 0)
    pax: dict[str, str] = field(default_factory=dict)


def _decode(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _default_mode(kind: str) -> int:
    return {"dir": 0o755, "symlink": 0o777}.get(kind, 0o644)


def _info(entry: Entry) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(_decode(entry.path))
    info.type = _TYPES[entry.type]
    info.mode = _default_mode(entry.type) if entry.mode is None else entry.mode
    info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
    info.devmajor, info.devminor = entry.device
    data = b""
    if entry.type in ("symlink", "hardlink"):
        info.linkname = _decode(entry.data)
    elif entry.type == "file":
        data = entry.data.encode() if isinstance(entry.data, str) else entry.data
        info.size = len(data)
    info.pax_headers = {
        "SCHILY.xattr." + name: value.decode("utf-8", "surrogateescape") for name, value in entry.xattrs.items()
    }
    info.pax_headers.update(entry.pax)
    return info, data


def build_tar(entries: list[Entry | tuple], *, format: str = "pax") -> bytes:
    """The bytes of an uncompressed tar holding ``entries`` in the given order."""
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=_FORMATS[format], encoding="utf-8", errors="surrogateescape"
    ) as tar:
        for item in entries:
            entry = item if isinstance(item, Entry) else Entry(*item)
            info, data = _info(entry)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def write_tar(path: str, entries: list[Entry | tuple], **kwargs: str) -> None:
    """Write ``build_tar(entries)`` to a file."""
    with open(path, "wb") as f:
        f.write(build_tar(entries, **kwargs))


def patch_header(data: bytes, offset: int, start: int, raw: bytes) -> bytes:
    """Overwrite bytes of the header block at ``offset`` and fix its checksum."""
    block = bytearray(data[offset : offset + 512])
    block[start : start + len(raw)] = raw
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return data[:offset] + bytes(block) + data[offset + 512 :]
