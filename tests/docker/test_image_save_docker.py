"""overlayctl image save into Docker: ``docker load`` takes it, runs its Cmd, and keeps its diff_ids.

A busybox image goes into the store, a container changes files (adds,
changes, deletes) and is committed with a Cmd; ``image save`` writes the
default archive (Docker 25's form), which Debian's Docker 20.10 loads.
``docker run`` shows exactly those changes, and ``docker save`` of the
loaded image names the same layer diff_ids as the store.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ..cli import store_cmd
from .conftest import save_image

pytestmark = [pytest.mark.root, pytest.mark.docker]


def _ctl(store, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(store_cmd(store, *args), capture_output=True, text=True)
    assert result.returncode == 0, (args, result.stderr)
    return result


def test_docker_loads_and_runs_a_saved_commit(docker, store, busybox_rootfs, tmp_path):
    _ctl(store, "image", "import", str(busybox_rootfs), "--tag", "base")
    ctr = json.loads(_ctl(store, "container", "create", "base", "--name", "c", "--json").stdout)
    store.containers.mount("c", host=True)
    merged = store.layout.merged(ctr["id"])
    try:
        os.makedirs(f"{merged}/srv", exist_ok=True)
        with open(f"{merged}/srv/hello.txt", "w") as f:
            f.write("made in overlayctl\n")
        with open(f"{merged}/srv/motd", "w") as f:
            f.write("changed\n")
        os.unlink(f"{merged}/bin/vi")  # a whiteout in the upper
    finally:
        store.containers.unmount("c")
    ref = docker.image("saved")  # a name Docker's session fixture cleans up
    cmd = '["sh", "-c", "cat /srv/hello.txt /srv/motd; ls /srv; test -e /bin/vi || echo vi gone"]'
    _ctl(store, "container", "commit", "c", ref, "--cmd", cmd)
    archive = tmp_path / "saved.tar"
    _ctl(store, "image", "save", ref, "-o", str(archive))
    try:
        loaded = docker.call("load", "-i", str(archive)).stdout
        assert f"Loaded image: {ref}" in loaded
        ours = json.loads(_ctl(store, "image", "inspect", ref, "--json").stdout)
        assert docker.call("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == ours["id"]
        name = docker.name("run")
        out = docker.call("run", "--rm", "--name", name, "--network", "none", ref).stdout
        assert out == "made in overlayctl\nchanged\nhello.txt\nmotd\nvi gone\n"
        again = save_image(docker, ref, tmp_path / "again")
        assert again.diff_ids == ours["config"]["rootfs"]["diff_ids"]
    finally:
        docker.remove_images(ref)
