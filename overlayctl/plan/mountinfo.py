"""Parsing of /proc/PID/mountinfo lines and decoding of overlay mount options.

Pure: every function takes text and returns values.  The one helper that
reads a file, ``read_mountinfo``, sits at the bottom and does nothing else.
Field layout and escaping follow proc_pid_mountinfo(5); the overlay option
forms are those shown by Linux 6.18 (``fs/overlayfs/params.c``,
``ovl_show_options``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .mountplan import Option, option_value

#: The kernel's seq_file escapes turn a byte into a backslash and three octal
#: digits (mangle_path / seq_escape): space \040, tab \011, newline \012,
#: backslash \134, and inside overlay option values also comma \054.
_OCTAL = re.compile(rb"\\([0-3][0-7]{2})")

#: Generic superblock flags that ovl_show_options does not own.
_GENERIC_FLAGS = frozenset({"rw", "ro"})


@dataclass(frozen=True, slots=True)
class MountInfo:
    """One line of /proc/PID/mountinfo, with paths and options octal-decoded.

    ``raw_super_options`` keeps field 11 exactly as the kernel printed it:
    overlay values must be split on ``:`` and unescaped in a set order, which
    the decoded ``super_options`` no longer allows.
    """

    mount_id: int
    parent_id: int
    device: str
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]
    raw_super_options: str = ""

    @property
    def readonly(self) -> bool:
        """Read-only at either level: the mount (field 6) or the superblock (field 11)."""
        return "ro" in self.mount_options or "ro" in self.super_options


@dataclass(frozen=True, slots=True)
class OverlayOptions:
    """The options of one live overlay mount, decoded back to real paths.

    ``lowers`` are top first, as the kernel stacks them; ``data_lowers`` are
    the data-only layers (after ``::`` or given as ``datadir+``).
    ``options`` holds every other option in the kernel's order, values
    octal-decoded, without the generic ``rw``/``ro``.  Note that the kernel
    adds or renames some (``uuid=on``, ``redirect_dir=on``, ``fsync=volatile``)
    and omits those equal to the module default.  ``readonly`` is true when
    either the mount or the superblock is read-only (an upper-less overlay
    always has a read-only superblock).
    """

    lowers: tuple[str, ...]
    data_lowers: tuple[str, ...] = ()
    upper: str | None = None
    work: str | None = None
    options: tuple[Option, ...] = ()
    readonly: bool = False

    def option(self, key: str) -> str | None:
        """The value of an option (last one wins); ``""`` for a flag, None if absent."""
        return option_value(self.options, key)


def unescape_octal(s: str) -> str:
    """Replace every ``\\NNN`` (three octal digits) by the byte it stands for.

    Works on bytes so that an escaped byte above 0x7f joins the UTF-8 text
    around it; undecodable bytes stay as surrogates, like os.fsdecode.
    """
    if "\\" not in s:
        return s
    raw = s.encode("utf-8", "surrogateescape")
    raw = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), raw)
    return raw.decode("utf-8", "surrogateescape")


def drop_backslashes(s: str) -> str:
    """Undo the option escaping of mount(2): ``\\X`` becomes ``X``.

    The overlay parser removes every backslash and keeps the character after
    it (``ovl_unescape`` in fs/overlayfs/params.c), so ``\\\\`` means ``\\``.
    """
    out: list[str] = []
    chars = iter(s)
    for ch in chars:
        if ch == "\\":
            ch = next(chars, "\\")
        out.append(ch)
    return "".join(out)


def split_lowerdir(value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a classic, octal-decoded ``lowerdir=`` value into (lowers, data_lowers).

    ``:`` separates layers unless escaped by a backslash; an empty element
    (``::``) starts the data-only layers, which the kernel only accepts as the
    rightmost ones.  Backslash escapes are dropped in the same pass, so a
    path ending in an escaped backslash (``a\\\\:b``) splits correctly.
    """
    layers: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, "\\"))
        elif ch == ":":
            layers.append("".join(current))
            current = []
        else:
            current.append(ch)
    layers.append("".join(current))
    lowers: list[str] = []
    data: list[str] = []
    target = lowers
    for layer in layers:
        if layer:
            target.append(layer)
        else:
            # "::" is a boundary, not a layer; everything after it is data-only.
            target = data
    return tuple(lowers), tuple(data)


def _parse_line(line: str) -> MountInfo:
    fields = line.split(" ")
    try:
        sep = fields.index("-", 6)
    except ValueError:
        raise ValueError(f"mountinfo line without ' - ' separator: {line!r}") from None
    if len(fields) < sep + 3:
        raise ValueError(f"mountinfo line too short after ' - ': {line!r}")
    raw_super = fields[sep + 3] if len(fields) > sep + 3 else ""
    return MountInfo(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        device=fields[2],
        root=unescape_octal(fields[3]),
        mount_point=unescape_octal(fields[4]),
        mount_options=_split_options(fields[5]),
        optional_fields=tuple(fields[6:sep]),
        fstype=unescape_octal(fields[sep + 1]),
        source=unescape_octal(fields[sep + 2]),
        super_options=_split_options(raw_super),
        raw_super_options=raw_super,
    )


def _split_options(raw: str) -> tuple[str, ...]:
    # Commas inside values are printed as \054, so a plain split is safe.
    return tuple(unescape_octal(part) for part in raw.split(",") if part)


def parse_mountinfo(text: str) -> list[MountInfo]:
    """Parse the whole text of a mountinfo file, one MountInfo per line.

    Optional fields (``shared:N``, ``master:N``, ...) are kept as printed,
    unknown ones included.  Raises ValueError for a malformed line.
    """
    return [_parse_line(line) for line in text.splitlines() if line.strip()]


def decode_overlay_options(info: MountInfo) -> OverlayOptions:
    """Decode the per-superblock options of an overlay mount to real paths.

    Both forms of Linux 6.18 are understood:

    * classic ``lowerdir=A:B::D`` shows the string the caller passed, with
      its own ``\\:``/``\\,``/``\\\\`` escapes, octal-escaped on top: decode
      octal, split on unescaped ``:``, then drop the backslashes;
    * new-API ``lowerdir+=P`` / ``datadir+=P`` show one literal path each
      (colons may be raw or ``\\072``): octal-decode only.

    ``upperdir=``/``workdir=`` show the string given, which the kernel
    unescaped, so backslashes are dropped after octal decoding.  When they
    were passed with ``FSCONFIG_SET_FD`` the kernel shows the resolved path
    without escapes instead, and a backslash in such a path is lost here;
    overlayctl always passes them as escaped strings.
    """
    lowers: list[str] = []
    data: list[str] = []
    upper = work = None
    options: list[Option] = []
    for part in info.raw_super_options.split(","):
        if not part or part in _GENERIC_FLAGS:
            continue
        key, sep, raw_value = part.partition("=")
        value = unescape_octal(raw_value)
        if key == "lowerdir":
            # A later lowerdir= replaces the whole list, as in the kernel.
            new_lowers, new_data = split_lowerdir(value)
            lowers, data = list(new_lowers), list(new_data)
        elif key == "lowerdir+":
            lowers.append(value)
        elif key == "datadir+":
            data.append(value)
        elif key == "upperdir":
            upper = drop_backslashes(value)
        elif key == "workdir":
            work = drop_backslashes(value)
        else:
            options.append((unescape_octal(key), value if sep else None))
    return OverlayOptions(
        lowers=tuple(lowers),
        data_lowers=tuple(data),
        upper=upper,
        work=work,
        options=tuple(options),
        readonly=info.readonly,
    )


def overlay_mounts(infos: Iterable[MountInfo]) -> list[MountInfo]:
    """The overlay mounts among infos, in their order."""
    return [info for info in infos if info.fstype == "overlay"]


def read_mountinfo(pid: int | str = "self") -> list[MountInfo]:
    """Read and parse /proc/PID/mountinfo (the mounts of PID's namespace)."""
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())
