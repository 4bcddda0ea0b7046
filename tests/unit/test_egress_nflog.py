"""The NFLOG parser (pure): refused packets read from netlink datagrams, malformed input skipped."""

from __future__ import annotations

import ipaddress
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from osbox.server.egress.nflog import COPY_RANGE, NFLOG_GROUP, RefusedPacket, bind_messages, parse_messages

PACKET_MSG = 4 << 8  # NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET


def attr(attr_type: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), attr_type) + value
    return raw + b"\0" * (-len(raw) % 4)


def nflog_message(payload: bytes, msg_type: int = PACKET_MSG) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(NFLOG_GROUP))
    body += attr(1, b"\x08\x00\x03\x00") + attr(9, payload)  # a packet header, then the payload
    return struct.pack("=IHHII", 16 + len(body), msg_type, 0, 0, 0) + body


def ipv4(proto: int, dst: str, ports: bytes = b"") -> bytes:
    header = bytes([0x45, 0]) + struct.pack("!H", 20 + len(ports)) + bytes(5) + bytes([proto]) + bytes(2)
    return header + bytes([100, 64, 0, 2]) + ipaddress.IPv4Address(dst).packed + ports


def ipv6(next_header: int, dst: str, ports: bytes = b"") -> bytes:
    header = bytes([0x60, 0, 0, 0]) + struct.pack("!H", len(ports)) + bytes([next_header, 64])
    return header + bytes(16) + ipaddress.IPv6Address(dst).packed + ports


def test_tcp_udp_and_icmp_destinations_are_read_from_one_datagram() -> None:
    datagram = (
        nflog_message(ipv4(6, "198.18.0.11", struct.pack("!HH", 40000, 80)))
        + nflog_message(ipv6(17, "2001:db8::1", struct.pack("!HH", 40000, 443)))
        + nflog_message(ipv4(1, "198.18.0.12"))
    )
    packets = list(parse_messages(datagram))
    assert packets == [
        RefusedPacket(ipaddress.ip_address("198.18.0.11"), "tcp", 80),
        RefusedPacket(ipaddress.ip_address("2001:db8::1"), "udp", 443),
        RefusedPacket(ipaddress.ip_address("198.18.0.12"), "icmp", None),
    ]
    assert [p.target for p in packets] == ["198.18.0.11:80", "[2001:db8::1]:443", "198.18.0.12"]


def test_other_messages_and_short_packets_are_skipped() -> None:
    ack = struct.pack("=IHHII", 36, 2, 0, 0, 0) + bytes(20)  # NLMSG_ERROR (an ack)
    short = nflog_message(b"\x45\x00")
    assert list(parse_messages(ack + short + nflog_message(ipv4(6, "198.18.0.1", b"\0\1")))) == [
        RefusedPacket(ipaddress.ip_address("198.18.0.1"), "tcp", None)
    ]


@given(st.binary(max_size=300))
def test_garbage_never_raises(data: bytes) -> None:
    list(parse_messages(data))
    list(parse_messages(nflog_message(data)))


def test_bind_asks_for_the_group_and_the_first_bytes_of_each_packet() -> None:
    messages = bind_messages()
    first_len = struct.unpack_from("=I", messages)[0]
    bind, mode = messages[:first_len], messages[first_len:]
    for message in (bind, mode):
        length, msg_type, flags = struct.unpack_from("=IHH", message)
        assert (length, msg_type, flags & 1) == (len(message), (4 << 8) | 1, 1)
        assert struct.unpack_from("!H", message, 18)[0] == NFLOG_GROUP
    assert bind[20:25] == struct.pack("=HHB", 5, 1, 1)  # NFULA_CFG_CMD: BIND
    assert mode[24:30] == struct.pack("!IBB", COPY_RANGE, 2, 0)  # NFULA_CFG_MODE: copy the packet
