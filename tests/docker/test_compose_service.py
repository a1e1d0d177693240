"""docker-compose (through pytest-docker) runs a service from an image overlayctl built and saved.

A container of busybox in an overlayctl store gets a web root (/www: a page
and some binary bytes) and is committed; ``overlayctl image save`` writes the
image and ``docker load`` puts it into the session's Docker engine before
``docker-compose up`` (tests/docker/docker-compose.yml: busybox ``httpd`` on a
free port of 127.0.0.1, host network).  The test fetches both files over
HTTP and gets the bytes committed in overlayctl.

pytest-docker's fixtures are overridden here (session-scoped, as its
``docker_services`` is): the command is Debian's ``docker-compose`` (v1;
``make deps`` installs it) with DOCKER_HOST naming the private dockerd when
the session runs one, the project is named with the session's prefix, and
``up -d`` replaces ``up --build --wait`` (v1 has no ``--wait``: the test waits
with ``wait_until_responsive``).  pytest-docker's cleanup (``down -v``) runs
at the end of the session, then the project is checked to have left no
container or network, and the image is removed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..cli import store_cmd
from ..conftest import _cleanup_store
from .conftest import compose_command, project_objects

pytestmark = [pytest.mark.root, pytest.mark.docker]

COMPOSE_FILE = Path(__file__).with_name("docker-compose.yml")
PAGE = b"<h1>served from a layer overlayctl committed</h1>\n"
BINARY = bytes(range(256)) * 64


@dataclass
class WwwImage:
    ref: str
    id: str
    port: int


def _ctl(store, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(store_cmd(store, *args), check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (args, result.stderr)
    return result


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def www_image(docker, busybox_rootfs, tmp_path_factory) -> Iterator[WwwImage]:
    """busybox plus /www, committed and saved by overlayctl, loaded into Docker; removed from Docker after."""
    from overlayctl import LayerStore

    tmp = tmp_path_factory.mktemp("compose-www")
    store = LayerStore(root=str(tmp / "root"), run_root=str(tmp / "run"))
    ref = docker.image("compose-www")
    try:
        _ctl(store, "image", "import", str(busybox_rootfs), "--tag", "base")
        ctr = json.loads(_ctl(store, "container", "create", "base", "--name", "www", "--json").stdout)
        store.containers.mount("www", host=True)
        try:
            www = Path(store.layout.merged(ctr["id"])) / "www"
            (www / "files").mkdir(parents=True)
            (www / "index.html").write_bytes(PAGE)
            (www / "files" / "blob.bin").write_bytes(BINARY)
        finally:
            store.containers.unmount("www")
        _ctl(store, "container", "commit", "www", ref, "-m", "add /www", "--cmd", '["httpd", "-f", "-h", "/www"]')
        _ctl(store, "container", "rm", "www")
        image_id = json.loads(_ctl(store, "image", "inspect", ref, "--json").stdout)["id"]
        archive = tmp / "www.tar"
        _ctl(store, "image", "save", ref, "-o", str(archive))
    finally:
        _cleanup_store(store)
    try:
        assert f"Loaded image: {ref}" in docker.call("load", "-i", str(archive)).stdout
        yield WwwImage(ref, image_id, _free_port())
    finally:
        docker.remove_images(ref)


@pytest.fixture(scope="session")
def docker_compose_command(docker, www_image) -> str:
    """docker-compose v1, talking to the session's engine, with the compose file's variables set."""
    return compose_command(docker, {"OVERLAYCTL_WWW_IMAGE": www_image.ref, "OVERLAYCTL_WWW_PORT": str(www_image.port)})


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name(docker) -> Iterator[str]:
    """The session's prefix (compose v1 keeps it as it is); after ``down``: nothing of the project is left."""
    project = docker.name("compose")
    yield project
    left = project_objects(docker, project)
    assert not left, f"docker-compose down left {left}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v"]


def _get(url: str) -> bytes:
    # No proxy: the service is on this host's loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as response:
        return response.read()


def test_compose_serves_the_files_committed_in_overlayctl(
    docker, docker_services, www_image, docker_compose_project_name
):
    base = f"http://127.0.0.1:{www_image.port}"

    def responsive() -> bool:
        try:
            return _get(f"{base}/index.html") == PAGE
        except OSError:
            return False

    docker_services.wait_until_responsive(check=responsive, timeout=30, pause=0.2)
    assert _get(f"{base}/index.html") == PAGE
    assert _get(f"{base}/files/blob.bin") == BINARY
    # The service runs our image: Docker's ID of it is overlayctl's.
    label = f"label=com.docker.compose.project={docker_compose_project_name}"
    (name,) = docker.call("ps", "--filter", label, "--format", "{{.Names}}").stdout.split()
    assert name.startswith(docker.prefix)
    assert docker.call("inspect", "--format", "{{.Image}}", name).stdout.strip() == www_image.id
