"""Building image archives in tests: docker save (classic and Docker 25) and OCI image layouts.

An archive is first a ``Files`` map, name -> bytes (or ``Link(target)`` for
a symlink), in the order the tar will hold them; tests change it (flip a
byte, drop a blob, turn a blob into a symlink) before writing it as a tar
(``tar_of``) or a directory (``write_dir``)::

    image = Img([layer_tar({"etc/motd": "hi\\n"})], tags=["app:1"], cmd=["cat", "/etc/motd"])
    files = oci_files([image])
    path.write_bytes(tar_of(files))
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MTIME = 1_600_000_000
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


@dataclass(frozen=True)
class Link:
    """A symlink member."""

    target: str


Files = dict[str, "bytes | Link"]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, str | bytes]) -> bytes:
    """A plain layer tar of small files (parent directories listed first), deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for name, content in files.items():
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
                    tar.addfile(info)
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def dir_tar(root: Path) -> bytes:
    """A plain layer tar of a directory (busybox's rootfs), root-owned, mtimes pinned."""

    def pin(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "root", "root"
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(root)):
            tar.add(root / name, arcname=name, filter=pin)
    return buf.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


@dataclass
class Img:
    """An image to write: uncompressed layer tars (base first), tags, runtime config."""

    layers: list[bytes]
    tags: list[str] = field(default_factory=list)
    cmd: list[str] | None = None
    arch: str = "amd64"
    compression: str = "none"  # how the layer blobs are stored (OCI and Docker 25 forms)
    extra: dict = field(default_factory=dict)  # merged into the config

    def config(self) -> bytes:
        runtime = {"Cmd": self.cmd} if self.cmd else {}
        config = {
            "architecture": self.arch,
            "os": "linux",
            "created": "2020-09-13T12:26:40Z",
            "config": {"Env": ["PATH=/bin"], **runtime},
            "rootfs": {"type": "layers", "diff_ids": [digest(layer) for layer in self.layers]},
            "history": [{"created": "2020-09-13T12:26:40Z", "created_by": "test"} for _ in self.layers],
            **self.extra,
        }
        return json.dumps(config, indent=1).encode()  # not canonical: the ID must be of these bytes

    @property
    def id(self) -> str:
        return digest(self.config())


def _blob(files: Files, data: bytes) -> dict:
    files[f"blobs/sha256/{digest(data)[7:]}"] = data
    return {"digest": digest(data), "size": len(data)}


def oci_manifest(files: Files, image: Img) -> dict:
    """Write an image's blobs (layers, config, manifest) into files; its manifest descriptor."""
    layers = [
        {"mediaType": LAYER_TYPES[image.compression], **_blob(files, compress(layer, image.compression))}
        for layer in image.layers
    ]
    config = {"mediaType": OCI_CONFIG, **_blob(files, image.config())}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    return {"mediaType": OCI_MANIFEST, **_blob(files, json.dumps(manifest).encode())}


def oci_files(images: list[Img], *, docker25: bool = False) -> Files:
    """An OCI image layout: one index.json entry per tag (one untagged entry for an image without tags)."""
    files: Files = {}
    entries = []
    for image in images:
        desc = oci_manifest(files, image)
        for tag in image.tags or [None]:
            annotations = {}
            if tag and docker25:
                name = tag if "/" in tag.split(":")[0] else f"docker.io/library/{tag}"
                annotations = {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag.split(":")[-1],
                }
            elif tag:
                annotations = {"org.opencontainers.image.ref.name": tag}
            entries.append({**desc, **({"annotations": annotations} if annotations else {})})
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    files["index.json"] = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return files


def multiplatform_files(images: list[Img], tag: str) -> Files:
    """An OCI layout whose one index.json entry is an index of one image per architecture."""
    files: Files = {}
    entries = [
        {**oci_manifest(files, image), "platform": {"os": "linux", "architecture": image.arch}} for image in images
    ]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    top = {"mediaType": OCI_INDEX, **_blob(files, json.dumps(index).encode())}
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()
    return files


def docker25_files(images: list[Img]) -> Files:
    """Docker 25's docker save: an OCI layout plus manifest.json and repositories pointing into blobs/."""
    files = oci_files(images, docker25=True)
    manifest, repositories = [], {}
    for image in images:
        layers = [f"blobs/sha256/{digest(compress(layer, image.compression))[7:]}" for layer in image.layers]
        manifest.append({"Config": f"blobs/sha256/{image.id[7:]}", "RepoTags": image.tags or None, "Layers": layers})
        for tag in image.tags:
            repo, _, name = tag.rpartition(":")
            repositories.setdefault(repo, {})[name] = layers[-1].rsplit("/", 1)[-1]
    files["manifest.json"] = json.dumps(manifest).encode()
    files["repositories"] = json.dumps(repositories).encode()
    return files


def classic_files(images: list[Img], *, repo_tags: bool = True) -> Files:
    """Docker <= 24's docker save: <v1 id>/layer.tar (a repeated layer is a symlink), <id>.json, manifest.json last."""
    files: Files = {}
    manifest, repositories, saved = [], {}, {}
    for image in images:
        paths, parent = [], ""
        for layer in image.layers:
            v1 = hashlib.sha256(f"{parent} {digest(layer)} {image.id}".encode()).hexdigest()
            parent = v1
            files[f"{v1}/VERSION"] = b"1.0"
            files[f"{v1}/json"] = json.dumps({"id": v1}).encode()
            if digest(layer) in saved:
                files[f"{v1}/layer.tar"] = Link(f"../{saved[digest(layer)]}/layer.tar")
            else:
                files[f"{v1}/layer.tar"] = compress(layer, image.compression)
                saved[digest(layer)] = v1
            paths.append(f"{v1}/layer.tar")
        files[f"{image.id[7:]}.json"] = image.config()
        manifest.append(
            {"Config": f"{image.id[7:]}.json", "RepoTags": image.tags if repo_tags else None, "Layers": paths}
        )
        for tag in image.tags:
            repo, _, name = tag.rpartition(":")
            repositories.setdefault(repo, {})[name] = paths[-1].split("/")[0]
    files["manifest.json"] = json.dumps(manifest).encode()
    files["repositories"] = json.dumps(repositories).encode()
    return files


def tar_of(files: Files) -> bytes:
    """The files as a tar, in their order, with the directories they need first."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for name, content in files.items():
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs and not d.startswith(".."):
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            if isinstance(content, Link):
                info.type, info.linkname = tarfile.SYMTYPE, content.target
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def write_dir(files: Files, root: Path) -> Path:
    """The files as a directory (an OCI layout directory)."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            path.symlink_to(content.target)
        else:
            path.write_bytes(content)
    return root


def blob_name(data: bytes) -> str:
    """The files key of a blob."""
    return f"blobs/sha256/{digest(data)[7:]}"
