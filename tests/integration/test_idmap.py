"""Idmapped mounts on the real kernel: user namespaces, idmapped layers under overlay, commit shifting.

Direction (checked below): through a mount idmapped with the map
``0 165536 65536``, a file owned by 0 on disk shows as owned by 165536, and a
file made as host 165536 + N through it is stored owned by N.  The upper is
not idmapped: what a process of the namespace makes there is owned by host
165536 + N, which commit shifts back with ``id_shift``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import stat
import struct
import tarfile
import tempfile

import pytest

from overlayctl.errors import KernelError, NotFound, NotPermitted
from overlayctl.kernel import _libc
from overlayctl.kernel import mount as kmount
from overlayctl.kernel.idmap import attach, idmapped_clone, open_userns
from overlayctl.plan.idmap import OVERFLOW_ID, IdRange, mapping_for
from overlayctl.plan.mountplan import MountPlan
from overlayctl.store import containers as ctrs
from overlayctl.store.idranges import SUBGID, SUBUID, ensure_subids, remove_subids

pytestmark = pytest.mark.root

R = IdRange(165536, 65536)
R2 = IdRange(231072, 65536)


def _children() -> set[int]:
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            pids.update(int(p) for p in f.read().split())
    return pids


@pytest.fixture(autouse=True)
def every_child_reaped():
    """No test here leaves a child process (running or zombie) behind."""
    before = _children()
    yield
    assert _children() <= before, "a child process was not reaped"


@pytest.fixture
def userns():
    fd = open_userns(mapping_for(R), mapping_for(R))
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def idmapped_at(path, userns_fd: int, target) -> str:
    """path idmapped through userns_fd and attached on target; unmounted afterwards."""
    os.makedirs(target, exist_ok=True)
    fd = idmapped_clone(str(path), userns_fd)
    try:
        attach(fd, str(target))
        try:
            yield str(target)
        finally:
            kmount.unmount(str(target), detach=True)
    finally:
        os.close(fd)


def _in_child(action, *, cwd=None, uid: int | None = None, userns_fd: int | None = None):
    """Run action in a forked child and return what it returns (JSON) or raise its OSError.

    cwd: where the child goes first, as host root (the test's temporary
    directory sits under a 0700 directory of host root: the child's paths
    must be relative to cwd).  uid: become host uid/gid ``uid`` in our
    namespace.  userns_fd: join that user namespace as its root, in a new
    mount namespace (a container's process, as runc makes it after its
    pivot_root).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                if cwd is not None:
                    os.chdir(cwd)
                if userns_fd is not None:
                    _libc.setns(userns_fd, _libc.CLONE_NEWUSER)
                    uid = 0
                if uid is not None:
                    os.setgroups([])
                    os.setresgid(uid, uid, uid)
                    os.setresuid(uid, uid, uid)
                if userns_fd is not None:
                    _libc.unshare(_libc.CLONE_NEWNS)
                reply = {"value": action()}
            except OSError as exc:
                reply = {"errno": exc.errno, "text": str(exc)}
            os.write(w, json.dumps(reply).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            reply = json.loads(f.read() or b'{"errno": 0, "text": "the child died"}')
    finally:
        os.waitpid(pid, 0)
    if "errno" in reply:
        raise OSError(reply["errno"], reply["text"])
    return reply["value"]


def _write(path: str, text: str = "x\n") -> None:
    with open(path, "w") as f:
        f.write(text)


def _owner(path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _tree(tmp_path, owners: dict[str, int]):
    """A directory with files owned by the given IDs on disk."""
    root = tmp_path / "layer"
    (root / "etc").mkdir(parents=True)
    os.chown(root / "etc", 0, 0)
    for name, owner in owners.items():
        _write(str(root / "etc" / name), f"{name}\n")
        os.chown(root / "etc" / name, owner, owner)
    return root


# --- the user namespace ---------------------------------------------------------------


def test_open_userns_maps_and_reaps():
    fd = open_userns(mapping_for(R), ((0, R.start, 1000), (1000, R.start + 5000, 10)))
    other = open_userns(mapping_for(R2), mapping_for(R2))
    try:
        assert os.fstat(fd).st_ino != os.fstat(other).st_ino, "each call makes its own namespace"

        def read():
            return [open(f"/proc/self/{name}").read().split() for name in ("uid_map", "gid_map", "setgroups")]

        uid_map, gid_map, setgroups = _in_child(read, cwd="/", userns_fd=fd)
        assert uid_map == ["0", "165536", "65536"]
        assert gid_map == ["0", "165536", "1000", "1000", "170536", "10"]
        assert setgroups == ["allow"], "root writes gid_map without setgroups=deny; a container may call setgroups"
    finally:
        os.close(fd)
        os.close(other)


def test_a_bad_map_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="overlapping"):
        open_userns(((0, 100000, 10), (5, 200000, 10)), mapping_for(R))


# --- (a) the direction of an idmapped mount ------------------------------------------------


def test_idmapped_clone_shows_disk_ids_moved_into_the_host_range(tmp_path, userns):
    layer = _tree(tmp_path, {"root": 0, "user": 1000, "unmapped": 70000})
    with idmapped_at(layer, userns, tmp_path / "idmapped") as m:
        assert _owner(f"{m}/etc") == (R.start, R.start)
        assert _owner(f"{m}/etc/root") == (R.start, R.start), "disk 0 shows as host 165536"
        assert _owner(f"{m}/etc/user") == (R.start + 1000, R.start + 1000)
        assert _owner(f"{m}/etc/unmapped") == (OVERFLOW_ID, OVERFLOW_ID), "outside the map: overflow ID"
        # The other way: host 165536 writing through the mount stores 0 on disk, 165536 + 1000 stores 1000.
        _in_child(lambda: _write("etc/made"), cwd=m, uid=R.start)
        assert _owner(layer / "etc" / "made") == (0, 0)
        os.chown(f"{m}/etc/made", R.start + 1000, R.start + 1000)
        assert _owner(layer / "etc" / "made") == (1000, 1000)
        # Host root is not in the map: it cannot make files through the mount.
        with pytest.raises(OSError) as refused:
            _write(f"{m}/etc/by-root")
        assert refused.value.errno == errno.EOVERFLOW
    assert _owner(layer / "etc" / "root") == (0, 0), "nothing was chowned"


def test_a_detached_clone_is_usable_through_its_fd(tmp_path, userns):
    layer = _tree(tmp_path, {"root": 0})
    fd = idmapped_clone(str(layer), userns)
    try:
        assert _owner(f"/proc/self/fd/{fd}/etc/root") == (R.start, R.start)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "case, error, message",
    [
        ("missing", NotFound, "the kernel refused an idmapped mount of .*/missing: No such file"),
        ("not-a-userns", KernelError, "the kernel refused an idmapped mount of .*/layer: Invalid argument"),
        ("initial-userns", NotPermitted, "the kernel refused an idmapped mount of .*/layer: Operation not permitted"),
    ],
    ids=["missing", "not-a-userns", "initial-userns"],
)
def test_idmapped_clone_errors(tmp_path, userns, case, error, message):
    layer = _tree(tmp_path, {})
    path = str(tmp_path / "missing") if case == "missing" else str(layer)
    fd = {"missing": userns, "not-a-userns": os.open("/proc/self/ns/mnt", os.O_RDONLY)}.get(case)
    fd = os.open("/proc/self/ns/user", os.O_RDONLY) if fd is None else fd
    try:
        with pytest.raises(error, match=message) as caught:
            idmapped_clone(path, fd)
        assert caught.value.hint or case == "missing"
        assert "\n" not in caught.value.format()
    finally:
        if fd != userns:
            os.close(fd)


# --- (b) overlay on idmapped lowers ------------------------------------------------------------


def _two_layers(tmp_path):
    bottom = tmp_path / "bottom"
    (bottom / "etc").mkdir(parents=True)
    _write(str(bottom / "etc" / "motd"), "hello\n")
    top = tmp_path / "top"
    (top / "home" / "u").mkdir(parents=True)
    _write(str(top / "home" / "u" / "notes"), "notes\n")
    os.chown(top / "home" / "u", 1000, 1000)
    os.chown(top / "home" / "u" / "notes", 1000, 1000)
    for d in ("upper", "work", "merged"):
        (tmp_path / d).mkdir()
    return [top, bottom]


@contextlib.contextmanager
def _overlay(tmp_path, userns, api: kmount.MountApi, *, upper_owner: int = 0):
    """An overlay of two idmapped layers, mounted by host root in our namespace.

    The attached idmapped lowers are unmounted as soon as the overlay is
    mounted: overlayfs holds private clones of its layers.
    """
    lowers = _two_layers(tmp_path)
    os.chown(tmp_path / "upper", upper_owner, upper_owner)
    with contextlib.ExitStack() as stack:
        mapped = [stack.enter_context(idmapped_at(p, userns, tmp_path / f"idmapped-{i}")) for i, p in enumerate(lowers)]
        plan = MountPlan(
            lowers=tuple(mapped),
            upper=str(tmp_path / "upper"),
            work=str(tmp_path / "work"),
            target=str(tmp_path / "merged"),
        )
        kmount.apply(plan, api)
    try:
        yield str(tmp_path / "merged")
    finally:
        kmount.unmount(str(tmp_path / "merged"), detach=True)


@pytest.mark.parametrize("api", list(kmount.MountApi), ids=lambda a: a.value)
def test_overlay_with_idmapped_lowers(tmp_path, userns, api):
    with _overlay(tmp_path, userns, api) as merged:
        assert not os.path.ismount(tmp_path / "idmapped-0"), "the attached lowers are gone, the overlay stays"
        assert _owner(f"{merged}/etc/motd") == (R.start, R.start)
        assert _owner(f"{merged}/home/u/notes") == (R.start + 1000, R.start + 1000)
        assert open(f"{merged}/etc/motd").read() == "hello\n"

        def container_root_writes():
            _write("etc/new")
            with open("etc/motd", "a") as f:
                f.write("more\n")

        _in_child(container_root_writes, cwd=merged, uid=R.start)
        _in_child(lambda: _write("home/u/todo"), cwd=merged, uid=R.start + 1000)
        upper = tmp_path / "upper"
        assert _owner(upper / "etc") == (R.start, R.start), "copy-up keeps the owner the idmapped lower shows"
        assert _owner(upper / "etc" / "new") == (R.start, R.start)
        assert _owner(upper / "etc" / "motd") == (R.start, R.start)
        assert _owner(upper / "home" / "u" / "todo") == (R.start + 1000, R.start + 1000)
    assert _owner(tmp_path / "bottom" / "etc" / "motd") == (0, 0)
    assert open(tmp_path / "bottom" / "etc" / "motd").read() == "hello\n"


@pytest.mark.parametrize("upper_owner", [0, R.start], ids=["upper-root-owned-by-host-root", "upper-root-chowned"])
def test_a_process_in_the_user_namespace_writes_the_upper(tmp_path, userns, upper_owner):
    """A container's process (in the user namespace, its own mount namespace) in an overlay mounted outside.

    The merged root takes its owner from the upper dir: unless that is
    chowned to the range's start, container root sees / owned by nobody and
    cannot create files in it.
    """
    with _overlay(tmp_path, userns, kmount.default_api(), upper_owner=upper_owner) as merged:

        def container():
            seen = {"root": os.stat(".").st_uid, "motd": os.stat("etc/motd").st_uid}
            _write("etc/new")
            os.mkdir("etc/dir")
            _write("etc/dir/user")
            os.chown("etc/dir/user", 1000, 1000)
            try:
                _write("at-root")
                seen["at-root"] = 0
            except OSError as exc:
                seen["at-root"] = exc.errno
            return seen

        seen = _in_child(container, cwd=merged, userns_fd=userns)
        assert seen["motd"] == 0, "the container sees its layers' files owned by its root"
        upper = tmp_path / "upper"
        assert _owner(upper / "etc" / "new") == (R.start, R.start)
        assert _owner(upper / "etc" / "dir") == (R.start, R.start)
        assert _owner(upper / "etc" / "dir" / "user") == (R.start + 1000, R.start + 1000)
        if upper_owner == 0:
            assert (seen["root"], seen["at-root"]) == (OVERFLOW_ID, errno.EACCES)
        else:
            assert (seen["root"], seen["at-root"]) == (0, 0)
            assert _owner(upper / "at-root") == (R.start, R.start)


# --- (c) nothing is copied --------------------------------------------------------------------


def test_one_layer_idmapped_twice_shares_its_inodes(tmp_path):
    layer = _tree(tmp_path, {"a": 0, "b": 1000})
    ns1 = open_userns(mapping_for(R), mapping_for(R))
    ns2 = open_userns(mapping_for(R2), mapping_for(R2))
    try:
        with idmapped_at(layer, ns1, tmp_path / "m1") as m1, idmapped_at(layer, ns2, tmp_path / "m2") as m2:
            for rel in ("etc", "etc/a", "etc/b"):
                disk, one, two = (os.lstat(f"{base}/{rel}") for base in (layer, m1, m2))
                assert (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino) == (disk.st_dev, disk.st_ino)
                assert (one.st_uid - R.start, two.st_uid - R2.start) == (disk.st_uid, disk.st_uid)
    finally:
        os.close(ns1)
        os.close(ns2)


# --- (d) commit shifts the upper's IDs back ---------------------------------------------------


def _v2_cap(bits: int) -> bytes:
    return struct.pack("<IIIII", 0x02000001, bits, 0, 0, 0)


def _acl_user(uid: int) -> bytes:
    undefined = 0xFFFFFFFF
    entries = ((1, 6, undefined), (2, 4, uid), (4, 4, undefined), (0x10, 4, undefined), (0x20, 4, undefined))
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def hold_range(layout, ranges: dict) -> None:
    """Write the store's record of held ID ranges (<root>/idranges.json)."""
    with open(layout.idranges_json, "w") as f:
        json.dump({"ranges": {cid: r.to_json() for cid, r in ranges.items()}}, f)


def test_commit_of_a_user_namespaced_container(store, rootfs, tmp_path, userns):
    """The whole path without runc: idmapped image and init layers, a container process writes, commit shifts."""
    store.images.import_rootfs(str(rootfs), tag="app:1")
    record = store.containers.create("app:1", name="c")
    layout = store.layout
    os.chown(layout.upper(record.id), R.start, R.start)
    plan = ctrs.build_plan(layout, record, labels=False)
    with contextlib.ExitStack() as stack:
        mapped = [
            stack.enter_context(idmapped_at(p, userns, tmp_path / "idmapped" / str(i)))
            for i, p in enumerate(plan.lowers)
        ]
        kmount.apply(dataclasses.replace(plan, lowers=tuple(mapped)))
    merged = layout.merged(record.id)
    try:

        def container():
            _write("data/root.txt")
            _write("data/user.txt")
            os.chown("data/user.txt", 1000, 1000)
            os.mkdir("home")
            os.chown("home", 1000, 1001)
            with open("etc/motd", "a") as f:
                f.write("v2\n")
            os.unlink("data/old.txt")
            os.setxattr("data/root.txt", "security.capability", _v2_cap(1 << 10))
            os.setxattr("data/user.txt", "system.posix_acl_access", _acl_user(1000))

        _in_child(container, cwd=merged, userns_fd=userns)
    finally:
        kmount.unmount(merged)
    upper = layout.upper(record.id)
    assert _owner(f"{upper}/data/user.txt") == (R.start + 1000, R.start + 1000)
    assert os.getxattr(f"{upper}/data/root.txt", "security.capability")[20:] == struct.pack("<I", R.start)

    hold_range(layout, {record.id: R})  # as run --userns=auto records it
    image = store.containers.commit("c", tag="app:2")
    diff = layout.diff(image.layers[-1])
    assert _owner(f"{diff}/data") == (0, 0)
    assert _owner(f"{diff}/data/root.txt") == (0, 0)
    assert _owner(f"{diff}/data/user.txt") == (1000, 1000)
    assert _owner(f"{diff}/home") == (1000, 1001)
    assert _owner(f"{diff}/etc/motd") == (0, 0)
    assert stat.S_ISCHR(os.lstat(f"{diff}/data/old.txt").st_mode), "the whiteout"
    assert os.getxattr(f"{diff}/data/root.txt", "security.capability") == _v2_cap(1 << 10)
    assert os.getxattr(f"{diff}/data/user.txt", "system.posix_acl_access") == _acl_user(1000)
    # The tar the layer's digest names holds the same IDs.
    with tempfile.TemporaryFile() as out:
        assert store.layers.export(image.layers[-1], out) == store.layers.get(image.layers[-1]).diff_id
        out.seek(0)
        with tarfile.open(fileobj=out) as tar:
            owners = {m.name: (m.uid, m.gid) for m in tar.getmembers()}
    assert owners["data/user.txt"] == (1000, 1000) and owners["home"] == (1000, 1001)
    assert {o for name, o in owners.items() if name not in ("data/user.txt", "home")} == {(0, 0)}

    # Without a range the host IDs go into the layer as they are.
    hold_range(layout, {})
    unshifted = store.containers.commit("c", tag="app:raw")
    assert _owner(f"{layout.diff(unshifted.layers[-1])}/data/user.txt") == (R.start + 1000, R.start + 1000)


# --- /etc/subuid and /etc/subgid themselves ------------------------------------------------------


def test_ensure_subids_on_the_real_files_and_undo():
    """The one test that writes /etc/subuid and /etc/subgid; they are restored byte for byte."""
    saved = {}
    for path in (SUBUID, SUBGID):
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
            saved[path] = (f.read(), stat.S_IMODE(os.stat(path).st_mode))
    try:
        pool = ensure_subids()
        assert pool
        for path in (SUBUID, SUBGID):
            lines = open(path).read().splitlines()
            assert any(line.startswith("overlayctl:") for line in lines)
            if path in saved:
                assert stat.S_IMODE(os.stat(path).st_mode) == saved[path][1]
        if not any(b"overlayctl:" in data for data, _ in saved.values()):
            assert remove_subids(only=pool[0])
    finally:
        for path in (SUBUID, SUBGID):
            if path not in saved:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            with open(path, "rb") as f:
                restored = f.read() == saved[path][0]
            if not restored:
                with open(path, "wb") as f:
                    f.write(saved[path][0])
            assert restored, f"{path} was not restored byte for byte"
