"""Content addresses: digests, chain IDs, short link names, ID prefixes."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

from ..errors import InvalidArgument, NotFound

_HEX = re.compile(r"[0-9a-f]{1,64}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_id(parent_chain: str | None, diff_id: str) -> str:
    """OCI ChainID: the diff_id for a base layer, else sha256("<parent> <diff_id>")."""
    if parent_chain is None:
        return diff_id
    return sha256_digest(f"{parent_chain} {diff_id}".encode())


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    chains: list[str] = []
    parent = None
    for diff_id in diff_ids:
        parent = chain_id(parent, diff_id)
        chains.append(parent)
    return chains


def short_link(key: str) -> str:
    """A 10-character link name derived from key (base32 of its sha256).

    Short names keep classic mount(2) option strings inside one page:
    "l/" + 10 characters + ":" is 13 bytes a layer.
    """
    raw = hashlib.sha256(key.encode()).digest()
    return base64.b32encode(raw).decode().lower()[:10]


def short_id(digest: str) -> str:
    return digest[7:19] if digest.startswith("sha256:") else digest[:12]


def resolve_prefix(prefix: str, candidates: Iterable[str], kind: str) -> str:
    """The one candidate ID that prefix names (with or without "sha256:")."""
    text = prefix.strip().lower()
    bare = text.split(":", 1)[1] if text.startswith("sha256:") else text
    if not _HEX.fullmatch(bare):
        raise NotFound(f"no such {kind}: {prefix}")
    matches = [c for c in candidates if c.split(":", 1)[-1].startswith(bare)]
    if not matches:
        raise NotFound(f"no such {kind}: {prefix}")
    if len(matches) > 1:
        shown = ", ".join(short_id(m) for m in sorted(matches)[:4])
        raise InvalidArgument(
            f"{kind} ID prefix {prefix!r} is ambiguous ({len(matches)} match: {shown})",
            hint="give more characters",
        )
    return matches[0]
