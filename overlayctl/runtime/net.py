"""Bridge networking of a container: bridge, veth pair, address and route.

The only module of overlayctl that imports pyroute2, and it does so inside
the functions: loading pyroute2 costs about 0.1 s, which ``--network none``
(``kernel/netif.py``) never pays.  Nothing imports this module at start-up.

Lifecycle, as the monitor process drives it::

    address = store.network.allocate_address(layout, lock, cid)   # under the store lock
    attach(config, cid, pid, address)   # monitor, in the host's netns, while PID 1 waits
    ...                                 # container runs
    detach(config, cid)                 # after PID 1 exits (the veth usually went with it)
    store.network.release_address(layout, lock, cid)
    remove_bridge_if_unused(config)     # optional: the last container took its veth away

What this host needs for bridged traffic (checked on the build VM, Debian 12,
kernel 6.18): br_netfilter is loaded and net.bridge.bridge-nf-call-iptables
is 1, so frames bridged between two veths pass the iptables FORWARD chain.
Its policy here is ACCEPT, so container-to-container and container-to-
gateway traffic flows with no change.  On a host whose FORWARD policy is DROP
(Docker sets that) a rule such as ``-A FORWARD -i <bridge> -o <bridge> -j
ACCEPT`` is needed; we never add one.  net.ipv4.ip_forward is 0 and there is
no NAT, so containers reach each other and the host's gateway address, but
nothing beyond the host.  We change no global sysctl and no firewall rule.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import os
from collections.abc import Iterator
from typing import Any

from ..errors import AlreadyExists, InUse, InvalidArgument, KernelError, NotFound, from_oserror
from ..kernel import _libc
from ..store.network import NetworkConfig

#: Name of the container's end of the veth pair, inside its namespace.
CONTAINER_IFNAME = "eth0"


def host_veth_name(container_id: str) -> str:
    """The host end of a container's veth pair: ``veth`` + 8 id characters (12 bytes)."""
    return "veth" + container_id.removeprefix("sha256:")[:8]


def attach(config: NetworkConfig, container_id: str, pid: int, address: str) -> dict[str, Any]:
    """Connect the network namespace of process pid to the bridge.

    Run in the host's network namespace (the monitor) while the container's
    PID 1, already in its own new network namespace, waits.  Creates the
    bridge with the gateway address when missing, a veth pair whose host end
    joins the bridge and whose other end appears in the container as
    ``eth0`` with address ("10.213.0.2/24"), brings ``lo`` and ``eth0`` up and
    routes everything via the gateway.  The container's side is configured
    through a netlink socket opened inside its namespace (setns around the
    socket() call), so no helper process is forked.  On failure the veth pair
    is removed again; the bridge stays for remove_bridge_if_unused.

    Returns {"bridge", "veth", "address", "gateway"}.  Raises InvalidArgument
    (address outside the subnet), InUse (subnet taken by another interface,
    bridge name taken by a non-bridge), AlreadyExists (veth name taken),
    NotFound (pid gone), NotPermitted, KernelError.
    """
    iface = _check_address(config, address)
    veth = host_veth_name(container_id)
    ns_fd = _open_netns(pid)
    try:
        _check_not_ours(ns_fd, pid)
        IPRoute, NetlinkError = _pyroute2()
        with _translated("attach", NetlinkError), IPRoute() as ipr:
            bridge_index = _ensure_bridge(ipr, config)
            if ipr.link_lookup(ifname=veth):
                raise AlreadyExists(
                    f"interface {veth} already exists",
                    hint=f"another container id starts with {veth[4:]}, or detach this one first",
                )
            # The peer is made inside the container's namespace, so its name
            # never meets the host's own eth0.
            ipr.link("add", ifname=veth, kind="veth", peer={"ifname": CONTAINER_IFNAME, "net_ns_fd": ns_fd})
            try:
                (veth_index,) = ipr.link_lookup(ifname=veth)
                ipr.link("set", index=veth_index, master=bridge_index)
                ipr.link("set", index=veth_index, state="up")
                with _netlink_in(ns_fd, IPRoute) as inner:
                    (eth0,) = inner.link_lookup(ifname=CONTAINER_IFNAME)
                    (lo,) = inner.link_lookup(ifname="lo")
                    inner.link("set", index=lo, state="up")
                    inner.addr("add", index=eth0, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                    inner.link("set", index=eth0, state="up")
                    inner.route("add", dst="0.0.0.0/0", gateway=config.gateway, oif=eth0)
            except BaseException:
                with contextlib.suppress(Exception):
                    ipr.link("del", ifname=veth)
                raise
    finally:
        os.close(ns_fd)
    return {"bridge": config.bridge, "veth": veth, "address": str(iface), "gateway": config.gateway}


def detach(config: NetworkConfig, container_id: str) -> None:
    """Delete the host end of the container's veth pair if it is still there.

    It goes by itself when the container's namespace dies (deleting one end
    of a veth pair deletes both), so this matters for a namespace kept alive
    by a pin.  config names the network the container was attached to.
    """
    veth = host_veth_name(container_id)
    IPRoute, NetlinkError = _pyroute2()
    with _translated("detach", NetlinkError), IPRoute() as ipr:
        if not ipr.link_lookup(ifname=veth):
            return
        try:
            ipr.link("del", ifname=veth)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:  # gone in between, with its namespace
                raise


def remove_bridge_if_unused(config: NetworkConfig) -> bool:
    """Delete the bridge when no interface is attached to it.  True if deleted."""
    IPRoute, NetlinkError = _pyroute2()
    with _translated("remove bridge", NetlinkError), IPRoute() as ipr:
        found = ipr.link_lookup(ifname=config.bridge)
        if not found:
            return False
        index = found[0]
        if _kind(ipr, index) != "bridge":
            return False
        if any(link.get("master") == index for link in ipr.get_links()):
            return False
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise
        return True


# -- helpers -----------------------------------------------------------------


@functools.cache
def _pyroute2():
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    return IPRoute, NetlinkError


def _check_address(config: NetworkConfig, address: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(address)
    except ValueError as exc:
        raise InvalidArgument(f"invalid container address {address!r}: {exc}") from None
    net = config.network
    if (
        iface.network != net
        or str(iface.ip) == config.gateway
        or iface.ip in (net.network_address, net.broadcast_address)
    ):
        raise InvalidArgument(
            f"address {address} is not a container address of {config.subnet}",
            hint="allocate one with the store's allocate_address",
        )
    return iface


def _open_netns(pid: int) -> int:
    try:
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"process {pid} is gone; the container exited before its network was set up") from None
    except OSError as exc:
        raise from_oserror(exc, call="open", what=f"cannot open the network namespace of process {pid}") from exc


def _check_not_ours(ns_fd: int, pid: int) -> None:
    """Refuse a process still in our own namespace: we would wire up the host."""
    theirs = os.fstat(ns_fd)
    ours = os.stat("/proc/thread-self/ns/net")
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        raise InvalidArgument(
            f"process {pid} shares the host's network namespace",
            hint="call attach after the container's process has unshared CLONE_NEWNET",
        )


@contextlib.contextmanager
def _netlink_in(ns_fd: int, IPRoute) -> Iterator[Any]:
    """An IPRoute whose socket lives in the namespace ns_fd.

    A socket belongs to the network namespace its creator was in when it
    called socket(2), and keeps it.  setns(2) moves only the calling thread,
    and we move it back before doing anything else.  pyroute2 0.9.7's own
    ``IPRoute(netns=...)`` forks a child process to make the socket
    (netns.create_socket); this does the same without the fork.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc.setns(ns_fd, _libc.CLONE_NEWNET)
        try:
            ipr = IPRoute()  # creates and binds its socket here, synchronously
        finally:
            _libc.setns(home, _libc.CLONE_NEWNET)
    finally:
        os.close(home)
    try:
        yield ipr
    finally:
        ipr.close()


def _ensure_bridge(ipr, config: NetworkConfig) -> int:
    """The bridge's index; create it, with the gateway address, when missing.

    Two monitors may race here: one creates the bridge, the other gets
    EEXIST and uses it.  Only the creator checks that no other interface or
    route already covers the subnet (and removes its bridge if one does).
    """
    NetlinkError = _pyroute2()[1]
    created = False
    if not ipr.link_lookup(ifname=config.bridge):
        try:
            ipr.link("add", ifname=config.bridge, kind="bridge", address=_random_mac())
            created = True
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    found = ipr.link_lookup(ifname=config.bridge)
    if not found:
        raise KernelError(f"bridge {config.bridge} vanished while being set up", call="RTM_NEWLINK")
    index = found[0]
    if created:
        try:
            _check_subnet_free(ipr, config, index)
        except BaseException:
            with contextlib.suppress(Exception):
                ipr.link("del", index=index)
            raise
    elif _kind(ipr, index) != "bridge":
        raise InUse(
            f"interface {config.bridge} exists and is not a bridge",
            hint="configure another bridge name for the network",
        )
    if not any(a.get_attr("IFA_ADDRESS") == config.gateway for a in ipr.get_addr(index=index, family=2)):
        try:
            ipr.addr("add", index=index, address=config.gateway, prefixlen=config.prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:  # added by a racing monitor
                raise
    ipr.link("set", index=index, state="up")
    return index


def _random_mac() -> str:
    """A random unicast, locally administered MAC address.

    A bridge created without an address takes the lowest MAC of its ports and
    changes it as containers come and go (br_stp_recalculate_bridge_id), which
    leaves stale gateway entries in the containers' ARP caches.  An address
    given at creation is marked NET_ADDR_SET and stays.
    """
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def _check_subnet_free(ipr, config: NetworkConfig, bridge_index: int) -> None:
    """Refuse a subnet that an address or route of another interface covers.

    Attaching on top of a subnet the host already uses would hijack its
    traffic; the default route (prefix 0) is left out, it covers everything.
    """
    net = config.network
    for a in ipr.get_addr(family=2):
        if a["index"] == bridge_index:
            continue
        other = ipaddress.IPv4Network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False)
        if other.overlaps(net):
            raise InUse(
                f"subnet {net} overlaps {other} on interface {_name(ipr, a['index'])}",
                hint="configure another subnet for the network",
            )
    for r in ipr.get_routes(family=2, table=254):
        if r["dst_len"] == 0 or r.get_attr("RTA_OIF") == bridge_index:
            continue
        other = ipaddress.IPv4Network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}", strict=False)
        if other.overlaps(net):
            raise InUse(
                f"subnet {net} overlaps the host's route to {other}",
                hint="configure another subnet for the network",
            )


def _kind(ipr, index: int) -> str | None:
    (link,) = ipr.get_links(index)
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _name(ipr, index: int) -> str:
    with contextlib.suppress(Exception):
        return ipr.get_links(index)[0].get_attr("IFLA_IFNAME")
    return f"#{index}"


@contextlib.contextmanager
def _translated(action: str, NetlinkError) -> Iterator[None]:
    """Turn pyroute2's and the kernel's errors into ours, with one line of text.

    A NetlinkError is (errno, text), the text being the kernel's extended ack
    when it sent one.  ENOENT from netlink names no file the user could fix,
    so it stays a KernelError.
    """
    what = f"network {action} failed"
    try:
        yield
    except NetlinkError as exc:
        text = str(exc.args[1]) if len(exc.args) > 1 and exc.args[1] else ""
        raise from_oserror(
            OSError(exc.code, text), call="netlink", what=what, detail=text, missing=KernelError
        ) from exc
    except OSError as exc:
        raise from_oserror(exc, call="netlink", what=what, missing=KernelError) from exc
