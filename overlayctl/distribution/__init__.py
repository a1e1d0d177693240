"""Reading image archives: ``docker save`` output and OCI image layouts.

Pure parsing, no store and no root (tested in ``tests/unit``):

- ``paths``: names inside an archive, normalised, symlinks resolved inside it;
- ``descriptor``: OCI descriptors and sha256 digests, checked;
- ``mediatypes``: manifest, index, config and layer media types, compression;
- ``platform``: ``os/arch[/variant]``, the host's, matching;
- ``refs``: tags from ``RepoTags``, ``repositories`` and index annotations,
  references with a registry host;
- ``model``: the plan (images, their config bytes, ordered layers, tags);
- ``docker_archive``, ``oci_layout``, ``plan``: from an archive's metadata to
  a plan, every metadata blob checked against its digest.

Reading blobs:

- ``source``: the Archive interface; ``reader``: open one, a directory or
  a tar; ``tarsource``: a seekable tar (members read at their offsets) or a
  tar stream (blobs spooled to staging);
- ``verify``: a stream wrapper that checks a blob's size and digest as its
  bytes pass;
- ``decompress``: a layer blob's plain tar (gzip, zstd, or sniffed).

``overlayctl.api.Images.load`` joins them with the store.
"""

from __future__ import annotations
