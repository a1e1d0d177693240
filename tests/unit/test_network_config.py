"""The store's network record: NetworkConfig rules and address allocation (no root)."""

from __future__ import annotations

import json
import os

import pytest

from overlayctl.errors import InUse, InvalidArgument, StoreError
from overlayctl.store.layout import StoreLayout
from overlayctl.store.lock import StoreLock
from overlayctl.store.network import (
    NetworkConfig,
    address_of,
    allocate_address,
    configure_network,
    load_network,
    release_address,
)

from .conftest import race

CID = [f"{i:02x}" * 32 for i in range(1, 40)]


def test_changes_outside_the_lock_are_refused(tmp_path):
    layout = StoreLayout(str(tmp_path), str(tmp_path / "run"))
    with pytest.raises(AssertionError, match="outside the store lock"):
        allocate_address(layout, StoreLock(layout.lock), CID[0])


def test_defaults():
    config = NetworkConfig()
    assert (config.bridge, config.subnet) == ("ovlctl0", "10.213.0.0/24")
    assert config.gateway == "10.213.0.1"
    assert config.prefixlen == 24


@pytest.mark.parametrize(
    "subnet, gateway, prefixlen",
    [("10.214.7.0/24", "10.214.7.1", 24), ("172.16.0.0/16", "172.16.0.1", 16), ("192.168.5.8/29", "192.168.5.9", 29)],
    ids=["slash-24", "slash-16", "slash-29"],
)
def test_gateway_is_first_host(subnet, gateway, prefixlen):
    config = NetworkConfig(subnet=subnet)
    assert (config.gateway, config.prefixlen) == (gateway, prefixlen)


@pytest.mark.parametrize(
    "bridge",
    ["", "a" * 16, "br0/x", "br 0", "br:0", "brü", ".", ".."],
    ids=["empty", "16-chars", "slash", "space", "colon", "non-ascii", "dot", "dotdot"],
)
def test_bad_bridge_names(bridge):
    with pytest.raises(InvalidArgument, match="invalid bridge name"):
        NetworkConfig(bridge=bridge)


@pytest.mark.parametrize("bridge", ["b", "a" * 15, "ovl_ctl-0.x"], ids=["one-char", "15-chars", "punctuation"])
def test_good_bridge_names(bridge):
    assert NetworkConfig(bridge=bridge).bridge == bridge


@pytest.mark.parametrize(
    "subnet, message",
    [
        ("10.213.0.1/24", "invalid subnet"),
        ("not-a-net", "invalid subnet"),
        ("fd00::/64", "invalid subnet"),
        ("10.0.0.0/15", "prefix /15"),
        ("10.213.0.0/30", "prefix /30"),
        ("8.8.8.0/24", "not a private network"),
        ("192.0.2.0/24", "not a private network"),
        ("127.0.0.0/24", "not a private network"),
        ("169.254.1.0/24", "not a private network"),
        ("100.64.0.0/24", "not a private network"),
    ],
    ids=[
        "host-bits",
        "garbage",
        "ipv6",
        "too-wide",
        "too-narrow",
        "public",
        "test-net",
        "loopback",
        "link-local",
        "cgnat",
    ],
)
def test_bad_subnets(subnet, message):
    with pytest.raises(InvalidArgument, match=message):
        NetworkConfig(subnet=subnet)


def test_missing_file_means_defaults(layout):
    assert load_network(layout) == (NetworkConfig(), {})


def test_damaged_file_is_a_store_error(layout):
    with open(layout.network_json, "w") as f:
        json.dump({"bridge": "x" * 40, "subnet": "10.213.0.0/24"}, f)
    with pytest.raises(StoreError, match="damaged record"):
        load_network(layout)


def test_allocation_starts_after_gateway_and_is_idempotent(layout, lock):
    assert allocate_address(layout, lock, CID[0]) == "10.213.0.2/24"
    assert allocate_address(layout, lock, CID[1]) == "10.213.0.3/24"
    assert allocate_address(layout, lock, CID[0]) == "10.213.0.2/24"
    assert address_of(layout, CID[1]) == "10.213.0.3/24"
    with open(layout.network_json) as f:
        data = json.load(f)
    assert data == {
        "bridge": "ovlctl0",
        "subnet": "10.213.0.0/24",
        "addresses": {"10.213.0.2": CID[0], "10.213.0.3": CID[1]},
    }


def test_release_frees_the_lowest_address_for_reuse(layout, lock):
    for cid in CID[:3]:
        allocate_address(layout, lock, cid)
    assert release_address(layout, lock, CID[0]) is True
    assert release_address(layout, lock, CID[0]) is False
    assert address_of(layout, CID[0]) is None
    assert allocate_address(layout, lock, CID[3]) == "10.213.0.2/24"


def test_full_subnet(layout, lock):
    # /29: hosts .1-.6, .1 is the gateway, so five containers fit.
    configure_network(layout, lock, subnet="10.214.9.0/29")
    got = [allocate_address(layout, lock, cid) for cid in CID[:5]]
    assert got == [f"10.214.9.{n}/29" for n in range(2, 7)]
    with pytest.raises(StoreError, match=r"no free address in 10\.214\.9\.0/29"):
        allocate_address(layout, lock, CID[5])


def test_configure_validates_and_persists(layout, lock):
    config = configure_network(layout, lock, bridge="ovt1", subnet="10.214.3.0/24")
    assert config == NetworkConfig("ovt1", "10.214.3.0/24")
    assert load_network(layout) == (config, {})
    # None keeps the current value.
    assert configure_network(layout, lock, bridge="ovt2").subnet == "10.214.3.0/24"
    with pytest.raises(InvalidArgument):
        configure_network(layout, lock, subnet="10.214.3.0/31")
    assert load_network(layout)[0] == NetworkConfig("ovt2", "10.214.3.0/24")


def test_configure_refuses_a_change_while_addresses_are_out(layout, lock):
    allocate_address(layout, lock, CID[0])
    with pytest.raises(InUse, match="1 address"):
        configure_network(layout, lock, subnet="10.214.4.0/24")
    with pytest.raises(InUse):
        configure_network(layout, lock, bridge="other0")
    # Setting the same values again is no change and is allowed.
    assert configure_network(layout, lock, bridge="ovlctl0") == NetworkConfig()
    release_address(layout, lock, CID[0])
    assert configure_network(layout, lock, subnet="10.214.4.0/24").subnet == "10.214.4.0/24"


def _allocate_many(root: str, run_root: str, ids: list[str], start, results) -> None:
    layout = StoreLayout(root, run_root)
    lock = StoreLock(layout.lock, timeout=30)
    start.wait(10)
    got = []
    for cid in ids:
        with lock:
            got.append((cid, allocate_address(layout, lock, cid)))
    results.put(got)


def test_concurrent_processes_get_distinct_addresses(layout):
    groups = [CID[i * 6 : i * 6 + 6] for i in range(6)]
    got = race(_allocate_many, [(layout.root, layout.run_root, ids) for ids in groups])
    assert len(got) == 36
    assert len(set(got.values())) == 36, "an address was handed out twice"
    assert set(got.values()) == {f"10.213.0.{n}/24" for n in range(2, 38)}
    _, on_disk = load_network(layout)
    assert {f"{a}/24": c for a, c in on_disk.items()} == {a: c for c, a in got.items()}
    assert not [n for n in os.listdir(layout.root) if ".tmp-" in n]
