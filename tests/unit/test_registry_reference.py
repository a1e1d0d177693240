"""Registry references as Docker normalises them (pure)."""

from __future__ import annotations

import json

import pytest

from overlayctl.errors import InvalidArgument
from overlayctl.registry.client import is_loopback
from overlayctl.registry.reference import RemoteRef, api_host, parse_remote, registry_of

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest",
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("library/debian:12", "docker.io", "library/debian", "12", None),
        ("docker.io/team/app:v1", "docker.io", "team/app", "v1", None),
        ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("localhost:5000/team/app:v2", "localhost:5000", "team/app", "v2", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("127.0.0.1:5000/a/b/c:1.0", "127.0.0.1:5000", "a/b/c", "1.0", None),
        ("ghcr.io/owner/img", "ghcr.io", "owner/img", "latest", None),
        (f"host.example/app@{DIGEST}", "host.example", "app", None, DIGEST),
        (f"busybox:1@{DIGEST}", "docker.io", "library/busybox", "1", DIGEST),
    ],
)
def test_parse_remote(text, registry, repository, tag, digest):
    assert parse_remote(text) == RemoteRef(registry, repository, tag, digest)


def test_names_and_store_tags_are_dockers():
    assert parse_remote("busybox").tagged() == "busybox:latest"
    assert parse_remote("docker.io/team/app:1").tagged() == "team/app:1"
    assert parse_remote("127.0.0.1:5000/team/app:v2").tagged() == "127.0.0.1:5000/team/app:v2"
    assert parse_remote(f"host.example/app@{DIGEST}").tagged() is None
    assert parse_remote("busybox").api_host == "registry-1.docker.io"
    assert parse_remote("busybox").reference == "latest" and parse_remote(f"a.b/c@{DIGEST}").reference == DIGEST
    assert parse_remote("127.0.0.1:5000/team/app:v2").origin == "127.0.0.1:5000/team/app"
    assert str(parse_remote("busybox")) == "busybox:latest"


@pytest.mark.parametrize(
    "text", ["", " busybox", "Busybox", "app:", "app:bad tag", "a.b/c@sha256:12", "a//b", "host:port/app", "-x"]
)
def test_bad_references_are_refused(text):
    with pytest.raises(InvalidArgument):
        parse_remote(text)


def test_registry_hosts():
    assert (
        registry_of("") == registry_of("index.docker.io") == registry_of("https://index.docker.io/v1/") == "docker.io"
    )
    assert registry_of("127.0.0.1:5000") == "127.0.0.1:5000"
    assert api_host("docker.io") == "registry-1.docker.io" and api_host("ghcr.io") == "ghcr.io"


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("10.0.0.1:5000", False),
        ("registry.example", False),
        ("[2001:db8::1]:443", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_insecure_registries_from_overlayctls_config(tmp_path):
    from overlayctl.errors import RegistryError
    from overlayctl.registry.client import configured_insecure

    config = tmp_path / "config.json"
    assert not configured_insecure("10.0.0.5:5000", str(config))  # no file: none
    config.write_text(json.dumps({"insecure-registries": ["10.0.0.5:5000"]}))
    assert configured_insecure("10.0.0.5:5000", str(config)) and not configured_insecure("10.0.0.6:5000", str(config))
    config.write_text("{not json")
    with pytest.raises(RegistryError, match="not a valid overlayctl config"):
        configured_insecure("10.0.0.5:5000", str(config))
