"""The rendered rulesets against the real nft, in a throw-away network namespace."""

from __future__ import annotations

import asyncio
import ipaddress
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osbox.server.egress.enforcer import NftEnforcer, NftError, run_nft
from osbox.server.egress.nft import Admission, render_ruleset
from osbox.server.egress.nft_runner import NftSession
from osbox.server.egress.policy import Policy, policy_from_body
from osbox.server.egress.resolver import ResolvedAddress

from .netns import netns_path, network_namespaces, requires_netns, run_in

pytestmark = requires_netns

POLICIES = {
    "allow-all": Policy.allow_all(),
    "deny-all": Policy.deny_all(),
    "mixed": policy_from_body(
        {
            "defaultAction": "deny",
            "egress": [
                {"action": "allow", "target": "*.allowed.test"},
                {"action": "allow", "target": "198.18.0.0/24"},
                {"action": "allow", "target": "198.18.0.0/28"},
                {"action": "deny", "target": "198.18.0.11"},
                {"action": "allow", "target": "2001:db8::/32"},
                {"action": "deny", "target": "2001:db8::bad"},
            ],
        }
    ),
}


@pytest.mark.parametrize("resolver", [("100.64.0.1", 53), ("fd00::1", 5353)], ids=["v4", "v6"])
@pytest.mark.parametrize("name", POLICIES)
async def test_nft_accepts_every_rendered_ruleset_twice(name: str, resolver: tuple[str, int]) -> None:
    seeds = [Admission(ipaddress.ip_address("198.18.0.10"), 60), Admission(ipaddress.ip_address("::10"), 61)]
    script = render_ruleset(POLICIES[name], resolver, admitted=seeds)
    async with network_namespaces(["nft"]) as names:
        path = netns_path(names["nft"])
        await run_nft(path, script)
        await run_nft(path, script)  # a replacement of an existing table
        listed = (await run_in(names["nft"], "nft", "list", "table", "inet", "osbox")).stdout
        assert "198.18.0.10 timeout 1m" in listed


async def test_admissions_are_never_shortened_and_denied_names_admit_nothing() -> None:
    async with network_namespaces(["nft"]) as names:
        enforcer = NftEnforcer(netns_path(names["nft"]), ("100.64.0.1", 53))
        try:
            await enforcer.apply(policy_from_body({"egress": [{"action": "allow", "target": "a.test"}]}))
            addr = ipaddress.ip_address("198.18.0.10")
            await enforcer.admit("a.test", [ResolvedAddress(addr, 300)])
            await enforcer.admit("a.test", [ResolvedAddress(addr, 60)])
            await enforcer.admit("b.test", [ResolvedAddress(ipaddress.ip_address("198.18.0.11"), 300)])
            listed = (await run_in(names["nft"], "nft", "list", "set", "inet", "osbox", "allow_v4")).stdout
            assert "198.18.0.10 timeout 6m" in listed  # 300 s + ADMISSION_SLACK, not shortened to 60 s
            assert "198.18.0.11" not in listed
        finally:
            await enforcer.remove()


async def test_nft_errors_carry_nfts_words_in_process_and_in_a_subprocess() -> None:
    async with network_namespaces(["nft"]) as names:
        with pytest.raises(NftError, match="syntax error"):
            await run_nft(netns_path(names["nft"]), "this is not nft\n")
        session = NftSession(netns_path(names["nft"]))
        try:
            with pytest.raises(NftError, match="syntax error"):
                await session.run("this is not nft\n")
            await session.run(render_ruleset(Policy.deny_all(), ("100.64.0.1", 53)))  # still usable
        finally:
            await session.close()


async def test_a_session_works_inside_its_namespace_and_its_thread_ends_with_it() -> None:
    async with network_namespaces(["nft"]) as names:
        session = NftSession(netns_path(names["nft"]))
        await session.run(render_ruleset(Policy.deny_all(), ("100.64.0.1", 53)))
        assert session.active
        # The table is in that namespace, not in the test's own.
        assert "inet osbox" in (await run_in(names["nft"], "nft", "list", "tables")).stdout
        assert "table inet osbox" not in await _own_tables()
        await session.close()
        assert not session.active
        assert not [t for t in threading.enumerate() if t.name == "nft"]


async def _own_tables() -> str:
    proc = await asyncio.create_subprocess_exec("nft", "list", "tables", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode()


v4_targets = st.builds(
    lambda addr, prefix: f"{addr}/{prefix}",
    st.ip_addresses(v=4),
    st.integers(min_value=0, max_value=32),
)
v6_targets = st.builds(
    lambda addr, prefix: f"{addr}/{prefix}",
    st.ip_addresses(v=6),
    st.integers(min_value=0, max_value=128),
)
random_policies = st.builds(
    lambda default, rules: policy_from_body({"defaultAction": default, "egress": rules}),
    st.sampled_from(["allow", "deny"]),
    st.lists(
        st.fixed_dictionaries(
            {"action": st.sampled_from(["allow", "deny"]), "target": st.one_of(v4_targets, v6_targets)}
        ),
        max_size=8,
    ),
)


async def test_a_script_given_up_on_before_it_ran_is_skipped_and_the_session_goes_on() -> None:
    async with network_namespaces(["nft"]) as names:
        session = NftSession(netns_path(names["nft"]))
        try:
            # A long first script keeps the session busy while the second waits behind it.
            many = ", ".join(f"10.{i >> 8 & 255}.{i & 255}.1" for i in range(20000))
            busy = asyncio.create_task(
                session.run(
                    f"table inet t {{\n set s {{\n type ipv4_addr\n elements = {{ {many} }}\n }}\n}}\n"
                )
            )
            await asyncio.sleep(0)  # the first is queued
            given_up = asyncio.create_task(session.run("add table inet skipped\n"))
            await asyncio.sleep(0)
            given_up.cancel()
            with pytest.raises(asyncio.CancelledError):
                await given_up
            await busy
            await session.run("add table inet after\n")  # the thread still serves
            listed = (await run_in(names["nft"], "nft", "list", "tables")).stdout
            assert "table inet after" in listed and "table inet skipped" not in listed
        finally:
            await session.close()


async def test_nft_accepts_the_ruleset_of_any_ip_policy() -> None:
    """Random IP/CIDR policies (overlaps, /0, host bits, v4-mapped v6) all render to rulesets nft takes."""
    async with network_namespaces(["nft"]) as names:
        session = NftSession(netns_path(names["nft"]))
        failures: list[str] = []

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(random_policies)
        def check(policy: Policy) -> None:
            script = render_ruleset(
                policy, ("100.64.0.1", 53), protected=[ipaddress.ip_network("10.0.0.0/8")]
            )
            future = asyncio.run_coroutine_threadsafe(session.run(script), loop)
            try:
                future.result(timeout=30)
            except NftError as exc:
                failures.append(f"{policy}: {exc}")

        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(check)
        finally:
            await session.close()
        assert failures == []


async def test_a_policy_of_the_installed_default_changes_only_the_sets_to_the_same_table() -> None:
    """An enforcer handed a table for a deny-all policy (a pre-started sandbox's) puts a policy that
    denies by default in force by filling the sets: the table lists as a full replacement would."""
    resolver = ("100.64.0.1", 53)
    async with network_namespaces(["updated", "replaced"]) as names:
        updated, replaced = netns_path(names["updated"]), netns_path(names["replaced"])
        session = NftSession(updated)
        await session.run(render_ruleset(Policy.deny_all(), resolver))
        enforcer = NftEnforcer(updated, resolver, session=session, installed="deny")
        try:
            for policy in (POLICIES["mixed"], Policy.deny_all(), POLICIES["mixed"], Policy.allow_all()):
                await enforcer.apply(policy)
                await run_nft(replaced, render_ruleset(policy, resolver))
                listings = [
                    (await run_in(name, "nft", "list", "table", "inet", "osbox")).stdout
                    for name in (names["updated"], names["replaced"])
                ]
                assert listings[0] == listings[1]
                assert ("198.18.0.11" in listings[0]) == (policy is POLICIES["mixed"])
        finally:
            await enforcer.remove()
