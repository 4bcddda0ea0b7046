"""Sandbox networks through a real `osbox serve`: real bwrap sandboxes reaching the fake internet (see
served.py), their policy set at create and changed through the egress API (port 18080 endpoint)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from opensandbox import Sandbox as OfficialSandbox
from opensandbox.config import ConnectionConfig
from opensandbox.models.sandboxes import NetworkPolicy as OfficialPolicy
from opensandbox.models.sandboxes import NetworkRule as OfficialRule

from osbox import AsyncEgressClient, AsyncLifecycleClient, AsyncSandbox
from osbox._wire import EGRESS_PORT
from osbox.models.lifecycle import CreateSandboxRequest, ImageSpec
from osbox.server import AsyncLocalServer
from osbox.server._backend.base import BackendError
from osbox.server._backend.bwrap.backend import BwrapBackend
from osbox.server.egress.app import AUTH_HEADER
from tests.polling import wait_until_async

from .fake_internet import HOSTS, http_server
from .netns import netns_missing, run_in
from .served import API_KEY, CURL, Served, fake_public, served_internet

pytestmark = pytest.mark.timeout(120)

DENY_BUT_ALLOWED = {"defaultAction": "deny", "egress": [{"action": "allow", "target": "allowed.test"}]}


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """A server whose sandboxes get mode `open` unless they ask for a policy."""
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    async with served_internet(network="open") as built:
        yield built


async def fetch(sandbox: AsyncSandbox, target: str, *options: str) -> tuple[int | None, str]:
    """(curl's exit code, the page) of a GET of http://target/ from inside the sandbox."""
    done = await sandbox.run(f"{CURL} {' '.join(options)} http://{target}/")
    return done.exit_code, done.stdout.strip()


async def test_without_a_policy_every_host_is_reachable(served: Served) -> None:
    async with await served.sandbox() as sandbox:
        for name in HOSTS:
            assert await fetch(sandbox, name) == (0, name)
        info = await sandbox.info()
        assert info.status.message is not None and "Network: open" in info.status.message
        status = await sandbox.egress.get()
        assert status.enforcement_mode is not None and status.enforcement_mode.value == "none"


async def test_default_deny_lets_only_the_allowed_name_through(served: Served) -> None:
    async with await served.sandbox(network_policy=DENY_BUT_ALLOWED) as sandbox:
        assert await fetch(sandbox, "allowed.test") == (0, "allowed.test")
        code, _ = await fetch(sandbox, "denied.test")
        assert code == 6  # could not resolve: NXDOMAIN
        code, _ = await fetch(sandbox, HOSTS["denied.test"])
        assert code == 7  # refused: no allowed name resolved to it
        status = await sandbox.egress.get()
        assert status.enforcement_mode is not None and status.enforcement_mode.value == "dns+nft"
        assert status.policy is not None and status.policy.default_action == "deny"


def _rules(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"action": action, "target": target} for action, target in pairs]


DNS_OVER_TCP = """
import socket, struct, sys
name = sys.argv[1]
query = b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00"
query += b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
query += b"\\x00\\x00\\x01\\x00\\x01"
with socket.create_connection(("192.0.2.53", 53), timeout=5) as conn:
    conn.sendall(struct.pack("!H", len(query)) + query)
    size = struct.unpack("!H", conn.recv(2))[0]
    answer = b""
    while len(answer) < size:
        answer += conn.recv(size - len(answer))
print(answer[3] & 15, struct.unpack("!H", answer[6:8])[0])
"""


async def test_wildcards_and_a_deny_before_a_broader_allow(served: Served) -> None:
    policy = {"defaultAction": "deny", "egress": _rules(("deny", "cdn.allowed.test"), ("allow", "*.test"))}
    async with await served.sandbox(network_policy=policy) as sandbox:
        assert await fetch(sandbox, "other.test") == (0, "other.test")  # the wildcard
        assert (await fetch(sandbox, "cdn.allowed.test"))[0] == 6  # denied first, NXDOMAIN
        await sandbox.egress.replace({"defaultAction": "deny", "egress": _rules(("allow", "*.allowed.test"))})
        assert await fetch(sandbox, "cdn.allowed.test") == (0, "cdn.allowed.test")
        assert (await fetch(sandbox, "allowed.test"))[0] == 6  # `*.` never matches the apex


async def test_patch_and_delete_apply_to_the_next_connection(served: Served) -> None:
    async with await served.sandbox(network_policy=DENY_BUT_ALLOWED) as sandbox:
        assert (await fetch(sandbox, "denied.test"))[0] == 6
        patched = await sandbox.egress.patch(_rules(("allow", "denied.test")))
        assert patched.mode is not None and patched.mode.value == "enforcing"
        assert await fetch(sandbox, "denied.test") == (0, "denied.test")
        await sandbox.egress.remove(["denied.test"])
        assert (await fetch(sandbox, "denied.test"))[0] == 6
        assert (await fetch(sandbox, HOSTS["denied.test"]))[0] == 7  # its admitted address went too
        assert await fetch(sandbox, "allowed.test") == (0, "allowed.test")


async def test_ip_and_cidr_rules(served: Served) -> None:
    policy = {
        "defaultAction": "deny",
        "egress": _rules(("allow", "198.18.0.0/24"), ("deny", HOSTS["denied.test"])),
    }
    async with await served.sandbox(network_policy=policy) as sandbox:
        assert await fetch(sandbox, HOSTS["other.test"]) == (0, "other.test")
        assert (await fetch(sandbox, HOSTS["denied.test"]))[0] == 7  # deny wins whatever the order
        assert (await fetch(sandbox, "other.test"))[0] == 6  # names are still under the default


async def test_dns_over_tcp_is_filtered_too(served: Served) -> None:
    async with await served.sandbox(network_policy=DENY_BUT_ALLOWED) as sandbox:
        await sandbox.files.write("/tmp/dnstcp.py", DNS_OVER_TCP)
        allowed = await sandbox.run("python3 /tmp/dnstcp.py allowed.test", check=True)
        assert allowed.stdout.split() == ["0", "1"]  # NOERROR, one answer
        denied = await sandbox.run("python3 /tmp/dnstcp.py denied.test", check=True)
        assert denied.stdout.split() == ["3", "0"]  # NXDOMAIN


async def test_a_sandbox_reaches_no_other_sandbox_nor_the_host(served: Served) -> None:
    host_service = await http_server(served.host, "0.0.0.0", "host-service", port=8080)
    try:
        async with await served.sandbox() as first, await served.sandbox() as second:
            await second.spawn("python3 -m http.server 8000 --bind 0.0.0.0")
            address = await sandbox_address(second)
            assert await eventually_serving(second)
            gateway = await sandbox_gateway(first)
            for target in (
                f"{address}:8000",
                f"{gateway}:8080",
                "198.18.0.1:8080",
                f"127.0.0.1:{served.port}",
            ):
                code, _ = await fetch(first, target)
                assert code in (7, 28), target  # refused (or dropped): never reached
            assert await fetch(first, "allowed.test") == (0, "allowed.test")
    finally:
        host_service.close()
        await host_service.wait_closed()


async def test_egress_api_refuses_a_missing_or_wrong_token(served: Served) -> None:
    async with await served.sandbox() as sandbox, served.lifecycle() as lifecycle:
        endpoint = await lifecycle.get_endpoint(sandbox.id, EGRESS_PORT)
        url = f"http://{endpoint.endpoint}/policy"
        token = (endpoint.headers or {})[AUTH_HEADER]
        async with httpx2.AsyncClient() as http:
            for headers in ({}, {AUTH_HEADER: token[:-1] + ("A" if token[-1] != "A" else "B")}):
                refused = await http.get(url, headers=headers)
                assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED"
            assert (await http.get(url, headers={AUTH_HEADER: token})).status_code == 200


async def test_denials_are_recorded_as_events(served: Served) -> None:
    async with (
        await served.sandbox(network_policy=DENY_BUT_ALLOWED) as sandbox,
        served.lifecycle() as lifecycle,
    ):
        await fetch(sandbox, "denied.test")
        await fetch(sandbox, HOSTS["other.test"])

        async def recorded() -> str | None:
            events = (await lifecycle.get_diagnostic_events(sandbox.id)).content or ""
            wanted = ("denied.test (A)", f"{HOSTS['other.test']}:80 (tcp)")
            return events if all(w in events for w in wanted) else None

        events = await wait_until_async(recorded, timeout=10, what="denial events")
        assert "egress_denied" in events


async def test_nothing_is_left_after_delete_and_expiry(served: Served) -> None:
    sandbox = await served.sandbox(network_policy=DENY_BUT_ALLOWED)
    async with sandbox:
        (link,) = await served.host_links()
        assert link in await served.host_table()
    assert await served.host_links() == []
    assert link not in await served.host_table()
    async with served.lifecycle() as lifecycle:  # the SDK refuses lifetimes under 60 s; this server not
        request = CreateSandboxRequest.model_construct(
            image=ImageSpec(uri="python:3.11"), entrypoint=["sleep", "60"], timeout=1
        )
        created = await lifecycle.create_sandbox(request)
        assert created.status.state == "Running"

    async def gone() -> bool:
        return await served.host_links() == []

    await wait_until_async(gone, timeout=30, what="the expired sandbox's link removed")


async def test_a_cold_create_has_its_policy_before_its_entrypoint_runs(served: Served) -> None:
    # No warm pool here: the network is set up while the sandbox starts, and must be in force (the
    # policy included) by the time the entrypoint's first command runs.
    first = (
        f"{CURL} -o /dev/null http://allowed.test/; echo allowed=$? >> /tmp/first; "
        f"{CURL} -o /dev/null http://{HOSTS['other.test']}/; echo other=$? >> /tmp/first; "
        "echo done >> /tmp/first; exec sleep 600"
    )
    async with await served.sandbox(
        entrypoint=["sh", "-c", first], network_policy=DENY_BUT_ALLOWED
    ) as sandbox:

        async def written() -> str | None:
            shown = await sandbox.run("cat /tmp/first")
            return shown.stdout if "done" in shown.stdout else None

        seen = await wait_until_async(written, timeout=30, what="the entrypoint's first connections")
        assert seen.split() == ["allowed=0", "other=7", "done"]  # allowed reached, the literal IP refused


async def test_a_cold_create_that_fails_while_its_network_is_set_up_leaves_nothing(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = BwrapBackend._wait_ready

    async def fail_once_started(self: BwrapBackend, *args: Any) -> tuple[int, int]:
        pidfd, _pid = await original(self, *args)  # the agent started, its network beside it
        os.close(pidfd)
        raise BackendError("the agent was refused (injected)")

    monkeypatch.setattr(BwrapBackend, "_wait_ready", fail_once_started)
    async with served.lifecycle() as lifecycle:
        created = await lifecycle.create_sandbox(
            image="python:3.11", entrypoint=["sleep", "60"], network_policy=DENY_BUT_ALLOWED
        )
        info = await lifecycle.get_sandbox(created.id)
        assert info.status.state == "Failed"
        assert "injected" in (info.status.message or "")
        assert await served.host_links() == []
        table = await served.host_table()
        assert re.search(rf"{served.prefix}-[0-9a-f]", table) is None, table  # nor its elements
        await lifecycle.delete_sandbox(created.id)


async def test_a_readopted_sandbox_keeps_its_network_and_policy(reachable_dir: Path) -> None:
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    async with fake_public() as names:
        async with served_internet(names, data_dir=reachable_dir, prefix="otrs", keep=True) as first:
            sandbox = await first.sandbox(network_policy=DENY_BUT_ALLOWED, keep=True)
            await sandbox.egress.patch(_rules(("allow", "other.test")))
            await sandbox.close()
        assert await first.host_links() == []  # the server took its links and table with it
        assert await first.host_table() == ""
        async with served_internet(names, data_dir=reachable_dir, prefix="otrs", keep=True) as second:
            async with await served_sandbox_connect(second, sandbox.id) as again:
                status = await again.egress.get()
                assert status.policy is not None
                assert [(r.action, r.target) for r in status.policy.egress or []] == [
                    ("allow", "other.test"),
                    ("allow", "allowed.test"),
                ]
                assert await fetch(again, "other.test") == (0, "other.test")
                assert (await fetch(again, "denied.test"))[0] == 6
            assert await second.host_links() == []


async def test_a_policy_on_a_server_without_networks_fails_with_the_reason() -> None:
    server = AsyncLocalServer(api_key="k", warm_pool_size=0)
    async with server, AsyncLifecycleClient(f"{server.base_url}/v1", "k") as lifecycle:
        created = await lifecycle.create_sandbox(
            image="python:3.11", entrypoint=["sleep", "60"], network_policy=DENY_BUT_ALLOWED
        )
        info = await lifecycle.get_sandbox(created.id)
        assert info.status.state == "Failed"
        assert "networking is off on this server" in (info.status.message or "")
        await lifecycle.delete_sandbox(created.id)
        plain = await AsyncSandbox.create(lifecycle=lifecycle)
        async with plain:
            status = await plain.egress.get()
            assert status.enforcement_mode is not None and status.enforcement_mode.value == "none"
            assert "networking is off" in (status.reason or "")
            info = await plain.info()
            assert "No network: networking is off" in (info.status.message or "")


async def test_the_official_sdk_drives_the_policy(served: Served) -> None:
    config = ConnectionConfig(
        api_key=API_KEY, domain=urlsplit(served.server.base_url).netloc, protocol="http"
    )
    policy = OfficialPolicy(
        defaultAction="deny", egress=[OfficialRule(action="allow", target="allowed.test")]
    )
    sandbox = await OfficialSandbox.create(
        "python:3.11", entrypoint=["tail", "-f", "/dev/null"], network_policy=policy, connection_config=config
    )
    try:
        got = await sandbox.get_egress_policy()
        assert got.default_action == "deny"
        await sandbox.patch_egress_rules([OfficialRule(action="allow", target="other.test")])
        ran = await sandbox.commands.run(f"{CURL} http://other.test/")
        assert "other.test" in "".join(m.text for m in ran.logs.stdout)
        await sandbox.delete_egress_rules(["other.test"])
        got = await sandbox.get_egress_policy()
        assert [rule.target for rule in got.egress or []] == ["allowed.test"]
    finally:
        await sandbox.kill()
        await sandbox.close()


async def test_the_go_sdk_readme_flow_with_the_egress_client(served: Served) -> None:
    """Go SDK README: get the policy, print Mode and DefaultAction, patch in api.example.com."""
    async with (
        await served.sandbox(network_policy=DENY_BUT_ALLOWED) as sandbox,
        served.lifecycle() as lifecycle,
    ):
        endpoint = await lifecycle.get_endpoint(sandbox.id, EGRESS_PORT)
        async with AsyncEgressClient.from_endpoint(endpoint) as egress:
            policy = await egress.get_policy()
            assert policy.policy is not None
            mode = policy.mode.value if policy.mode else None
            printed = f"Mode={mode} DefaultAction={policy.policy.default_action}"
            assert printed == "Mode=enforcing DefaultAction=deny"
            patched = await egress.patch_policy([{"action": "allow", "target": "api.example.com"}])
            assert patched.status == "ok"
            after = await egress.get_policy()
            assert after.policy is not None
            assert [r.target for r in after.policy.egress or []] == ["api.example.com", "allowed.test"]


async def served_sandbox_connect(served: Served, sandbox_id: str) -> AsyncSandbox:
    return await AsyncSandbox.connect(
        sandbox_id, keep=False, base_url=f"{served.server.base_url}/v1", api_key=API_KEY
    )


async def sandbox_address(sandbox: AsyncSandbox) -> str:
    shown = await sandbox.run("ip -4 -o addr show eth0", check=True)
    return shown.stdout.split()[3].split("/")[0]


async def sandbox_gateway(sandbox: AsyncSandbox) -> str:
    shown = await sandbox.run("ip -4 route show default", check=True)
    return shown.stdout.split()[2]


async def eventually_serving(sandbox: AsyncSandbox) -> bool:
    async def serving() -> bool | None:
        done = await sandbox.run(f"{CURL} -o /dev/null http://127.0.0.1:8000/")
        return True if done.exit_code == 0 else None

    return await wait_until_async(serving, timeout=15, what="the sandbox's http.server")


async def test_the_cli_creates_with_allow_and_edits_the_policy(served: Served) -> None:
    connection = ("--url", f"{served.server.base_url}/v1", "--api-key", API_KEY)

    async def osbox(*argv: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("osbox")),
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    sandbox_id = (await osbox("create", "--allow", "allowed.test", *connection)).strip()
    try:
        shown = await osbox("egress", "get", sandbox_id, *connection)
        assert shown.splitlines()[:2] == ["mode: enforcing", "enforcement: dns+nft"]
        assert shown.splitlines()[2:] == ["default: deny", "allow allowed.test"]
        after = await osbox("egress", "allow", sandbox_id, "other.test", *connection)
        assert after.splitlines()[3:] == ["allow other.test", "allow allowed.test"]
        after = await osbox("egress", "deny", sandbox_id, "*.allowed.test", *connection)
        assert after.splitlines()[3] == "deny *.allowed.test"
        after = await osbox("egress", "rm", sandbox_id, "other.test", "*.allowed.test", *connection)
        assert after.splitlines()[3:] == ["allow allowed.test"]
    finally:
        await osbox("rm", sandbox_id, *connection)


async def test_a_server_whose_network_cannot_start_says_why() -> None:
    """As without root: the host side refuses to start (here: a pool clashing with the host's routes),
    so sandboxes run without a network, saying why, and a create asking for a policy fails."""
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    async with served_internet(pool=IPv4Network("198.18.0.0/16")) as served:
        async with await served.sandbox() as sandbox:
            info = await sandbox.info()
            assert "No network: the sandbox pool 198.18.0.0/16 overlaps" in (info.status.message or "")
            status = await sandbox.egress.get()
            assert status.enforcement_mode is not None and status.enforcement_mode.value == "none"
            assert "overlaps" in (status.reason or "")
        async with served.lifecycle() as lifecycle:
            created = await lifecycle.create_sandbox(
                image="python:3.11", entrypoint=["sleep", "60"], network_policy=DENY_BUT_ALLOWED
            )
            assert created.status.state == "Failed"
            assert "network mode 'filtered' is not available" in (created.status.message or "")
            await lifecycle.delete_sandbox(created.id)


async def test_a_restart_sweeps_the_links_a_crashed_server_left() -> None:
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    async with fake_public() as names:
        stale = "otcr-0123456789"  # named like a host end of a sandbox that is gone
        await run_in(names["host"], "ip", "link", "add", stale, "type", "veth", "peer", "name", "stale-peer")
        async with served_internet(names, prefix="otcr") as served:
            assert await served.host_links() == []


async def test_a_root_server_gives_a_default_create_an_open_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `--network` and no `networkPolicy`: a sandbox reaches the internet, as E2B's and
    OpenSandbox's do (the suite pins OSBOX_NETWORK=none for its other servers)."""
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.delenv("OSBOX_NETWORK")
    async with served_internet(network=None) as served:
        assert served.server.config is not None and served.server.config.network == "open"
        async with await served.sandbox() as sandbox:
            assert await fetch(sandbox, "allowed.test") == (0, "allowed.test")
            info = await sandbox.info()
            assert "Network: open" in (info.status.message or "")


async def test_servers_side_by_side_give_their_sandboxes_distinct_working_networks() -> None:
    """Two servers on one host, neither told a prefix or pool: each claims its own slot (interface
    prefix, pool, nft table), and both servers' sandboxes reach the internet at once."""
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    async with fake_public() as names, served_internet(names, claim=True) as second:
        async with (
            served_internet(names, claim=True) as first,
            await first.sandbox() as one,
            await second.sandbox() as other,
        ):
            assert first.prefix != second.prefix
            assert await first.host_table() != "" and await second.host_table() != ""
            pools = [_pool_of((await s.info()).status.message or "") for s in (one, other)]
            assert pools[0] != pools[1]
            for sandbox in (one, other):
                assert await fetch(sandbox, "allowed.test") == (0, "allowed.test")
            assert len(await first.host_links()) == 1 and len(await second.host_links()) == 1
            gone = first.prefix
        listed = await run_in(names["host"], "nft", "list", "table", "inet", f"{gone}_host")
        assert listed.returncode != 0  # the first one took its table with it
        async with await second.sandbox() as later:  # and left the second one's working
            assert await fetch(later, "allowed.test") == (0, "allowed.test")


def _pool_of(status_message: str) -> IPv4Network:
    """The /16 of the address a sandbox's status message names ("Network: open (address A, ...")."""
    address = status_message.split("(address ")[1].split(",")[0]
    return IPv4Network(f"{address}/16", strict=False)
