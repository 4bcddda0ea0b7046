"""The host side of sandbox networks (`HostNetwork`, `connect_sandbox`) against the fake internet.

Stand-in sandboxes are plain network namespaces; the host is a namespace too (see host_side.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Sequence
from typing import IO

import dns.message
import pytest

from osbox.server.egress.engine import Denial
from osbox.server.egress.hostnet import HostNetwork, HostNetworkConfig, NetworkUnavailable
from osbox.server.egress.policy import Policy, policy_from_body
from osbox.server.egress.resolver import PolicyResolver, ResolvedAddress
from osbox.server.egress.sandbox_network import connect_sandbox

from .fake_internet import HOST_PUBLIC_SIDE, answer_addresses, dns_exchange, http_server, is_nxdomain
from .host_side import (
    HOSTS,
    LAN_HOST,
    HostSide,
    fetch,
    host_config,
    host_side,
    reaches,
    stand_in_sandbox,
    use_nameserver,
)
from .netns import netns_missing, netns_path, netns_socket_factory, run_in

pytestmark = pytest.mark.skipif(netns_missing() is not None, reason=netns_missing() or "")


@pytest.fixture
async def side() -> AsyncIterator[HostSide]:
    async with host_side() as built:
        yield built


def _policy(default: str, *allowed: str) -> Policy:
    return policy_from_body(
        {"defaultAction": default, "egress": [{"action": "allow", "target": t} for t in allowed]}
    )


async def test_open_mode_reaches_the_fake_internet_by_name_through_nat(side: HostSide) -> None:
    async with stand_in_sandbox() as sandbox:
        network = await connect_sandbox(side.network, "sbx-open", netns_path(sandbox), "open")
        try:
            use_nameserver(sandbox, network.nameserver)
            assert await reaches(sandbox, "http://allowed.test/", "allowed.test")
            assert await reaches(sandbox, "http://other.test/", "other.test")
            # The public side sees the host's address, not the sandbox's (masquerade).
            addr = await run_in(sandbox, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
            assert network.attachment is not None
            assert f"{network.attachment.address}/30" in addr.stdout
        finally:
            await network.close()


async def test_sandboxes_cannot_reach_each_other(side: HostSide) -> None:
    async with stand_in_sandbox() as first, stand_in_sandbox() as second:
        a = await connect_sandbox(side.network, "sbx-a", netns_path(first), "open")
        b = await connect_sandbox(side.network, "sbx-b", netns_path(second), "open")
        assert a.attachment is not None and b.attachment is not None
        server = await http_server(second, str(b.attachment.address), "b", port=8080)
        try:
            use_nameserver(first, a.nameserver)
            assert await reaches(first, "http://allowed.test/", "allowed.test")  # a has a network
            assert not await reaches(first, f"http://{b.attachment.address}:8080/", "b")
            # Nor through b's gateway (a host address) or a guessed neighbour block.
            assert not await reaches(first, f"http://{b.attachment.gateway}:8080/", "b")
        finally:
            server.close()
            await server.wait_closed()
            await a.close()
            await b.close()


async def test_the_host_and_its_loopback_services_are_out_of_reach(side: HostSide) -> None:
    host = side.host
    loopback_only = await http_server(host, "127.0.0.1", "loopback", port=8081)
    everywhere = await http_server(host, "0.0.0.0", "host", port=8082)
    async with stand_in_sandbox() as sandbox:
        network = await connect_sandbox(side.network, "sbx-host", netns_path(sandbox), "open")
        assert network.attachment is not None
        gateway = network.attachment.gateway
        try:
            # The servers answer on the host itself...
            assert await reaches(host, "http://127.0.0.1:8081/", "loopback")
            assert await reaches(host, f"http://{gateway}:8082/", "host")
            use_nameserver(sandbox, network.nameserver)
            # ...and from the sandbox only its DNS gets through to the host, nothing else.
            assert await reaches(sandbox, "http://allowed.test/", "allowed.test")
            for url in (
                f"http://{gateway}:8081/",
                f"http://{gateway}:8082/",
                f"http://{HOST_PUBLIC_SIDE}:8082/",
                "http://10.9.0.1:8082/",
                "http://127.0.0.1:8081/",  # the sandbox's own loopback: nothing there
            ):
                assert not await reaches(sandbox, url, "host"), url
                assert not await reaches(sandbox, url, "loopback"), url
            refused = await fetch(sandbox, f"http://{gateway}:8082/")
            assert refused.returncode == 7  # curl's "couldn't connect": rejected, not left to time out
        finally:
            await network.close()
            loopback_only.close()
            everywhere.close()
            await loopback_only.wait_closed()
            await everywhere.wait_closed()


async def test_private_networks_are_protected_unless_the_policy_allows_them(side: HostSide) -> None:
    lan_url = f"http://{LAN_HOST}/"
    async with stand_in_sandbox() as opened, stand_in_sandbox() as filtered:
        plain = await connect_sandbox(side.network, "sbx-plain", netns_path(opened), "open")
        allowed = await connect_sandbox(
            side.network,
            "sbx-lan",
            netns_path(filtered),
            "filtered",
            policy=_policy("allow", "10.9.0.0/24"),
        )
        try:
            assert await reaches(side.host, lan_url, "lan")
            assert not await reaches(opened, lan_url, "lan")
            assert await reaches(filtered, lan_url, "lan")
            await allowed.replace_policy(Policy.allow_all())
            assert not await reaches(filtered, lan_url, "lan")
        finally:
            await plain.close()
            await allowed.close()


async def test_the_hosts_lans_are_protected_whatever_their_addresses(side: HostSide) -> None:
    await side.network.close()  # replaced by one protecting the host's on-link networks
    lan_guarded = await HostNetwork.start(host_config(side.host, protect_lans=True))
    try:
        assert ipaddress.ip_network("198.18.0.0/24") in lan_guarded.protected
        async with stand_in_sandbox() as sandbox:
            network = await connect_sandbox(lan_guarded, "sbx-lans", netns_path(sandbox), "open")
            try:
                use_nameserver(sandbox, network.nameserver)
                # The name resolves (DNS goes through the host); the on-link public side is out of reach.
                done = await fetch(sandbox, "http://allowed.test/")
                assert done.returncode == 7, done.stderr
            finally:
                await network.close()
    finally:
        await lan_guarded.close()


async def test_filtered_mode_applies_the_policy(side: HostSide) -> None:
    async with stand_in_sandbox() as sandbox:
        denied: list[Denial] = []
        network = await connect_sandbox(
            side.network,
            "sbx-filtered",
            netns_path(sandbox),
            "filtered",
            policy=_policy("deny", "allowed.test"),
            on_denied=denied.append,
        )
        try:
            # Any nameserver address: the namespace's rules send DNS to the policy resolver.
            use_nameserver(sandbox, "192.0.2.53")
            assert await reaches(sandbox, "http://allowed.test/", "allowed.test")
            factory = netns_socket_factory(netns_path(sandbox))
            answer = await dns_exchange(
                factory, ("192.0.2.53", 53), dns.message.make_query("denied.test", "A"), tcp=False
            )
            assert is_nxdomain(answer)
            ok = await dns_exchange(
                factory, ("192.0.2.53", 53), dns.message.make_query("allowed.test", "A"), tcp=True
            )
            assert answer_addresses(ok) == [HOSTS["allowed.test"]]
            assert not await reaches(sandbox, f"http://{HOSTS['denied.test']}/", "denied.test")
            assert any(d.target == "denied.test" for d in denied)
        finally:
            await network.close()


async def test_detach_leaves_no_link_and_no_elements(side: HostSide) -> None:
    async with stand_in_sandbox() as sandbox:
        # A process's namespace path, as the backend will pass bwrap's.
        holder = await asyncio.create_subprocess_exec("ip", "netns", "exec", sandbox, "sleep", "60")
        try:
            path = f"/proc/{holder.pid}/ns/net"
            await _wait_for_netns(path, netns_path(sandbox))
            attachment = await side.network.attach("sbx-detach", path)
            assert await side.links() == [attachment.interface]
            assert len(attachment.interface) <= 15
            assert str(attachment.address) in await side.table()
            await side.network.detach("sbx-detach")
            assert await side.links() == []
            table = await side.table()
            assert attachment.interface not in table and str(attachment.address) not in table
            inside = await run_in(sandbox, "ip", "-o", "link", "show")
            assert "eth0" not in inside.stdout
            # The lease is free again: attaching again gets the same addresses.
            again = await side.network.attach("sbx-detach", path)
            assert (again.address, again.gateway) == (attachment.address, attachment.gateway)
            await side.network.detach("sbx-detach")
        finally:
            holder.kill()
            await holder.wait()


async def test_a_failed_attach_leaves_nothing_and_a_second_attach_is_refused(side: HostSide) -> None:
    with pytest.raises(RuntimeError, match="ip: "):
        await side.network.attach("sbx-gone", "/proc/0/ns/net")
    assert await side.links() == [] and side.network.attachments == {}
    async with stand_in_sandbox() as sandbox:
        # A namespace that has an eth0 already: the peer cannot be created there.
        made = await run_in(sandbox, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        assert made.returncode == 0, made.stderr
        with pytest.raises(RuntimeError, match="ip: "):
            await side.network.attach("sbx-taken", netns_path(sandbox))
        assert await side.links() == []
        await run_in(sandbox, "ip", "link", "del", "eth0")
        await side.network.attach("sbx-taken", netns_path(sandbox))
        with pytest.raises(ValueError, match="attached already"):
            await side.network.attach("sbx-taken", netns_path(sandbox))
        await side.network.detach("sbx-taken")
        assert await side.links() == []


async def test_sweep_after_a_crash_removes_the_dead_and_adopts_the_live(side: HostSide) -> None:
    await side.network.close()  # the crashed server and its restart are the only ones of this prefix
    async with stand_in_sandbox() as dead, stand_in_sandbox() as live:
        crashed = await HostNetwork.start(side.config)
        await crashed.attach("sbx-dead", netns_path(dead))
        kept = await crashed.attach("sbx-live", netns_path(live))
        # A crash: the object is dropped without detach or close. (Its nft thread and its claim's lock
        # would die with the process; here they are ended by hand so the test leaves neither.)
        await crashed._nft.close()
        assert crashed._claim.fd is not None
        os.close(crashed._claim.fd)
        del crashed

        restarted = await HostNetwork.start(side.config)
        try:
            adopted = await restarted.sweep(["sbx-live"])
            assert list(adopted) == ["sbx-live"]
            assert (adopted["sbx-live"].address, adopted["sbx-live"].gateway) == (kept.address, kept.gateway)
            assert sorted(await side.links()) == [kept.interface]
            # The adopted link works again (its elements are back), through a resolver on its gateway.
            use_nameserver(live, str(kept.gateway))

            async def admit(name: str, addresses: Sequence[ResolvedAddress]) -> None:
                del name, addresses

            resolver = PolicyResolver(
                Policy.allow_all, side.config.upstream_dns or ("", 0), on_allowed=admit,
                socket_factory=restarted.socket_factory,
            )  # fmt: skip
            await resolver.start(str(kept.gateway), 53)
            try:
                assert await reaches(live, "http://allowed.test/", "allowed.test")
            finally:
                await resolver.close()
            # The crashed run left the uplinks forwarding; still nothing but sandbox replies is routed.
            public = side.names["public"]
            await run_in(public, "ip", "route", "add", "10.9.0.0/24", "via", HOST_PUBLIC_SIDE)
            assert not await reaches(public, f"http://{LAN_HOST}/", "lan")
            await restarted.sweep([])
            assert await side.links() == []
            assert str(kept.address) not in await side.table()
        finally:
            await restarted.close()
        # The crashed claim taken over and then released: nothing of this namespace is left in the
        # host-wide registry.
        registered = restarted._claim.directory
        assert registered is not None and not registered.exists()


async def test_close_removes_the_table_links_and_restores_forwarding(side: HostSide) -> None:
    forwarding = "/proc/sys/net/ipv4/conf/to-pub/forwarding"
    assert await run_in(side.host, "cat", forwarding) is not None
    await side.network.close()  # replaced by one that has a link when it closes
    async with stand_in_sandbox() as sandbox:
        network = await HostNetwork.start(side.config)
        await network.attach("sbx-close", netns_path(sandbox))
        await network.close()
        assert await side.links() == []
        assert await side.table() == ""
    done = await run_in(side.host, "cat", forwarding)
    assert done.stdout.strip() == "0"


async def test_a_pool_overlapping_a_host_route_is_refused(side: HostSide) -> None:
    config = HostNetworkConfig(
        pool=ipaddress.IPv4Network("198.18.0.0/16"), prefix="osbq", host_netns=side.config.host_netns
    )
    with pytest.raises(NetworkUnavailable, match=r"overlaps this host's route\(s\) to 198.18.0.0/24"):
        await HostNetwork.start(config)


async def test_modes_without_a_host_network_say_why() -> None:
    none = await connect_sandbox(None, "sbx", "/proc/self/ns/net", "none")
    assert none.attachment is None and none.nameserver is None
    with pytest.raises(NetworkUnavailable, match="no sandbox network"):
        await connect_sandbox(None, "sbx", "/proc/self/ns/net", "open")


async def test_without_root_the_network_says_it_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Root runs this suite: the server's uid is what the check reads, so it is the one thing faked.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetworkUnavailable, match="no network: sandbox networking needs root"):
        await HostNetwork.start()


async def _wait_for_netns(path: str, expected: str) -> None:
    """Until the process at `path` has entered the namespace `expected` (ip netns exec sets it first)."""
    target = os.stat(expected).st_ino
    async with asyncio.timeout(10):
        while True:
            try:
                if os.stat(path).st_ino == target:
                    return
            except FileNotFoundError:
                pass
            await asyncio.sleep(0.01)


async def test_a_sandbox_cannot_send_from_another_address(side: HostSide) -> None:
    public = netns_socket_factory(netns_path(side.names["public"]))
    async with stand_in_sandbox() as sandbox:
        network = await connect_sandbox(side.network, "sbx-spoof", netns_path(sandbox), "open")
        assert network.attachment is not None
        # Root in the stand-in adds a neighbour block's address (a real sandbox has no CAP_NET_ADMIN).
        spoofed = network.attachment.address + 4
        await run_in(sandbox, "ip", "addr", "add", f"{spoofed}/32", "dev", "eth0")
        sandbox_socket = netns_socket_factory(netns_path(sandbox))
        with public(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
            receiver.bind((HOSTS["other.test"], 9999))
            receiver.settimeout(5)
            try:
                # The spoofed datagram goes first on the same path: had it passed, it would arrive first.
                for source, payload in ((spoofed, b"spoofed"), (network.attachment.address, b"own")):
                    with sandbox_socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                        sender.bind((str(source), 0))
                        sender.sendto(payload, (HOSTS["other.test"], 9999))
                received = await asyncio.to_thread(receiver.recv, 100)
                assert received == b"own"
            finally:
                await network.close()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
async def test_a_bubblewrap_sandbox_namespace_gets_its_link(side: HostSide) -> None:
    """The backend's case: bwrap's `--unshare-net` namespace, owned by an unprivileged user's user
    namespace, attached by its child's `/proc/<pid>/ns/net`."""
    read_end, write_end = os.pipe()
    bwrap = await asyncio.create_subprocess_exec(
        "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
        "--die-with-parent", "--cap-drop", "ALL", "--info-fd", str(write_end), "--", "sleep", "60",
        user=65534, group=65534, extra_groups=[], pass_fds=[write_end],
    )  # fmt: skip
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as info:
            child = (await asyncio.to_thread(_bwrap_info, info))["child-pid"]
        path = f"/proc/{child}/ns/net"
        network = await connect_sandbox(side.network, "sbx-bwrap", path, "open")
        try:
            inside = ["nsenter", f"--net={path}", "--"]
            done = await asyncio.create_subprocess_exec(
                *inside, "curl", "-sS", "--max-time", "3", f"http://{HOSTS['allowed.test']}/",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await done.communicate()
            assert out == b"allowed.test"
        finally:
            await network.close()
        assert await side.links() == []
    finally:
        bwrap.kill()
        await bwrap.wait()


def _bwrap_info(info: IO[bytes]) -> dict[str, int]:
    """bwrap's `--info-fd` JSON object (written over a few lines, the fd left open)."""
    text = b""
    while not text.rstrip().endswith(b"}"):
        line = info.readline()
        if not line:
            raise RuntimeError(f"bwrap exited before reporting its child: {text!r}")
        text += line
    parsed: dict[str, int] = json.loads(text)
    return parsed
