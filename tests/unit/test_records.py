"""Records: references, image IDs, JSON round trips."""

import pytest

from overlayctl.errors import InvalidArgument
from overlayctl.store.ids import sha256_digest
from overlayctl.store.records import ContainerRecord, ImageRecord, LayerRecord, parse_ref

A = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "ref, expected",
    [("busybox", "busybox:latest"), ("busybox:1.35", "busybox:1.35"), ("my/app:v2", "my/app:v2")],
    ids=["default-tag", "tag", "path"],
)
def test_parse_ref(ref, expected):
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(
    "ref", ["Busybox", "a:b:c", "", "x:", "../x"], ids=["upper", "two-colons", "empty", "empty-tag", "dots"]
)
def test_parse_ref_refuses(ref):
    with pytest.raises(InvalidArgument):
        parse_ref(ref)


def test_image_id_is_the_digest_of_its_record():
    image = ImageRecord.build([A], runtime={"Cmd": ["/bin/sh"]}, created="2026-01-01T00:00:00Z")
    assert image.id == sha256_digest(image.raw)
    assert ImageRecord.from_bytes(image.raw) == image
    assert image.layers == [A] and image.runtime == {"Cmd": ["/bin/sh"]}


def test_layer_and_container_records_round_trip():
    layer = LayerRecord(id=A, diff_id=A, parent=None, size=3, created="t", comment="c", link="abcdefghij")
    assert LayerRecord.from_json(layer.to_json()) == layer
    ctr = ContainerRecord(
        id="f" * 64,
        name="web",
        image=A,
        created="t",
        hostname="h",
        link="x",
        options=(("volatile", None), ("index", "off")),
    )
    assert ContainerRecord.from_json(ctr.to_json()) == ctr
