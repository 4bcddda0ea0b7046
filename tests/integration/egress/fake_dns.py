"""A tiny authoritative DNS server for the tests: fixed A/AAAA records, NXDOMAIN for the rest, UDP + TCP.

async with FakeAuthority({"allowed.test": ["198.18.0.10"]}, ttl=30) as auth:
    host, port = await auth.start("127.0.0.1")
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Mapping, Sequence

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from osbox.server.egress.netns import SocketFactory

__all__ = ["FakeAuthority"]


class FakeAuthority:
    """Answers A/AAAA from `records` (name → addresses) with `ttl`; counts the queries it got."""

    def __init__(
        self,
        records: Mapping[str, Sequence[str]],
        *,
        ttl: int = 30,
        socket_factory: SocketFactory = socket.socket,
    ) -> None:
        self.records = {name.lower(): list(addrs) for name, addrs in records.items()}
        self.ttl = ttl
        self.queries: list[str] = []
        self._socket = socket_factory
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self, host: str, port: int = 0) -> tuple[str, int]:
        """Listen on UDP and TCP `host`:`port` (0: one free port for both); the bound address."""
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        while True:
            udp = self._socket(family, socket.SOCK_DGRAM)
            tcp = self._socket(family, socket.SOCK_STREAM)
            udp.bind((host, port))
            bound = udp.getsockname()[1]
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, bound))
            except OSError:
                udp.close()
                tcp.close()
                if port:
                    raise
                continue
            break
        tcp.listen(16)
        udp.setblocking(False)
        tcp.setblocking(False)
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        return host, bound

    async def close(self) -> None:
        """Stop listening."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def __aenter__(self) -> FakeAuthority:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def answer(self, wire: bytes) -> bytes:
        """The authoritative reply to one query."""
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.queries.append(name)
        response = dns.message.make_response(query)
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        version = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(question.rdtype)
        addrs = [a for a in self.records[name] if ipaddress.ip_address(a).version == version]
        if addrs:
            rrset = dns.rrset.from_text_list(
                question.name, self.ttl, dns.rdataclass.IN, question.rdtype, addrs
            )
            response.answer.append(rrset)
        return response.to_wire()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.answer(await reader.readexactly(length))
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, authority: FakeAuthority) -> None:
        self._authority = authority

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._authority._udp is not None:
            self._authority._udp.sendto(self._authority.answer(data), addr)
