"""SandboxEgress where nothing can be enforced: a filtering policy is refused with the reason."""

from __future__ import annotations

import socket

import pytest

from osbox.server.egress.engine import EgressUnavailable, SandboxEgress
from osbox.server.egress.policy import Policy, policy_from_create

MISSING = "/run/netns/osbxt-this-namespace-does-not-exist"
FILTERING = policy_from_create({"defaultAction": "deny", "egress": [{"action": "allow", "target": "a.test"}]})


def engine() -> SandboxEgress:
    return SandboxEgress(MISSING, listen=("127.0.0.1", 0), upstream=("127.0.0.1", 9))


async def test_a_policy_that_cannot_be_enforced_fails_the_start_with_the_reason() -> None:
    egress = engine()
    with pytest.raises(EgressUnavailable) as caught:
        await egress.start(FILTERING)
    assert str(caught.value) == f"cannot enforce an egress policy here: no network namespace at {MISSING}"
    assert egress.enforcement.mode == "none"
    await egress.close()


async def test_allow_all_runs_unfiltered_and_says_so_and_a_later_filter_is_refused() -> None:
    egress = engine()
    await egress.start(Policy.allow_all())
    try:
        assert egress.enforcement.mode == "none"
        with pytest.raises(EgressUnavailable, match="no network namespace"):
            await egress.replace(Policy.deny_all())
        assert egress.policy == Policy.allow_all()
    finally:
        await egress.close()


async def test_a_start_that_cannot_listen_leaves_nothing_behind() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        egress = SandboxEgress(MISSING, listen=taken.getsockname(), upstream=("127.0.0.1", 9))
        with pytest.raises(OSError):
            await egress.start(Policy.allow_all())
    assert egress.resolver.address is None
