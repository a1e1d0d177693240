"""References to images in a registry, normalised as Docker does (pure).

``busybox`` is ``docker.io/library/busybox:latest``; the first part of a
name is a registry host when it has a dot or a port or is ``localhost``
(``127.0.0.1:5000/team/app:v2``); ``@sha256:…`` names a manifest by digest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidArgument

DOCKER_HUB = "docker.io"
#: Where Docker Hub's API answers.
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """An image in a registry: host, repository, and a tag or a digest (or both)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """The host:port whose /v2/ API serves the repository."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """The repository as Docker shows it: without docker.io/ and library/."""
        if self.registry == DOCKER_HUB:
            return self.repository.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    @property
    def origin(self) -> str:
        """``registry/repository``: where a pulled blob can be mounted from."""
        return f"{self.registry}/{self.repository}"

    def tagged(self) -> str | None:
        """The store's tag for this reference (None for a reference by digest only)."""
        return f"{self.name}:{self.tag}" if self.tag else None

    def with_tag(self, tag: str) -> RemoteRef:
        return RemoteRef(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def registry_of(host: str) -> str:
    """A host as a registry: Docker Hub's aliases (and no host at all) are docker.io."""
    host = host.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    return DOCKER_HUB if not host or host in _HUB_ALIASES or host.startswith("index.docker.io/") else host


def api_host(host: str) -> str:
    """Where the /v2/ API of a registry host answers."""
    registry = registry_of(host)
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry


def parse_remote(text: str) -> RemoteRef:
    """Docker's form of a reference -> RemoteRef; a bare name gets Docker Hub and ``latest``."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise InvalidArgument(f"invalid image reference {text!r}")
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise InvalidArgument(f"invalid digest in {text!r}", hint="use NAME@sha256:<64 hex digits>")
    name, tag = rest, None
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(f"invalid tag {tag!r} in {text!r}")
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.fullmatch(first):
            raise InvalidArgument(f"invalid registry host {first!r} in {text!r}")
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, name
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not path or not all(_COMPONENT.fullmatch(c) for c in path.split("/")):
        raise InvalidArgument(f"invalid repository name in {text!r}", hint="lowercase letters, digits, '.', '_', '-'")
    if tag is None and not digest:
        tag = "latest"
    return RemoteRef(registry, path, tag, digest or None)
