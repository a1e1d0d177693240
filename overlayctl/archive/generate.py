"""Exporting a layer or upper directory as a canonical OCI layer tar.

The output depends only on the tree: entries in bytewise-sorted depth-first
order, PAX format, whole-second mtimes, numeric owners with empty user and
group names, xattrs as sorted ``SCHILY.xattr.*`` records, and whiteout and
opaque markers with fixed attributes (see ``whiteout``). The same tree always
gives the same bytes, hence the same diff_id.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from overlayctl.archive import whiteout as wh
from overlayctl.errors import ArchiveError
from overlayctl.plan.idmap import IdRange, shift_to_container, shift_xattr_to_container

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NODES = {
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}


class HashingWriter:
    """Passes bytes to ``out`` and hashes exactly what was written."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        view = memoryview(data)
        while view:
            written = self._out.write(view)
            view = view[len(view) if written is None else written :]
        return len(data)

    def diff_id(self) -> str:
        return "sha256:" + self._digest.hexdigest()


def write_layer_tar(src: str, out: BinaryIO, *, id_shift: IdRange | None = None) -> str:
    """Write the tree under ``src`` to ``out`` as an OCI layer tar; return its diff_id.

    ``src`` is a layer dir in overlay form (or a plain root filesystem); its own
    root is not an entry. ``out`` only needs ``write`` (a pipe is fine). Raises
    ArchiveError for an upper that is not a complete changeset (redirect or
    metacopy xattrs) or a file that changes while it is read; the bytes already
    written to ``out`` are then useless. ``src`` must not change meanwhile.

    ``id_shift``: the upper of a container run in a user namespace with that
    host ID range; owners (and the IDs in ACLs and file capabilities) are
    written as the container saw them: host ``start + N`` as N, IDs outside
    the range as OVERFLOW_ID (``plan.idmap.shift_to_container``).
    """
    sink = HashingWriter(out)
    tar = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
    root = os.open(src, _DIR)
    try:
        _Exporter(tar, id_shift).export(root)
    except BaseException:
        # Drop the stream unflushed: flushing it later (tarfile's __del__)
        # would write to an output the caller has closed, and print a traceback.
        tar.fileobj.closed = True
        tar.closed = True
        raise
    finally:
        os.close(root)
    tar.close()  # writes the end-of-archive blocks
    return sink.diff_id()


def dir_usage(path: str) -> tuple[int, int]:
    """(bytes of regular files, inodes) under ``path``; hardlinks counted once, symlinks not followed."""
    total, inodes = 0, 1
    seen: set[tuple[int, int]] = set()
    for _dfd, _name, _rel, st in _walk(os.open(path, _DIR)):
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        inodes += 1
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
    return total, inodes


def _walk(root: int) -> Iterator[tuple[int, str, str, os.stat_result]]:
    """(parent fd, name, relative path, lstat) of each entry, parents first.

    Siblings come in bytewise order. Takes ownership of the ``root`` fd. The
    parent fd stays valid until the next step.
    """
    stack: list[tuple[int, str, Iterator[str]]] = []
    try:
        _push(stack, root, "")
        while stack:
            dfd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(stack.pop()[0])
                continue
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            yield dfd, name, prefix + name, st
            if stat.S_ISDIR(st.st_mode):
                _push(stack, os.open(name, _DIR, dir_fd=dfd), prefix + name + "/")
    finally:
        for dfd, _prefix, _names in stack:
            os.close(dfd)


def _push(stack: list[tuple[int, str, Iterator[str]]], fd: int, prefix: str) -> None:
    stack.append((fd, prefix, iter(())))  # owned by the stack before listdir can fail
    stack[-1] = (fd, prefix, iter(sorted(os.listdir(fd), key=os.fsencode)))


def _xattrs(dfd: int, name: str) -> dict[str, bytes]:
    path = f"/proc/self/fd/{dfd}/{name}"
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno != errno.EOPNOTSUPP:
            raise
        return {}
    return {key: os.getxattr(path, key, follow_symlinks=False) for key in keys}


class _Exact:
    """A file reader that refuses to return less than tarfile asked for."""

    def __init__(self, data: BinaryIO, name: str) -> None:
        self._data = data
        self._name = name

    def read(self, size: int) -> bytes:
        chunk = self._data.read(size)
        if len(chunk) < size:
            raise ArchiveError(f"{self._name!r} shrank while it was exported")
        return chunk


def _marker(name: str) -> tarfile.TarInfo:
    """An empty regular file with fixed attributes: a whiteout or opaque marker."""
    info = tarfile.TarInfo(name)
    info.mode = wh.MARKER_MODE
    info.mtime = wh.MARKER_MTIME
    return info


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0] + "/" if "/" in rel else ""


class _Exporter:
    """Turns each walked entry into tar entries."""

    def __init__(self, tar: tarfile.TarFile, id_shift: IdRange | None = None) -> None:
        self._tar = tar
        self._id_shift = id_shift
        self._links: dict[tuple[int, int], str] = {}  # inode -> first name written
        self._alt_dirs: set[str] = set()  # dirs marked opaque="x": hold alt. whiteouts

    def export(self, root: int) -> None:
        rel = "."
        try:
            if _xattrs(root, ".").get(wh.OPAQUE_XATTR) == wh.ALT_OPAQUE_VALUE:
                self._alt_dirs.add("")
            for dfd, name, rel, st in _walk(os.dup(root)):
                self._entry(dfd, name, rel, st)
        except OSError as exc:
            raise ArchiveError(f"cannot export {rel!r}: {exc.strerror or exc}") from exc
        except UnicodeEncodeError:
            # PAX keywords must be UTF-8, so an xattr name that is not cannot be stored.
            raise ArchiveError(f"cannot export {rel!r}: an xattr name is not UTF-8") from None

    def _entry(self, dfd: int, name: str, rel: str, st: os.stat_result) -> None:
        if stat.S_ISSOCK(st.st_mode):
            return  # tar cannot store sockets (OCI layer.md)
        if wh.is_whiteout_mode(st.st_mode, st.st_rdev):
            self._tar.addfile(_marker(_parent(rel) + wh.whiteout_to_oci(name)))
            return
        xattrs = _xattrs(dfd, name)
        for key in xattrs:
            if wh.incomplete_diff_xattr(key):
                raise ArchiveError(
                    f"{rel!r} has {key}: this upper is not a complete changeset",
                    hint="mount containers with redirect_dir=nofollow,metacopy=off",
                )
        if self._is_alt_whiteout(rel, st, xattrs):
            self._tar.addfile(_marker(_parent(rel) + wh.whiteout_to_oci(name)))
            return
        info = self._info(rel, st, xattrs)
        if stat.S_ISDIR(st.st_mode):
            self._tar.addfile(info)
            self._dir_markers(rel, xattrs.get(wh.OPAQUE_XATTR))
        elif self._link_to_earlier(info, st):
            self._tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            self._add_file(dfd, name, info, st)
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=dfd)
            self._tar.addfile(info)
        else:
            info.type = _NODES[stat.S_IFMT(st.st_mode)]
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self._tar.addfile(info)

    def _is_alt_whiteout(self, rel: str, st: os.stat_result, xattrs: dict[str, bytes]) -> bool:
        # overlayfs honours these only inside a dir whose trusted.overlay.opaque is "x" (kernel >= 6.7).
        return (
            _parent(rel).rstrip("/") in self._alt_dirs
            and stat.S_ISREG(st.st_mode)
            and st.st_size == 0
            and wh.ALT_WHITEOUT_XATTR in xattrs
        )

    def _dir_markers(self, rel: str, opaque: bytes | None) -> None:
        if opaque == wh.OPAQUE_VALUE:
            self._tar.addfile(_marker(f"{rel}/{wh.OPAQUE_MARKER}"))
        elif opaque == wh.ALT_OPAQUE_VALUE:
            self._alt_dirs.add(rel)

    def _info(self, rel: str, st: os.stat_result, xattrs: dict[str, bytes]) -> tarfile.TarInfo:
        info = tarfile.TarInfo(rel)
        info.type = tarfile.DIRTYPE if stat.S_ISDIR(st.st_mode) else tarfile.REGTYPE
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        if self._id_shift is not None:
            shift = self._id_shift
            info.uid, info.gid = shift_to_container(st.st_uid, shift), shift_to_container(st.st_gid, shift)
            xattrs = {key: shift_xattr_to_container(key, value, shift) for key, value in xattrs.items()}
        info.mtime = st.st_mtime_ns // 1_000_000_000  # whole seconds, rounded down
        info.pax_headers = {
            wh.xattr_to_pax(key): value.decode("utf-8", "surrogateescape")
            for key, value in sorted(xattrs.items())
            if not wh.forbidden_xattr(key)
        }
        return info

    def _link_to_earlier(self, info: tarfile.TarInfo, st: os.stat_result) -> bool:
        """Make ``info`` a hardlink entry if its inode was already written."""
        if st.st_nlink < 2:
            return False
        first = self._links.setdefault((st.st_dev, st.st_ino), info.name)
        if first == info.name:
            return False
        info.type, info.linkname, info.pax_headers = tarfile.LNKTYPE, first, {}
        return True

    def _add_file(self, dfd: int, name: str, info: tarfile.TarInfo, st: os.stat_result) -> None:
        info.size = st.st_size
        with open(os.open(name, _FILE, dir_fd=dfd), "rb") as data:
            self._tar.addfile(info, _Exact(data, info.name))
            if os.fstat(data.fileno()).st_size != st.st_size:
                raise ArchiveError(f"{info.name!r} changed size while it was exported")
