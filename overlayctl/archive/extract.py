"""Importing one OCI layer tar into an overlay layer directory.

Every path is resolved one component at a time from an fd of the layer
directory, with ``O_NOFOLLOW``: a symlink in the archive is created verbatim
and is never followed, not even as the last component. Whiteouts and opaque
markers become what overlayfs itself writes (see ``whiteout``). Optionally,
the same pass records the tar's tar-split (see ``tarsplit`` and ``_splitter``).
"""

from __future__ import annotations

import contextlib
import decimal
import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from overlayctl.archive import whiteout as wh
from overlayctl.archive._splitter import Splitter
from overlayctl.archive._tarstream import TarReader
from overlayctl.archive.generate import dir_usage
from overlayctl.errors import ArchiveError, UnsafeArchive

Parts = tuple[str, ...]

_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_NODES = {
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}
# Real trees are a few dozen levels deep. Tools that walk a tree holding one fd
# per level (our export, shutil.rmtree) fail with EMFILE near 1024 levels.
MAX_DEPTH = 256
# Parents the archive does not list: root-owned 0755, and a fixed mtime so that
# the same tar always gives the same tree. Fixed if their entry comes later.
_IMPLICIT_DIR = (0o755, 0)


@dataclass(frozen=True, slots=True)
class ExtractResult:
    """What one import produced."""

    diff_id: str  # "sha256:<64 hex>" of the uncompressed tar bytes exactly as given
    size: int  # bytes of regular-file content in dest, hardlinked files counted once
    entries: int  # tar entries read, whiteouts and opaque markers included
    inodes: int = 0  # inodes in dest, its root included, hardlinked files counted once
    tar_split: bool = False  # whether the tar-split file was written
    tar_split_skipped: str = ""  # if asked for and not written: why


def extract_layer(source: BinaryIO, dest: str, *, tar_split: str | None = None) -> ExtractResult:
    """Extract the layer tar (plain or gzip) read from ``source`` into ``dest``.

    ``source`` is read once, front to back, to EOF (a pipe is fine). ``dest``
    must be an existing empty directory in a private staging area. Raises
    UnsafeArchive for entries that would escape ``dest`` or forge overlay
    metadata, ArchiveError for anything unreadable or unsupported. On error,
    whatever was extracted so far stays in ``dest``: the caller deletes it.

    With ``tar_split`` (a path that must not exist yet, outside ``dest``), the
    same pass records there what regenerates the tar's exact bytes from the
    files of ``dest`` (see ``tarsplit``); on error it is removed. A tar whose
    later entries replace a file it already wrote gets none
    (``tar_split_skipped`` says why).
    """
    if os.listdir(dest):
        raise ValueError(f"extract_layer needs an empty directory: {dest}")
    splitter = Splitter(tar_split) if tar_split is not None else None
    try:
        reader = TarReader(source, splitter)
        entries = 0
        with _Layer(dest, splitter) as layer:
            for member in reader:
                entries += 1
                try:
                    layer.add(member, reader)
                except (OSError, ValueError, OverflowError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    raise ArchiveError(f"cannot extract entry {member.name!r}: {why}") from exc
            diff_id = reader.finish()
            layer.finish_dirs()
        kept = splitter is not None and splitter.finish(reader.stream.position, reader.stream.digest())
    except BaseException:
        if splitter is not None:
            splitter.discard()
        raise
    size, inodes = dir_usage(dest)
    skipped = splitter.skipped if splitter is not None else ""
    return ExtractResult(diff_id, size, entries, inodes, tar_split=kept, tar_split_skipped=skipped)


def split_name(name: str, what: str = "entry") -> Parts:
    """The components of a tar name inside the layer; () is the layer root.

    Strips a leading ``./`` and empty or ``.`` components; raises UnsafeArchive
    for absolute names, ``..``, NUL and empty names.
    """
    if not name:
        raise UnsafeArchive(f"{what} with an empty name")
    if "\0" in name:
        raise UnsafeArchive(f"{what} {name!r}: NUL byte in the name")
    rest = name
    while rest.startswith("./"):
        rest = rest[2:]
    if rest.startswith("/"):
        raise UnsafeArchive(f"{what} {name!r}: absolute path")
    parts = tuple(p for p in rest.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"{what} {name!r}: '..' in the path")
    return parts


@dataclass(frozen=True, slots=True)
class _Attrs:
    uid: int
    gid: int
    mode: int
    mtime_ns: int
    xattrs: tuple[tuple[str, bytes], ...]


def _attrs(member: tarfile.TarInfo) -> _Attrs:
    """Check and convert a member's attributes before anything is written."""
    name = member.name
    if member.uid < 0 or member.gid < 0:
        raise ArchiveError(f"entry {name!r}: negative uid or gid")
    xattrs = []
    for key, value in sorted(member.pax_headers.items()):
        xname = wh.xattr_from_pax(key)
        if xname is None:
            continue
        if wh.forbidden_xattr(xname):
            raise UnsafeArchive(f"entry {name!r}: forged overlay xattr {xname!r}")
        if not value:
            continue  # an empty pax value deletes the keyword (POSIX pax): no xattr, as in Docker
        xattrs.append((xname, value.encode("utf-8", "surrogateescape")))
    # Take the exact decimal text of a PAX mtime: a float loses nanoseconds.
    mtime = decimal.Decimal(member.pax_headers.get("mtime", member.mtime))
    mtime_ns = int(mtime.scaleb(9).to_integral_value(decimal.ROUND_FLOOR))
    return _Attrs(member.uid, member.gid, member.mode & 0o7777, mtime_ns, tuple(xattrs))


class _Layer:
    """The layer directory being filled, with every path confined to it."""

    def __init__(self, dest: str, splitter: Splitter | None = None) -> None:
        self._root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._splitter = splitter  # told before a file it may refer to is removed
        self._dirs: dict[Parts, tuple[int, int]] = {}  # mode and mtime, applied last
        self._whiteouts: set[Parts] = set()
        # The directory walked last and its O_PATH fd: a tar lists a directory's entries
        # together, so most entries need no walk.  Forgotten when a directory above it
        # is removed; an fd forgotten while a caller uses it is closed when that one ends.
        self._last: tuple[Parts, int] | None = None
        self._lent = False  # a caller is using the last directory's fd

    def __enter__(self) -> _Layer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._forget_last()
        os.close(self._root)

    # -- confinement -------------------------------------------------------

    @contextlib.contextmanager
    def _dir(self, parts: Parts, label: str, *, create: bool) -> Iterator[int]:
        """An O_PATH fd of the directory ``parts``, walked without following symlinks."""
        if self._last is not None and self._last[0] == parts:
            fd = self._last[1]
        else:
            fd = self._walk(parts, label, create)
            if self._lent:  # the last directory's fd is in use: this one is not kept
                try:
                    yield fd
                finally:
                    os.close(fd)
                return
            self._forget_last()
            self._last = (parts, fd)
        lent, self._lent = self._lent, True
        try:
            yield fd
        finally:
            self._lent = lent
            if not lent and (self._last is None or self._last[1] != fd):
                os.close(fd)

    def _walk(self, parts: Parts, label: str, create: bool) -> int:
        fd = os.dup(self._root)
        try:
            for depth in range(len(parts)):
                child = self._step(fd, parts[: depth + 1], label, create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _forget_last(self, below: Parts = ()) -> None:
        """Forget the last directory (if it lies in ``below``); its fd is closed unless a caller is using it."""
        if self._last is not None and self._last[0][: len(below)] == below:
            if not self._lent:
                os.close(self._last[1])
            self._last = None

    def _step(self, fd: int, parts: Parts, label: str, create: bool) -> int:
        comp = parts[-1]
        try:
            return os.open(comp, _WALK, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            self._mkdir_implicit(fd, parts)
            return os.open(comp, _WALK, dir_fd=fd)
        except OSError as exc:
            # O_NOFOLLOW|O_DIRECTORY: a symlink gives ELOOP or ENOTDIR, a file ENOTDIR.
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
            shown = "/".join(parts)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeArchive(f"{label}: the path passes through symlink {shown!r}") from None
            raise ArchiveError(f"{label}: {shown!r} is not a directory") from None

    def _mkdir_implicit(self, fd: int, parts: Parts) -> None:
        os.mkdir(parts[-1], 0o700, dir_fd=fd)
        # Explicit owner: a setgid parent would hand its group down.
        os.chown(parts[-1], 0, 0, dir_fd=fd, follow_symlinks=False)
        self._dirs[parts] = _IMPLICIT_DIR

    @contextlib.contextmanager
    def _place(self, parts: Parts, label: str) -> Iterator[tuple[int, str]]:
        """The parent fd and base name of ``parts`` (for the root: the root and ".")."""
        with self._dir(parts[:-1], label, create=True) as pfd:
            yield pfd, parts[-1] if parts else "."

    def _clear(self, pfd: int, base: str, parts: Parts, label: str, *, keep_dir: bool) -> None:
        """Make room for a new entry: the same path twice replaces the old one."""
        if parts in self._whiteouts:
            raise ArchiveError(f"{label}: this layer also has a whiteout for it")
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if self._splitter is not None and not (keep_dir and stat.S_ISDIR(st.st_mode)):
            self._splitter.removed(parts, stat.S_ISDIR(st.st_mode))
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            self._forget_last(below=parts)
            shutil.rmtree(base, dir_fd=pfd)
            # Forget what lived below the removed dir.
            self._dirs = {p: v for p, v in self._dirs.items() if p[: len(parts)] != parts}
            self._whiteouts = {p for p in self._whiteouts if p[: len(parts)] != parts}
        else:
            os.unlink(base, dir_fd=pfd)

    # -- entries -----------------------------------------------------------

    def add(self, member: tarfile.TarInfo, reader: TarReader) -> None:
        """Apply one tar member to the layer."""
        label = f"entry {member.name!r}"
        parts = split_name(member.name)
        if len(parts) > MAX_DEPTH:
            raise ArchiveError(f"{label}: deeper than {MAX_DEPTH} directory levels")
        kind = self._kind(parts, label)
        if kind is wh.EntryKind.AUFS_META:
            return
        if kind is wh.EntryKind.OPAQUE:
            with self._dir(parts[:-1], label, create=True) as fd:
                os.setxattr(f"/proc/self/fd/{fd}", wh.OPAQUE_XATTR, wh.OPAQUE_VALUE)
            return
        if kind is wh.EntryKind.WHITEOUT:
            self._whiteout(parts, label)
            return
        attrs = _attrs(member)
        if member.type == tarfile.LNKTYPE:
            self._hardlink(parts, member.linkname, label)
            return
        with self._place(parts, label) as (pfd, base):
            self._create(pfd, base, parts, member, reader, label)
            self._set_attrs(pfd, base, parts, member, attrs)

    def _kind(self, parts: Parts, label: str) -> wh.EntryKind:
        try:
            for comp in parts[:-1]:
                kind = wh.whiteout_from_oci(comp)[0]
                if kind is wh.EntryKind.AUFS_META:
                    return kind
                if kind is not wh.EntryKind.ENTRY:
                    raise ArchiveError(f"{comp!r} is a whiteout name, not a directory")
            return wh.whiteout_from_oci(parts[-1])[0] if parts else wh.EntryKind.ENTRY
        except ArchiveError as exc:
            raise type(exc)(f"{label}: {exc.message}") from None

    def _whiteout(self, parts: Parts, label: str) -> None:
        target = parts[:-1] + (wh.whiteout_from_oci(parts[-1])[1],)
        with self._place(target, label) as (pfd, base):
            if os.path.lexists(f"/proc/self/fd/{pfd}/{base}"):
                raise ArchiveError(f"{label}: this layer also has an entry {'/'.join(target)!r}")
            os.mknod(base, wh.WHITEOUT_MODE, wh.WHITEOUT_DEVICE, dir_fd=pfd)
        self._whiteouts.add(target)

    def _create(
        self, pfd: int, base: str, parts: Parts, member: tarfile.TarInfo, reader: TarReader, label: str
    ) -> None:
        if not parts and not member.isdir():
            raise ArchiveError(f"{label}: the layer root must be a directory")
        if parts:
            self._clear(pfd, base, parts, label, keep_dir=member.isdir())
        if member.isdir():
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700, dir_fd=pfd)
        elif member.type in _REGULAR:
            fd = os.open(base, _NEW_FILE, 0o600, dir_fd=pfd)
            with open(fd, "wb") as out:
                reader.copy_data(member, out, parts)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=pfd)
        elif member.type in _NODES:
            if member.devmajor < 0 or member.devminor < 0:
                raise ArchiveError(f"{label}: negative device number")
            device = os.makedev(member.devmajor, member.devminor)
            os.mknod(base, _NODES[member.type] | 0o600, device, dir_fd=pfd)
        else:
            raise ArchiveError(f"{label}: unsupported entry type {member.type!r}")

    def _set_attrs(self, pfd: int, base: str, parts: Parts, member: tarfile.TarInfo, attrs: _Attrs) -> None:
        # Order matters: chown clears setuid/setgid and file capabilities, so the
        # mode and xattrs come after it; mtime last, as the others touch ctime only.
        os.chown(base, attrs.uid, attrs.gid, dir_fd=pfd, follow_symlinks=False)
        for name, value in attrs.xattrs:
            os.setxattr(f"/proc/self/fd/{pfd}/{base}", name, value, follow_symlinks=False)
        if member.isdir():
            # Creating children would change a dir's mtime: applied in finish_dirs().
            self._dirs[parts] = (attrs.mode, attrs.mtime_ns)
            return
        if not member.issym():
            os.chmod(base, attrs.mode, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, ns=(attrs.mtime_ns, attrs.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, parts: Parts, linkname: str, label: str) -> None:
        target = split_name(linkname, f"{label}: hardlink target")
        if not target or not parts:
            raise UnsafeArchive(f"{label}: hardlink to or from the layer root")
        if target == parts or target in self._whiteouts:
            raise ArchiveError(f"{label}: hardlink to itself or to a whiteout")
        absent = UnsafeArchive(f"{label}: hardlink target {linkname!r} is not in this layer")
        try:
            with self._dir(target[:-1], label, create=False) as tfd:
                st = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise ArchiveError(f"{label}: hardlink to a directory")
                with self._place(parts, label) as (pfd, base):
                    self._clear(pfd, base, parts, label, keep_dir=False)
                    os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise absent from None

    def finish_dirs(self) -> None:
        """Apply directory modes and mtimes, deepest first, once all children exist."""
        for parts in sorted(self._dirs, key=len, reverse=True):
            mode, mtime_ns = self._dirs[parts]
            with self._place(parts, "directory") as (pfd, base):
                os.chmod(base, mode, dir_fd=pfd, follow_symlinks=False)
                os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)
