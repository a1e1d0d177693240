"""Media types of the OCI and Docker v2 families, and how a layer blob is compressed."""

from __future__ import annotations

from ..errors import ArchiveError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYOUT_VERSION = "1.0.0"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

#: Compression of a layer blob: "none", "gzip", "zstd", or "sniff" (by magic
#: bytes, for Docker's classic archive, whose manifest.json has no media types).
NONE, GZIP, ZSTD, SNIFF = "none", "gzip", "zstd", "sniff"

LAYER_TYPES: dict[str, str] = {
    "application/vnd.oci.image.layer.v1.tar": NONE,
    "application/vnd.oci.image.layer.v1.tar+gzip": GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd": ZSTD,
    # Deprecated in image-spec 1.1, still read.
    "application/vnd.oci.image.layer.nondistributable.v1.tar": NONE,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar": NONE,
    DOCKER_LAYER_GZIP: GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar": NONE,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": GZIP,
}

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def layer_compression(media_type: str, where: str) -> str:
    """The compression of a layer of this media type; ArchiveError for one we cannot unpack."""
    try:
        return LAYER_TYPES[media_type]
    except KeyError:
        raise ArchiveError(f"{where}: unknown layer media type {media_type!r}") from None


def sniff(head: bytes) -> str:
    """The compression that a blob's first bytes show (a plain tar shows none)."""
    if head.startswith(GZIP_MAGIC):
        return GZIP
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    return NONE
