"""The download cache of pulls: one writer per partial blob, resumes, kept manifests."""

from __future__ import annotations

import hashlib
import io
import json

from overlayctl.distribution import mediatypes as mt
from overlayctl.distribution.model import kept_manifest
from overlayctl.registry.cache import BlobCache


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _read_all(reader) -> bytes:
    data = b"".join(iter(lambda: reader.read(7), b""))
    reader.close()
    return data


def test_one_pull_at_a_time_writes_a_partial_blob(tmp_path):
    cache = BlobCache(str(tmp_path / "blobs"))
    digest = _digest(b"blob")
    held = cache.hold(digest)
    assert held is not None
    assert cache.hold(digest) is None  # another pull: it streams the blob uncached
    held.close()
    again = cache.hold(digest)
    assert again is not None
    again.close()


def test_a_blob_read_whole_is_kept_when_its_digest_matches(tmp_path):
    cache = BlobCache(str(tmp_path / "blobs"))
    blob = b"0123456789" * 10
    digest = _digest(blob)
    assert _read_all(cache.caching(io.BytesIO(blob), digest, cache.hold(digest), offset=0)) == blob
    assert cache.has(digest) and open(cache.path(digest), "rb").read() == blob
    assert cache.hold(digest) is not None  # the lock went with the partial file


def test_a_resumed_blob_reads_the_cached_part_first(tmp_path):
    cache = BlobCache(str(tmp_path / "blobs"))
    blob = b"abcdefghij" * 10
    digest = _digest(blob)
    partial = cache.hold(digest)
    partial.write(blob[:30])
    partial.flush()
    assert _read_all(cache.caching(io.BytesIO(blob[30:]), digest, partial, offset=30)) == blob
    assert cache.has(digest)


def test_a_registry_that_ignores_range_restarts_the_partial_blob(tmp_path):
    cache = BlobCache(str(tmp_path / "blobs"))
    blob = b"abcdefghij" * 10
    digest = _digest(blob)
    partial = cache.hold(digest)
    partial.write(b"stale bytes")
    partial.flush()
    assert _read_all(cache.caching(io.BytesIO(blob), digest, partial, offset=0)) == blob
    assert open(cache.path(digest), "rb").read() == blob


def test_a_blob_that_does_not_match_is_dropped(tmp_path):
    cache = BlobCache(str(tmp_path / "blobs"))
    digest = _digest(b"expected")
    _read_all(cache.caching(io.BytesIO(b"altered"), digest, cache.hold(digest), offset=0))
    assert not cache.has(digest) and cache.usage() == (0, 0)


def _manifest(config: bytes, layers: list[bytes], media_type: str | None = mt.OCI_MANIFEST) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(b), "size": len(b)}
            for b in layers
        ],
    }
    if media_type:
        manifest["mediaType"] = media_type
    return json.dumps(manifest).encode()


def test_a_kept_manifest_is_used_only_with_every_blob_it_names(tmp_path):
    cache = BlobCache(str(tmp_path / "blobs"))
    config, layers = b'{"rootfs": {}}', [b"base", b"top"]
    image_id = _digest(config)
    body = _manifest(config, layers)
    cache.keep_manifest(image_id, body)
    assert cache.kept_manifest(image_id) == body
    for blob in layers[:1]:
        _read_all(cache.caching(io.BytesIO(blob), _digest(blob), cache.hold(_digest(blob)), offset=0))
    assert cache.kept_image(image_id) is None  # the top layer's blob is not kept
    _read_all(cache.caching(io.BytesIO(b"top"), _digest(b"top"), cache.hold(_digest(b"top")), offset=0))
    kept = cache.kept_image(image_id)
    assert kept.body == body and kept.digest == _digest(body) and kept.media_type == mt.OCI_MANIFEST
    assert [(b.digest, b.size, b.path) for b in kept.blobs] == [
        (_digest(b), len(b), cache.path(_digest(b))) for b in layers
    ]
    cache.drop_manifest(image_id)
    assert cache.kept_image(image_id) is None


def test_kept_manifest_checks_the_image_and_the_blob_sizes():
    config = b"{}"
    found = {_digest(b"layer"): "/kept/layer"}

    def blob_file(digest: str, size: int) -> str | None:
        return found.get(digest) if size == len(b"layer") else None

    body = _manifest(config, [b"layer"], media_type=None)
    assert kept_manifest(body, _digest(config), blob_file).media_type == mt.OCI_MANIFEST  # the OCI default
    assert kept_manifest(body, _digest(b"another config"), blob_file) is None
    assert kept_manifest(_manifest(config, [b"other"]), _digest(config), blob_file) is None
    assert kept_manifest(b"not json", _digest(config), blob_file) is None
    assert kept_manifest(_manifest(config, [], media_type=mt.OCI_INDEX), _digest(config), blob_file) is None
