"""Images through a real registry both ways: docker push -> overlayctl pull, overlayctl push -> docker pull."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest

from ..cli import store_cmd
from ..registry.conftest import registries_dir, registry_plain  # noqa: F401 - fixtures for this module

pytestmark = [pytest.mark.root, pytest.mark.docker]

SCRIPT = "set -e; echo more >> /etc/motd; rm /etc/group; mkdir /newdir; echo x > /newdir/file.txt; rm -rf /var/www"


def ctl(store, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(store_cmd(store, *args), capture_output=True, text=True, timeout=120, check=True)


#: What an engine's init layer adds to a container, not the image's: left out of both listings.
ENGINE_PATHS = ("dev", "proc", "sys", ".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab")


def _image_path(rel: str) -> bool:
    return rel not in ENGINE_PATHS and not rel.startswith(("dev/", "proc/", "sys/"))


def listing_of_tar(path: str) -> dict[str, tuple]:
    """name: (type, size) of what docker export wrote."""
    with tarfile.open(path) as tar:
        members = [(m.name.rstrip("/"), m) for m in tar.getmembers()]
        return {
            name: (m.type if not m.isreg() else tarfile.REGTYPE, m.size if m.isreg() else 0)
            for name, m in members
            if name not in ("", ".") and _image_path(name)
        }


def listing_of_dir(root: str) -> dict[str, tuple]:
    """name: (type, size) of a mounted tree, as listing_of_tar."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            if not _image_path(rel):
                continue
            if os.path.islink(path):
                found[rel] = (tarfile.SYMTYPE, 0)
            elif os.path.isdir(path):
                found[rel] = (tarfile.DIRTYPE, 0)
            else:
                found[rel] = (tarfile.REGTYPE, os.lstat(path).st_size)
    return found


def test_docker_push_then_overlayctl_pull(docker, docker_busybox, busybox, registry_plain, tmp_path):  # noqa: F811
    ref = f"{registry_plain.host}/docker-made/app:1"
    maker = docker.name("registry-maker")
    built = docker.image("registry-app")
    try:
        docker.call("run", "--name", maker, docker_busybox.ref, "sh", "-c", SCRIPT)
        docker.call("commit", maker, built)
        docker.call("tag", built, ref)
        docker.call("push", ref)
        inspected = json.loads(docker.call("image", "inspect", built).stdout)[0]
        docker.call("export", "-o", str(tmp_path / "export.tar"), maker)
    finally:
        docker.remove_containers(maker)
        docker.remove_images(ref, built)
    pulled = json.loads(ctl(busybox, "pull", ref, "--json").stdout)
    assert pulled["image"]["id"] == inspected["Id"]
    # Pushed back elsewhere, its blobs are mounted, not uploaded, and the manifest is Docker's, byte for byte.
    again = json.loads(ctl(busybox, "push", ref, f"{registry_plain.host}/docker-made/copy:1", "--json").stdout)
    assert {layer["status"] for layer in again["layers"]} == {"mounted"}
    assert again["manifest"] == pulled["manifest"]
    assert [layer["diff_id"] for layer in pulled["layers"]] == inspected["RootFS"]["Layers"]
    ctl(busybox, "container", "create", ref, "--name", "pulled")
    ctl(busybox, "container", "mount", "--host", "pulled")
    try:
        merged = busybox.layout.merged(busybox.containers.get("pulled").record.id)
        assert listing_of_dir(merged) == listing_of_tar(str(tmp_path / "export.tar"))
    finally:
        ctl(busybox, "container", "unmount", "pulled")


def test_overlayctl_push_then_docker_pull_and_run(docker, busybox, registry_plain):  # noqa: F811
    ctl(busybox, "run", "--name", "maker", "busybox", "--", "sh", "-c", SCRIPT)
    ctl(busybox, "container", "commit", "maker", "app:2")
    ref = f"{registry_plain.host}/overlayctl-made/app:2"
    ctl(busybox, "push", "app:2", ref)
    try:
        docker.call("pull", ref)
        inspected = json.loads(docker.call("image", "inspect", ref).stdout)[0]
        assert inspected["Id"] == busybox.images.get("app:2").id
        assert inspected["RootFS"]["Layers"] == busybox.images.get("app:2").diff_ids
        out = docker.call("run", "--rm", ref, "sh", "-c", "tail -n1 /etc/motd; ls /newdir; ls /etc/group || true")
        assert out.stdout.split()[:2] == ["more", "file.txt"]
    finally:
        docker.remove_images(ref)
