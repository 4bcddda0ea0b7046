"""The policy DNS resolver: one sandbox's DNS server, over UDP and TCP on one address and port.

Denied names get NXDOMAIN (whatever the query type). Allowed queries are forwarded to the upstream
server unchanged; before the answer goes back, `on_allowed` receives the A/AAAA addresses in it with
their TTLs clamped to 60-360 s (the reference's bounds) and must have admitted them — the nftables allow
set is filled by then, so the client's first connection already passes. If the hook fails the client gets
SERVFAIL rather than an address it could not reach. Answer TTLs above the clamp are lowered to it, so a
client never caches an address longer than the allow set keeps it.

The policy is read through a callable on every query: a policy change applies to the next query.
Sockets come from `socket_factory`, so a caller can create them in another network namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from .dnswire import Answer, Question, read_answer, read_question
from .netns import SocketFactory
from .policy import IPAddress, Policy

__all__ = [
    "MAX_TTL",
    "MIN_TTL",
    "AllowedHook",
    "DeniedHook",
    "PolicyResolver",
    "ResolvedAddress",
    "SocketFactory",
    "clamp_ttl",
]

_log = logging.getLogger(__name__)

MIN_TTL = 60
"""Shortest time an allowed address stays admitted (seconds)."""
MAX_TTL = 360
"""Longest time an allowed address stays admitted, and the highest TTL a client is told (seconds)."""


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    """An address an allowed name resolved to, and how long to admit it (seconds, clamped)."""

    address: IPAddress
    ttl: int


AllowedHook = Callable[[str, Sequence[ResolvedAddress]], Awaitable[None]]
"""Called with an allowed name and its answer's addresses before the client gets them."""
DeniedHook = Callable[[str, str], None]
"""Called with a denied name and the query type (e.g. "A"), for diagnostics."""


def clamp_ttl(ttl: int) -> int:
    """`ttl` bounded to [MIN_TTL, MAX_TTL]."""
    return min(max(ttl, MIN_TTL), MAX_TTL)


class PolicyResolver:
    """A DNS server that enforces a policy on names; start it with `start`, stop it with `close`.

    Example::

        resolver = PolicyResolver(lambda: policy, ("192.0.2.53", 53), on_allowed=admit)
        host, port = await resolver.start("100.64.0.1", 53)
    """

    def __init__(
        self,
        policy: Callable[[], Policy],
        upstream: tuple[str, int],
        *,
        on_allowed: AllowedHook,
        on_denied: DeniedHook | None = None,
        socket_factory: SocketFactory = socket.socket,
        upstream_timeout: float = 3.0,
        max_inflight: int = 256,
        max_tcp_clients: int = 64,
        tcp_idle_timeout: float = 10.0,
    ) -> None:
        """`policy` returns the policy in force; `upstream` is the (address, port) queries go on to.

        Limits: `upstream_timeout` per upstream exchange, `max_inflight` UDP queries at once (more are
        dropped, the client retries), `max_tcp_clients` TCP connections at once, `tcp_idle_timeout`.
        """
        self._policy = policy
        self._upstream = upstream
        self._upstream_family = _family_of(upstream[0])
        self._on_allowed = on_allowed
        self._on_denied = on_denied
        self._socket = socket_factory
        self._timeout = upstream_timeout
        self._max_inflight = max_inflight
        self._max_tcp_clients = max_tcp_clients
        self._tcp_idle_timeout = tcp_idle_timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tcp_clients = 0
        self.address: tuple[str, int] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self, host: str, port: int = 53) -> tuple[str, int]:
        """Listen on `host`:`port` over UDP and TCP (port 0: one free port for both); the bound address."""
        loop = asyncio.get_running_loop()
        family = _family_of(host)
        for _attempt in range(20):
            udp_sock = self._socket(family, socket.SOCK_DGRAM)
            tcp_sock = self._socket(family, socket.SOCK_STREAM)
            try:
                udp_sock.bind((host, port))
                bound_port = udp_sock.getsockname()[1]
                tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp_sock.bind((host, bound_port))
                tcp_sock.listen(64)
            except OSError as exc:
                udp_sock.close()
                tcp_sock.close()
                if port == 0 and exc.errno == errno.EADDRINUSE:
                    continue  # the UDP port's TCP twin is taken: pick another
                raise
            udp_sock.setblocking(False)
            tcp_sock.setblocking(False)
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp_sock)
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
            self.address = (host, bound_port)
            return self.address
        raise OSError(errno.EADDRINUSE, "no free port for both UDP and TCP")

    async def close(self) -> None:
        """Stop listening and cancel the queries in flight."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        server, self._tcp = self._tcp, None
        if server is not None:
            server.close()
        # Cancelled before waiting for the TCP server: an idle client must not hold the close.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self.address = None

    async def __aenter__(self) -> PolicyResolver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one query ----------------------------------------------------------------------------------

    async def answer(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one DNS message (None: nothing to send back, e.g. garbage that has no id)."""
        question = read_question(wire)  # the fast path: no full parse (see `dnswire`)
        if question is None:
            try:
                query = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                return _formerr(wire)
            if query.flags & dns.flags.QR or len(query.question) != 1:
                return _formerr(wire)
            parsed = query.question[0]
            question = Question(parsed.name.to_text(omit_final_dot=True), parsed.rdtype)
        name = question.name
        if self._policy().decide(name) == "deny":
            if self._on_denied is not None:
                self._on_denied(name, dns.rdatatype.to_text(dns.rdatatype.RdataType.make(question.rdtype)))
            return _reply(wire, dns.rcode.NXDOMAIN)
        try:
            raw = await (self._tcp_exchange(wire) if tcp else self._udp_exchange(wire, _id_of(wire)))
            answer = read_answer(raw, MAX_TTL) or _read_answer_slowly(raw)
        except (OSError, TimeoutError, dns.exception.DNSException) as exc:
            _log.warning("upstream DNS for %s failed: %s", name, exc)
            return _reply(wire, dns.rcode.SERVFAIL)
        if answer.addresses:
            try:
                await self._on_allowed(name, [ResolvedAddress(a, clamp_ttl(t)) for a, t in answer.addresses])
            except Exception:
                _log.exception("admitting the addresses of %s failed", name)
                return _reply(wire, dns.rcode.SERVFAIL)
        return answer.wire

    async def _udp_exchange(self, wire: bytes, query_id: int) -> bytes:
        # A truncated upstream answer goes back as it is: the client retries over TCP, as it would anyway.
        loop = asyncio.get_running_loop()
        # A fresh socket per query: a random source port, and connect() makes the kernel drop datagrams
        # from anyone but the upstream.
        with self._socket(self._upstream_family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(self._upstream)  # UDP: no handshake, nothing to wait for (a numeric address)
            await loop.sock_sendall(sock, wire)
            async with asyncio.timeout(self._timeout):
                while True:
                    raw = await loop.sock_recv(sock, 65535)
                    if len(raw) >= 2 and struct.unpack("!H", raw[:2])[0] == query_id:
                        return raw

    async def _tcp_exchange(self, wire: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        with self._socket(self._upstream_family, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            async with asyncio.timeout(self._timeout):
                await loop.sock_connect(sock, self._upstream)
                await loop.sock_sendall(sock, struct.pack("!H", len(wire)) + wire)
                (length,) = struct.unpack("!H", await _recv_exactly(loop, sock, 2))
                return await _recv_exactly(loop, sock, length)

    # -- transports ---------------------------------------------------------------------------------

    def _spawn_udp(self, wire: bytes, addr: tuple[str, int]) -> None:
        if len(self._tasks) >= self._max_inflight:
            return  # overloaded: drop; the client's retry comes later
        task = asyncio.ensure_future(self._serve_udp(wire, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_udp(self, wire: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = await self.answer(wire, tcp=False)
        except Exception:
            _log.exception("DNS query from %s failed", addr)
            return
        if reply is not None and self._udp is not None:
            self._udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= self._max_tcp_clients:
            writer.close()
            return
        self._tcp_clients += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                async with asyncio.timeout(self._tcp_idle_timeout):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    wire = await reader.readexactly(length)
                reply = await self.answer(wire, tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away or idled out
        finally:
            self._tcp_clients -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: PolicyResolver) -> None:
        self._resolver = resolver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._resolver._spawn_udp(data, addr)


def _read_answer_slowly(raw: bytes) -> Answer:
    """`read_answer` through dnspython's full parse, for what the fast reader gave up on (raises
    `DNSException` for a malformed message)."""
    response = dns.message.from_wire(raw)
    addresses: list[tuple[IPAddress, int]] = []
    lowered = False
    for rrset in response.answer:
        if rrset.ttl > MAX_TTL:
            rrset.update_ttl(MAX_TTL)
            lowered = True
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            addresses += [(ipaddress.ip_address(rdata.address), rrset.ttl) for rdata in rrset]
    return Answer(addresses, response.to_wire() if lowered else raw)


def _reply(wire: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A reply with `rcode` to the query `wire` (FORMERR when dnspython cannot make one of it)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return _formerr(wire)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    response.flags |= dns.flags.RA
    return response.to_wire()


def _id_of(wire: bytes) -> int:
    query_id: int = struct.unpack_from("!H", wire)[0]
    return query_id


def _formerr(wire: bytes) -> bytes | None:
    """FORMERR echoing the id of an unparsable message; None when it is too short to have one."""
    if len(wire) < 12:
        return None
    flags = dns.flags.QR | dns.flags.RA | dns.rcode.FORMERR
    return wire[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def _family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = await loop.sock_recv(sock, count - len(data))
        if not chunk:
            raise ConnectionError("upstream closed the connection mid-answer")
        data += chunk
    return bytes(data)
