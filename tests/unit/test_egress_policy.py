"""The egress policy model: parsing, the /policy edits and the decision, against the reference semantics."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osbox.models.egress import EgressMode
from osbox.server.egress.policy import (
    MAX_RULES,
    Action,
    Policy,
    PolicyError,
    Rule,
    parse_delete_body,
    parse_patch_body,
    parse_rule,
    policy_from_body,
    policy_from_create,
)

# A small alphabet of labels so that random names and rules collide often.
labels = st.sampled_from(["a", "b", "cdn", "api", "example", "test"])
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
domain_targets = st.one_of(names, names.map(lambda n: "*." + n))
actions = st.sampled_from(["allow", "deny"])
v4_networks = st.builds(
    lambda addr, prefix: str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False)),
    st.ip_addresses(v=4, network="198.18.0.0/23"),
    st.integers(min_value=22, max_value=32),
)
rules = st.builds(
    lambda a, t: parse_rule({"action": a, "target": t}), actions, st.one_of(domain_targets, v4_networks)
)
policies = st.builds(lambda d, rs: Policy(d, tuple(rs)), actions, st.lists(rules, max_size=12))


def naive_decide(policy: Policy, name: str) -> Action:
    """The reference's linear evaluation, written out plainly."""
    name = name.lower().rstrip(".")
    for rule in policy.rules:
        pattern = rule.target.lower()
        if rule.network is not None:
            continue
        if pattern == name:
            return rule.action
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and name != pattern[2:]:
            return rule.action
    return policy.default_action


# -- decide ---------------------------------------------------------------------------------------------


@given(policies, names)
def test_decide_is_first_match_then_default(policy: Policy, name: str) -> None:
    assert policy.decide(name) == naive_decide(policy, name)


@given(policies, names)
def test_decide_ignores_case_and_trailing_dot(policy: Policy, name: str) -> None:
    assert policy.decide(name.upper() + ".") == policy.decide(name)


@given(names, actions)
def test_wildcard_matches_subdomains_never_the_apex(name: str, action: Action) -> None:
    other: Action = "deny" if action == "allow" else "allow"
    policy = Policy(other, (parse_rule({"action": action, "target": "*." + name}),))
    assert policy.decide("x." + name) == action
    assert policy.decide("a.b." + name) == action
    assert policy.decide(name) == other


def test_a_deny_listed_first_overrides_a_broader_allow() -> None:
    policy = policy_from_body(
        {
            "defaultAction": "deny",
            "egress": [
                {"action": "deny", "target": "cdn.allowed.test"},
                {"action": "allow", "target": "*.allowed.test"},
            ],
        }
    )
    assert policy.decide("cdn.allowed.test") == "deny"
    assert policy.decide("www.allowed.test") == "allow"
    assert policy.decide("allowed.test") == "deny"


@given(policies, st.ip_addresses(v=4, network="198.18.0.0/23"))
def test_decide_ip_deny_wins_over_allow_whatever_the_order(policy: Policy, addr: Any) -> None:
    covering = [r.action for r in policy.rules if r.network is not None and addr in r.network]
    expected = "deny" if "deny" in covering else "allow" if covering else policy.default_action
    assert policy.decide_ip(addr) == expected
    assert policy.decide_ip(str(addr)) == expected


def test_ip_rules_cover_v6_and_single_addresses() -> None:
    policy = policy_from_body(
        {
            "defaultAction": "deny",
            "egress": [
                {"action": "allow", "target": "2001:db8::/32"},
                {"action": "deny", "target": "2001:db8::bad"},
                {"action": "allow", "target": "198.18.0.7"},
            ],
        }
    )
    assert policy.decide_ip("2001:db8::1") == "allow"
    assert policy.decide_ip("2001:db8::bad") == "deny"
    assert policy.decide_ip("198.18.0.7") == "allow"
    assert policy.decide_ip("198.18.0.8") == "deny"
    assert [str(n) for n in policy.networks("allow", 6)] == ["2001:db8::/32"]
    assert [str(n) for n in policy.networks("allow", 4)] == ["198.18.0.7/32"]
    # IP rules say nothing about names.
    assert policy.decide("198.18.0.7.example") == "deny"


# -- mode -----------------------------------------------------------------------------------------------


def test_mode_is_derived_like_the_reference() -> None:
    assert Policy.allow_all().mode == EgressMode.ALLOW_ALL
    assert Policy.deny_all().mode == EgressMode.DENY_ALL
    assert Policy("allow", (parse_rule({"action": "deny", "target": "x.test"}),)).mode == EgressMode.ENFORCING


# -- parsing --------------------------------------------------------------------------------------------


def test_empty_bodies_deny_all_but_an_empty_create_policy_allows_all() -> None:
    empties: tuple[object, ...] = (None, {})
    for empty in empties:
        assert policy_from_body(empty) == Policy.deny_all()
        assert policy_from_create(empty) == Policy.allow_all()


def test_default_action_defaults_to_deny_and_actions_are_case_insensitive() -> None:
    policy = policy_from_create({"egress": [{"action": " Allow ", "target": " PyPI.org. "}]})
    assert policy.default_action == "deny"
    assert policy.rules == (Rule("allow", "PyPI.org.", "pypi.org"),)
    assert policy.decide("pypi.org") == "allow"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({"defaultAction": "maybe"}, "defaultAction: must be 'allow' or 'deny'"),
        ({"egress": {}}, "'egress' must be an array"),
        ({"egress": ["x"]}, "egress[0]: must be an object"),
        ({"egress": [{"target": "a.test"}]}, "egress[0]: action: must be 'allow' or 'deny'"),
        ({"egress": [{"action": "allow"}]}, "'target' must be a non-empty string"),
        ({"egress": [{"action": "allow", "target": "  "}]}, "'target' must be a non-empty string"),
        ({"egress": [{"action": "allow", "target": "*"}]}, "use defaultAction"),
        ({"egress": [{"action": "allow", "target": "a.*.test"}]}, "is not a domain"),
        ({"egress": [{"action": "allow", "target": "exa mple.test"}]}, "is not a domain"),
        ({"egress": [{"action": "allow", "target": "10.0.0.0/33"}]}, "not a valid CIDR"),
        ({"egress": [{"action": "allow", "target": "fe80::1%eth0"}]}, "scoped IPv6 addresses"),
        ({"egress": [{"action": "allow", "target": "a.test", "ports": [443]}]}, "unknown field(s) 'ports'"),
        ({"default_action": "allow"}, "unknown field(s) 'default_action'"),
    ],
)
def test_bad_policies_get_a_clear_error(body: object, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        policy_from_body(body)
    assert message in str(caught.value)


def test_cidr_host_bits_are_masked_but_the_target_is_echoed() -> None:
    rule = parse_rule({"action": "allow", "target": "198.18.0.9/24"})
    assert str(rule.network) == "198.18.0.0/24"
    assert rule.target == "198.18.0.9/24"


def test_rule_count_is_capped_with_a_clear_error() -> None:
    at_cap = [{"action": "allow", "target": f"h{i}.test"} for i in range(MAX_RULES)]
    assert len(policy_from_body({"egress": at_cap}).rules) == MAX_RULES
    too_many = [*at_cap, {"action": "allow", "target": "one-more.test"}]
    with pytest.raises(
        PolicyError, match=f"too many egress rules: {MAX_RULES + 1} \\(at most {MAX_RULES}\\)"
    ):
        policy_from_body({"egress": too_many})
    with pytest.raises(PolicyError, match="too many egress rules"):
        parse_patch_body(too_many)
    full = policy_from_body({"egress": at_cap})
    with pytest.raises(PolicyError, match="too many egress rules"):
        full.patched(parse_patch_body([{"action": "deny", "target": "new.test"}]))


@given(policies)
def test_the_wire_form_parses_back_to_the_same_policy(policy: Policy) -> None:
    assert policy_from_body(policy.to_model().to_wire()) == policy


# -- PATCH and DELETE -----------------------------------------------------------------------------------


@given(policies, st.lists(rules, min_size=1, max_size=6))
def test_patch_puts_incoming_first_once_per_target(policy: Policy, incoming: list[Rule]) -> None:
    patched = policy.patched(incoming)
    keys = [r.key for r in patched.rules]
    assert len(keys) == len(set(keys))
    first_incoming: dict[str, Rule] = {}
    for rule in incoming:
        first_incoming.setdefault(rule.key, rule)
    assert list(patched.rules[: len(first_incoming)]) == list(first_incoming.values())
    untouched = [r for r in policy.rules if r.key not in first_incoming]
    # The current rules keep their order (first per target) after the patched ones.
    expected_rest: list[Rule] = []
    for rule in untouched:
        if all(r.key != rule.key for r in expected_rest):
            expected_rest.append(rule)
    assert list(patched.rules[len(first_incoming) :]) == expected_rest
    assert patched.default_action == policy.default_action
    assert patched.patched(incoming) == patched


def test_patch_duplicate_target_first_wins_like_the_spec_example() -> None:
    incoming = parse_patch_body(
        [{"action": "allow", "target": "example.com"}, {"action": "deny", "target": "EXAMPLE.com"}]
    )
    patched = Policy.deny_all().patched(incoming)
    assert [(r.action, r.target) for r in patched.rules] == [("allow", "example.com")]


@given(policies, st.lists(domain_targets, min_size=1, max_size=4))
def test_delete_removes_exactly_the_targets(policy: Policy, targets: list[str]) -> None:
    removed_keys = {t.lower() for t in targets}
    after, count = policy.without(parse_delete_body([f"  {t.upper()} " for t in targets]))
    assert all(r.key not in removed_keys for r in after.rules)
    assert list(after.rules) == [r for r in policy.rules if r.key not in removed_keys]
    assert count == len(policy.rules) - len(after.rules)
    assert after.default_action == policy.default_action


@pytest.mark.parametrize("body", [None, [], {}, "a.test", [1]])
def test_patch_and_delete_bodies_are_validated(body: object) -> None:
    with pytest.raises(PolicyError):
        parse_delete_body(body)
    with pytest.raises(PolicyError):
        parse_patch_body(body)
