"""overlayctl image load of Docker's own ``docker save``: Docker's image IDs, diff_ids and files.

The busybox rootfs goes into Docker (``docker import``), out with ``docker
save`` (Docker 20.10's classic archive) and into the store with ``image
load``: the image ID is Docker's (the config digest), the diff_ids are the
config's, and a container of the loaded image holds what ``docker export``
of a Docker container of it holds.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayctl.distribution.refs import normalize_ref

from ..cli import store_cmd

pytestmark = [pytest.mark.root, pytest.mark.docker]

CMD = '["sh", "-c", "echo hello from Cmd; cat /etc/motd"]'
# What a container has that its image has not: Docker's init layer and mount points, and ours.
RUNTIME = {".dockerenv", "dev", "proc", "sys", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"}


def docker_id(docker, ref: str) -> str:
    return docker.call("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def _runtime(path: str) -> bool:
    return path in RUNTIME or path.split("/", 1)[0] in ("dev", "proc", "sys")


def export_entries(path: Path) -> dict[str, tuple]:
    """{path: (type, mode, size, content sha256 or link target)} of a ``docker export`` tar."""
    entries: dict[str, tuple] = {}
    with tarfile.open(path) as tar:
        members = {m.name.removeprefix("./").strip("/"): m for m in tar}
        for name, m in members.items():
            if not name or _runtime(name):
                continue
            if m.islnk():  # a hardlink: the file it names
                target = members[m.linkname.removeprefix("./").strip("/")]
                data = tar.extractfile(target).read()
                entries[name] = ("f", target.mode & 0o7777, len(data), hashlib.sha256(data).hexdigest())
            elif m.isreg():
                data = tar.extractfile(m).read()
                entries[name] = ("f", m.mode & 0o7777, m.size, hashlib.sha256(data).hexdigest())
            elif m.issym():
                entries[name] = ("l", None, None, m.linkname)
            elif m.isdir():
                entries[name] = ("d", m.mode & 0o7777, None, None)
            else:
                entries[name] = ("other", m.mode & 0o7777, None, (m.devmajor, m.devminor))
    return entries


def tree_entries(root: str) -> dict[str, tuple]:
    """The same, of a mounted tree."""
    entries: dict[str, tuple] = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            if _runtime(rel):
                continue
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                entries[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_size, digest)
            elif stat.S_ISLNK(st.st_mode):
                entries[rel] = ("l", None, None, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("d", stat.S_IMODE(st.st_mode), None, None)
            else:
                entries[rel] = ("other", stat.S_IMODE(st.st_mode), None, (os.major(st.st_rdev), os.minor(st.st_rdev)))
    return entries


@pytest.fixture(scope="module")
def docker_pair(docker, docker_busybox, tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """busybox and a child (one more layer, and a Cmd) saved together: one archive, two images, one shared base."""
    container, child = docker.name("load-source"), docker.image("busybox-cmd")
    try:
        docker.call("run", "--network", "none", "--name", container, docker_busybox.ref, "sh", "-c", "echo x > /srv/x")
        docker.call("commit", "--change", f"CMD {CMD}", container, child)
        out = tmp_path_factory.mktemp("docker-pair") / "pair.tar"
        docker.call("save", "-o", str(out), docker_busybox.ref, child)
        yield out, child
    finally:
        docker.remove_containers(container)
        docker.remove_images(child)


def test_docker_save_loads_with_dockers_image_id_and_diff_ids(store, docker, docker_busybox):
    report = store.images.load(str(docker_busybox.archive))
    (image,) = report.images
    assert image.id == docker_id(docker, docker_busybox.ref)
    assert image.tags == (normalize_ref(docker_busybox.ref),)
    assert (report.layers_written, report.layers_reused) == (1, 0)
    stored = store.images.get(docker_busybox.ref)
    assert stored.id == image.id and stored.diff_ids == docker_busybox.diff_ids
    with tarfile.open(docker_busybox.archive) as tar:
        assert stored.raw == tar.extractfile(docker_busybox.manifest["Config"]).read()
    assert store.system.check().problems == []


def test_a_container_of_the_loaded_image_holds_what_docker_exports(store, docker, docker_busybox, tmp_path):
    store.images.load(str(docker_busybox.archive))
    container = docker.name("export")
    try:
        docker.call("create", "--name", container, docker_busybox.ref, "true")
        docker.call("export", "-o", str(tmp_path / "export.tar"), container)
    finally:
        docker.remove_containers(container)
    theirs = export_entries(tmp_path / "export.tar")
    assert "bin/busybox" in theirs and "etc/motd" in theirs

    record = store.containers.create(docker_busybox.ref, name="loaded")
    try:
        store.containers.mount("loaded", host=True)
        ours = tree_entries(store.layout.merged(record.id))
    finally:
        store.containers.unmount("loaded")
        store.containers.remove("loaded")
    assert sorted(ours) == sorted(theirs)
    assert {p: e for p, e in ours.items() if e != theirs[p]} == {}


def test_two_images_of_one_save_share_their_base_and_run_the_cmd(store, docker, docker_busybox, docker_pair):
    archive, child = docker_pair
    report = store.images.load(str(archive))
    assert {(i.id, i.tags) for i in report.images} == {
        (docker_id(docker, docker_busybox.ref), (normalize_ref(docker_busybox.ref),)),
        (docker_id(docker, child), (normalize_ref(child),)),
    }
    assert (report.layers_written, report.layers_reused) == (2, 1)  # the base once
    assert store.images.get(child).diff_ids[0] == docker_busybox.diff_ids[0]
    assert len(store.layers.list()) == 2
    ran = subprocess.run(
        store_cmd(store, "run", "--rm", child), check=False, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello from Cmd\nfrom the image\n"
    again = store.images.load(str(archive))
    assert (again.layers_written, again.layers_reused, again.bytes_written) == (0, 3, 0)
