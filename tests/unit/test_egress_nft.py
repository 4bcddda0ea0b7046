"""The nftables ruleset renderer (pure): what each policy puts in table inet osbox."""

from __future__ import annotations

import ipaddress

from osbox.server.egress.nflog import NFLOG_GROUP
from osbox.server.egress.nft import (
    REFUSAL_LOG_RATE,
    Admission,
    render_admissions,
    render_policy_update,
    render_removal,
    render_ruleset,
)
from osbox.server.egress.policy import Policy, policy_from_body

RESOLVER = ("100.64.0.1", 53)


def output_chain(script: str, name: str = "output") -> list[str]:
    lines = script.splitlines()
    start = lines.index(f"  chain {name} {{")
    return [line.strip() for line in lines[start + 1 : lines.index("  }", start)]]


def set_elements(script: str, name: str) -> str:
    lines = script.splitlines()
    start = lines.index(f"  set {name} {{")
    body = lines[start : lines.index("  }", start)]
    found = [line.strip() for line in body if line.strip().startswith("elements")]
    return found[0] if found else ""


def test_the_script_replaces_the_table_atomically() -> None:
    script = render_ruleset(Policy.deny_all(), RESOLVER)
    assert script.startswith("table inet osbox\ndelete table inet osbox\ntable inet osbox {\n")
    assert render_removal() == "table inet osbox\ndelete table inet osbox\n"


def test_dns_to_any_address_is_redirected_to_the_resolver() -> None:
    script = render_ruleset(Policy.allow_all(), RESOLVER)
    assert "meta l4proto { tcp, udp } th dport 53 dnat ip to 100.64.0.1:53" in script
    v6 = render_ruleset(Policy.allow_all(), ("fd00::1", 5353))
    assert "dnat ip6 to [fd00::1]:5353" in v6
    assert "ip6 daddr fd00::1 meta l4proto { tcp, udp } th dport 5353 accept" in output_chain(v6)


def test_deny_default_drops_and_refuses_what_no_rule_admits() -> None:
    chain = output_chain(render_ruleset(Policy.deny_all(), RESOLVER))
    assert chain[0] == "type filter hook output priority 0; policy drop;"
    assert chain[1:4] == ['oif "lo" accept', "ct state established,related accept", "ct state invalid drop"]
    # IPv6 neighbour/router discovery and MLD stay possible on the link (hop limits 255 and 1 only).
    assert chain[4].startswith("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit,")
    assert chain[4].endswith("ip6 hoplimit { 1, 255 } accept")
    assert chain[-1] == "goto refuse"
    # DoT anywhere and DoH to the known resolvers are refused, before any allow set.
    doh = chain.index("ip daddr @doh_v4 meta l4proto { tcp, udp } th dport 443 goto refuse")
    assert "meta l4proto { tcp, udp } th dport 853 goto refuse" in chain
    assert doh < chain.index("ip daddr @static_allow_v4 accept") < chain.index("ip daddr @allow_v4 accept")


def test_allow_default_accepts_and_blocks_no_doh() -> None:
    chain = output_chain(render_ruleset(Policy.allow_all(), RESOLVER))
    assert chain[0] == "type filter hook output priority 0; policy accept;"
    assert not [rule for rule in chain if "doh" in rule or "853" in rule or rule == "goto refuse"]


def test_static_deny_is_checked_before_any_allow() -> None:
    policy = policy_from_body(
        {
            "defaultAction": "deny",
            "egress": [
                {"action": "allow", "target": "198.18.0.0/24"},
                {"action": "deny", "target": "198.18.0.11"},
                {"action": "allow", "target": "2001:db8::/32"},
                {"action": "allow", "target": "allowed.test"},
            ],
        }
    )
    script = render_ruleset(policy, RESOLVER)
    chain = output_chain(script)
    assert chain.index("ip daddr @static_deny_v4 goto refuse") < chain.index(
        "ip daddr @static_allow_v4 accept"
    )
    assert set_elements(script, "static_allow_v4") == "elements = { 198.18.0.0/24 }"
    assert set_elements(script, "static_deny_v4") == "elements = { 198.18.0.11 }"
    assert set_elements(script, "static_allow_v6") == "elements = { 2001:db8::/32 }"
    assert set_elements(script, "static_deny_v6") == ""


def test_nested_cidrs_collapse_to_the_widest_since_nft_refuses_overlaps() -> None:
    policy = policy_from_body(
        {
            "egress": [
                {"action": "allow", "target": "198.18.0.10"},
                {"action": "allow", "target": "198.18.0.0/24"},
                {"action": "allow", "target": "198.18.0.0/28"},
                {"action": "allow", "target": "198.19.0.0/16"},
            ]
        }
    )
    script = render_ruleset(policy, RESOLVER)
    assert set_elements(script, "static_allow_v4") == "elements = { 198.19.0.0/16, 198.18.0.0/24 }"


def test_allow_sets_have_timeouts_and_can_be_seeded() -> None:
    seeds = [
        Admission(ipaddress.ip_address("198.18.0.10"), 60),
        Admission(ipaddress.ip_address("2001:db8::10"), 300),
    ]
    script = render_ruleset(Policy.deny_all(), RESOLVER, admitted=seeds)
    assert "flags timeout;" in script
    assert set_elements(script, "allow_v4") == "elements = { 198.18.0.10 timeout 60s }"
    assert set_elements(script, "allow_v6") == "elements = { 2001:db8::10 timeout 300s }"


def test_admissions_reset_the_timeout_whether_or_not_the_element_exists() -> None:
    script = render_admissions([Admission(ipaddress.ip_address("198.18.0.10"), 120)])
    assert script.splitlines() == [
        "add element inet osbox allow_v4 { 198.18.0.10 timeout 1s }",
        "delete element inet osbox allow_v4 { 198.18.0.10 }",
        "add element inet osbox allow_v4 { 198.18.0.10 timeout 120s }",
    ]
    assert render_admissions([]) == ""


def test_protected_networks_and_the_resolver_are_refused_unless_an_ip_rule_allows_them() -> None:
    protected = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    script = render_ruleset(Policy.allow_all(), RESOLVER, protected=protected)
    assert set_elements(script, "protected_v4") == "elements = { 10.0.0.0/8, 100.64.0.1 }"
    assert set_elements(script, "protected_v6") == "elements = { fd00::/8 }"
    chain = output_chain(script)
    guard = chain.index("ip daddr @protected_v4 ip daddr != @static_allow_v4 goto refuse")
    # After the resolver's DNS port and the static denies, before every allow set.
    assert chain.index("ip daddr 100.64.0.1 meta l4proto { tcp, udp } th dport 53 accept") < guard
    assert (
        chain.index("ip daddr @static_deny_v4 goto refuse") < guard < chain.index("ip daddr @allow_v4 accept")
    )
    assert "ip6 daddr @protected_v6 ip6 daddr != @static_allow_v6 goto refuse" in chain


def test_every_refusal_is_logged_to_nflog_rate_limited_then_rejected_at_once() -> None:
    refuse = output_chain(render_ruleset(Policy.allow_all(), RESOLVER), "refuse")
    assert refuse == [
        f"limit rate {REFUSAL_LOG_RATE}/second burst {REFUSAL_LOG_RATE} packets log group {NFLOG_GROUP}",
        "meta l4proto tcp reject with tcp reset",
        "reject with icmpx type admin-prohibited",
    ]
    chain = output_chain(render_ruleset(Policy.deny_all(), RESOLVER))
    assert not [rule for rule in chain if "reject" in rule]  # no refusal skips the log


def test_a_policy_update_refills_every_set_and_touches_no_chain() -> None:
    policy = policy_from_body(
        {
            "defaultAction": "deny",
            "egress": [{"action": "allow", "target": "198.18.0.0/24"}, {"action": "deny", "target": "::1"}],
        }
    )
    kept = [Admission(ipaddress.ip_address("198.18.0.10"), 60)]
    lines = render_policy_update(policy, admitted=kept).splitlines()
    flushed = [line.split()[-1] for line in lines if line.startswith("flush set inet osbox ")]
    assert sorted(flushed) == sorted(
        f"{kind}_v{version}" for kind in ("allow", "static_allow", "static_deny") for version in (4, 6)
    )
    assert "add element inet osbox allow_v4 { 198.18.0.10 timeout 60s }" in lines
    assert "add element inet osbox static_allow_v4 { 198.18.0.0/24 }" in lines
    assert "add element inet osbox static_deny_v6 { ::1 }" in lines
    assert not [line for line in lines if "chain" in line or "table" in line.split()[:2]]
    # Each set is emptied before it is filled, in one transaction.
    assert lines.index("flush set inet osbox static_allow_v4") < lines.index(
        "add element inet osbox static_allow_v4 { 198.18.0.0/24 }"
    )
