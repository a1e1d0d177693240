"""Reading image archives without a store or root: paths, references, platforms, plans, readers, checks."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from overlayctl.distribution import mediatypes as mt
from overlayctl.distribution.decompress import open_layer
from overlayctl.distribution.descriptor import parse_descriptor
from overlayctl.distribution.paths import normalize, resolve
from overlayctl.distribution.plan import plan_archive
from overlayctl.distribution.platform import Platform, host_platform, parse_platform
from overlayctl.distribution.reader import DirArchive, SpooledArchive, TarFileArchive, open_archive
from overlayctl.distribution.refs import normalize_ref, tags_from_annotations
from overlayctl.distribution.verify import VerifyingReader
from overlayctl.errors import ArchiveError, InvalidArgument, UnsafeArchive

from ..imagearchive import (
    Img,
    Link,
    blob_name,
    classic_files,
    compress,
    digest,
    docker25_files,
    layer_tar,
    multiplatform_files,
    oci_files,
    tar_of,
    write_dir,
)

BASE = layer_tar({"etc/motd": "base\n", "bin/tool": "#!/bin/sh\n"})
TOP = layer_tar({"app/run": "top\n"})
AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")


def archive(files, kind="tar", tmp_path=None):
    if kind == "tar":
        return TarFileArchive(io.BytesIO(tar_of(files)), "test.tar")
    if kind == "stream":
        return SpooledArchive(io.BytesIO(tar_of(files)), "stdin", str(tmp_path / "staging"))
    return DirArchive(str(write_dir(files, tmp_path / "layout")))


def plan(files, platform=None, kind="tar", tmp_path=None):
    with archive(files, kind, tmp_path) as src:
        return plan_archive(src, platform)


# --- paths ------------------------------------------------------------------


def test_normalize_paths():
    assert normalize("./a//b/", "x") == "a/b"
    for bad in ("/etc/passwd", "a/../../b", "..", "", "a\0b"):
        with pytest.raises(UnsafeArchive):
            normalize(bad, "manifest.json entry 0")


def test_resolve_follows_links_inside_and_refuses_the_way_out():
    links = {"a/layer.tar": "../b/layer.tar", "up": "../x", "abs": "/etc", "loop": "loop", "d": "sub"}
    link_of = links.get
    assert resolve("a/layer.tar", link_of, "w") == ("b/layer.tar", True)
    assert resolve("d/f", link_of, "w") == ("sub/f", True)
    assert resolve("plain/f", link_of, "w") == ("plain/f", False)
    for path in ("up", "abs/passwd"):
        with pytest.raises(UnsafeArchive, match="leaves the archive through the symlink"):
            resolve(path, link_of, "w")
    with pytest.raises(ArchiveError, match="too many symlinks"):
        resolve("loop", link_of, "w")


# --- references, platforms, descriptors -------------------------------------


def test_references_with_registry_hosts():
    assert normalize_ref("busybox") == "busybox:latest"
    assert normalize_ref("docker.io/library/busybox:1.36") == "busybox:1.36"
    assert normalize_ref("docker.io/someone/app") == "someone/app:latest"
    assert normalize_ref("127.0.0.1:5000/x:1") == "127.0.0.1:5000/x:1"
    assert normalize_ref("localhost/app") == "localhost/app:latest"
    assert normalize_ref("registry.example.com:443/team/app:v2") == "registry.example.com:443/team/app:v2"
    for bad in ("Busybox", "x@sha256:00", "-host.example/x", "a b"):
        with pytest.raises(InvalidArgument):
            normalize_ref(bad)


def test_tags_from_index_annotations():
    ref, ctrd = "org.opencontainers.image.ref.name", "io.containerd.image.name"
    assert tags_from_annotations({ref: "busybox:1"}, "w") == ["busybox:1"]
    assert tags_from_annotations({ref: "1.36", ctrd: "docker.io/library/busybox:1.36"}, "w") == ["busybox:1.36"]
    assert tags_from_annotations({ref: "v2", ctrd: "127.0.0.1:5000/app:v1"}, "w") == ["127.0.0.1:5000/app:v2"]
    assert tags_from_annotations({ctrd: "docker.io/library/app:3"}, "w") == ["app:3"]
    assert tags_from_annotations({ref: "latest"}, "w") == []  # a bare tag without a name tags nothing
    assert tags_from_annotations({}, "w") == []
    with pytest.raises(ArchiveError, match="entry 3"):
        tags_from_annotations({ref: "Bad/Name"}, "index.json entry 3")


def test_platforms():
    assert str(parse_platform("linux/arm64/v8")) == "linux/arm64"
    assert str(parse_platform("linux/arm/v7")) == "linux/arm/v7"
    assert host_platform().os == "linux" and "/" not in host_platform().architecture
    assert Platform("linux", "arm", "v7").matches(Platform("linux", "arm"))
    assert not Platform("linux", "arm", "v6").matches(Platform("linux", "arm", "v7"))
    for bad in ("linux", "linux/", "a/b/c/d", "linux/amd 64"):
        with pytest.raises(InvalidArgument):
            parse_platform(bad)


def test_descriptors_are_checked():
    good = {"mediaType": mt.OCI_CONFIG, "digest": digest(b"x"), "size": 1}
    desc = parse_descriptor(good, "w")
    assert desc.check(b"x", "w") == b"x" and desc.path == blob_name(b"x")
    with pytest.raises(ArchiveError, match="has 2 bytes"):
        desc.check(b"xy", "w")
    with pytest.raises(ArchiveError, match="does not match its digest"):
        desc.check(b"y", "w")
    for bad, why in [
        ({**good, "digest": "sha256:" + "0" * 63}, "invalid digest"),
        ({**good, "digest": "sha512:" + "0" * 128}, "unsupported digest algorithm"),
        ({**good, "size": -1}, "invalid size"),
        ({**good, "size": "1"}, "invalid size"),
        ({"digest": digest(b"x"), "size": 1}, "no mediaType"),
        ("text", "JSON object"),
    ]:
        with pytest.raises(ArchiveError, match=why):
            parse_descriptor(bad, "w")


def test_layer_media_types():
    assert mt.layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip", "w") == mt.GZIP
    assert mt.layer_compression("application/vnd.docker.image.rootfs.diff.tar", "w") == mt.NONE
    assert mt.layer_compression("application/vnd.oci.image.layer.v1.tar+zstd", "w") == mt.ZSTD
    with pytest.raises(ArchiveError, match="unknown layer media type 'application/x-bzip2'"):
        mt.layer_compression("application/x-bzip2", "layer 0")


# --- plans ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tar", "stream", "dir"])
def test_plan_of_a_classic_docker_archive(kind, tmp_path):
    base = Img([BASE], tags=["base:1"])
    app = Img([BASE, TOP], tags=["app:1", "docker.io/library/app:2"], cmd=["run"])
    result = plan(classic_files([base, app]), kind=kind, tmp_path=tmp_path)
    assert result.format == "docker-archive"
    assert [(i.id, i.tags) for i in result.images] == [(base.id, ("base:1",)), (app.id, ("app:1", "app:2"))]
    layers = result.images[1].layers
    assert [layer.diff_id for layer in layers] == [digest(BASE), digest(TOP)]
    assert all(layer.compression == mt.SNIFF and layer.digest is None for layer in layers)
    # The repeated base layer is a symlink to its first copy, followed inside the archive.
    assert layers[0].path.endswith("/layer.tar")


def test_classic_tags_fall_back_to_repositories():
    files = classic_files([Img([BASE], tags=["base:1"])], repo_tags=False)
    assert plan(files).images[0].tags == ("base:1",)


def test_plan_of_docker25_uses_manifest_json():
    image = Img([BASE, TOP], tags=["app:1"], compression="gzip")
    (result,) = plan(docker25_files([image])).images
    assert result.id == image.id and result.tags == ("app:1",)
    assert [layer.digest for layer in result.layers] == [digest(compress(x, "gzip")) for x in (BASE, TOP)]


@pytest.mark.parametrize("kind", ["tar", "stream", "dir"])
def test_plan_of_an_oci_layout(kind, tmp_path):
    image = Img([BASE, TOP], tags=["app:1", "app:latest"], compression="zstd")
    other = Img([TOP], arch="arm64")  # untagged; its descriptor names no platform
    result = plan(oci_files([image, other]), kind=kind, tmp_path=tmp_path)
    assert result.format == "oci-layout"
    assert [(i.id, i.tags) for i in result.images] == [(image.id, ("app:1", "app:latest")), (other.id, ())]
    first = result.images[0].layers[0]
    assert (first.compression, first.size) == (mt.ZSTD, len(compress(BASE, "zstd")))


def test_multi_platform_index_picks_the_host_or_the_asked_platform():
    amd, arm = Img([BASE], arch="amd64", cmd=["amd"]), Img([TOP], arch="arm64", cmd=["arm"])
    files = multiplatform_files([amd, arm], "multi:1")
    assert plan(files, AMD64).images[0].id == amd.id
    assert plan(files, ARM64).images[0].id == arm.id
    assert plan(files, ARM64).images[0].tags == ("multi:1",)
    with pytest.raises(ArchiveError, match=r"no image for linux/s390x \(it has linux/amd64, linux/arm64\)"):
        plan(files, Platform("linux", "s390x"))
    # An explicit platform also filters single images by their config.
    with pytest.raises(ArchiveError, match="no image for linux/arm64"):
        plan(oci_files([amd]), ARM64)


def test_plan_failures_name_what_and_where():
    image = Img([BASE, TOP], tags=["app:1"])
    layer_blob = blob_name(TOP)
    cases = []

    files = oci_files([image])
    del files[layer_blob]
    cases.append((files, f"layer 1 \\(blob {digest(TOP)}\\) of manifest sha256:.*: {layer_blob} is not in the archive"))

    files = oci_files([image])
    config = image.config()
    files[blob_name(config)] = config.replace(b'"os"', b'"OS"')
    cases.append((files, f"config of manifest .*: blob {image.id} does not match its digest"))

    files = oci_files([Img([BASE], extra={"rootfs": {"type": "layers", "diff_ids": [digest(BASE), digest(TOP)]}})])
    cases.append((files, "the config names 2 diff_ids but the manifest lists 1 layers"))

    files = oci_files([image])
    index = json.loads(files["index.json"])
    manifest_name = blob_name(b"")[:13] + index["manifests"][0]["digest"][7:]
    manifest = json.loads(files[manifest_name])
    manifest["layers"][0]["mediaType"] = "application/vnd.example.layer"
    data = json.dumps(manifest).encode()
    files[blob_name(data)] = data
    index["manifests"][0].update(digest=digest(data), size=len(data))
    files["index.json"] = json.dumps(index).encode()
    cases.append((files, "layer 0 .*: unknown layer media type 'application/vnd.example.layer'"))

    files = classic_files([image])
    manifest = json.loads(files["manifest.json"])
    manifest[0]["Layers"][1] = "../../etc/passwd"
    files["manifest.json"] = json.dumps(manifest).encode()
    cases.append((files, "layer 1 .* of manifest.json entry 0: path '../../etc/passwd' leaves the archive"))

    files = classic_files([image])
    manifest = json.loads(files["manifest.json"])
    manifest[0]["Config"] = "/etc/passwd"
    files["manifest.json"] = json.dumps(manifest).encode()
    cases.append((files, "manifest.json entry 0: Config: path '/etc/passwd' leaves the archive"))

    files = classic_files([image])
    first_layer = json.loads(files["manifest.json"])[0]["Layers"][0]
    files[first_layer] = Link("../../../etc/passwd")
    cases.append((files, "leaves the archive through the symlink"))

    files = oci_files([image])
    files[layer_blob] = Link(blob_name(BASE).rsplit("/", 1)[-1])
    cases.append((files, f"the blob {layer_blob} is a symlink"))

    files = {"readme": b"hi"}
    cases.append((files, "not an image archive"))

    for files, why in cases:
        with pytest.raises(ArchiveError, match=why):
            plan(files)


def test_directory_blob_symlink_is_refused(tmp_path):
    image = Img([BASE], tags=["app:1"])
    files = oci_files([image])
    files[blob_name(BASE)] = Link("/etc/passwd")
    with pytest.raises(UnsafeArchive, match="is a symlink"), archive(files, "dir", tmp_path) as src:
        plan_archive(src)


def test_images_of_several_entries_merge_their_tags():
    image = Img([BASE], tags=["a:1", "b:2"])
    (result,) = plan(oci_files([image]) | {}).images
    assert result.tags == ("a:1", "b:2")


# --- readers ----------------------------------------------------------------


def test_truncated_tar_is_an_error(tmp_path):
    data = tar_of(classic_files([Img([BASE, TOP], tags=["app:1"])]))
    for cut in (len(data) // 2, len(data) - 1024 - 100):
        with pytest.raises(ArchiveError, match="truncated"):
            TarFileArchive(io.BytesIO(data[:cut]), "t.tar")
        with pytest.raises(ArchiveError, match="truncated"):
            SpooledArchive(io.BytesIO(data[:cut]), "stdin", str(tmp_path))


def test_hostile_member_names_are_refused(tmp_path):
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil")
        tar.addfile(info, io.BytesIO(b""))
    for make in (
        lambda d: TarFileArchive(io.BytesIO(d), "t"),
        lambda d: SpooledArchive(io.BytesIO(d), "t", str(tmp_path)),
    ):
        with pytest.raises(UnsafeArchive, match="leaves the archive"):
            make(buf.getvalue())


def test_a_gzipped_archive_is_spooled(tmp_path):
    image = Img([BASE], tags=["app:1"])
    path = tmp_path / "image.tar.gz"
    path.write_bytes(gzip.compress(tar_of(oci_files([image]))))
    with open_archive(str(path), str(tmp_path / "staging")) as src:
        assert isinstance(src, SpooledArchive)
        assert plan_archive(src).images[0].id == image.id
    assert list((tmp_path / "staging").iterdir()) == []  # the spool is gone


def test_blob_reads_by_offset(tmp_path):
    files = oci_files([Img([BASE, TOP])])
    for kind in ("tar", "stream", "dir"):
        with archive(files, kind, tmp_path / kind) as src:
            assert src.open_blob(blob_name(TOP), "w").read() == TOP


# --- verifying and decompressing --------------------------------------------


def _drain(reader) -> bytes:
    return b"".join(iter(lambda: reader.read(7), b""))


def test_verifying_reader():
    data = b"0123456789" * 10
    ok = VerifyingReader(io.BytesIO(data), digest=digest(data), size=len(data), where="layer 0")
    assert _drain(ok) == data
    ok.finish()
    for blob, size, why in [
        (data[:-1] + b"X", len(data), "does not match its digest"),
        (data[:50], len(data), "is truncated: 50 of 100 bytes"),
        (data + b"!", len(data), "is larger than its descriptor's size 100"),
    ]:
        reader = VerifyingReader(io.BytesIO(blob), digest=digest(data), size=size, where="layer 0 (blob x)")
        with pytest.raises(ArchiveError, match=f"layer 0 \\(blob x\\): the blob {why}"):
            _drain(reader)
        assert reader.failed() is not None
    unknown = VerifyingReader(io.BytesIO(data), digest=None, size=None, where="w")
    assert unknown.failed() is None


@pytest.mark.parametrize("how", ["none", "gzip", "zstd"])
def test_decompression_by_media_type_and_by_magic(how):
    blob = compress(TOP, how)
    assert _drain(open_layer(io.BytesIO(blob), how)) == TOP
    assert _drain(open_layer(io.BytesIO(blob), mt.SNIFF)) == TOP


def test_corrupt_zstd_is_an_archive_error():
    blob = mt.ZSTD_MAGIC + b"\xff" * 50
    with pytest.raises(ArchiveError, match="corrupt zstd stream"):
        _drain(open_layer(io.BytesIO(blob), mt.ZSTD))
