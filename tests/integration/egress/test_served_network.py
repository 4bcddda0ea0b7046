"""Sandbox networks through a real `osbox serve`: real bwrap sandboxes reaching the fake internet (see
served.py), their policy set at create and changed through the egress API (port 18080 endpoint)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from osbox import AsyncSandbox

from .fake_internet import HOSTS
from .netns import netns_missing
from .served import CURL, Served, served_internet

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
