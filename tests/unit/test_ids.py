"""Content addresses: chain IDs, short links, ID prefixes."""

import hashlib

import pytest

from overlayctl.errors import InvalidArgument, NotFound
from overlayctl.store.ids import chain_id, chain_ids, resolve_prefix, short_link

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def test_chain_id_follows_the_oci_rule():
    assert chain_id(None, A) == A
    expected = "sha256:" + hashlib.sha256(f"{A} {B}".encode()).hexdigest()
    assert chain_id(A, B) == expected
    assert chain_ids([A, B]) == [A, expected]


def test_short_link_is_short_and_stable():
    assert short_link(A) == short_link(A)
    assert len(short_link(A)) == 10 and short_link(A) != short_link(B)


IDS = ["sha256:abc111" + "0" * 58, "sha256:abc222" + "0" * 58, "sha256:def333" + "0" * 58]


@pytest.mark.parametrize(
    "prefix, expected",
    [("def", IDS[2]), ("sha256:abc1", IDS[0]), ("ABC2", IDS[1]), (IDS[0], IDS[0])],
    ids=["bare", "with-algorithm", "upper-case", "full"],
)
def test_resolve_prefix(prefix, expected):
    assert resolve_prefix(prefix, IDS, "layer") == expected


def test_resolve_prefix_ambiguous_and_unknown():
    with pytest.raises(InvalidArgument, match="ambiguous"):
        resolve_prefix("abc", IDS, "layer")
    with pytest.raises(NotFound, match="no such layer: 999"):
        resolve_prefix("999", IDS, "layer")
    with pytest.raises(NotFound):
        resolve_prefix("../etc", IDS, "layer")
