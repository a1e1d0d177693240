"""docker-compose (through pytest-docker) runs the plain registry as a service, from an image built here.

The image is Debian's docker-registry FROM scratch (tests/registry/image): the
test assembles the build context (the Dockerfile, the host's binary and the
libraries ldd names for it, config.yml) and ``docker-compose up --build -d``
builds and starts it in the session's Docker engine, on a free port of
127.0.0.1 (host network).  Nothing is pulled.  The test waits with
``wait_until_responsive`` until ``GET /v2/`` answers, then uploads a blob and a
manifest and reads them back.

pytest-docker's fixtures are overridden as in tests/docker/test_compose_service.py
(session-scoped, Debian's docker-compose v1 with DOCKER_HOST naming the private
dockerd, the project named with the session's prefix, ``up -d`` as v1 has no
``--wait``); ``down -v`` runs at the end of the module, then the project is
checked to have left no container or network, and the image is removed.  The
engine is tests/docker's ``docker`` fixture, imported: outside tests/docker it
is an instance of its own (a second private dockerd when both run).
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.registry import REGISTRY_BIN, free_port

from ..docker import conftest as docker_conftest
from .conftest import OCI_MANIFEST, V2Client, sha256, tar_gz

pytestmark = [pytest.mark.root, pytest.mark.docker]

docker = docker_conftest.docker  # tests/docker's engine fixture, registered here too
COMPOSE_FILE = Path(__file__).with_name("docker-compose.yml")
IMAGE_DIR = Path(__file__).with_name("image")


@dataclass
class ComposeRegistry:
    image: str  # the tag compose builds
    port: int
    context: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


def shared_libraries(binary: str) -> list[str]:
    """The paths ldd names for binary (none for a static one)."""
    done = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    if done.returncode != 0:  # "not a dynamic executable"
        return []
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
    words = [line.split("=>")[-1].split()[0] for line in done.stdout.splitlines() if "/" in line]
    return [word for word in words if word.startswith("/")]


def build_context(out: Path) -> Path:
    """tests/registry/image plus rootfs/: the registry binary, its libraries (as files), its config, /tmp."""
    rootfs = out / "rootfs"
    for path in [REGISTRY_BIN, *shared_libraries(REGISTRY_BIN)]:
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)  # follows symlinks: ld.so is one on the host
    config = rootfs / "etc" / "docker" / "registry" / "config.yml"
    config.parent.mkdir(parents=True)
    shutil.copyfile(IMAGE_DIR / "config.yml", config)
    (rootfs / "tmp").mkdir(mode=0o1777)
    os.chmod(rootfs / "tmp", 0o1777)
    shutil.copyfile(IMAGE_DIR / "Dockerfile", out / "Dockerfile")
    return out


@pytest.fixture(scope="session")
def compose_registry(docker, tmp_path_factory) -> Iterator[ComposeRegistry]:
    """The build context, the image tag and a free port; the image is removed from Docker after."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        pytest.skip(f"{REGISTRY_BIN} is not installed (make deps installs docker-registry)")
    context = build_context(tmp_path_factory.mktemp("registry-image"))
    ref = docker.image("registry")
    try:
        yield ComposeRegistry(ref, free_port(), context)
    finally:
        docker.remove_images(ref)


@pytest.fixture(scope="session")
def docker_compose_command(docker, compose_registry) -> str:
    """docker-compose v1, talking to the session's engine, with the compose file's variables set."""
    env = {
        "OVERLAYCTL_REGISTRY_CONTEXT": str(compose_registry.context),
        "OVERLAYCTL_REGISTRY_IMAGE": compose_registry.image,
        "OVERLAYCTL_REGISTRY_PORT": str(compose_registry.port),
    }
    return docker_conftest.compose_command(docker, env)


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name(docker) -> Iterator[str]:
    """The session's prefix; after ``down``: nothing of the project is left."""
    project = docker.name("registry-compose")
    yield project
    left = docker_conftest.project_objects(docker, project)
    assert not left, f"docker-compose down left {left}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up --build -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v"]


def test_compose_registry_takes_and_gives_back_a_blob_and_a_manifest(
    docker,
    docker_services,
    compose_registry,
    docker_compose_project_name,
):
    def responsive() -> bool:
        conn = compose_registry.connection(timeout=2)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    docker_services.wait_until_responsive(check=responsive, timeout=30, pause=0.2)
    client = V2Client(compose_registry)
    image = client.push_image("compose/hello", "v1", tar_gz({"hello.txt": b"from a compose service\n"}))
    assert client.request("GET", f"/v2/compose/hello/blobs/{sha256(image.layer)}").body == image.layer
    got = client.request("GET", "/v2/compose/hello/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert got.status == 200 and got.body == image.manifest
    # The service runs the image compose built from our context.
    label = f"label=com.docker.compose.project={docker_compose_project_name}"
    (name,) = docker.call("ps", "--filter", label, "--format", "{{.Names}}").stdout.split()
    assert docker.call("inspect", "--format", "{{.Config.Image}}", name).stdout.strip() == compose_registry.image
