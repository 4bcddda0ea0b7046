"""The warm pool's sandboxes get their links ahead: a real `osbox serve` with a pool of 2 and the fake
internet (served.py). A pooled sandbox's link is its own (an address no other sandbox holds), the create
that takes it puts its mode and policy in force before the entrypoint, and nothing is left behind."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from osbox import AsyncSandbox
from tests.polling import wait_until_async

from .fake_internet import HOSTS
from .netns import netns_missing, run_in
from .served import API_KEY, CURL, Served, fake_public, served_internet

pytestmark = pytest.mark.timeout(120)

DENY_BUT_ALLOWED = {"defaultAction": "deny", "egress": [{"action": "allow", "target": "allowed.test"}]}
POOL = 2


@pytest.fixture
async def pooled() -> AsyncIterator[Served]:
    """A server in mode `open` whose warm pool (2) holds sandboxes with their links made ahead."""
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    async with served_internet(network="open", warm_pool_size=POOL) as built:
        await warm_up(built)
        yield built


async def warm_up(served: Served) -> None:
    """Have the pool pre-start sandboxes of the image the tests create (that of the last create)."""
    async with await served.sandbox():
        pass
    await pool_links(served, POOL)


async def pool_links(served: Served, count: int) -> list[str]:
    """The host's sandbox links once there are `count` of them (the pool fills in the background)."""

    async def counted() -> list[str] | None:
        links = await served.host_links()
        return links if len(links) == count else None

    return await wait_until_async(counted, timeout=30, what=f"{count} sandbox links on the host")


async def fetch(sandbox: AsyncSandbox, target: str) -> tuple[int | None, str]:
    done = await sandbox.run(f"{CURL} http://{target}/")
    return done.exit_code, done.stdout.strip()


async def address_of(sandbox: AsyncSandbox) -> str:
    shown = await sandbox.run("ip -4 -o addr show eth0", check=True)
    return shown.stdout.split()[3].split("/")[0]


async def host_addresses(served: Served) -> dict[str, str]:
    """Each sandbox link's host-end address (its gateway), by link name."""
    listed = await run_in(served.host, "ip", "-4", "-o", "addr", "show")
    found = {}
    for line in listed.stdout.splitlines():
        fields = line.split()
        if fields[1].startswith(f"{served.prefix}-"):
            found[fields[1]] = fields[3].split("/")[0]
    return found


async def addressed_links(served: Served, count: int) -> dict[str, str]:
    """`host_addresses` once `count` links have their address (a link is made before it has one)."""

    async def counted() -> dict[str, str] | None:
        found = await host_addresses(served)
        return found if len(found) == count else None

    return await wait_until_async(counted, timeout=30, what=f"{count} addressed sandbox links on the host")


async def test_a_pooled_sandbox_gets_its_policy_and_an_address_of_its_own(pooled: Served) -> None:
    ahead = set(await pool_links(pooled, POOL))
    async with await pooled.sandbox(network_policy=DENY_BUT_ALLOWED) as sandbox:
        # It took one of the links made ahead, under its policy from its first command on.
        gateways = await addressed_links(pooled, POOL + 1)  # the pool refilled beside it
        mine = await address_of(sandbox)
        (link,) = [name for name, gateway in gateways.items() if str(ip_address(gateway) + 1) == mine]
        assert link in ahead
        assert await fetch(sandbox, "allowed.test") == (0, "allowed.test")
        assert (await fetch(sandbox, "denied.test"))[0] == 6  # NXDOMAIN
        assert (await fetch(sandbox, HOSTS["other.test"]))[0] == 7  # refused
        status = await sandbox.egress.get()
        assert status.enforcement_mode is not None and status.enforcement_mode.value == "dns+nft"
        # Its address is held while it lives: the refilled pool's links have other blocks.
        assert len(set(gateways.values())) == POOL + 1
        async with await pooled.sandbox() as second:
            assert await address_of(second) != mine
            assert await fetch(second, "other.test") == (0, "other.test")  # open: no policy
            second_status = await second.egress.get()
            assert second_status.enforcement_mode is not None
            assert second_status.enforcement_mode.value == "none"
    await pool_links(pooled, POOL)  # both deleted: their links went with them
    assert await pooled.host_table() != ""


async def test_a_pooled_sandbox_without_a_network_has_none_from_its_first_command(pooled: Served) -> None:
    async with pooled.lifecycle() as lifecycle:
        created = await lifecycle.create_sandbox(
            image="python:3.11", entrypoint=["sleep", "600"], extensions={"osbox.network": "none"}
        )
    sandbox = await AsyncSandbox.connect(
        created.id, keep=False, base_url=f"{pooled.server.base_url}/v1", api_key=API_KEY
    )
    async with sandbox:
        assert (await fetch(sandbox, HOSTS["allowed.test"]))[0] == 7  # refused at once, no route out
        info = await sandbox.info()
        assert "No network" in (info.status.message or "")

        async def only_loopback() -> bool | None:
            devices = (await sandbox.run("cat /proc/net/dev", check=True)).stdout
            return True if "eth0" not in devices else None

        await wait_until_async(only_loopback, timeout=15, what="the link made ahead removed")
        await pool_links(pooled, POOL)  # the pool's own, refilled
        assert (await fetch(sandbox, HOSTS["allowed.test"]))[0] == 7


async def test_stop_and_restart_leave_nothing_and_keep_a_pooled_sandboxs_address(reachable_dir: Path) -> None:
    reason = netns_missing()
    if reason is not None:
        pytest.skip(reason)
    async with fake_public() as names:

        def serve() -> contextlib.AbstractAsyncContextManager[Served]:
            return served_internet(
                names, data_dir=reachable_dir, prefix="otpl", keep=True, warm_pool_size=POOL
            )

        async with serve() as first:
            await warm_up(first)
            sandbox = await first.sandbox(network_policy=DENY_BUT_ALLOWED, keep=True)
            address = await address_of(sandbox)
            await sandbox.close()
        assert await first.host_links() == []  # pool and owned sandboxes' links, and the table, gone
        assert await first.host_table() == ""
        async with serve() as second:
            again = await AsyncSandbox.connect(
                sandbox.id, keep=False, base_url=f"{second.server.base_url}/v1", api_key=API_KEY
            )
            async with again:
                assert await address_of(again) == address
                assert await fetch(again, "allowed.test") == (0, "allowed.test")
                assert (await fetch(again, "denied.test"))[0] == 6
            await pool_links(second, POOL)
        assert await second.host_links() == []
        assert await second.host_table() == ""
