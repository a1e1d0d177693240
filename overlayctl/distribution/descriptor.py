"""OCI content descriptors and sha256 digests, checked before use."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArchiveError
from .platform import Platform, platform_of

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_BLOB_PATH = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_CONFIG_NAME = re.compile(r"([0-9a-f]{64})\.json")


def check_digest(value: object, where: str) -> str:
    """A ``sha256:<64 lowercase hex>`` digest, or ArchiveError naming where it was."""
    if isinstance(value, str) and _DIGEST.fullmatch(value):
        return value
    if isinstance(value, str) and ":" in value and not value.startswith("sha256:"):
        raise ArchiveError(f"{where}: unsupported digest algorithm in {value!r} (only sha256 is read)")
    raise ArchiveError(f"{where}: invalid digest {value!r}")


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(digest: str) -> str:
    """Where an OCI image layout keeps the blob of a (checked) digest."""
    return "blobs/sha256/" + digest.split(":", 1)[1]


def digest_in_path(path: str) -> str | None:
    """The digest a content-addressed name states: ``blobs/sha256/<hex>``, or ``<hex>.json`` (a classic config)."""
    found = _BLOB_PATH.fullmatch(path) or _CONFIG_NAME.fullmatch(path)
    return "sha256:" + found.group(1) if found else None


def load_json(data: bytes, what: str, kind: type = dict) -> Any:
    """JSON of a metadata file or blob; ArchiveError when it is not JSON or not a ``kind``."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ArchiveError(f"{what} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(value, kind):
        raise ArchiveError(f"{what} is not a JSON {'object' if kind is dict else kind.__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What an index or manifest says of a blob: its type, digest and size."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return blob_path(self.digest)

    def check(self, data: bytes, where: str) -> bytes:
        """data, when it is this blob (size and digest); else ArchiveError."""
        if len(data) != self.size:
            raise ArchiveError(f"{where}: blob {self.digest} has {len(data)} bytes, its descriptor says {self.size}")
        found = sha256_of(data)
        if found != self.digest:
            raise ArchiveError(f"{where}: blob {self.digest} does not match its digest (the archive holds {found})")
        return data


def parse_descriptor(obj: object, where: str, *, media_type: str | None = None) -> Descriptor:
    """A descriptor from JSON; ``media_type`` is the default when it names none."""
    if not isinstance(obj, dict):
        raise ArchiveError(f"{where}: a descriptor must be a JSON object")
    kind = obj.get("mediaType", media_type)
    if not isinstance(kind, str) or not kind:
        raise ArchiveError(f"{where}: the descriptor has no mediaType")
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ArchiveError(f"{where}: invalid size {size!r} in the descriptor")
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise ArchiveError(f"{where}: annotations must map strings to strings")
    return Descriptor(
        media_type=kind,
        digest=check_digest(obj.get("digest"), where),
        size=size,
        platform=platform_of(obj.get("platform"), where),
        annotations=dict(annotations),
    )
