"""The store's part of container networking: bridge, subnet and addresses.

``<root>/network.json`` holds::

    {"bridge": "ovlctl0", "subnet": "10.213.0.0/24",
     "addresses": {"10.213.0.2": "<container-id>", ...}}

A missing file means the defaults and no addresses.  Every change happens
under the store lock (the caller's: these functions check that it is held) and is written with write_atomic, so two processes
never hand out the same address.  Nothing here touches the kernel: the
runtime (``runtime/net.py``) makes the bridge and veths from a NetworkConfig.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InUse, InvalidArgument, StoreError
from .atomic import write_atomic
from .layout import StoreLayout
from .lock import StoreLock
from .records import dump_json, load_json

DEFAULT_BRIDGE = "ovlctl0"
#: A subnet this host uses for nothing else; change it with configure_network.
DEFAULT_SUBNET = "10.213.0.0/24"
MIN_PREFIX = 16
MAX_PREFIX = 29

# Interface names: at most IFNAMSIZ - 1 bytes; dev_valid_name() also refuses
# "/", ":" and whitespace, and we keep to a portable subset.
_BRIDGE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")

# RFC 1918 only: ipaddress's is_private also admits 0.0.0.0/8, the TEST-NETs
# and 198.18.0.0/15, which hosts (this one included) use as real networks.
_RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """The bridge containers attach to and the subnet they get addresses from.

    The gateway is the subnet's first host address and sits on the bridge.
    Raises InvalidArgument for a bad bridge name or subnet.
    """

    bridge: str = DEFAULT_BRIDGE
    subnet: str = DEFAULT_SUBNET

    def __post_init__(self) -> None:
        if not isinstance(self.bridge, str) or not _BRIDGE_NAME.fullmatch(self.bridge) or self.bridge in (".", ".."):
            raise InvalidArgument(
                f"invalid bridge name {self.bridge!r}",
                hint="use 1-15 letters, digits, '_', '.', '-'",
            )
        try:
            net = ipaddress.IPv4Network(self.subnet, strict=True)
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(
                f"invalid subnet {self.subnet!r}: {exc}", hint="use an IPv4 network such as 10.213.0.0/24"
            ) from None
        if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
            raise InvalidArgument(
                f"subnet {net} has prefix /{net.prefixlen}",
                hint=f"use a prefix from /{MIN_PREFIX} to /{MAX_PREFIX}",
            )
        if not any(net.subnet_of(block) for block in _RFC1918):
            raise InvalidArgument(
                f"subnet {net} is not a private network",
                hint="use a range of 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16",
            )
        # Store the canonical spelling, so equal networks compare equal.
        object.__setattr__(self, "subnet", str(net))

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def gateway(self) -> str:
        """The first host address, e.g. 10.213.0.1; it belongs to the bridge."""
        return str(self.network.network_address + 1)

    def to_json(self) -> dict[str, Any]:
        return {"bridge": self.bridge, "subnet": self.subnet}


def load_network(layout: StoreLayout) -> tuple[NetworkConfig, dict[str, str]]:
    """The network config and the addresses handed out ({address: container id}).

    Needs no lock: the file is only ever replaced by a rename.
    """
    try:
        data = load_json(layout.network_json)
    except FileNotFoundError:
        return NetworkConfig(), {}
    try:
        config = NetworkConfig(bridge=data.get("bridge", DEFAULT_BRIDGE), subnet=data.get("subnet", DEFAULT_SUBNET))
        addresses = {str(k): str(v) for k, v in (data.get("addresses") or {}).items()}
    except (AttributeError, InvalidArgument) as exc:
        detail = exc.message if isinstance(exc, InvalidArgument) else "not an object"
        raise StoreError(f"damaged record {layout.network_json}: {detail}", hint="run 'overlayctl check'") from exc
    return config, addresses


def _save(layout: StoreLayout, config: NetworkConfig, addresses: dict[str, str]) -> None:
    write_atomic(layout.network_json, dump_json({**config.to_json(), "addresses": addresses}))


def configure_network(
    layout: StoreLayout, lock: StoreLock, bridge: str | None = None, subnet: str | None = None
) -> NetworkConfig:
    """Set the bridge name and/or subnet; None keeps the current value.

    Raises InvalidArgument for bad values and InUse when the network would
    change while addresses are handed out (a running container keeps its
    address until it is released).
    """
    lock.require()
    current, addresses = load_network(layout)
    wanted = NetworkConfig(
        bridge=current.bridge if bridge is None else bridge,
        subnet=current.subnet if subnet is None else subnet,
    )
    if wanted == current and _file_exists(layout):
        return current
    if wanted != current and addresses:
        owners = ", ".join(sorted({cid[:12] for cid in addresses.values()}))
        raise InUse(
            f"the network has {len(addresses)} address(es) in use (containers {owners})",
            hint="stop or remove those containers first",
        )
    _save(layout, wanted, addresses)
    return wanted


def _file_exists(layout: StoreLayout) -> bool:
    try:
        with open(layout.network_json, "rb"):
            return True
    except FileNotFoundError:
        return False


def allocate_address(layout: StoreLayout, lock: StoreLock, container_id: str) -> str:
    """Hand out the lowest free host address to a container, as "10.213.0.2/24".

    Never the gateway, never an address another container holds.  Asking
    again for the same container returns the address it already has.
    Raises StoreError when the subnet is full.
    """
    lock.require()
    config, addresses = load_network(layout)
    suffix = f"/{config.prefixlen}"
    for address, owner in addresses.items():
        if owner == container_id:
            return address + suffix
    gateway = config.gateway
    for host in config.network.hosts():
        address = str(host)
        if address != gateway and address not in addresses:
            break
    else:
        raise StoreError(
            f"no free address in {config.subnet}",
            hint="remove stopped containers or configure a larger subnet",
        )
    addresses[address] = container_id
    _save(layout, config, addresses)
    return address + suffix


def release_address(layout: StoreLayout, lock: StoreLock, container_id: str) -> bool:
    """Give back the container's address.  False when it held none."""
    lock.require()
    config, addresses = load_network(layout)
    kept = {a: c for a, c in addresses.items() if c != container_id}
    if len(kept) == len(addresses):
        return False
    _save(layout, config, kept)
    return True


def address_of(layout: StoreLayout, container_id: str) -> str | None:
    """The container's address as "10.213.0.2/24", or None."""
    config, addresses = load_network(layout)
    for address, owner in addresses.items():
        if owner == container_id:
            return f"{address}/{config.prefixlen}"
    return None
