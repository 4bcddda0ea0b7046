"""The fake internet: three network namespaces the test makes, and nothing outside them.

    public  (198.18.0.0/24, 2001:2::/64)  authoritative DNS on 198.18.0.2:53 for the HOSTS below (A and
                             AAAA), an HTTP server on each host's addresses answering with its name
       | veth
    host    ("router": 198.18.0.1 and 100.64.0.1) forwards and masquerades the sandbox to the public side;
       |                 the policy resolver listens on 100.64.0.1:53 here
       | veth
    sandbox (100.64.0.2, default route via the host) its resolv.conf names 192.0.2.53, an address with
            nobody behind it: the nft DNAT sends DNS to the resolver whatever address is tried

The host side is a namespace too (not the machine's own), so the tests change nothing of the machine:
198.18.0.0/15 and 2001:2::/48 (benchmarking) and 100.64.0.0/10 (shared address space) exist only inside
these namespaces. IPv6 runs alongside (sandbox 2001:2:0:64::2, via the host's 2001:2:0:64::1).
The resolver and the servers run in the test's event loop, on sockets created inside the namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import dns.message
import dns.rcode

from osbox.server.egress.engine import Denial, SandboxEgress
from osbox.server.egress.netns import SocketFactory
from osbox.server.egress.policy import Policy
from tests.polling import wait_until_async

from .fake_dns import FakeAuthority
from .netns import netns_path, netns_socket_factory, network_namespaces, run, run_in

__all__ = [
    "DNS_ADDRESS",
    "HOSTS",
    "HOSTS_V6",
    "HOST_PUBLIC_SIDE",
    "RESOLVER_ADDRESS",
    "FakeInternet",
    "fake_internet",
    "http_server",
    "public_servers",
    "wire_public",
    "write_resolv_conf",
]

HOSTS_V6 = {
    "allowed.test": "2001:2::10",
    "denied.test": "2001:2::11",
    "cdn.allowed.test": "2001:2::12",
    "other.test": "2001:2::13",
}
"""IPv6 addresses of the same hosts, in 2001:2::/48 (IPv6 benchmarking: like 198.18/15, nobody's)."""
HOSTS = {
    "allowed.test": "198.18.0.10",
    "denied.test": "198.18.0.11",
    "cdn.allowed.test": "198.18.0.12",
    "other.test": "198.18.0.13",
}
DNS_ADDRESS = ("198.18.0.2", 53)
RESOLVER_ADDRESS = ("100.64.0.1", 53)
HOST_PUBLIC_SIDE = "198.18.0.1"
"""The host's own address on the public side: protected, as the runtime will protect the host's."""
SANDBOX_NAMESERVER = "192.0.2.53"


@dataclass
class FakeInternet:
    """Handles on a running fake internet; `sandbox` is the namespace the tests act from."""

    names: dict[str, str]
    authority: FakeAuthority
    egress: SandboxEgress
    denied: list[Denial] = field(default_factory=list)

    @property
    def sandbox(self) -> str:
        return self.names["sandbox"]

    @property
    def policy(self) -> Policy:
        return self.egress.policy

    async def set_policy(self, policy: Policy) -> None:
        """Replace the policy (resolver and nftables), as a `POST /policy` would."""
        await self.egress.replace(policy)

    async def denials(
        self, kind: str, detail: str | None = None, *, at_least: int = 1, within: float = 10.0
    ) -> list[Denial]:
        """The recorded denials of `kind` (and `detail`, e.g. "tcp") once there are `at_least` of them
        (NFLOG delivers asynchronously)."""

        def found() -> list[Denial] | None:
            matching = [d for d in self.denied if d.kind == kind and detail in (None, d.detail)]
            return matching if len(matching) >= at_least else None

        return await wait_until_async(
            found, timeout=within, what=f"{at_least} {kind} denial(s)", interval=0.02
        )

    async def allow_set(self) -> str:
        """The DNS-filled IPv4 allow set of the sandbox, as nft lists it."""
        listed = await run_in(self.sandbox, "nft", "list", "set", "inet", "osbox", "allow_v4")
        return listed.stdout

    async def fetch(self, host: str, *curl_options: str) -> subprocess.CompletedProcess[str]:
        """curl http://host/ from the sandbox (system resolver, so DNS goes through the policy); a
        literal IPv6 `host` is bracketed."""
        with contextlib.suppress(ValueError):
            host = f"[{ipaddress.IPv6Address(host)}]"
        url = f"http://{host}/"
        return await run_in(self.sandbox, "curl", "-sS", "-g", "--max-time", "5", *curl_options, url)

    async def reachable(self, host: str) -> bool:
        """Whether an HTTP GET from the sandbox to `host` gets the host's page."""
        done = await self.fetch(host)
        return done.returncode == 0 and done.stdout in HOSTS

    async def query(
        self, name: str, rdtype: str = "A", *, tcp: bool = False, server: str = SANDBOX_NAMESERVER
    ) -> dns.message.Message:
        """A raw DNS query from the sandbox to `server`:53 (redirected to the resolver by nft)."""
        return await dns_exchange(
            netns_socket_factory(netns_path(self.sandbox)),
            (server, 53),
            dns.message.make_query(name, rdtype),
            tcp=tcp,
        )


async def dns_exchange(
    factory: SocketFactory, server: tuple[str, int], query: dns.message.Message, *, tcp: bool
) -> dns.message.Message:
    """One query/answer over a socket made by `factory` (e.g. inside the sandbox namespace)."""
    loop = asyncio.get_running_loop()
    wire = query.to_wire()
    with factory(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        async with asyncio.timeout(5):
            await loop.sock_connect(sock, server)
            if tcp:
                await loop.sock_sendall(sock, struct.pack("!H", len(wire)) + wire)
                reader = bytearray()
                while len(reader) < 2 or len(reader) < 2 + struct.unpack("!H", reader[:2])[0]:
                    chunk = await loop.sock_recv(sock, 65535)
                    if not chunk:
                        raise ConnectionError("DNS server closed the connection")
                    reader += chunk
                return dns.message.from_wire(bytes(reader[2:]))
            await loop.sock_sendall(sock, wire)
            return dns.message.from_wire(await loop.sock_recv(sock, 65535))


def answer_addresses(response: dns.message.Message) -> list[str]:
    """The A/AAAA addresses of an answer."""
    return [rdata.address for rrset in response.answer for rdata in rrset if hasattr(rdata, "address")]


def is_nxdomain(response: dns.message.Message) -> bool:
    return response.rcode() == dns.rcode.NXDOMAIN


@contextlib.asynccontextmanager
async def fake_internet(policy: Policy | None = None) -> AsyncIterator[FakeInternet]:
    """Build the namespaces, links, servers, resolver and nft rules; tear all of it down on exit."""
    async with network_namespaces(["host", "public", "sandbox"]) as names:
        host, public, sandbox = names["host"], names["public"], names["sandbox"]
        wire_public(host, public)
        _wire_sandbox(host, sandbox)
        denied: list[Denial] = []
        egress = SandboxEgress(
            netns_path(sandbox),
            listen=RESOLVER_ADDRESS,
            upstream=DNS_ADDRESS,
            on_denied=denied.append,
            protected=[ipaddress.ip_network(HOST_PUBLIC_SIDE)],
            socket_factory=netns_socket_factory(netns_path(host)),
        )
        async with public_servers(public) as authority:
            try:
                await egress.start(policy or Policy.allow_all())
                yield FakeInternet(names, authority, egress, denied)
            finally:
                await egress.close()


@contextlib.asynccontextmanager
async def public_servers(public: str) -> AsyncIterator[FakeAuthority]:
    """The public side's DNS authority and HTTP servers (on the addresses `wire_public` gave it)."""
    records = {name: [address, HOSTS_V6[name]] for name, address in HOSTS.items()}
    authority = FakeAuthority(records, ttl=120, socket_factory=netns_socket_factory(netns_path(public)))
    servers: list[asyncio.Server] = []
    try:
        await authority.start(*DNS_ADDRESS)
        for name, address in [*HOSTS.items(), *HOSTS_V6.items()]:
            servers.append(await http_server(public, address, name))
        yield authority
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
        await authority.close()


def wire_public(host: str, public: str) -> None:
    """The host<->public link (`to-pub` on the host, 198.18.0.1 and 2001:2::1) and the public addresses."""
    run("ip", "-n", host, "link", "add", "to-pub", "type", "veth", "peer", "name", "eth0", "netns", public)
    run("ip", "-n", host, "addr", "add", "198.18.0.1/24", "dev", "to-pub")
    run("ip", "-n", host, "link", "set", "to-pub", "up")
    for address in ("198.18.0.2", *HOSTS.values()):
        run("ip", "-n", public, "addr", "add", f"{address}/24", "dev", "eth0")
    run("ip", "-n", public, "link", "set", "eth0", "up")
    # IPv6 alongside, in 2001:2::/48; `nodad`: usable at once, no duplicate address detection to wait out.
    run("ip", "-n", host, "addr", "add", "2001:2::1/64", "dev", "to-pub", "nodad")
    for address in HOSTS_V6.values():
        run("ip", "-n", public, "addr", "add", f"{address}/64", "dev", "eth0", "nodad")


def _wire_sandbox(host: str, sandbox: str) -> None:
    """The host<->sandbox link of the picture in the module docstring, forwarding and masquerade."""
    run("ip", "-n", host, "link", "add", "to-sbx", "type", "veth", "peer", "name", "eth0", "netns", sandbox)
    run("ip", "-n", host, "addr", "add", "100.64.0.1/30", "dev", "to-sbx")
    run("ip", "-n", host, "link", "set", "to-sbx", "up")
    run("ip", "-n", sandbox, "addr", "add", "100.64.0.2/30", "dev", "eth0")
    run("ip", "-n", sandbox, "link", "set", "eth0", "up")
    run("ip", "-n", sandbox, "route", "add", "default", "via", "100.64.0.1")

    run("ip", "-n", host, "addr", "add", "2001:2:0:64::1/64", "dev", "to-sbx", "nodad")
    run("ip", "-n", sandbox, "addr", "add", "2001:2:0:64::2/64", "dev", "eth0", "nodad")
    run("ip", "-n", sandbox, "-6", "route", "add", "default", "via", "2001:2:0:64::1")

    run("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    run("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    masquerade = (
        "table inet osbox_test_nat {\n"
        "  chain postrouting { type nat hook postrouting priority 100; oifname to-pub masquerade; }\n"
        "}\n"
    )
    run("ip", "netns", "exec", host, "nft", "-f", "-", stdin=masquerade)
    write_resolv_conf(sandbox, SANDBOX_NAMESERVER)


def write_resolv_conf(netns: str, nameserver: str) -> None:
    """The namespace's resolv.conf: `ip netns exec` mounts /etc/netns/<name>/* over /etc."""
    os.makedirs(f"/etc/netns/{netns}", exist_ok=True)
    with open(f"/etc/netns/{netns}/resolv.conf", "w") as conf:
        conf.write(f"nameserver {nameserver}\noptions timeout:2 attempts:1\n")


async def http_server(netns: str, address: str, name: str, port: int = 80) -> asyncio.Server:
    """A one-page HTTP server on `address`:`port` inside `netns`, answering with `name`."""
    page = name.encode()
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(page), page)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
        writer.close()

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = netns_socket_factory(netns_path(netns))(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(64)
    sock.setblocking(False)
    return await asyncio.start_server(serve, sock=sock)
