"""The egress policy: parsing, validation, the `/policy` edits and the allow/deny decision. Pure: no I/O.

Semantics follow the reference egress sidecar (notes/wire-behaviour.md §3):

* Domain rules are evaluated **in order; the first match wins**, else `defaultAction`. `*.example.com`
  matches any subdomain of example.com, never the apex; an exact target matches only itself. Names are
  compared lower-cased, without a trailing dot.
* IP/CIDR rules govern addresses, not names, and **deny wins over allow whatever the order** (the
  reference's nftables chain checks its static deny set before any allow set: fail-closed).
  An address no IP/CIDR rule covers takes `defaultAction` — unless an allowed name resolved to it, which
  the enforcement layer (the DNS-filled allow set) decides, not this module.
* `PATCH` merges: incoming rules first, de-duplicated by lower-cased target (first wins), then the current
  rules whose target was not patched; `defaultAction` unchanged. `DELETE` removes rules by target
  (trimmed, case-insensitive). `POST`/`PUT` replace; an empty body (or `null`, `{}`) means deny-all.
* At create, an absent or empty `networkPolicy` means no filtering (allow-all), as the lifecycle spec says.

Every failure is a `PolicyError` whose message is fit for a 400 answer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ...models.egress import EgressMode, NetworkPolicy, NetworkRule

__all__ = [
    "MAX_RULES",
    "Action",
    "IPNetwork",
    "Policy",
    "PolicyError",
    "Rule",
    "parse_delete_body",
    "parse_patch_body",
    "parse_rule",
    "policy_from_body",
    "policy_from_create",
]

Action: TypeAlias = Literal["allow", "deny"]
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_RULES = 4096
"""Most rules one policy may hold (the reference sidecar's default cap)."""

_ACTIONS: tuple[Action, ...] = ("allow", "deny")
# One DNS label: letters, digits, hyphen; underscore too (service names such as _dmarc exist in the wild).
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_RULE_KEYS = frozenset({"action", "target"})
_POLICY_KEYS = frozenset({"defaultAction", "egress"})


class PolicyError(ValueError):
    """The policy input is unusable; the message says why and is safe to return in a 400."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated egress rule.

    `target` is the client's text, trimmed (echoed back as given); `key` is what targets are compared by
    (lower-cased, no trailing dot); `network` is set for IP and CIDR targets.
    """

    action: Action
    target: str
    key: str
    network: IPNetwork | None = None

    @property
    def is_wildcard(self) -> bool:
        """True for a `*.domain` rule."""
        return self.key.startswith("*.")

    def matches_name(self, name: str) -> bool:
        """Whether this domain rule covers the (normalised) `name`; IP/CIDR rules match no name."""
        if self.network is not None:
            return False
        if self.is_wildcard:
            return name.endswith(self.key[1:])  # ".example.com": a subdomain, never the apex
        return name == self.key


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy: `default_action` and ordered `rules` (at most `MAX_RULES`)."""

    default_action: Action
    rules: tuple[Rule, ...] = ()

    @classmethod
    def allow_all(cls) -> Policy:
        """No filtering: what a sandbox created without a policy gets."""
        return cls("allow")

    @classmethod
    def deny_all(cls) -> Policy:
        """Nothing allowed: what an empty `POST /policy` sets."""
        return cls("deny")

    def __post_init__(self) -> None:
        if len(self.rules) > MAX_RULES:
            raise PolicyError(f"too many egress rules: {len(self.rules)} (at most {MAX_RULES})")

    # -- decisions ----------------------------------------------------------------------------------

    def decide(self, name: str) -> Action:
        """Allow or deny a DNS name: the first domain rule that matches, else the default."""
        normalised = _normalise_name(name)
        for rule in self.rules:
            if rule.matches_name(normalised):
                return rule.action
        return self.default_action

    def decide_ip(self, address: str | IPAddress) -> Action:
        """Allow or deny a literal address by the IP/CIDR rules: any deny wins, then any allow, else the
        default. (Addresses that allowed names resolved to are admitted by the enforcement layer.)"""
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        covering = [r.action for r in self.rules if r.network is not None and addr in r.network]
        if "deny" in covering:
            return "deny"
        if "allow" in covering:
            return "allow"
        return self.default_action

    def networks(self, action: Action, version: Literal[4, 6]) -> list[IPNetwork]:
        """The IP/CIDR targets of the rules with `action`, of one IP version, in rule order."""
        return [
            r.network
            for r in self.rules
            if r.network is not None and r.action == action and r.network.version == version
        ]

    @property
    def mode(self) -> EgressMode:
        """The reference's derived mode: `allow_all`/`deny_all` with no rules, else `enforcing`."""
        if self.rules:
            return EgressMode.ENFORCING
        return EgressMode.ALLOW_ALL if self.default_action == "allow" else EgressMode.DENY_ALL

    # -- the /policy edits --------------------------------------------------------------------------

    def patched(self, incoming: Sequence[Rule]) -> Policy:
        """`PATCH /policy`: incoming rules first (the first per target wins), then the untouched current
        rules; `defaultAction` unchanged."""
        merged = _first_per_key([*incoming, *self.rules])
        return Policy(self.default_action, tuple(merged))

    def without(self, targets: Iterable[str]) -> tuple[Policy, int]:
        """`DELETE /policy`: the policy minus the rules for `targets`, and how many rules went."""
        keys = {_rule_key(t) for t in targets}
        kept = tuple(r for r in self.rules if r.key not in keys)
        return Policy(self.default_action, kept), len(self.rules) - len(kept)

    # -- wire ---------------------------------------------------------------------------------------

    def to_model(self) -> NetworkPolicy:
        """The wire model (shared with the SDK) of this policy."""
        return NetworkPolicy(
            default_action=self.default_action,
            egress=[NetworkRule(action=r.action, target=r.target) for r in self.rules],
        )


# -- parsing ----------------------------------------------------------------------------------------


def policy_from_create(value: object) -> Policy:
    """The policy of a create request's `networkPolicy`: absent, `null` or `{}` mean allow-all."""
    if value is None or value == {}:
        return Policy.allow_all()
    return _parse_policy_object(value, "networkPolicy")


def policy_from_body(value: object) -> Policy:
    """The policy of a `POST`/`PUT /policy` body (already JSON-decoded; `None` for an empty body).

    Empty, `null` and `{}` reset to deny-all, as the reference sidecar does.
    """
    if value is None or value == {}:
        return Policy.deny_all()
    return _parse_policy_object(value, "policy")


def parse_patch_body(value: object) -> list[Rule]:
    """The rules of a `PATCH /policy` body: a non-empty JSON array of rules."""
    if not isinstance(value, list) or not value:
        raise PolicyError("PATCH /policy takes a non-empty JSON array of rules")
    _check_count(len(value))
    return [parse_rule(item, f"rule {i}") for i, item in enumerate(value)]


def parse_delete_body(value: object) -> list[str]:
    """The targets of a `DELETE /policy` body: a non-empty JSON array of strings."""
    if not isinstance(value, list) or not value:
        raise PolicyError("DELETE /policy takes a non-empty JSON array of targets")
    _check_count(len(value))
    if not all(isinstance(t, str) for t in value):
        raise PolicyError("DELETE /policy: every target must be a string")
    return [t.strip() for t in value]


def parse_rule(value: object, where: str = "rule") -> Rule:
    """One `{action, target}` object, validated: action allow/deny; target a domain, `*.domain`, IP or
    CIDR. Unknown fields are refused (ignoring e.g. a `ports` scope would widen an allow rule)."""
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: must be an object with 'action' and 'target'")
    _refuse_unknown(value, _RULE_KEYS, where)
    action = _parse_action(value.get("action"), f"{where}: action")
    target = value.get("target")
    if not isinstance(target, str) or not target.strip():
        raise PolicyError(f"{where}: 'target' must be a non-empty string")
    target = target.strip()
    network = _parse_network(target)
    if network is not None:
        return Rule(action, target, _rule_key(target), network)
    return Rule(action, target, _parse_domain(target, where))


def _parse_policy_object(value: object, where: str) -> Policy:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: must be a JSON object with 'defaultAction' and 'egress'")
    _refuse_unknown(value, _POLICY_KEYS, where)
    raw_default = value.get("defaultAction")
    default: Action = "deny" if raw_default is None else _parse_action(raw_default, "defaultAction")
    egress = value.get("egress")
    if egress is None:
        egress = []
    if not isinstance(egress, list):
        raise PolicyError(f"{where}: 'egress' must be an array of rules")
    _check_count(len(egress))
    return Policy(default, tuple(parse_rule(item, f"egress[{i}]") for i, item in enumerate(egress)))


def _parse_action(value: object, where: str) -> Action:
    if isinstance(value, str):
        lowered = value.strip().lower()
        for action in _ACTIONS:
            if lowered == action:
                return action
    raise PolicyError(f"{where}: must be 'allow' or 'deny'")


def _parse_network(target: str) -> IPNetwork | None:
    """The network of an IP or CIDR target (host bits tolerated, masked off), None for anything else."""
    if "%" in target:
        raise PolicyError(f"target {target!r}: scoped IPv6 addresses are not supported")
    if "/" not in target:
        try:
            return ipaddress.ip_network(target)
        except ValueError:
            return None
    try:
        return ipaddress.ip_network(target, strict=False)
    except ValueError:
        raise PolicyError(f"target {target!r}: not a valid CIDR") from None


def _parse_domain(target: str, where: str) -> str:
    """The comparison key of a domain target; refuses what could never match a DNS name."""
    key = _rule_key(target)
    body = key[2:] if key.startswith("*.") else key
    if len(body) > 253 or not all(_LABEL.match(label) for label in body.split(".")):
        if key == "*":
            raise PolicyError(f"{where}: target '*' is not a domain; use defaultAction to allow everything")
        raise PolicyError(f"{where}: target {target!r} is not a domain, '*.domain', IP address or CIDR")
    return key


def _rule_key(target: str) -> str:
    return _normalise_name(target.strip())


def _normalise_name(name: str) -> str:
    return name.lower().removesuffix(".")


def _first_per_key(rules: Iterable[Rule]) -> list[Rule]:
    seen: set[str] = set()
    kept: list[Rule] = []
    for rule in rules:
        if rule.key not in seen:
            seen.add(rule.key)
            kept.append(rule)
    return kept


def _check_count(count: int) -> None:
    # Checked before parsing the rules too, so an oversized body costs no per-rule work.
    if count > MAX_RULES:
        raise PolicyError(f"too many egress rules: {count} (at most {MAX_RULES})")


def _refuse_unknown(value: dict[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(value) - known)
    if unknown:
        raise PolicyError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
