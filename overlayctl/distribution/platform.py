"""Platforms (``os/arch[/variant]``): the host's, parsing ``--platform``, matching index entries."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ArchiveError, InvalidArgument

#: uname and Debian spellings -> the OCI (Go) ones.
_ARCH = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386", "armhf": "arm"}


@dataclass(frozen=True, slots=True)
class Platform:
    """An image's platform, normalised (arm64's variant v8 is the default, so dropped)."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, wanted: Platform) -> bool:
        """Whether an image of this platform is what ``wanted`` asks for (no variant asked: any)."""
        if (self.os, self.architecture) != (wanted.os, wanted.architecture):
            return False
        return not wanted.variant or self.variant == wanted.variant


def make(os_name: str, architecture: str, variant: str = "") -> Platform:
    arch = _ARCH.get(architecture, architecture)
    if arch == "arm64" and variant == "v8":
        variant = ""
    return Platform(os_name, arch, variant)


def host_platform() -> Platform:
    """linux/<the machine's architecture>: amd64 on x86_64, arm64 on aarch64."""
    return make("linux", os.uname().machine)


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` from the command line; InvalidArgument otherwise."""
    parts = text.strip().split("/")
    if not 2 <= len(parts) <= 3 or not all(p and p.replace("_", "").replace("-", "").isalnum() for p in parts):
        raise InvalidArgument(f"invalid platform {text!r}", hint="use OS/ARCH[/VARIANT], e.g. linux/arm64")
    return make(parts[0].lower(), parts[1].lower(), parts[2].lower() if len(parts) == 3 else "")


def platform_of(obj: object, where: str) -> Platform | None:
    """The platform of a descriptor's ``platform`` object, or of an image config (``os``, ``architecture``)."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ArchiveError(f"{where}: platform must be a JSON object")
    os_name, arch, variant = obj.get("os"), obj.get("architecture"), obj.get("variant") or ""
    if not isinstance(os_name, str) or not isinstance(arch, str) or not isinstance(variant, str):
        return None
    return make(os_name, arch, variant)
