"""Container networking on the real kernel: lo in a new netns, bridge, veths, TCP between two containers.

Network safety: every test uses its own bridge (``ovt<random>``) and subnet
(``10.214.<random>.0/24``), traffic goes only between namespaces the test
made (or over loopback), and the ``net_env`` fixture deletes the bridges,
veths and child processes the test made, also when it fails.
"""

from __future__ import annotations

import errno
import os
import secrets
import select
import signal
import socket
import time

import pytest

from overlayctl.errors import AlreadyExists, InUse, InvalidArgument, KernelError, NotFound, NotPermitted
from overlayctl.kernel import _libc, netif
from overlayctl.store.layout import StoreLayout
from overlayctl.store.lock import StoreLock
from overlayctl.store.network import NetworkConfig, allocate_address, configure_network, release_address

pytestmark = pytest.mark.root

PORT = 7345


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _host(config: NetworkConfig, n: int) -> str:
    """The n-th address of the test's subnet, as "10.214.x.n/24"."""
    return f"{config.network.network_address + n}/{config.prefixlen}"


def _read(fd: int, timeout: float = 10.0) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        raise TimeoutError("child did not answer")
    return os.read(fd, 4096)


class Child:
    """A forked process in a new network namespace, driven over two pipes.

    It unshares CLONE_NEWNET, says "r", then runs one command from the
    parent: ``serve ADDR`` (accept one TCP connection, answer ping with pong)
    or ``connect ADDR``.  Its exit code says how it went (0 = fine).
    """

    def __init__(self) -> None:
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 90
            try:
                os.close(down_w)
                os.close(up_r)
                _libc.unshare(_libc.CLONE_NEWNET)
                os.write(up_w, b"r")
                command = _read(down_r, 30).decode().split()
                code = _child_main(command, up_w)
            except BaseException:
                code = 91
            finally:
                os._exit(code)
        os.close(down_r)
        os.close(up_w)
        self.pid = pid
        self.down = down_w
        self.up = up_r
        self.status: int | None = None
        assert _read(self.up) == b"r"

    def send(self, text: str) -> None:
        os.write(self.down, text.encode())

    def wait(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                raise TimeoutError(f"child {self.pid} did not exit")
            else:
                time.sleep(0.02)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()
        for fd in (self.down, self.up):
            try:
                os.close(fd)
            except OSError:
                pass


def _child_main(command: list[str], up: int) -> int:  # pragma: no cover - runs in the child
    verb, address = command
    if sorted(netif.interfaces()) != ["eth0", "lo"]:
        return 2
    if not netif.link_flags("eth0") & netif.IFF_UP or not netif.link_flags("lo") & netif.IFF_UP:
        return 3
    if verb == "serve":
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((address, PORT))
            server.listen(1)
            server.settimeout(10)
            os.write(up, b"l")
            conn, peer = server.accept()
            with conn:
                conn.settimeout(5)
                if conn.recv(16) != b"ping":
                    return 4
                conn.sendall(b"pong " + peer[0].encode())
        return 0
    if verb == "connect":
        with socket.create_connection((address, PORT), timeout=5) as conn:
            conn.sendall(b"ping")
            reply = conn.recv(64)
        os.write(up, reply)
        return 0 if reply.startswith(b"pong ") else 5
    return 6


class NetEnv:
    """What one test made: its network config, children and interface names."""

    def __init__(self) -> None:
        self.config = NetworkConfig(
            bridge=f"ovt{secrets.token_hex(4)}", subnet=f"10.214.{secrets.randbelow(250) + 1}.0/24"
        )
        self.children: list[Child] = []
        self.names: set[str] = {self.config.bridge}

    def child(self) -> Child:
        c = Child()
        self.children.append(c)
        return c

    def container_id(self) -> str:
        from overlayctl.runtime.net import host_veth_name

        cid = secrets.token_hex(32)
        self.names.add(host_veth_name(cid))
        return cid

    def other_bridge(self, subnet: str | None = None) -> NetworkConfig:
        config = NetworkConfig(bridge=f"ovt{secrets.token_hex(4)}", subnet=subnet or self.config.subnet)
        self.names.add(config.bridge)
        return config

    def cleanup(self) -> None:
        for c in self.children:
            c.kill()
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            # veths first, so the bridges are free; only names this test made.
            for name in sorted(self.names, key=lambda n: not n.startswith("veth")):
                for index in ipr.link_lookup(ifname=name):
                    try:
                        ipr.link("del", index=index)
                    except Exception:
                        pass


@pytest.fixture
def net_env():
    env = NetEnv()
    try:
        yield env
    finally:
        env.cleanup()
        left = env.names & _links()
        assert not left, f"interfaces left behind: {left}"


def test_loopback_up_in_a_new_netns():
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 90
        try:
            _libc.unshare(_libc.CLONE_NEWNET)
            if netif.interfaces() != ["lo"]:
                code = 2
            elif netif.link_flags("lo") & netif.IFF_UP:
                code = 3  # a new namespace's lo starts down
            else:
                netif.loopback_up()
                netif.loopback_up()  # idempotent
                flags = netif.link_flags("lo")
                if flags & (netif.IFF_UP | netif.IFF_LOOPBACK) != netif.IFF_UP | netif.IFF_LOOPBACK:
                    code = 4
                else:
                    with socket.socket() as server:
                        server.bind(("127.0.0.1", 0))
                        server.listen(1)
                        with socket.create_connection(server.getsockname(), timeout=2) as client:
                            conn, _ = server.accept()
                            client.sendall(b"hi")
                            code = 0 if conn.recv(2) == b"hi" else 5
                            conn.close()
        except BaseException:
            code = 91
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_link_flags_of_a_missing_interface():
    with pytest.raises(KernelError, match="SIOCGIFFLAGS on nosuch0 failed") as info:
        netif.link_flags("nosuch0")
    assert info.value.errno == errno.ENODEV


def test_two_containers_talk_over_the_bridge(net_env, tmp_path):
    from overlayctl.runtime import net

    root = tmp_path / "root"
    root.mkdir()
    layout = StoreLayout(str(root), str(tmp_path / "run"))
    lock = StoreLock(layout.lock)
    a, b = net_env.child(), net_env.child()
    id_a, id_b = net_env.container_id(), net_env.container_id()
    with lock:
        config = configure_network(layout, lock, bridge=net_env.config.bridge, subnet=net_env.config.subnet)
        addr_a = allocate_address(layout, lock, id_a)
        addr_b = allocate_address(layout, lock, id_b)
    assert addr_a != addr_b

    info_a = net.attach(config, id_a, a.pid, addr_a)
    info_b = net.attach(config, id_b, b.pid, addr_b)
    assert info_a == {
        "bridge": config.bridge,
        "veth": "veth" + id_a[:8],
        "address": addr_a,
        "gateway": config.gateway,
    }
    assert info_b["address"] == addr_b and info_b["veth"] == "veth" + id_b[:8]
    assert {config.bridge, info_a["veth"], info_b["veth"]} <= _links()
    for veth in (info_a["veth"], info_b["veth"]):
        assert os.path.realpath(f"/sys/class/net/{veth}/master").endswith("/" + config.bridge)
    # The bridge keeps the MAC it was created with (NET_ADDR_SET = 3).
    with open(f"/sys/class/net/{config.bridge}/addr_assign_type") as f:
        assert f.read().strip() == "3"
    assert net.remove_bridge_if_unused(config) is False

    ip_a = addr_a.split("/")[0]
    a.send(f"serve {ip_a}")
    assert _read(a.up) == b"l"
    b.send(f"connect {ip_a}")
    assert b.wait() == 0, "container B could not reach container A"
    assert a.wait() == 0, "container A did not get B's ping"
    assert _read(b.up) == f"pong {addr_b.split('/')[0]}".encode()

    for c in (a, b):
        c.kill()
    net.detach(config, id_a)
    net.detach(config, id_b)
    net.detach(config, id_b)  # nothing left: no error
    with lock:
        assert release_address(layout, lock, id_a) and release_address(layout, lock, id_b)
    assert net.remove_bridge_if_unused(config) is True
    assert net.remove_bridge_if_unused(config) is False
    assert not {config.bridge, info_a["veth"], info_b["veth"]} & _links()


def test_attach_refusals(net_env):
    from overlayctl.runtime import net

    config = net_env.config
    gateway_cidr = f"{config.gateway}/{config.prefixlen}"
    c = net_env.child()
    cid = net_env.container_id()

    with pytest.raises(InvalidArgument, match="not a container address"):
        net.attach(config, cid, c.pid, gateway_cidr)
    with pytest.raises(InvalidArgument, match="not a container address"):
        net.attach(config, cid, c.pid, "10.215.0.2/24")
    with pytest.raises(InvalidArgument, match="shares the host's network namespace"):
        net.attach(config, cid, os.getpid(), _host(config, 2))
    assert config.bridge not in _links()

    net.attach(config, cid, c.pid, _host(config, 2))
    # The same veth name again: refused, the first stays intact.
    other = net_env.child()
    with pytest.raises(AlreadyExists, match="already exists"):
        net.attach(config, cid, other.pid, _host(config, 3))
    assert "veth" + cid[:8] in _links()

    # A second bridge on a subnet the first already covers: refused and not left behind.
    clash = net_env.other_bridge()
    with pytest.raises(InUse, match="overlaps"):
        net.attach(clash, net_env.container_id(), other.pid, _host(config, 3))
    assert clash.bridge not in _links()

    other.kill()
    with pytest.raises(NotFound, match=f"process {other.pid} is gone"):
        net.attach(config, net_env.container_id(), other.pid, _host(config, 4))


def test_netlink_errors_become_ours():
    from pyroute2.netlink.exceptions import NetlinkError

    from overlayctl.runtime import net

    with pytest.raises(NotPermitted) as info:
        with net._translated("attach", NetlinkError):
            raise NetlinkError(errno.EPERM, "Operation not permitted")
    assert info.value.errno == errno.EPERM
    assert "\n" not in info.value.format()
    with pytest.raises(KernelError, match="network detach failed: No such device") as info:
        with net._translated("detach", NetlinkError):
            raise NetlinkError(errno.ENODEV)
    assert type(info.value) is KernelError


def test_attach_failure_removes_the_veth(net_env, monkeypatch):
    from overlayctl.runtime import net

    def broken(ns_fd, IPRoute):
        raise KernelError("injected failure inside the container's namespace")

    monkeypatch.setattr(net, "_netlink_in", broken)
    c = net_env.child()
    cid = net_env.container_id()
    with pytest.raises(KernelError, match="injected"):
        net.attach(net_env.config, cid, c.pid, _host(net_env.config, 2))
    assert "veth" + cid[:8] not in _links()
    assert net.remove_bridge_if_unused(net_env.config) is True
