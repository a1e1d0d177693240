"""Network interfaces of the caller's network namespace, without netlink.

This is the whole of ``--network none``: a container in a new network
namespace gets only ``lo``, which starts down.  One SIOCGIFFLAGS /
SIOCSIFFLAGS pair brings it up, so this path never imports pyroute2
(which costs about 0.2 s); bridges and veths live in ``runtime/net.py``.

Everything here acts on the namespace of the calling thread.  Note that
``/sys/class/net`` shows the namespace sysfs was mounted in, not the
caller's, so ``interfaces()`` asks the kernel through if_nameindex(3).
"""

from __future__ import annotations

import fcntl
import socket
import struct

from ..errors import from_oserror

# include/uapi/linux/sockios.h and include/uapi/linux/if.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFNAMSIZ = 16

# struct ifreq: char ifr_name[IFNAMSIZ], then a 24-byte union whose first
# member here is short ifr_flags (40 bytes on 64-bit; the ioctl reads them all).
_IFREQ_FLAGS = struct.Struct(f"{IFNAMSIZ}sH22x")


def _ifreq(name: str, flags: int = 0) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ:
        raise ValueError(f"bad interface name {name!r}")
    return _IFREQ_FLAGS.pack(raw, flags)


def link_flags(name: str) -> int:
    """The IFF_* flags of an interface (SIOCGIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, _ifreq(name))
        except OSError as exc:
            raise from_oserror(exc, call="SIOCGIFFLAGS", what=f"SIOCGIFFLAGS on {name} failed") from exc
    return _IFREQ_FLAGS.unpack(reply)[1]


def link_up(name: str) -> None:
    """Set IFF_UP on an interface; a no-op when it is already up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, _ifreq(name))
            flags = _IFREQ_FLAGS.unpack(reply)[1]
            if not flags & IFF_UP:
                fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, _ifreq(name, flags | IFF_UP))
        except OSError as exc:
            raise from_oserror(exc, call="SIOCSIFFLAGS", what=f"SIOCSIFFLAGS on {name} failed") from exc


def loopback_up() -> None:
    """Bring ``lo`` up in the caller's network namespace.

    The kernel gives ``lo`` its 127.0.0.1/8 and ::1 itself when it goes up
    (net/ipv4/devinet.c inetdev_event NETDEV_UP), so no address is set here.
    """
    link_up("lo")


def interfaces() -> list[str]:
    """Names of the interfaces in the caller's network namespace, by index."""
    return [name for _, name in sorted(socket.if_nameindex())]
