"""The policy resolver's fast path: the few fields it needs read straight from DNS wire bytes. Pure.

Every allowed query is parsed twice on its way through the resolver (the question, to decide; the answer,
to admit its addresses), and dnspython's full parse of both was most of the resolver's own time. These
readers take only what the resolver needs, and give up (None) on anything unusual (a compressed
question, a label that is not plain letters, digits, '-' or '_', a truncated record): the resolver then
takes dnspython's path, so every message still gets the same treatment.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

from .policy import IPAddress

__all__ = ["Answer", "Question", "read_answer", "read_question"]

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")  # type, class, TTL, rdata length
_QR = 0x8000
_OPCODE = 0x7800
_TYPE_A, _TYPE_AAAA = 1, 28
_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Question:
    """A query's one question: the name as text (no final dot) and the query type's number."""

    name: str
    rdtype: int


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer's A/AAAA addresses with their TTLs, and the message with every answer TTL above the
    cap lowered to it (the bytes as they came when none was)."""

    addresses: list[tuple[IPAddress, int]]
    wire: bytes


def read_question(wire: bytes) -> Question | None:
    """The question of a plain query (opcode QUERY, one question, no answers), or None."""
    if len(wire) < _HEADER.size:
        return None
    _id, flags, qdcount, ancount, nscount, _arcount = _HEADER.unpack_from(wire)
    if flags & (_QR | _OPCODE) or qdcount != 1 or ancount or nscount:
        return None
    labels: list[str] = []
    offset = _HEADER.size
    while True:
        if offset >= len(wire):
            return None
        length = wire[offset]
        offset += 1
        if length == 0:
            break
        label = wire[offset : offset + length]
        if length > 63 or len(label) != length or not _PLAIN_LABEL.fullmatch(label):
            return None  # a pointer, an extended label type, or text dnspython would escape
        labels.append(label.decode())
        offset += length
    if not labels or offset + 4 > len(wire):
        return None
    (rdtype,) = struct.unpack_from("!H", wire, offset)
    return Question(".".join(labels), rdtype)


def read_answer(wire: bytes, max_ttl: int) -> Answer | None:
    """The A/AAAA addresses of a response's answer section (TTLs as given), or None."""
    if len(wire) < _HEADER.size:
        return None
    _id, flags, qdcount, ancount, _nscount, _arcount = _HEADER.unpack_from(wire)
    if not flags & _QR:
        return None
    offset: int | None = _HEADER.size
    for _ in range(qdcount):
        offset = _skip_name(wire, offset)
        if offset is None:
            return None
        offset += 4
    addresses: list[tuple[IPAddress, int]] = []
    lowered: bytearray | None = None
    for _ in range(ancount):
        offset = _skip_name(wire, offset)
        if offset is None or offset + _RR.size > len(wire):
            return None
        rdtype, _class, ttl, length = _RR.unpack_from(wire, offset)
        data = offset + _RR.size
        if data + length > len(wire):
            return None
        if ttl > max_ttl:
            lowered = lowered if lowered is not None else bytearray(wire)
            struct.pack_into("!I", lowered, offset + 4, max_ttl)
            ttl = max_ttl
        if (rdtype, length) in ((_TYPE_A, 4), (_TYPE_AAAA, 16)):
            addresses.append((ipaddress.ip_address(wire[data : data + length]), ttl))
        offset = data + length
    return Answer(addresses, bytes(lowered) if lowered is not None else wire)


def _skip_name(wire: bytes, offset: int | None) -> int | None:
    """The offset just past the (possibly compressed) name at `offset`, or None when it is malformed."""
    if offset is None:
        return None
    for _ in range(128):
        if offset >= len(wire):
            return None
        length = wire[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2 if offset + 2 <= len(wire) else None  # a pointer ends the name
        if length & 0xC0:
            return None
        offset += 1 + length
    return None
