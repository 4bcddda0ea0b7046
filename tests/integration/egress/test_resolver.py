"""The policy DNS resolver against a fake authoritative upstream on 127.0.0.1 (UDP and TCP)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address as ip

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from osbox.server.egress.policy import Policy, policy_from_body
from osbox.server.egress.resolver import MAX_TTL, MIN_TTL, PolicyResolver, ResolvedAddress

from .fake_dns import FakeAuthority

RECORDS = {
    "allowed.test": ["198.18.0.10", "2001:db8::10"],
    "cdn.allowed.test": ["198.18.0.12"],
    "denied.test": ["198.18.0.11"],
}


@dataclass
class Recorder:
    """What the hooks saw; `replied` is set by the test once its client has the answer."""

    allowed: list[tuple[str, list[ResolvedAddress], bool]] = field(default_factory=list)
    denied: list[tuple[str, str]] = field(default_factory=list)
    replied: bool = False
    fail: bool = False

    async def on_allowed(self, name: str, addresses: Sequence[ResolvedAddress]) -> None:
        await asyncio.sleep(0)  # a real hook awaits nft; the reply must still wait for it
        if self.fail:
            raise RuntimeError("nft said no")
        self.allowed.append((name, list(addresses), self.replied))

    def on_denied(self, name: str, qtype: str) -> None:
        self.denied.append((name, qtype))


@dataclass
class Setup:
    resolver: PolicyResolver
    upstream: FakeAuthority
    hooks: Recorder
    address: tuple[str, int]
    policy: list[Policy]

    async def ask(self, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        host, port = self.address
        ask = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
        response = await ask(query, host, timeout=5, port=port)
        self.hooks.replied = True
        return response


DENY_BUT_ALLOWED = {"defaultAction": "deny", "egress": [{"action": "allow", "target": "allowed.test"}]}


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    hooks = Recorder()
    policy = [policy_from_body(DENY_BUT_ALLOWED)]
    async with FakeAuthority(RECORDS, ttl=120) as upstream:
        upstream_addr = await upstream.start("127.0.0.1")
        resolver = PolicyResolver(
            lambda: policy[0], upstream_addr, on_allowed=hooks.on_allowed, on_denied=hooks.on_denied
        )
        async with resolver:
            address = await resolver.start("127.0.0.1", 0)
            yield Setup(resolver, upstream, hooks, address, policy)


def addresses(response: dns.message.Message) -> list[str]:
    return [rdata.address for rrset in response.answer for rdata in rrset]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_allowed_name_is_forwarded_and_admitted_before_the_reply(setup: Setup, tcp: bool) -> None:
    response = await setup.ask("allowed.test", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert addresses(response) == ["198.18.0.10"]
    assert setup.hooks.allowed == [
        ("allowed.test", [ResolvedAddress(ip("198.18.0.10"), 120)], False)  # False: before the reply
    ]
    assert setup.upstream.queries == ["allowed.test"]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_denied_name_is_nxdomain_without_asking_upstream(setup: Setup, tcp: bool) -> None:
    for rdtype in ("A", "AAAA", "TXT"):
        response = await setup.ask("denied.test", rdtype, tcp=tcp)
        assert response.rcode() == dns.rcode.NXDOMAIN
    assert setup.hooks.denied == [("denied.test", "A"), ("denied.test", "AAAA"), ("denied.test", "TXT")]
    assert setup.hooks.allowed == []
    assert setup.upstream.queries == []


async def test_aaaa_answers_are_admitted_too(setup: Setup) -> None:
    response = await setup.ask("allowed.test", "AAAA")
    assert addresses(response) == ["2001:db8::10"]
    assert setup.hooks.allowed[0][1] == [ResolvedAddress(ip("2001:db8::10"), 120)]


async def test_a_policy_change_applies_to_the_next_query(setup: Setup) -> None:
    assert (await setup.ask("cdn.allowed.test")).rcode() == dns.rcode.NXDOMAIN
    setup.policy[0] = setup.policy[0].patched(
        [*policy_from_body({"egress": [{"action": "allow", "target": "*.allowed.test"}]}).rules]
    )
    assert addresses(await setup.ask("cdn.allowed.test")) == ["198.18.0.12"]
    setup.policy[0] = Policy.deny_all()
    assert (await setup.ask("allowed.test")).rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("upstream_ttl", "admitted", "told"),
    [(5, MIN_TTL, 5), (120, 120, 120), (86400, MAX_TTL, MAX_TTL)],
)
async def test_ttls_are_clamped_and_never_outlive_the_allow_set(
    setup: Setup, upstream_ttl: int, admitted: int, told: int
) -> None:
    setup.upstream.ttl = upstream_ttl
    response = await setup.ask("allowed.test")
    assert [rrset.ttl for rrset in response.answer] == [told]
    assert setup.hooks.allowed[0][1][0].ttl == admitted


async def test_a_failing_hook_means_servfail_not_an_unreachable_address(setup: Setup) -> None:
    setup.hooks.fail = True
    response = await setup.ask("allowed.test")
    assert response.rcode() == dns.rcode.SERVFAIL
    assert response.answer == []


async def test_an_unreachable_upstream_means_servfail() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()  # nobody listens once closed
    hooks = Recorder()
    async with PolicyResolver(Policy.allow_all, dead, on_allowed=hooks.on_allowed) as resolver:
        host, port = await resolver.start("127.0.0.1", 0)
        response = await dns.asyncquery.udp(dns.message.make_query("x.test", "A"), host, timeout=5, port=port)
    assert response.rcode() == dns.rcode.SERVFAIL


async def test_garbage_gets_formerr_or_nothing_and_the_server_goes_on(setup: Setup) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, setup.address)
        await loop.sock_sendall(sock, b"\x12\x34" + b"\xff" * 20)
        reply = await asyncio.wait_for(loop.sock_recv(sock, 512), 5)
    assert reply[:2] == b"\x12\x34"
    assert reply[3] & 0x0F == dns.rcode.FORMERR
    # A response (QR set) sent to the resolver is refused the same way.
    bogus = dns.message.make_response(dns.message.make_query("allowed.test", "A"))
    assert setup.resolver is not None
    assert await setup.resolver.answer(b"\x00", tcp=False) is None
    refused = await setup.resolver.answer(bogus.to_wire(), tcp=False)
    assert refused is not None
    assert dns.message.from_wire(refused).rcode() == dns.rcode.FORMERR
    assert addresses(await setup.ask("allowed.test")) == ["198.18.0.10"]
