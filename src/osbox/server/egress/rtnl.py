"""Links, addresses and routes through rtnetlink, in-process: what `ip` would do, without its process.

A sandbox's link takes a dozen `ip` steps; as processes (`nsenter … ip -batch`) they cost ~25 ms of a
create, as netlink messages well under a millisecond. Every call is blocking and acts on the network
namespace of the calling thread: run it inside `netns.call_in_netns` (which also keeps it off the event
loop). Failures raise `OSError` with the kernel's errno.

    with Rtnl() as rtnl:
        rtnl.add_veth("osbx-1a2b", "eth0", peer_netns_fd)
        rtnl.add_address("osbx-1a2b", IPv4Address("100.96.0.1"), 30)
        rtnl.set_up("osbx-1a2b")
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address
from types import TracebackType

__all__ = ["Rtnl"]

_NETLINK_ROUTE = 0
_RTM_NEWLINK, _RTM_DELLINK, _RTM_NEWADDR, _RTM_NEWROUTE = 16, 17, 20, 24
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_NLMSG_ERROR = 2
_NLA_F_NESTED = 0x8000
_IFLA_IFNAME, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 3, 18, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER = 1, 2, 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_OIF, _RTA_GATEWAY = 4, 5
_IFF_UP = 0x1
_RT_TABLE_MAIN, _RTPROT_BOOT, _RT_SCOPE_UNIVERSE, _RTN_UNICAST = 254, 3, 0, 1


def _attr(kind: int, payload: bytes) -> bytes:
    header = struct.pack("=HH", 4 + len(payload), kind)
    return header + payload + b"\0" * (-len(payload) % 4)


def _name(value: str) -> bytes:
    return value.encode() + b"\0"


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


class Rtnl:
    """One rtnetlink socket of the calling thread's network namespace; close it after use."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def add_veth(self, name: str, peer: str, peer_netns_fd: int) -> None:
        """A veth pair: `name` here, `peer` created directly in the namespace of `peer_netns_fd`."""
        peer_info = (
            _ifinfo()
            + _attr(_IFLA_IFNAME, _name(peer))
            + _attr(_IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        )
        data = _attr(_VETH_INFO_PEER, peer_info)
        info = _attr(_IFLA_INFO_KIND, b"veth\0") + _attr(_IFLA_INFO_DATA | _NLA_F_NESTED, data)
        body = _ifinfo() + _attr(_IFLA_IFNAME, _name(name)) + _attr(_IFLA_LINKINFO | _NLA_F_NESTED, info)
        self._request(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL, body)

    def delete_link(self, name: str) -> bool:
        """Delete the link `name` (a veth's peer goes with it); False when there is none."""
        try:
            self._request(_RTM_DELLINK, 0, _ifinfo() + _attr(_IFLA_IFNAME, _name(name)))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
        return True

    def set_up(self, name: str) -> None:
        """Bring the link `name` up."""
        body = _ifinfo(socket.if_nametoindex(name), _IFF_UP, _IFF_UP)
        self._request(_RTM_NEWLINK, 0, body)

    def add_address(self, name: str, address: IPv4Address, prefix: int) -> None:
        """Add `address`/`prefix` to the link `name` (with its prefix route, as `ip addr add` does)."""
        body = struct.pack(
            "=BBBBI", socket.AF_INET, prefix, 0, _RT_SCOPE_UNIVERSE, socket.if_nametoindex(name)
        )
        body += _attr(_IFA_LOCAL, address.packed) + _attr(_IFA_ADDRESS, address.packed)
        self._request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, body)

    def add_default_route(self, gateway: IPv4Address, name: str) -> None:
        """The IPv4 default route via `gateway` on the link `name`."""
        body = struct.pack(
            "=BBBBBBBBI",
            socket.AF_INET,
            0,
            0,
            0,
            _RT_TABLE_MAIN,
            _RTPROT_BOOT,
            _RT_SCOPE_UNIVERSE,
            _RTN_UNICAST,
            0,
        )
        body += _attr(_RTA_GATEWAY, gateway.packed) + _attr(
            _RTA_OIF, struct.pack("=I", socket.if_nametoindex(name))
        )
        self._request(_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_EXCL, body)

    def _request(self, kind: int, flags: int, body: bytes) -> None:
        """Send one request and wait for its acknowledgement; `OSError` with the kernel's errno."""
        self._seq += 1
        header = struct.pack(
            "=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK | flags, self._seq, 0
        )
        self._sock.send(header + body)
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_type, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
                if msg_type == _NLMSG_ERROR and seq == self._seq:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code != 0:
                        raise OSError(-code, os.strerror(-code))
                    return
                offset += max(length + (-length % 4), 16)
