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
(its diff_id is its blob digest), except in the OCI formats for an image
whose original manifest and blobs were kept (``pull --keep-blobs``): those
are written as they came, so the manifest digest is the registry's.  A tar
is written as a stream: entries in a fixed order, owner 0, mtime 0, so the
same images give the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from ..errors import InvalidArgument, StoreError
from .mediatypes import OCI_CONFIG, OCI_INDEX, OCI_LAYOUT_VERSION, OCI_MANIFEST
from .model import KeptManifest

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
    kept: KeptManifest | None = None  # its original manifest and blobs, for the OCI formats


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
    if fmt == "docker-archive":
        images = [dataclasses.replace(image, kept=None) for image in images]
    if progress is not None:
        progress.start(len({key for image in images for key in _layer_blobs(image)}), None)
    layers_done: set[str] = set()
    manifests = []
    for image in images:
        for digest, write in _layer_blobs(image).items():
            if digest not in layers_done:
                write(sink, export)
                layers_done.add(digest)
                if progress is not None:
                    progress.layer_done()
        config_digest = _digest(image.config)
        sink.blob(config_digest, image.config)
        manifest, media_type = _manifest(image, config_digest, sink.sizes)
        sink.blob(_digest(manifest), manifest)
        manifests.append((image, config_digest, _digest(manifest), len(manifest), media_type))
    sink.file("index.json", _json(_index(manifests)))
    sink.file("oci-layout", _json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    if fmt == "docker-archive":
        sink.file("manifest.json", _json(_docker_manifest(manifests)))
        sink.file("repositories", _json(_repositories(manifests)))
    sink.close()
    return Written(len(layers_done), sink.written)


def _layer_blobs(image: ImageToSave) -> dict[str, Callable]:
    """The layer blobs of an image by digest, each with what writes it to a sink: kept, or exported."""
    if image.kept is not None:
        return {
            blob.digest: lambda sink, _export, blob=blob: sink.copy(blob.digest, blob.size, blob.path)
            for blob in image.kept.blobs
        }
    return {
        diff_id: lambda sink, export, diff_id=diff_id, layer_id=layer_id: sink.layer(
            diff_id, lambda stream: export(layer_id, stream)
        )
        for layer_id, diff_id in zip(image.layer_ids, image.diff_ids, strict=True)
    }


def _manifest(image: ImageToSave, config_digest: str, sizes: dict[str, int]) -> tuple[bytes, str]:
    """The image's kept manifest, or an OCI manifest of its uncompressed layers; and its media type."""
    if image.kept is not None:
        return image.kept.body, image.kept.media_type
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(image.config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": sizes[d]} for d in image.diff_ids],
    }
    return _json(manifest), OCI_MANIFEST


def _index(manifests) -> dict:
    entries = []
    for image, _config, digest, size, media_type in manifests:
        for tag in image.tags or (None,):
            entry = {"mediaType": media_type, "digest": digest, "size": size}
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
        for image, config, *_ in manifests
    ]


def _repositories(manifests) -> dict:
    repos: dict[str, dict[str, str]] = {}
    for image, *_ in manifests:
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


def _copy_file(path: str, out: _Counter) -> None:
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            out.write(data)


def _check_kept(digest: str, size: int, copied: _Counter, path: str) -> None:
    if copied.digest != digest or copied.size != size:
        raise StoreError(
            f"the kept blob {path} is not {digest} ({size} bytes) any more",
            hint="run 'overlayctl system prune' to empty the download cache, then save again",
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

    def copy(self, digest: str, size: int, path: str) -> None:
        """A kept blob, checked against its digest as it is copied."""
        self._header(f"blobs/sha256/{digest[7:]}", size)
        copied = _Counter(self.out, self.progress)
        _copy_file(path, copied)
        _check_kept(digest, size, copied, path)
        self.written += copied.size
        self._pad(copied.size)
        self.sizes[digest] = copied.size

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

    def copy(self, digest: str, size: int, path: str) -> None:
        target = f"{self.root}/blobs/sha256/{digest[7:]}"
        with open(f"{target}.partial", "wb") as f:
            copied = _Counter(f, self.progress)
            _copy_file(path, copied)
        _check_kept(digest, size, copied, path)
        os.rename(f"{target}.partial", target)
        self.sizes[digest] = copied.size
        self.written += copied.size

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
