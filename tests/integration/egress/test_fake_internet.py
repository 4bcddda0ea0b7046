"""Egress enforcement end to end in the fake internet: resolver + nftables in a sandbox network namespace.

No sandboxes here (the engine is not wired into them yet): the "sandbox" is a network namespace, and its
clients are curl (system resolver) and raw DNS queries made from inside it.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterable

import dns.rcode

from osbox.server.egress.enforcer import Enforcement, NftEnforcer, probe_enforcement
from osbox.server.egress.policy import (
    Policy,
    parse_delete_body,
    parse_patch_body,
    policy_from_body,
    policy_from_create,
)

from .fake_internet import (
    HOST_PUBLIC_SIDE,
    HOSTS,
    HOSTS_V6,
    RESOLVER_ADDRESS,
    FakeInternet,
    answer_addresses,
    fake_internet,
    http_server,
)
from .netns import NETNS_PREFIX, netns_path, netns_socket_factory, requires_netns, run_in

pytestmark = requires_netns

CURL_COULDNT_RESOLVE = 6


def deny_except(*rules: tuple[str, str]) -> Policy:
    return policy_from_body(
        {"defaultAction": "deny", "egress": [{"action": a, "target": t} for a, t in rules]}
    )


async def patch(internet: FakeInternet, *rules: tuple[str, str]) -> None:
    incoming = parse_patch_body([{"action": a, "target": t} for a, t in rules])
    await internet.set_policy(internet.policy.patched(incoming))


async def delete(internet: FakeInternet, *targets: str) -> None:
    await internet.set_policy(internet.policy.without(parse_delete_body(list(targets)))[0])


def failed(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode != 0 and not done.stdout


async def test_with_no_policy_every_host_is_reachable(internet: FakeInternet) -> None:
    assert internet.policy == policy_from_create(None)
    for name, address in HOSTS.items():
        assert (await internet.fetch(name)).stdout == name
        assert (await internet.fetch(address)).stdout == name


async def test_deny_default_admits_the_allowed_name_only(internet: FakeInternet) -> None:
    await internet.set_policy(deny_except(("allow", "allowed.test")))

    assert (await internet.fetch("allowed.test")).stdout == "allowed.test"
    # Its address was admitted, for the answer's TTL (120 s) + ADMISSION_SLACK, before curl got it.
    assert f"{HOSTS['allowed.test']} timeout 3m" in await internet.allow_set()

    denied = await internet.fetch("denied.test")
    assert denied.returncode == CURL_COULDNT_RESOLVE
    assert (await internet.query("denied.test")).rcode() == dns.rcode.NXDOMAIN
    # Recorded for diagnostics: when, and which name (curl asks for A and AAAA).
    names = await internet.denials("dns")
    assert {d.target for d in names} == {"denied.test"}
    assert "A" in {d.detail for d in names}
    assert all(d.at.tzinfo is not None for d in names)

    # Literal IPs that no allowed name resolved to are refused at the network layer, and recorded.
    assert failed(await internet.fetch(HOSTS["denied.test"]))
    assert failed(await internet.fetch(HOSTS["other.test"]))
    refused = await internet.denials("connection", "tcp", at_least=2)
    assert {(d.target, d.detail) for d in refused} == {
        (f"{HOSTS['denied.test']}:80", "tcp"),
        (f"{HOSTS['other.test']}:80", "tcp"),
    }
    # The admitted one works by address too (the allow set holds it).
    assert (await internet.fetch(HOSTS["allowed.test"])).stdout == "allowed.test"


async def test_dns_goes_to_the_resolver_whatever_server_is_asked_udp_and_tcp(internet: FakeInternet) -> None:
    await internet.set_policy(deny_except(("allow", "allowed.test")))
    for server in ("192.0.2.53", "203.0.113.7", "198.18.0.2"):
        for tcp in (False, True):
            allowed = await internet.query("allowed.test", tcp=tcp, server=server)
            assert answer_addresses(allowed) == [HOSTS["allowed.test"]], (server, tcp)
            denied = await internet.query("denied.test", tcp=tcp, server=server)
            assert denied.rcode() == dns.rcode.NXDOMAIN, (server, tcp)
    # The upstream only ever saw the allowed name, from the resolver.
    assert set(internet.authority.queries) == {"allowed.test"}


async def test_wildcards_match_subdomains_not_the_apex(internet: FakeInternet) -> None:
    await internet.set_policy(deny_except(("allow", "*.allowed.test")))
    assert (await internet.fetch("cdn.allowed.test")).stdout == "cdn.allowed.test"
    assert (await internet.fetch("allowed.test")).returncode == CURL_COULDNT_RESOLVE


async def test_a_deny_patched_ahead_overrides_a_broader_allow_at_once(internet: FakeInternet) -> None:
    await internet.set_policy(deny_except(("allow", "*.allowed.test")))
    assert (await internet.fetch("cdn.allowed.test")).stdout == "cdn.allowed.test"

    await patch(internet, ("deny", "cdn.allowed.test"))
    assert [r.target for r in internet.policy.rules] == ["cdn.allowed.test", "*.allowed.test"]
    assert (await internet.fetch("cdn.allowed.test")).returncode == CURL_COULDNT_RESOLVE
    # Its address, admitted a moment ago, is out too: the next connection by IP is refused.
    assert failed(await internet.fetch(HOSTS["cdn.allowed.test"]))


async def test_patch_and_delete_apply_to_the_next_connection(internet: FakeInternet) -> None:
    await internet.set_policy(Policy.deny_all())
    assert (await internet.fetch("allowed.test")).returncode == CURL_COULDNT_RESOLVE

    await patch(internet, ("allow", "allowed.test"))
    assert (await internet.fetch("allowed.test")).stdout == "allowed.test"

    await delete(internet, "ALLOWED.test")
    assert internet.policy == Policy.deny_all()
    assert (await internet.fetch("allowed.test")).returncode == CURL_COULDNT_RESOLVE
    assert failed(await internet.fetch(HOSTS["allowed.test"]))


async def test_cidr_and_ip_rules_with_deny_winning(internet: FakeInternet) -> None:
    await internet.set_policy(deny_except(("allow", "198.18.0.8/29"), ("deny", HOSTS["denied.test"])))
    assert (await internet.fetch(HOSTS["other.test"])).stdout == "other.test"
    assert (await internet.fetch(HOSTS["cdn.allowed.test"])).stdout == "cdn.allowed.test"
    # Deny wins over the broader allow whatever the order; and names still need a domain rule.
    assert failed(await internet.fetch(HOSTS["denied.test"]))
    assert (await internet.fetch("other.test")).returncode == CURL_COULDNT_RESOLVE

    # Under allow-by-default a deny CIDR blocks the address even though its name resolves.
    await internet.set_policy(
        policy_from_body(
            {"defaultAction": "allow", "egress": [{"action": "deny", "target": "198.18.0.10/32"}]}
        )
    )
    assert answer_addresses(await internet.query("allowed.test")) == [HOSTS["allowed.test"]]
    assert failed(await internet.fetch("allowed.test", "-4"))
    # (its IPv6 address is not denied: curl without -4 would get through that way)
    assert (await internet.fetch("allowed.test", "-6")).stdout == "allowed.test"
    assert (await internet.fetch("denied.test")).stdout == "denied.test"


async def test_ipv6_names_admit_their_aaaa_and_literal_v6_is_refused(internet: FakeInternet) -> None:
    await internet.set_policy(deny_except(("allow", "allowed.test")))
    assert (await internet.fetch("allowed.test", "-6")).stdout == "allowed.test"
    assert (
        f"{HOSTS_V6['allowed.test']} timeout"
        in (await run_in(internet.sandbox, "nft", "list", "set", "inet", "osbox", "allow_v6")).stdout
    )
    assert (await internet.fetch("denied.test", "-6")).returncode == CURL_COULDNT_RESOLVE
    assert failed(await internet.fetch(HOSTS_V6["denied.test"]))
    refused = await internet.denials("connection", "tcp")
    assert [d.target for d in refused] == [f"[{HOSTS_V6['denied.test']}]:80"]


async def test_ipv6_cidr_rules_with_deny_winning(internet: FakeInternet) -> None:
    await internet.set_policy(deny_except(("allow", "2001:2::10/127"), ("deny", HOSTS_V6["denied.test"])))
    assert (await internet.fetch(HOSTS_V6["allowed.test"])).stdout == "allowed.test"
    assert failed(await internet.fetch(HOSTS_V6["denied.test"]))
    assert failed(await internet.fetch(HOSTS_V6["other.test"]))
    # With no policy every host is reachable over IPv6 too.
    await internet.set_policy(Policy.allow_all())
    for name, address in HOSTS_V6.items():
        assert (await internet.fetch(address)).stdout == name


async def test_the_sandbox_loopback_stays_usable_and_private_under_deny_all(internet: FakeInternet) -> None:
    await internet.set_policy(Policy.deny_all())
    listener = netns_socket_factory(netns_path(internet.sandbox))(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
        assert (await run_in(internet.sandbox, "python3", "-c", probe)).returncode == 0
    # Not reachable from the host side: that loopback belongs to the sandbox's namespace.
    probe_from_host = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
    assert (await run_in(internet.names["host"], "python3", "-c", probe_from_host)).returncode != 0


async def test_the_host_stays_out_of_reach_unless_an_ip_rule_allows_it(internet: FakeInternet) -> None:
    host = internet.names["host"]
    servers = [
        await http_server(host, RESOLVER_ADDRESS[0], "host-gateway", port=8080),
        await http_server(host, HOST_PUBLIC_SIDE, "host-public-side", port=8080),
    ]
    try:
        # Even with no policy: the resolver's address serves DNS only, and protected addresses nothing.
        assert failed(await internet.fetch(f"{RESOLVER_ADDRESS[0]}:8080"))
        assert failed(await internet.fetch(f"{HOST_PUBLIC_SIDE}:8080"))
        assert (await internet.fetch("allowed.test")).stdout == "allowed.test"

        await patch(internet, ("allow", f"{HOST_PUBLIC_SIDE}/32"))
        assert (await internet.fetch(f"{HOST_PUBLIC_SIDE}:8080")).stdout == "host-public-side"
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def test_enforcement_is_probed_truthfully(internet: FakeInternet) -> None:
    assert await probe_enforcement(netns_path(internet.sandbox)) == Enforcement("dns+nft")
    gone = await probe_enforcement("/run/netns/osbxt-no-such-namespace")
    assert gone.mode == "none"
    assert "no network namespace" in (gone.reason or "")


async def test_remove_takes_the_table_away_and_apply_brings_it_back(internet: FakeInternet) -> None:
    await internet.set_policy(Policy.deny_all())
    await internet.egress.enforcer.remove()
    tables = await run_in(internet.sandbox, "nft", "list", "tables")
    assert "osbox" not in tables.stdout
    await internet.egress.enforcer.apply(Policy.deny_all())
    assert "inet osbox" in (await run_in(internet.sandbox, "nft", "list", "tables")).stdout


async def test_everything_is_removed_after_use_even_after_a_failure() -> None:
    names: dict[str, str] = {}
    resolver_address = None
    try:
        async with fake_internet(deny_except(("allow", "allowed.test"))) as internet:
            names = dict(internet.names)
            resolver_address = internet.egress.resolver.address
            assert (await internet.fetch("allowed.test")).stdout == "allowed.test"
            raise RuntimeError("the test body failed")
    except RuntimeError as exc:
        assert str(exc) == "the test body failed"
    assert resolver_address == RESOLVER_ADDRESS
    assert_gone(names.values())
    # Removing twice is harmless (the namespace is gone: nothing to do).
    await NftEnforcer(netns_path(names["sandbox"]), RESOLVER_ADDRESS).remove()


def assert_gone(names: Iterable[str]) -> None:
    """No trace of these namespaces: not listed, no /run/netns file, no /etc/netns overlay."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for name in names:
        assert name.startswith(NETNS_PREFIX)
        assert name not in listed.split()
        assert not os.path.exists(f"/etc/netns/{name}")
        assert not os.path.exists(netns_path(name))
