"""Refused connections, as nftables reports them over NFLOG: a small netlink listener and its parser.

The ruleset sends every refused packet (rate-limited in nft itself) to NFLOG group `NFLOG_GROUP` of the
sandbox's namespace, first 64 bytes only; `NflogListener` reads them on a netlink socket created inside
that namespace and reports each one's destination. `parse_messages` and `parse_packet` are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .netns import SocketFactory

__all__ = ["NFLOG_GROUP", "NflogListener", "RefusedPacket", "bind_messages", "parse_messages", "parse_packet"]

_log = logging.getLogger(__name__)

NFLOG_GROUP = 7
"""The NFLOG group osbox's ruleset logs refused packets to (groups are per network namespace)."""
COPY_RANGE = 64
"""Bytes of each refused packet copied to the listener: enough for the IP and TCP/UDP headers."""

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_ULOG = 4
_NFULNL_MSG_PACKET = 0
_NFULNL_MSG_CONFIG = 1
_NFULA_CFG_CMD = 1
_NFULA_CFG_MODE = 2
_NFULNL_CFG_CMD_BIND = 1
_NFULNL_COPY_PACKET = 2
_NFULA_PAYLOAD = 9
_NLM_F_REQUEST = 0x1
_NLMSG_ERROR = 2
_NLA_TYPE_MASK = 0x3FFF
_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


@dataclass(frozen=True, slots=True)
class RefusedPacket:
    """Where a refused packet was going: address, protocol name, and port (None for ICMP and others)."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    protocol: str
    port: int | None

    @property
    def target(self) -> str:
        """`address:port` (`[v6]:port`), or the bare address when there is no port."""
        if self.port is None:
            return str(self.address)
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


def bind_messages(group: int = NFLOG_GROUP) -> bytes:
    """The netlink messages that bind a socket to NFLOG `group`, copying `COPY_RANGE` bytes a packet."""
    bind = _attr(_NFULA_CFG_CMD, struct.pack("B", _NFULNL_CFG_CMD_BIND))
    mode = _attr(_NFULA_CFG_MODE, struct.pack("!IBB", COPY_RANGE, _NFULNL_COPY_PACKET, 0))
    return _config_message(group, bind, seq=1) + _config_message(group, mode, seq=2)


def parse_messages(data: bytes) -> Iterator[RefusedPacket]:
    """The refused packets in one netlink datagram (other messages and malformed parts are skipped)."""
    offset = 0
    while offset + 16 <= len(data):
        length, msg_type, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16 or offset + length > len(data):
            return
        if msg_type == (_NFNL_SUBSYS_ULOG << 8) | _NFULNL_MSG_PACKET:
            payload = _payload(data[offset + 20 : offset + length])  # past nlmsghdr + nfgenmsg
            packet = parse_packet(payload) if payload is not None else None
            if packet is not None:
                yield packet
        offset += _align(length)


def parse_packet(packet: bytes) -> RefusedPacket | None:
    """Destination, protocol and port of a raw IPv4/IPv6 packet's first bytes; None when unreadable."""
    if not packet:
        return None
    version = packet[0] >> 4
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    if version == 4 and len(packet) >= 20:
        header = (packet[0] & 0x0F) * 4
        proto, address = packet[9], ipaddress.IPv4Address(packet[16:20])
    elif version == 6 and len(packet) >= 40:
        header, proto, address = 40, packet[6], ipaddress.IPv6Address(packet[24:40])
    else:
        return None
    port = None
    if proto in (6, 17) and len(packet) >= header + 4:
        port = struct.unpack_from("!H", packet, header + 2)[0]
    return RefusedPacket(address, _PROTOCOLS.get(proto, str(proto)), port)


class NflogListener:
    """Reads NFLOG `group` in the namespace whose sockets `socket_factory` makes; calls `on_refused`."""

    def __init__(
        self,
        socket_factory: SocketFactory,
        on_refused: Callable[[RefusedPacket], None],
        *,
        group: int = NFLOG_GROUP,
    ) -> None:
        self._factory = socket_factory
        self._on_refused = on_refused
        self._group = group
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        """Open and bind the netlink socket (in a thread: entering another namespace blocks for a
        moment) and start reading on the running loop."""
        sock = await asyncio.to_thread(self._open)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _open(self) -> socket.socket:
        sock = self._factory(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        try:
            sock.bind((0, 0))
            sock.setblocking(False)
            sock.send(bind_messages(self._group))
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ENOBUFS: the kernel dropped some; the next ones still come
                _log.debug("NFLOG read: %s", exc)
                return
            for packet in parse_messages(data):
                self._on_refused(packet)


def _config_message(group: int, attrs: bytes, *, seq: int) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(group)) + attrs
    msg_type = (_NFNL_SUBSYS_ULOG << 8) | _NFULNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), msg_type, _NLM_F_REQUEST, seq, 0) + body


def _attr(attr_type: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), attr_type) + value
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def _payload(attrs: bytes) -> bytes | None:
    offset = 0
    while offset + 4 <= len(attrs):
        length, attr_type = struct.unpack_from("=HH", attrs, offset)
        if length < 4 or offset + length > len(attrs):
            return None
        if attr_type & _NLA_TYPE_MASK == _NFULA_PAYLOAD:
            return attrs[offset + 4 : offset + length]
        offset += _align(length)
    return None


def _align(length: int) -> int:
    return (length + 3) & ~3
