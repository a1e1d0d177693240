"""Writing image archives: Docker's ``docker save`` form and OCI image layouts, byte for byte the same each time.

Three formats:

- ``docker-archive`` (the default): Docker 25's form, which both worlds read:
  an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``)
  with Docker's ``manifest.json`` and ``repositories`` beside it, pointing
  into the same blobs, so ``docker load`` (20.10 as well as 25+), ``podman
  load`` and ``skopeo`` all take it;
- ``oci-archive``: the OCI image layout alone, as a tar;
- ``oci-dir``: the OCI image layout as a directory.

Layers are written uncompressed, each exactly as the store regenerates it
(its diff_id is its blob digest).  A tar is written as a stream: entries in
a fixed order, owner 0, mtime 0, so the same images give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from ..errors import InvalidArgument, StoreError
from .mediatypes import OCI_CONFIG, OCI_INDEX, OCI_LAYOUT_VERSION, OCI_MANIFEST

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
FORMATS = ("docker-archive", "oci-archive", "oci-dir")
_BLOCK = 512

#: Writes a layer's tar to out and returns its sha256 digest ("sha256:...").
ExportLayer = Callable[[str, BinaryIO], str]


class Progress(Protocol):
    """What write_archive reports to (``api._progress.Progress`` is one); finish is the caller's."""

    def start(self, total_layers: int, total_bytes: int | None) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def layer_done(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ImageToSave:
    """One image of an archive: its config bytes, its layers bottom to top, the tags to write."""

    config: bytes
    layer_ids: tuple[str, ...]  # chain IDs, to export
    diff_ids: tuple[str, ...]  # what each exported layer must hash to
    tags: tuple[str, ...]  # name:tag


@dataclass(frozen=True, slots=True)
class Written:
    """What was written: how many layer blobs, and the bytes of the whole archive."""

    layers: int
    bytes: int


def write_archive(
    images: list[ImageToSave], export: ExportLayer, out: BinaryIO | str, fmt: str, *, progress: Progress | None = None
) -> Written:
    """Write images as an archive of format fmt to out (a binary stream, or a directory for oci-dir).

    progress, if given, is started with the number of layer blobs (their
    bytes are not known before they are exported: None), then told of each
    layer blob's bytes as they are written to out, and of each blob done.
    """
    if fmt not in FORMATS:
        raise InvalidArgument(f"unknown archive format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    sink = _DirectorySink(out) if fmt == "oci-dir" else _TarSink(out)
    sink.progress = progress
    if progress is not None:
        progress.start(len({d for image in images for d in image.diff_ids}), None)
    layers_done: set[str] = set()
    manifests = []
    for image in images:
        for layer_id, diff_id in zip(image.layer_ids, image.diff_ids, strict=True):
            if diff_id not in layers_done:
                sink.layer(diff_id, lambda stream, layer_id=layer_id: export(layer_id, stream))
                layers_done.add(diff_id)
                if progress is not None:
                    progress.layer_done()
        config_digest = _digest(image.config)
        sink.blob(config_digest, image.config)
        manifest = _json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(image.config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": sink.sizes[d]} for d in image.diff_ids],
            }
        )
        sink.blob(_digest(manifest), manifest)
        manifests.append((image, config_digest, _digest(manifest), len(manifest)))
    sink.file("index.json", _json(_index(manifests)))
    sink.file("oci-layout", _json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    if fmt == "docker-archive":
        sink.file("manifest.json", _json(_docker_manifest(manifests)))
        sink.file("repositories", _json(_repositories(manifests)))
    sink.close()
    return Written(len(layers_done), sink.written)


def _index(manifests) -> dict:
    entries = []
    for image, _config, digest, size in manifests:
        for tag in image.tags or (None,):
            entry = {"mediaType": OCI_MANIFEST, "digest": digest, "size": size}
            if tag:
                # Docker 25's annotations: the full name, and the tag alone as the OCI ref name.
                entry["annotations"] = {
                    "io.containerd.image.name": tag,
                    "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1],
                }
            entries.append(entry)
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}


def _docker_manifest(manifests) -> list[dict]:
    return [
        {
            "Config": f"blobs/sha256/{config[7:]}",
            "RepoTags": list(image.tags),
            "Layers": [f"blobs/sha256/{d[7:]}" for d in image.diff_ids],
        }
        for image, config, _digest, _size in manifests
    ]


def _repositories(manifests) -> dict:
    repos: dict[str, dict[str, str]] = {}
    for image, _config, _digest, _size in manifests:
        for tag in image.tags:
            name, _, version = tag.rpartition(":")
            if image.diff_ids:
                repos.setdefault(name, {})[version] = image.diff_ids[-1][7:]
    return repos


def _json(data) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Counter:
    """A sink that counts and hashes what passes (the first pass over a layer: its size)."""

    def __init__(self, out: BinaryIO | None = None, progress: Progress | None = None) -> None:
        self.out = out
        self.size = 0
        self.hash = hashlib.sha256()
        self.progress = progress  # told of the bytes written to out

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        if self.out is not None:
            self.out.write(data)
            if self.progress is not None:
                self.progress.advance(len(data))
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _check(digest: str, counted: _Counter, what: str) -> None:
    if counted.digest != digest:
        raise StoreError(
            f"layer {digest} regenerates as {counted.digest}: its files changed since it was made",
            hint=f"run 'overlayctl check --verify-content' ({what})",
        )


class _TarSink:
    """Blobs and files as entries of a tar stream: fixed order, owner 0, mtime 0."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sizes: dict[str, int] = {}
        self.written = 0
        self.progress: Progress | None = None
        for directory in ("blobs", "blobs/sha256"):
            self._header(directory, 0, tarfile.DIRTYPE)

    def _header(self, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.type, info.mtime = size, kind, 0
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        self._write(info.tobuf(format=tarfile.USTAR_FORMAT))

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def _pad(self, size: int) -> None:
        if size % _BLOCK:
            self._write(b"\0" * (_BLOCK - size % _BLOCK))

    def layer(self, digest: str, export: Callable[[BinaryIO], str]) -> None:
        """A layer blob: its size is counted in a first pass (no temporary copy), then it is written."""
        counted = _Counter()
        export(counted)
        _check(digest, counted, "first pass")
        self._header(f"blobs/sha256/{digest[7:]}", counted.size)
        again = _Counter(self.out, self.progress)
        export(again)
        _check(digest, again, "second pass")
        self.written += again.size
        self._pad(again.size)
        self.sizes[digest] = again.size

    def blob(self, digest: str, data: bytes) -> None:
        if digest not in self.sizes:
            self.file(f"blobs/sha256/{digest[7:]}", data)
            self.sizes[digest] = len(data)

    def file(self, name: str, data: bytes) -> None:
        self._header(name, len(data))
        self._write(data)
        self._pad(len(data))

    def close(self) -> None:
        self._write(b"\0" * (2 * _BLOCK))
        self.out.flush()


class _DirectorySink:
    """Blobs and files in a directory (an OCI image layout), each written then renamed into place."""

    def __init__(self, root: str) -> None:
        if os.path.exists(root) and os.listdir(root):
            raise InvalidArgument(f"{root} is not empty", hint="give a new or empty directory")
        self.root = root
        os.makedirs(f"{root}/blobs/sha256", exist_ok=True)
        self.sizes: dict[str, int] = {}
        self.written = 0
        self.progress: Progress | None = None

    def layer(self, digest: str, export: Callable[[BinaryIO], str]) -> None:
        path = f"{self.root}/blobs/sha256/{digest[7:]}"
        with open(f"{path}.partial", "wb") as f:
            counted = _Counter(f, self.progress)
            export(counted)
        _check(digest, counted, "oci-dir")
        os.rename(f"{path}.partial", path)
        self.sizes[digest] = counted.size
        self.written += counted.size

    def blob(self, digest: str, data: bytes) -> None:
        if digest not in self.sizes:
            self.file(f"blobs/sha256/{digest[7:]}", data)
            self.sizes[digest] = len(data)

    def file(self, name: str, data: bytes) -> None:
        with open(f"{self.root}/{name}", "wb") as f:
            f.write(data)
        self.written += len(data)

    def close(self) -> None:
        pass
