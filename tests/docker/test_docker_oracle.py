"""Docker as the oracle: diff_ids, container diffs, committed layers and exports agree with Docker 20.10.

The same busybox root filesystem goes into Docker (``docker import``) and into
the overlayctl store; the same shell script changes files in a container of
each.  Docker's answers (``docker diff``, ``docker commit`` + ``docker save``,
``docker import`` + ``docker run``) are the expected values.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.rootfs import files_of

from .conftest import SavedImage, save_image

pytestmark = [pytest.mark.root, pytest.mark.docker]

# The changes, one of each kind; every command must succeed.
SCRIPT = "; ".join(
    [
        "set -e",
        "echo more >> /etc/motd",  # append to a lower file: C (copy-up)
        "echo new > /etc/added.txt",  # a new file: A
        "rm /etc/group",  # delete a lower file: D (whiteout)
        "rm -rf /var/www",  # delete a lower dir ...
        "mkdir /var/www",  # ... and make it again: an opaque dir
        "echo fresh > /var/www/new.html",
        "mkdir /newdir",  # a new dir with a file: A, A
        "echo x > /newdir/file.txt",
        "chmod 600 /etc/passwd",  # metadata only: C (copy-up without a data change)
        "rmdir /root",  # an empty lower dir: D (whiteout)
        "rm /bin/yes; echo '#!/bin/sh' > /bin/yes",  # a lower symlink becomes a file: C
        "chmod 700 /tmp",  # a lower dir's mode only: C
        "mkdir /srv/gone; rmdir /srv/gone",  # a lower dir's mtime only: no change, as in docker diff
    ]
)

# The paths the script changes itself: each must be in Docker's diff.
SCRIPT_PATHS = {
    "/etc/motd",
    "/etc/added.txt",
    "/etc/group",
    "/var/www",
    "/var/www/index.html",
    "/var/www/new.html",
    "/newdir",
    "/newdir/file.txt",
    "/etc/passwd",
    "/root",
    "/bin/yes",
    "/tmp",
}

# A look at the changed tree from inside a container, the same command in both.
VIEW = "; ".join(
    [
        "cat /etc/motd /etc/added.txt /var/www/new.html /newdir/file.txt /bin/yes",
        "ls / /var/www /newdir",
        "stat -c '%n %a %F' /etc/passwd /tmp /bin/yes",
        "ls /etc/group /root || true",  # gone: only a message on stderr
    ]
)

# Docker bind-mounts these over its init layer's copies; were a Docker
# release to list them in its diff, they are its runtime's, not the script's.
DOCKER_RUNTIME_FILES = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/mtab", "/.dockerenv"}

OPAQUE = ".wh..wh..opq"


@dataclass
class DockerChanged:
    """The script's container in Docker: its diff, its commit as saved, and the VIEW of the commit."""

    diff: set[tuple[str, str]]
    committed: SavedImage
    view: str


@pytest.fixture(scope="module")
def docker_changed(docker, docker_busybox, tmp_path_factory) -> Iterator[DockerChanged]:
    """Run SCRIPT in Docker once for the module; docker diff, commit, save. All removed afterwards."""
    container, committed = docker.name("changed"), docker.image("changed")
    try:
        docker.call("run", "--network", "none", "--name", container, docker_busybox.ref, "sh", "-c", SCRIPT)
        diff = parse_docker_diff(docker.call("diff", container).stdout)
        docker.call("commit", container, committed)
        saved = save_image(docker, committed, tmp_path_factory.mktemp("docker-changed") / "saved")
        view = docker.call("run", "--rm", "--network", "none", committed, "sh", "-c", VIEW).stdout
        yield DockerChanged(diff, saved, view)
    finally:
        docker.remove_containers(container)
        docker.remove_images(committed)


def parse_docker_diff(text: str) -> set[tuple[str, str]]:
    """'C /etc' lines -> {("C", "/etc")}."""
    return {tuple(line.split(" ", 1)) for line in text.splitlines() if line.strip()}


def run_script(store, name: str = "changed") -> str:
    """SCRIPT in an overlayctl container of busybox:latest; the container's name."""
    code = store.runtime.run("busybox", ["sh", "-c", SCRIPT], name=name)
    assert code == 0, f"the script exited {code} in overlayctl"
    return name


def tar_names(path: Path) -> set[str]:
    """Entry names of a layer tar, without a leading './' or '/'."""
    with tarfile.open(path) as tar:
        names = {member.name.removeprefix("./").lstrip("/") for member in tar}
    return names - {"", "."}


def whiteout_entries(names: set[str]) -> set[str]:
    return {name for name in names if os.path.basename(name).startswith(".wh.")}


def chain_id(diff_ids: list[str]) -> str:
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


def test_layer_of_docker_save_keeps_its_diff_id(store, docker_busybox):
    """store.create_layer of the layer.tar that docker save wrote: the diff_id of Docker's config."""
    (layer_tar,) = docker_busybox.layers
    layer = store.layers.create(str(layer_tar))
    assert layer.diff_id == docker_busybox.diff_ids[0]
    assert layer.diff_id == "sha256:" + hashlib.sha256(layer_tar.read_bytes()).hexdigest()
    assert layer.id == chain_id(docker_busybox.diff_ids)  # one layer: chain ID == diff_id


def test_container_diff_matches_docker_diff(busybox, docker_changed):
    theirs = {(kind, path) for kind, path in docker_changed.diff if path not in DOCKER_RUNTIME_FILES}
    assert SCRIPT_PATHS <= {path for _, path in theirs}, f"Docker's diff misses the script's changes: {theirs}"

    ours = {(c.kind, c.path) for c in busybox.containers.diff(run_script(busybox))}
    # Exactly Docker's, kinds included (C for the parents /bin, /etc, /var and
    # the opaque /var/www; D for /var/www/index.html, hidden by the opaque
    # dir; nothing for /var's mtime-only change below it, nor for the mount
    # points, which both keep in their init layer).
    assert sorted(ours) == sorted(theirs)


def test_docker_commit_imports_in_overlay_form(store, docker_changed, capfd):
    """Docker's committed layer: .wh. files become a 0/0 char device and an opaque xattr."""
    saved = docker_changed.committed
    base_tar, top_tar = saved.layers
    base = store.layers.create(str(base_tar))
    top = store.layers.create(str(top_tar), parent=base.id)
    assert [base.diff_id, top.diff_id] == saved.diff_ids
    assert top.id == chain_id(saved.diff_ids)

    diff = Path(store.layout.diff(top.id))
    for deleted in ("etc/group", "root"):
        st = os.lstat(diff / deleted)
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (0, 0), deleted
    assert os.getxattr(diff / "var" / "www", "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    # Every entry of Docker's tar, in overlay form: .wh.NAME -> NAME, no opaque marker file.
    docker_names = tar_names(top_tar)
    expected = {
        os.path.join(os.path.dirname(n), os.path.basename(n).removeprefix(".wh."))
        for n in docker_names
        if os.path.basename(n) != OPAQUE
    }
    assert files_of(diff) == expected

    # And the image Docker committed looks the same from inside an overlayctl container.
    store.images.create(top.id, tag="from-docker")
    capfd.readouterr()
    assert store.runtime.run("from-docker", ["sh", "-c", VIEW], name="view") == 0
    assert "fresh" in docker_changed.view and capfd.readouterr().out == docker_changed.view


def test_commit_exports_dockers_whiteouts(busybox, docker_changed, tmp_path):
    """store.commit + export_layer: the same .wh. and .wh..wh..opq entries as Docker's committed layer."""
    image = busybox.containers.commit(run_script(busybox), tag="changed")
    ours_tar = tmp_path / "ours.tar"
    with open(ours_tar, "wb") as out:
        busybox.layers.export(image.layers[-1], out)
    ours, theirs = tar_names(ours_tar), tar_names(docker_changed.committed.layers[-1])

    assert whiteout_entries(theirs) == {".wh.root", "etc/.wh.group", f"var/www/{OPAQUE}"}, "Docker's layer changed"
    assert whiteout_entries(ours) == whiteout_entries(theirs)
    assert ours == theirs


def test_exported_layer_is_a_rootfs_for_docker(busybox, docker):
    """export_layer of the busybox layer | docker import -: Docker runs it, with our tar's diff_id."""
    (layer,) = busybox.images.get("busybox").layers
    ref = docker.image("roundtrip")
    importer = subprocess.Popen(
        docker.engine.argv("import", "-", ref), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        try:
            diff_id = busybox.layers.export(layer, importer.stdin)
        finally:
            _, err = importer.communicate(timeout=120)
        assert importer.returncode == 0, f"docker import: {err.decode(errors='replace')}"
        assert docker.call("run", "--rm", "--network", "none", ref, "cat", "/etc/motd").stdout == "from the image\n"
        # Docker keeps the tar as given: its diff_id is the one export_layer computed.
        layers = docker.call("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref).stdout
        assert layers.strip() == f'["{diff_id}"]'
    finally:
        if importer.poll() is None:
            importer.kill()
            importer.wait()
        docker.remove_images(ref)
