"""Idmapped mounts: a user namespace to carry an ID map, and detached idmapped clones of directories.

An idmapped mount shows a directory's files with their owners moved through
the ID map of a user namespace (mount_setattr(2), MOUNT_ATTR_IDMAP): with the
map ``0 165536 65536``, a file owned by 0 on disk is shown owned by 165536,
and a file created as 165536 through the mount is stored owned by 0.  Nothing
is copied or chowned.  overlayfs accepts idmapped lower layers since Linux
5.19 (Documentation/filesystems/overlayfs.rst, "Idmapped layers").

The verbs here make no decisions; the caller keeps each fd and closes it::

    userns = open_userns(mapping_for(r), mapping_for(r))
    mnt = idmapped_clone(layer_dir, userns)
    attach(mnt, somewhere)        # then lowerdir=somewhere; unmount it when done

For a container (tests/integration/test_idmap.py checks each point): host
root mounts the overlay outside the user namespace, with every lower (the
init layer too) idmapped and the upper and work plain; the attached lowers
can be unmounted once the overlay is mounted, as overlayfs keeps private
clones of its layers.  A process of the namespace then writes the upper as
host IDs of the range.  The merged root takes its owner from the upper dir,
so that dir must belong to the range's start.
"""

from __future__ import annotations

import errno
import os

from ..errors import KernelError, OverlayctlError, from_oserror
from ..plan.idmap import IdMap, format_map
from . import _libc

_NS_FLAGS = os.O_RDONLY | os.O_CLOEXEC


def open_userns(uid_map: IdMap, gid_map: IdMap) -> int:
    """An fd of a new user namespace with these ID maps; nothing runs in it.

    A child process unshares CLONE_NEWUSER and waits while this process, root
    in the parent namespace, writes the child's uid_map and gid_map and opens
    its ``ns/user``; then the child exits and is reaped.  The namespace lives
    as long as the fd.  setgroups stays "allow": user_namespaces(7) asks for
    "deny" only when the writer of gid_map lacks CAP_SETGID in the parent
    namespace.  Raises ValueError for a map the kernel would refuse, a
    KernelError (NotPermitted when not root) when the kernel refuses.
    """
    uid_text, gid_text = format_map(uid_map), format_map(gid_map)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    release_r, release_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        for fd in (ready_r, ready_w, release_r, release_w):
            os.close(fd)
        raise
    if pid == 0:  # the child: only system calls, then _exit
        code = 0
        try:
            os.close(ready_r)
            os.close(release_w)
            try:
                _libc.unshare(_libc.CLONE_NEWUSER)
            except OSError as exc:
                code = exc.errno or errno.EPERM
            os.write(ready_w, code.to_bytes(4, "little"))
            os.read(release_r, 1)  # returns b"" when the parent closes release_w
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(release_r)
    try:
        return _name_child_userns(pid, ready_r, uid_text, gid_text)
    finally:
        os.close(ready_r)
        os.close(release_w)
        os.waitpid(pid, 0)


def _name_child_userns(pid: int, ready: int, uid_text: str, gid_text: str) -> int:
    reply = os.read(ready, 4)
    if len(reply) != 4:
        raise KernelError("cannot make a user namespace: the helper process died", call="unshare(CLONE_NEWUSER)")
    code = int.from_bytes(reply, "little")
    if code:
        raise _userns_error(OSError(code, os.strerror(code)), "unshare(CLONE_NEWUSER)")
    for name, text in (("uid_map", uid_text), ("gid_map", gid_text)):
        path = f"/proc/{pid}/{name}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())  # the kernel takes the whole map in one write
            finally:
                os.close(fd)
        except OSError as exc:
            raise _userns_error(exc, f"write({name})", text.strip().replace("\n", ", ")) from exc
    try:
        return os.open(f"/proc/{pid}/ns/user", _NS_FLAGS)
    except OSError as exc:
        raise _userns_error(exc, "open(ns/user)") from exc


def _userns_error(exc: OSError, call: str, id_map: str = "") -> OverlayctlError:
    what = f"cannot make a user namespace with the ID map {id_map}" if id_map else "cannot make a user namespace"
    if exc.errno == errno.ENOSPC:  # not a full disk: user.max_user_namespaces (user_namespaces(7))
        return KernelError(
            f"{what}: too many user namespaces",
            errno=exc.errno,
            call=call,
            hint="raise /proc/sys/user/max_user_namespaces",
        )
    return from_oserror(exc, what=what, call=call, missing=KernelError)


#: Why mount_setattr(MOUNT_ATTR_IDMAP) fails for root (mount_setattr(2), tested on Linux 6.18).
_IDMAP_HINTS = {
    errno.EINVAL: "its filesystem must support idmapped mounts (ext4, xfs, btrfs, tmpfs >= 6.3), "
    "and the fd must be a user namespace's",
    errno.EPERM: "it is already on an idmapped mount, or the user namespace is the initial one",
}


def idmapped_clone(path: str, userns_fd: int, *, recursive: bool = False) -> int:
    """A detached mount of path, idmapped through the user namespace userns_fd; its fd.

    open_tree(OPEN_TREE_CLONE) then mount_setattr(MOUNT_ATTR_IDMAP).  Owners
    are shown moved from the namespace's inside to its outside: with the map
    ``0 165536 65536`` a file owned by 0 shows as 165536.  With recursive,
    the mounts below path come too.  The mount goes away when the fd is
    closed, unless ``attach`` put it somewhere.  Raises NotFound for a
    missing path, KernelError for EINVAL (a filesystem without idmapped
    mounts, or an fd that is no user namespace) and NotPermitted for EPERM
    (path already on an idmapped mount, or the initial user namespace).
    """
    flags = _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC | (_libc.AT_RECURSIVE if recursive else 0)
    what = f"the kernel refused an idmapped mount of {path}"
    try:
        fd = _libc.open_tree(path, flags)
    except OSError as exc:
        raise from_oserror(exc, what=what, call="open_tree") from exc
    try:
        _libc.mount_setattr(
            fd,
            "",
            _libc.AT_EMPTY_PATH | (_libc.AT_RECURSIVE if recursive else 0),
            attr_set=_libc.MOUNT_ATTR_IDMAP,
            userns_fd=userns_fd,
        )
    except OSError as exc:
        os.close(fd)
        error = from_oserror(exc, what=what, call="mount_setattr(MOUNT_ATTR_IDMAP)")
        error.hint = _IDMAP_HINTS.get(exc.errno) if os.geteuid() == 0 else error.hint
        raise error from exc
    return fd


def attach(fd: int, target: str) -> None:
    """Put the detached mount fd on the directory target (move_mount, MOVE_MOUNT_F_EMPTY_PATH).

    The fd stays the caller's to close; unmount target with
    ``kernel.mount.unmount`` when done.  A mount attached under a shared
    mount propagates to its peers like any other.
    """
    try:
        _libc.move_mount(fd, "", _libc.AT_FDCWD, target, _libc.MOVE_MOUNT_F_EMPTY_PATH)
    except OSError as exc:
        raise from_oserror(exc, what=f"cannot attach an idmapped mount on {target}", call="move_mount") from exc
