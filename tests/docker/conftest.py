"""Docker as the oracle: one engine for the session, and busybox imported into it.

The engine is the host's daemon when the docker client reaches one, else a
private dockerd whose whole state lives in the session's temp dir (see
tests/dockerd.py); it is stopped and swept at the end, also after a failure.
Everything the tests make in Docker carries the session's ``prefix`` and is
removed by name or ID; the session checks that none of it is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.dockerd import Docker, DockerUnavailable, docker_engine

# The image's mtimes, older than any run.  Whether a directory whose only
# change is its mtime counts as changed differs between Docker's diff walkers
# (20.10 here ignores directory mtimes; moby's overlay walker compares size,
# mode and mtime, in whole seconds when one side has none, as tar mtimes
# have none): old lower mtimes keep the answer independent of the clock.
IMAGE_MTIME = 1_600_000_000  # 2020-09-13


@dataclass
class DockerSession:
    """The engine and the names this session uses in it."""

    engine: Docker
    prefix: str  # of every image repository and container name the tests make

    def call(self, *args: str, **kwargs):
        return self.engine.call(*args, **kwargs)

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def image(self, what: str) -> str:
        return f"{self.prefix}/{what}:latest"

    def remove_containers(self, *names: str) -> None:
        """docker rm -f, ignoring the ones that do not exist (a test may fail before creating them)."""
        for name in names:
            with contextlib.suppress(DockerUnavailable):
                self.call("rm", "-f", name)

    def remove_images(self, *refs: str) -> None:
        for ref in refs:
            with contextlib.suppress(DockerUnavailable):
                self.call("rmi", ref)

    def leftovers(self) -> list[str]:
        """Containers and images of this session still in the engine."""
        ps = self.call("ps", "-a", "--format", "{{.Names}}").stdout.split()
        images = self.call("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        return [f"container {n}" for n in ps if n.startswith(self.prefix)] + [
            f"image {i}" for i in images if i.startswith(self.prefix)
        ]


def compose_command(docker: DockerSession, env: dict[str, str]) -> str:
    """docker-compose v1 (pytest-docker's docker_compose_command), on the session's engine, with env set."""
    import shlex
    import shutil

    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (make deps installs Debian's docker-compose)")
    env = dict(env)
    if docker.engine.host:  # a private dockerd: its socket, not the default one
        env["DOCKER_HOST"] = docker.engine.host
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " docker-compose"


def project_objects(docker: DockerSession, project: str) -> list[str]:
    """The containers and networks a compose project has in the engine."""
    label = f"label=com.docker.compose.project={project}"
    ps = docker.call("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout.split()
    nets = docker.call("network", "ls", "--filter", label, "--format", "{{.Name}}").stdout.split()
    nets += [n for n in docker.call("network", "ls", "--format", "{{.Name}}").stdout.split() if n.startswith(project)]
    return [f"container {n}" for n in ps] + [f"network {n}" for n in sorted(set(nets))]


@pytest.fixture(scope="session")
def docker(tmp_path_factory) -> Iterator[DockerSession]:
    """A Docker engine for the session (the host's, else a private dockerd), always torn down."""
    tmp = tmp_path_factory.mktemp("docker") / "dockerd"
    with contextlib.ExitStack() as stack:
        try:
            engine = stack.enter_context(docker_engine(tmp))
        except DockerUnavailable as exc:
            pytest.skip(f"cannot run Docker: {exc}")
        session = DockerSession(engine, f"overlayctl-oracle-{secrets.token_hex(4)}")
        yield session
        left = session.leftovers()
        assert not left, f"Docker objects left by the tests in {engine.where}: {left}"


@dataclass
class SavedImage:
    """An image as ``docker save`` wrote it (legacy docker-archive of Docker 20.10)."""

    ref: str
    archive: Path
    manifest: dict  # the one entry of manifest.json
    config: dict  # the image config it names
    layers: list[Path]  # each layer.tar, extracted, base first

    @property
    def diff_ids(self) -> list[str]:
        return self.config["rootfs"]["diff_ids"]


def save_image(docker: DockerSession, ref: str, out: Path) -> SavedImage:
    """docker save ref, then read manifest.json, the config and the layer tars."""
    out.mkdir()
    archive = out / "image.tar"
    docker.call("save", "-o", str(archive), ref)
    with tarfile.open(archive) as tar:
        (manifest,) = json.load(tar.extractfile("manifest.json"))
        config = json.load(tar.extractfile(manifest["Config"]))
        layers = []
        for i, member in enumerate(manifest["Layers"]):
            path = out / f"layer{i}.tar"
            path.write_bytes(tar.extractfile(member).read())
            layers.append(path)
    return SavedImage(ref, archive, manifest, config, layers)


def pin_to_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A tarfile filter: owned by root, mtime pinned to IMAGE_MTIME."""
    info.mtime = IMAGE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def add_rootfs(tar: tarfile.TarFile, rootfs: Path) -> None:
    """Add what rootfs holds to tar, through pin_to_root."""
    for name in sorted(os.listdir(rootfs)):
        tar.add(rootfs / name, arcname=name, filter=pin_to_root)


def rootfs_tar(rootfs: Path, out: Path) -> Path:
    """A tar of what rootfs holds (root-owned, mtimes pinned to IMAGE_MTIME), for ``docker import``."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        add_rootfs(tar, rootfs)
    return out


@pytest.fixture(scope="session")
def docker_busybox(docker, busybox_rootfs, tmp_path_factory) -> Iterator[SavedImage]:
    """The busybox rootfs, docker-imported and saved; removed from Docker at the end."""
    tmp = tmp_path_factory.mktemp("docker-busybox")
    ref = docker.image("busybox")
    docker.call("import", str(rootfs_tar(busybox_rootfs, tmp / "rootfs.tar")), ref)
    try:
        yield save_image(docker, ref, tmp / "saved")
    finally:
        docker.remove_images(ref)
