"""Image references as archives write them: with a registry host, or bare tags in annotations.

References are the store's (``parse_ref``: a registry host may lead,
``127.0.0.1:5000/app:1``; Docker Hub's take the familiar form); here the
tags an archive names, and the bare tags of index annotations.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import ArchiveError, InvalidArgument
from ..store.records import parse_ref

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def normalize_ref(ref: str) -> str:
    """``[host[:port]/]name[:tag]`` -> its stored form (the store's ``parse_ref``); no digests."""
    if not isinstance(ref, str) or "@" in ref:
        raise InvalidArgument(f"invalid image reference {ref!r}", hint="a tag is NAME[:TAG], not a digest")
    return parse_ref(ref)


def archive_tag(ref: str, where: str) -> str:
    """normalize_ref for a reference read from an archive: an ArchiveError (exit 1) when invalid."""
    try:
        return normalize_ref(ref)
    except InvalidArgument as exc:
        raise ArchiveError(f"{where}: {exc.message}") from None


def tags_from_annotations(annotations: dict[str, str], where: str) -> list[str]:
    """The tag an ``index.json`` entry gives its image, as a list (empty when it names none).

    ``org.opencontainers.image.ref.name`` is a full reference, or a bare tag
    (Docker 25 writes ``latest``), which takes its name from
    ``io.containerd.image.name``; a bare tag without that name tags nothing.
    """
    ref_name = annotations.get(REF_NAME, "")
    full = annotations.get(CONTAINERD_NAME, "")
    if ref_name and ("/" in ref_name or ":" in ref_name):
        return [archive_tag(ref_name, where)]
    if ref_name and full:
        if not _TAG.fullmatch(ref_name):
            raise ArchiveError(f"{where}: invalid tag {ref_name!r} in {REF_NAME}")
        return [archive_tag(f"{_repository(full)}:{ref_name}", where)]
    if full:
        return [archive_tag(full, where)]
    return []


def _repository(ref: str) -> str:
    """A reference without its tag (or digest)."""
    ref = ref.split("@", 1)[0]
    head, slash, last = ref.rpartition("/")
    return f"{head}{slash}{last.split(':', 1)[0]}"


def unique(refs: Iterable[str]) -> list[str]:
    """refs without repeats, in their first order."""
    return list(dict.fromkeys(refs))
