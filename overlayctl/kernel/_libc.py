"""ctypes bindings of the system calls the standard library lacks.

The only module of overlayctl that touches ctypes.  Every binding raises
``OSError(errno, "<call>(...) failed: <strerror>")`` on failure.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

# The C library is already loaded into Python: dlopen(NULL) finds its symbols
# without ctypes.util.find_library, which runs ldconfig in a subprocess.
_libc = ctypes.CDLL(None, use_errno=True)

# Syscall numbers: the mount API numbers are shared by all architectures.
SYS_move_mount = 429
SYS_fsopen = 430
SYS_fsconfig = 431
SYS_fsmount = 432
SYS_getdents64 = {"x86_64": 217, "aarch64": 61}.get(os.uname().machine, 217)
SYS_pivot_root = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)

# include/uapi/linux/mount.h
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
AT_FDCWD = -100

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


def _check(name: str):
    def errcheck(result, func, args):
        if result == -1:
            err = ctypes.get_errno()
            raise OSError(err, f"{name}() failed: {os.strerror(err)}")
        return result

    return errcheck


def _bind(name: str, restype, argtypes):
    func = getattr(_libc, name)
    func.restype = restype
    func.argtypes = argtypes
    func.errcheck = _check(name)
    return func


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _sys(name: str, number: int, *args) -> int:
    result = _syscall(number, *args)
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}() failed: {os.strerror(err)}")
    return result


def _b(path: str | bytes | None) -> bytes | None:
    if path.__class__ is str:
        return path.encode("utf-8", "surrogateescape")
    return path


_mount = _bind(
    "mount",
    ctypes.c_int,
    [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p],
)
_umount2 = _bind("umount2", ctypes.c_int, [ctypes.c_char_p, ctypes.c_int])
_unshare = _bind("unshare", ctypes.c_int, [ctypes.c_int])
_setns = _bind("setns", ctypes.c_int, [ctypes.c_int, ctypes.c_int])


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | bytes | None = None) -> None:
    _mount(_b(source), _b(target), _b(fstype), flags, _b(data))


def umount2(target: str, flags: int = 0) -> None:
    _umount2(_b(target), flags)


def unshare(flags: int) -> None:
    _unshare(flags)


def setns(fd: int, nstype: int) -> None:
    _setns(fd, nstype)


def _syscall_proto(*argtypes):
    """A typed view of syscall(2): typed arguments convert much faster than untyped ones."""
    proto = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, *argtypes, use_errno=True)
    return proto(("syscall", _libc))


_c = ctypes
_fsopen = _syscall_proto(_c.c_char_p, _c.c_uint)
_fsconfig = _syscall_proto(_c.c_int, _c.c_uint, _c.c_char_p, _c.c_char_p, _c.c_int)
_fsmount = _syscall_proto(_c.c_int, _c.c_uint, _c.c_uint)
_move_mount = _syscall_proto(_c.c_int, _c.c_char_p, _c.c_int, _c.c_char_p, _c.c_uint)


def _fail(name: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{name}() failed: {os.strerror(err)}")


def fsopen(fsname: str, flags: int = FSOPEN_CLOEXEC) -> int:
    fd = _fsopen(SYS_fsopen, _b(fsname), flags)
    if fd < 0:
        raise _fail("fsopen")
    return fd


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | bytes | None = None, aux: int = 0) -> None:
    if _fsconfig(SYS_fsconfig, fd, cmd, _b(key), _b(value), aux) < 0:
        raise _fail("fsconfig")


def add_lowers(fd: int, paths: Iterable[str]) -> None:
    """fsconfig(fd, SET_STRING, "lowerdir+", path) for each path, top first.

    One function for the loop that deep mounts spend their time in: the
    call and its arguments are bound once.
    """
    call, number, key = _fsconfig, SYS_fsconfig, b"lowerdir+"
    for path in paths:
        if call(number, fd, FSCONFIG_SET_STRING, key, path.encode("utf-8", "surrogateescape"), 0) < 0:
            raise _fail("fsconfig")


def fsmount(fd: int, flags: int = FSMOUNT_CLOEXEC, attr_flags: int = 0) -> int:
    mfd = _fsmount(SYS_fsmount, fd, flags, attr_flags)
    if mfd < 0:
        raise _fail("fsmount")
    return mfd


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    if _move_mount(SYS_move_mount, from_fd, _b(from_path), to_fd, _b(to_path), flags) < 0:
        raise _fail("move_mount")


def pivot_root(new_root: str, put_old: str) -> None:
    _sys("pivot_root", SYS_pivot_root, ctypes.c_char_p(_b(new_root)), ctypes.c_char_p(_b(put_old)))


class _Statfs(ctypes.Structure):
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


_statfs = _bind("statfs", ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_Statfs)])


def statfs_type(path: str) -> int:
    """The filesystem magic number (``f_type``) of the filesystem holding path."""
    buf = _Statfs()
    _statfs(_b(path), ctypes.byref(buf))
    return buf.f_type & 0xFFFFFFFF


def getdents64(fd: int, size: int = 32768) -> list[tuple[str, int]]:
    """Raw directory entries of an open directory fd: (name, d_type) pairs.

    Unlike os.scandir, this shows DT_UNKNOWN (0) when the filesystem does not
    fill in d_type.
    """
    buf = ctypes.create_string_buffer(size)
    entries: list[tuple[str, int]] = []
    while True:
        n = _sys("getdents64", SYS_getdents64, ctypes.c_int(fd), buf, ctypes.c_uint(size))
        if n == 0:
            return entries
        raw = buf.raw[:n]
        pos = 0
        while pos < n:
            reclen = int.from_bytes(raw[pos + 16 : pos + 18], "little")
            d_type = raw[pos + 18]
            name = raw[pos + 19 : pos + reclen].split(b"\0", 1)[0]
            entries.append((os.fsdecode(name), d_type))
            pos += reclen


_statx = _bind("statx", ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p])
_STATX_MNT_ID = 0x1000
_AT_SYMLINK_NOFOLLOW = 0x100
_STX_MNT_ID_OFFSET = 0x90  # struct statx: __u64 stx_mnt_id after the timestamps and devices


def mount_id(path: str) -> int:
    """The ID of the mount holding path (statx STATX_MNT_ID, Linux >= 5.8)."""
    buf = ctypes.create_string_buffer(256)
    _statx(AT_FDCWD, _b(path), _AT_SYMLINK_NOFOLLOW, _STATX_MNT_ID, buf)
    return int.from_bytes(buf.raw[_STX_MNT_ID_OFFSET : _STX_MNT_ID_OFFSET + 8], "little")


_prctl = _bind("prctl", ctypes.c_int, [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong])
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def prctl(option: int, arg2: int = 0) -> None:
    _prctl(option, arg2, 0, 0, 0)


_sethostname = _bind("sethostname", ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t])


def sethostname(name: str) -> None:
    """socket.sethostname without importing socket (a few ms on the run path)."""
    data = name.encode()
    _sethostname(data, len(data))


def set_process_name(name: str) -> None:
    """The name ps and /proc/PID/comm show (at most 15 bytes)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _prctl(PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0)


# --- idmapped mounts ----------------------------------------------------------
# open_tree and mount_setattr, like the rest of the mount API, have the same
# number on every architecture (the unified table from 424 on).
SYS_open_tree = 428
SYS_mount_setattr = 442

# include/uapi/linux/mount.h, fcntl.h, sched.h
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_IDMAP = 0x00100000
CLONE_NEWUSER = 0x10000000


class MountAttr(ctypes.Structure):
    """struct mount_attr (MOUNT_ATTR_SIZE_VER0, 32 bytes)."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


_open_tree = _syscall_proto(_c.c_int, _c.c_char_p, _c.c_uint)
_mount_setattr = _syscall_proto(_c.c_int, _c.c_char_p, _c.c_uint, _c.POINTER(MountAttr), _c.c_size_t)


def open_tree(path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC, dfd: int = AT_FDCWD) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount at path (Linux >= 5.2)."""
    fd = _open_tree(SYS_open_tree, dfd, _b(path), flags)
    if fd < 0:
        raise _fail("open_tree")
    return fd


def mount_setattr(
    fd: int,
    path: str = "",
    flags: int = AT_EMPTY_PATH,
    *,
    attr_set: int = 0,
    attr_clr: int = 0,
    propagation: int = 0,
    userns_fd: int = 0,
) -> None:
    """mount_setattr(2) on the mount at fd/path; MOUNT_ATTR_IDMAP needs userns_fd (Linux >= 5.12)."""
    attr = MountAttr(attr_set, attr_clr, propagation, userns_fd)
    if _mount_setattr(SYS_mount_setattr, fd, _b(path), flags, ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
        raise _fail("mount_setattr")
