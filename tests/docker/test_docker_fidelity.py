"""Round trip of an image Docker built: ``docker save`` -> ``image load`` -> container -> ``image save``.

Docker builds the image itself, one layer per step:

1. ``docker import`` of the busybox rootfs plus files carrying ``user.*``
   xattrs (and a ``security.capability``) as ``SCHILY.xattr.*`` pax headers.
   A layer Docker makes with ``docker commit`` can hold no ``user.*`` xattr
   (Docker's tar writer copies only ``security.capability``; busybox has no
   ``setfattr`` either), but ``import`` applies every xattr of the tar and
   ``save`` gives its bytes back, so the xattrs come in through the base;
2. ``docker run`` + ``docker commit``: a tree of files and directories;
3. ``docker run`` + ``docker commit``: deletes a file of each lower layer,
   deletes a directory and makes it again with other content, renames a
   directory (whiteouts, an opaque directory);
4. ``docker run`` + ``docker commit``: hardlinks, setuid/setgid/sticky
   modes, other owners, a device node, a fifo, an empty directory, symlinks
   and a name with spaces.

``docker save`` of it goes into a store with ``overlayctl image load``; the
merged tree of a container of it is what ``docker export`` of a Docker
container of the image holds (names, types, modes, owners, sizes, content,
link targets, hardlink groups, device numbers), and its ``user.*`` and
``security.capability`` xattrs are those of Docker's own mount of the image
(the export tar has no ``user.*``) and of the layer tars.  ``overlayctl
image save`` then gives Docker's layer tars back byte for byte and Docker's
config (the image ID); a Docker-25-form archive made here from Docker's blobs
loads with the same ID.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.distribution.refs import normalize_ref

from ..cli import overlayctl_cmd, store_cmd
from .conftest import IMAGE_MTIME, SavedImage, add_rootfs, pin_to_root, save_image

pytestmark = [pytest.mark.root, pytest.mark.docker]

# What a container has that its image has not: Docker's init layer and mount points, and ours.
RUNTIME = {".dockerenv", "dev", "proc", "sys", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"}

# vfs_cap_data revision 2, effective, permitted = CAP_NET_BIND_SERVICE (10).
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
# Files of the imported base layer and their xattrs (user.* and one security.capability).
XATTR_FILES: dict[str, dict[str, bytes]] = {
    "xattr": {"user.dir": b"on a directory"},
    "xattr/labelled.txt": {"user.overlayctl.label": b"from the base layer", "user.second": b"2"},
    "xattr/with spaces and xattr": {"user.overlayctl.spaced": b"yes", "user.empty": b""},
    "xattr/ping": {"security.capability": CAPABILITY},
}
# An xattr with an empty value: its pax record is empty (``SCHILY.xattr.user.empty=``), which Go's
# archive/tar skips (POSIX: an empty record deletes the keyword), so Docker's image has no such xattr.
EMPTY_XATTR = ("xattr/with spaces and xattr", "user.empty")


def _without_empty(xattrs: dict[str, dict[str, bytes]]) -> dict[str, dict[str, bytes]]:
    path, key = EMPTY_XATTR
    return {p: {k: v for k, v in x.items() if (p, k) != (path, key)} for p, x in xattrs.items()}


LAYER2 = r"""set -e
mkdir -p /data /opt/app/nested /srv/tree/sub /srv/gone
echo keep > /data/keep.txt
echo old > /data/old.txt
echo one > /opt/app/one.txt
echo two > /opt/app/nested/two.txt
echo a > /srv/tree/a
echo b > /srv/tree/sub/b
echo bye > /srv/gone/file
"""
LAYER3 = r"""set -e
rm /data/old.txt
rm /etc/motd
rm -rf /opt/app
mkdir /opt/app
echo three > /opt/app/three.txt
mv /srv/tree /srv/moved
echo moved > /srv/moved/new
rm -rf /srv/gone
"""
LAYER4 = r"""set -e
mkdir -p /special/empty /special/links/sub
echo linked > /special/links/orig
ln /special/links/orig /special/links/hard1
ln /special/links/orig /special/links/sub/hard2
ln -s orig /special/links/symlink
ln -s /nowhere/at/all /special/links/dangling
printf '#!/bin/sh\necho suid\n' > /special/suid
chmod 4755 /special/suid
echo sgid > /special/sgid
chmod 2750 /special/sgid
mkdir /special/sticky
chmod 1777 /special/sticky
echo owned > /special/owned
chown 1000:2000 /special/owned
chmod 0640 /special/owned
mkdir /special/owned-dir
chown 65534:65534 /special/owned-dir
chmod 0700 /special/owned-dir
mknod /special/null c 1 3
mknod /special/loop b 7 0
mkfifo /special/fifo
echo spaced > "/special/with spaces.txt"
head -c 100000 /bin/busybox > /special/big
"""


def _runtime(path: str) -> bool:
    return path in RUNTIME or path.split("/", 1)[0] in ("dev", "proc", "sys")


def _base_tar(rootfs: Path, out: Path) -> Path:
    """The busybox rootfs plus XATTR_FILES, root-owned, mtimes pinned: Docker's first layer."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        add_rootfs(tar, rootfs)
        for name, xattrs in XATTR_FILES.items():
            info = pin_to_root(tarfile.TarInfo(name))
            data = f"content of {name}\n".encode()
            if name == "xattr":
                info.type, info.mode, data = tarfile.DIRTYPE, 0o755, b""
            else:
                info.mode = 0o755 if name.endswith("ping") else 0o644
            info.size = len(data)
            # Values are str in tarfile; surrogateescape keeps any byte (capability data is not UTF-8 text).
            info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ctl(store, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(store_cmd(store, *args), check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (args, result.stderr)
    return result


@pytest.fixture(scope="module")
def fidelity_image(docker, busybox_rootfs, tmp_path_factory) -> Iterator[SavedImage]:
    """The four-layer image, built in Docker and ``docker save``d; every image and container removed after."""
    tmp = tmp_path_factory.mktemp("docker-fidelity")
    base, final = docker.image("fidelity-base"), docker.image("fidelity")
    steps = [(docker.image("fidelity-l2"), LAYER2), (docker.image("fidelity-l3"), LAYER3), (final, LAYER4)]
    made = [base]
    try:
        docker.call("import", str(_base_tar(busybox_rootfs, tmp / "base.tar")), base)
        parent = base
        for n, (ref, script) in enumerate(steps, start=2):
            container = docker.name(f"fidelity-layer{n}")
            try:
                docker.call("run", "--network", "none", "--name", container, parent, "sh", "-c", script)
                docker.call("commit", container, ref)
                made.append(ref)
            finally:
                docker.remove_containers(container)
            parent = ref
        saved = save_image(docker, final, tmp / "saved")
        assert len(saved.layers) == 4
        yield saved
    finally:
        docker.remove_images(*reversed(made))


def _owner(st_or_member) -> tuple[int, int]:
    if isinstance(st_or_member, tarfile.TarInfo):
        return st_or_member.uid, st_or_member.gid
    return st_or_member.st_uid, st_or_member.st_gid


def export_entries(path: Path) -> tuple[dict[str, tuple], set[frozenset[str]]]:
    """{path: (type, mode, uid, gid, size, sha256 | link target | (major, minor))} of a ``docker export``
    tar, and its hardlink groups."""
    entries: dict[str, tuple] = {}
    groups: dict[str, set[str]] = {}
    with tarfile.open(path) as tar:
        members = {m.name.removeprefix("./").strip("/"): m for m in tar}
        for name, m in members.items():
            if not name or _runtime(name):
                continue
            if m.islnk():
                first = m.linkname.removeprefix("./").strip("/")
                groups.setdefault(first, {first}).add(name)
                m = members[first]
            owner = _owner(m)
            if m.isreg():
                data = tar.extractfile(m).read()
                entries[name] = ("f", m.mode & 0o7777, *owner, len(data), _digest(data))
            elif m.issym():
                entries[name] = ("l", None, *owner, None, m.linkname)
            elif m.isdir():
                entries[name] = ("d", m.mode & 0o7777, *owner, None, None)
            elif m.ischr() or m.isblk():
                kind = "c" if m.ischr() else "b"
                entries[name] = (kind, m.mode & 0o7777, *owner, None, (m.devmajor, m.devminor))
            elif m.isfifo():
                entries[name] = ("p", m.mode & 0o7777, *owner, None, None)
            else:
                entries[name] = ("?", m.type, *owner, None, None)
    return entries, {frozenset(g) for g in groups.values()}


def tree_entries(root: str) -> tuple[dict[str, tuple], set[frozenset[str]]]:
    """The same of a mounted tree (hardlinks: the names of one inode)."""
    entries: dict[str, tuple] = {}
    inodes: dict[tuple[int, int], set[str]] = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            if _runtime(rel):
                continue
            st = os.lstat(path)
            mode, owner = stat.S_IMODE(st.st_mode), _owner(st)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    data = f.read()
                entries[rel] = ("f", mode, *owner, st.st_size, _digest(data))
                if st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
            elif stat.S_ISLNK(st.st_mode):
                entries[rel] = ("l", None, *owner, None, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("d", mode, *owner, None, None)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
                entries[rel] = (kind, mode, *owner, None, (os.major(st.st_rdev), os.minor(st.st_rdev)))
            elif stat.S_ISFIFO(st.st_mode):
                entries[rel] = ("p", mode, *owner, None, None)
            else:
                entries[rel] = ("?", st.st_mode, *owner, None, None)
    return entries, {frozenset(g) for g in inodes.values() if len(g) > 1}


def _wanted(key: str) -> bool:
    return key.startswith("user.") or key == "security.capability"


def tree_xattrs(root: str) -> dict[str, dict[str, bytes]]:
    """{path: {name: value}} of the user.* and security.capability xattrs under root (no symlinks)."""
    found: dict[str, dict[str, bytes]] = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            if _runtime(rel) or os.path.islink(path):
                continue
            keys = [k for k in os.listxattr(path, follow_symlinks=False) if _wanted(k)]
            if keys:
                found[rel] = {k: os.getxattr(path, k, follow_symlinks=False) for k in keys}
    return found


def layer_xattrs(layers: list[Path]) -> dict[str, dict[str, bytes]]:
    """The same, of the image the layer tars make (applied in order: whiteouts and opaque dirs drop)."""
    found: dict[str, dict[str, bytes]] = {}

    def drop_under(prefix: str, keep_self: bool) -> None:
        for p in list(found):
            if p.startswith(prefix + "/") or (not keep_self and p == prefix):
                del found[p]

    for layer in layers:
        with tarfile.open(layer) as tar:
            for m in tar:
                name = m.name.removeprefix("./").strip("/")
                d, base = os.path.split(name)
                if base == ".wh..wh..opq":
                    drop_under(d, keep_self=True)
                    continue
                if base.startswith(".wh."):
                    drop_under(os.path.join(d, base[4:]), keep_self=False)
                    continue
                if not m.isdir():
                    drop_under(name, keep_self=True)
                xattrs = {
                    k.removeprefix("SCHILY.xattr."): v.encode("utf-8", "surrogateescape")
                    for k, v in m.pax_headers.items()
                    if k.startswith("SCHILY.xattr.") and _wanted(k.removeprefix("SCHILY.xattr."))
                }
                found.pop(name, None)
                if xattrs:
                    found[name] = xattrs
    return found


def docker_mount_xattrs(docker, ref: str) -> dict[str, dict[str, bytes]] | None:
    """The xattrs of Docker's own overlay mount of a running container of ref (None: not overlay2 here)."""
    name = docker.name("fidelity-xattrs")
    try:
        docker.call("run", "-d", "--network", "none", "--name", name, ref, "sleep", "300")
        driver = json.loads(docker.call("inspect", "--format", "{{json .GraphDriver}}", name).stdout)
        merged = (driver.get("Data") or {}).get("MergedDir")
        if driver.get("Name") != "overlay2":
            return None
        assert merged and os.path.isdir(merged), f"Docker's overlay2 mount is not visible here: {driver}"
        return tree_xattrs(merged)
    finally:
        docker.remove_containers(name)


@pytest.fixture(scope="module")
def docker_export(docker, fidelity_image, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docker-fidelity-export") / "export.tar"
    container = docker.name("fidelity-export")
    try:
        docker.call("create", "--name", container, fidelity_image.ref, "true")
        docker.call("export", "-o", str(out), container)
    finally:
        docker.remove_containers(container)
    return out


def _merged_of_loaded(store, ref: str, name: str):
    """(entries, hardlink groups, xattrs) of a mounted container of ref."""
    record = store.containers.create(ref, name=name)
    try:
        store.containers.mount(name, host=True)
        merged = store.layout.merged(record.id)
        entries, groups = tree_entries(merged)
        xattrs = tree_xattrs(merged)
    finally:
        store.containers.unmount(name)
        store.containers.remove(name)
    return entries, groups, xattrs


def test_the_docker_built_image_loads_and_a_container_holds_what_docker_exports(
    store, docker, fidelity_image, docker_export
):
    _ctl(store, "image", "load", "-i", str(fidelity_image.archive))
    loaded = store.images.get(fidelity_image.ref)
    docker_id = docker.call("image", "inspect", "--format", "{{.Id}}", fidelity_image.ref).stdout.strip()
    assert loaded.id == docker_id
    assert loaded.diff_ids == fidelity_image.diff_ids

    theirs, their_groups = export_entries(docker_export)
    ours, our_groups = (result := _merged_of_loaded(store, fidelity_image.ref, "fidelity"))[:2]
    our_xattrs = result[2]

    # The steps happened in Docker (else the comparison proves little).
    assert theirs["special/suid"][:2] == ("f", 0o4755)
    assert theirs["special/null"][0] == "c" and theirs["special/null"][-1] == (1, 3)
    assert theirs["special/loop"][0] == "b" and theirs["special/loop"][-1] == (7, 0)
    assert theirs["special/fifo"][0] == "p"
    assert theirs["special/owned"][2:4] == (1000, 2000)
    assert theirs["special/empty"][0] == "d" and "special/with spaces.txt" in theirs
    assert {"opt/app/three.txt", "srv/moved/sub/b", "srv/moved/new"} <= set(theirs)
    gone = {"data/old.txt", "etc/motd", "opt/app/one.txt", "opt/app/nested", "srv/tree", "srv/gone"}
    assert gone.isdisjoint(theirs)
    assert frozenset({"special/links/orig", "special/links/hard1", "special/links/sub/hard2"}) in their_groups

    assert sorted(ours) == sorted(theirs)
    assert {p: (e, theirs[p]) for p, e in ours.items() if e != theirs[p]} == {}
    assert our_groups == their_groups

    # xattrs: the image's (from the layer tars) and Docker's mount of it; the export tar has only
    # security.capability, which must agree too.
    in_tars = {path: dict(x) for path, x in XATTR_FILES.items()}
    assert layer_xattrs(fidelity_image.layers) == in_tars  # the tars carry them all, the empty one too
    expected = _without_empty(in_tars)  # an empty pax record sets no xattr
    assert our_xattrs == expected
    dockers = docker_mount_xattrs(docker, fidelity_image.ref)
    if dockers is not None:
        assert dockers == expected
    with tarfile.open(docker_export) as tar:
        member = tar.getmember("xattr/ping")
        exported_cap = member.pax_headers.get("SCHILY.xattr.security.capability")
    if exported_cap is not None:
        assert exported_cap.encode("utf-8", "surrogateescape") == our_xattrs["xattr/ping"]["security.capability"]
    assert store.system.check().problems == []


def test_an_empty_xattr_record_sets_no_xattr_as_in_docker(store, docker, fidelity_image):
    """An empty SCHILY.xattr pax record set an empty xattr; Docker (Go archive/tar) sets none."""
    path, key = EMPTY_XATTR
    dockers = docker_mount_xattrs(docker, fidelity_image.ref)
    if dockers is not None:
        assert key not in dockers.get(path, {})
    _ctl(store, "image", "load", "-i", str(fidelity_image.archive))
    ours = _merged_of_loaded(store, fidelity_image.ref, "empty-xattr")[2]
    assert key not in ours.get(path, {})


def _layer_digests(saved: SavedImage) -> list[str]:
    return [f"sha256:{_digest(p.read_bytes())}" for p in saved.layers]


def _docker25_archive(saved: SavedImage, ref: str, out: Path) -> Path:
    """A Docker-25-form archive of saved's blobs: manifest.json into blobs/sha256/, index.json, oci-layout."""
    with tarfile.open(saved.archive) as tar:
        config = tar.extractfile(saved.manifest["Config"]).read()
    layers = [p.read_bytes() for p in saved.layers]
    layer_descs = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{_digest(b)}", "size": len(b)}
        for b in layers
    ]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{_digest(config)}",
                "size": len(config),
            },
            "layers": layer_descs,
        },
        separators=(",", ":"),
    ).encode()
    full = normalize_ref(ref)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{_digest(manifest)}",
                "size": len(manifest),
                "annotations": {
                    "io.containerd.image.name": full,
                    "org.opencontainers.image.ref.name": full.rsplit(":", 1)[1],
                },
            }
        ],
    }
    docker_manifest = [
        {
            "Config": f"blobs/sha256/{_digest(config)}",
            "RepoTags": [ref],
            "Layers": [f"blobs/sha256/{_digest(b)}" for b in layers],
            "LayerSources": {d["digest"]: d for d in layer_descs},
        }
    ]

    def add(tar: tarfile.TarFile, name: str, data: bytes | None) -> None:
        info = tarfile.TarInfo(name)
        info.mtime = IMAGE_MTIME
        if data is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        else:
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            add(tar, d, None)
        blobs = {_digest(b): b for b in [config, manifest, *layers]}
        for hexdigest, blob in sorted(blobs.items()):
            add(tar, f"blobs/sha256/{hexdigest}", blob)
        add(tar, "index.json", json.dumps(index).encode())
        add(tar, "manifest.json", json.dumps(docker_manifest).encode())
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    return out


def test_image_save_gives_dockers_layer_tars_and_config_back_byte_for_byte(store, docker, fidelity_image, tmp_path):
    _ctl(store, "image", "load", "-i", str(fidelity_image.archive))
    docker_id = docker.call("image", "inspect", "--format", "{{.Id}}", fidelity_image.ref).stdout.strip()
    ours = tmp_path / "ours.tar"
    _ctl(store, "image", "save", fidelity_image.ref, "-o", str(ours))
    with tarfile.open(fidelity_image.archive) as tar:
        their_config = tar.extractfile(fidelity_image.manifest["Config"]).read()
    with tarfile.open(ours) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        assert entry["RepoTags"] == [fidelity_image.ref]
        config = tar.extractfile(entry["Config"]).read()
        blobs = [tar.extractfile(name).read() for name in entry["Layers"]]
        names = [name for name in entry["Layers"]]
    assert entry["Config"] == f"blobs/sha256/{docker_id.removeprefix('sha256:')}"
    assert config == their_config and f"sha256:{_digest(config)}" == docker_id
    assert [f"sha256:{_digest(b)}" for b in blobs] == _layer_digests(fidelity_image) == fidelity_image.diff_ids
    assert names == [f"blobs/sha256/{_digest(b)}" for b in blobs]
    # Byte for byte, not only the same digest of something.
    assert [len(b) for b in blobs] == [p.stat().st_size for p in fidelity_image.layers]


def test_a_docker25_archive_of_dockers_blobs_loads_with_dockers_id(docker, fidelity_image, tmp_path):
    docker_id = docker.call("image", "inspect", "--format", "{{.Id}}", fidelity_image.ref).stdout.strip()
    ref = docker.image("fidelity-docker25")  # only in the store below, never in Docker
    archive = _docker25_archive(fidelity_image, ref, tmp_path / "docker25.tar")
    root, run_root = str(tmp_path / "root"), str(tmp_path / "run")
    loaded = subprocess.run(
        overlayctl_cmd(root, run_root, "image", "load", "-i", str(archive), "--json"),
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr
    from overlayctl import LayerStore

    second = LayerStore(root=root, run_root=run_root)
    image = second.images.get(ref)
    assert image.id == docker_id
    assert image.diff_ids == fidelity_image.diff_ids == _layer_digests(fidelity_image)
    # And it saves back to the same blobs.
    again = tmp_path / "again.tar"
    saved = subprocess.run(
        overlayctl_cmd(root, run_root, "image", "save", ref, "-o", str(again)),
        check=False,
        capture_output=True,
        text=True,
    )
    assert saved.returncode == 0, saved.stderr
    with tarfile.open(again) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))
        assert [f"sha256:{_digest(tar.extractfile(n).read())}" for n in entry["Layers"]] == fidelity_image.diff_ids
        assert entry["Config"] == f"blobs/sha256/{docker_id.removeprefix('sha256:')}"
    assert second.system.check().problems == []
