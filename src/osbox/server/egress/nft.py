"""The nftables ruleset of one sandbox network namespace, rendered as an `nft -f` script. Pure: no I/O.

One table, `inet osbox`, holds everything, so replacing a policy is one atomic transaction (the script
deletes and redefines the table) and removing enforcement is `delete table inet osbox`:

* chain `dns` (nat, output): DNS to any address, UDP or TCP port 53, is DNAT'ed to the policy resolver.
* chain `output` (filter, output), in this order:
  loopback accepted (the namespace's own `lo`: private to the sandbox); established/related accepted (a
  policy change never cuts a flow already admitted, it applies to new connections); IPv6 neighbour
  discovery and multicast listener reports accepted on the link (hop limit 255 or 1); the resolver
  accepted; any other DNS (port 53, e.g. over an address family the resolver doesn't serve) refused;
  static deny IPs/CIDRs refused (deny wins over allow); protected networks (the host, other sandboxes,
  the resolver's address but for DNS) refused unless an IP/CIDR rule allows them; under deny:
  DNS-over-TLS (853) and DNS-over-HTTPS to known public resolvers refused; static allow IPs/CIDRs and
  the DNS-filled `allow_v4`/`allow_v6` sets accepted; under deny the rest refused, with a `drop` chain
  policy behind it. Every refusal goes to chain `refuse`: logged to NFLOG (see `nflog.py`), then
  rejected (not silently dropped, so clients fail at once).

The `allow_*` sets have `flags timeout`: the resolver admits each answer's addresses for their TTL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .nflog import NFLOG_GROUP
from .policy import IPAddress, IPNetwork, Policy

__all__ = [
    "DOH_RESOLVERS",
    "TABLE",
    "Admission",
    "interval_elements",
    "render_admissions",
    "render_dns_redirect",
    "render_policy_update",
    "render_removal",
    "render_ruleset",
]

TABLE = "osbox"
"""The `inet` table osbox owns in each sandbox network namespace."""
REFUSAL_LOG_RATE = 20
"""Refused packets reported to NFLOG per second (and burst); the refusal itself is never limited."""

DOH_RESOLVERS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        # Google, Cloudflare, Quad9, OpenDNS, AdGuard, CleanBrowsing, NextDNS: the public resolvers that
        # serve DNS over HTTPS on well-known addresses. Best effort: DoH on any other host gets through
        # only if the policy allows that host.
        "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112",
        "208.67.222.222", "208.67.220.220", "94.140.14.14", "94.140.15.15",
        "185.228.168.9", "185.228.169.9", "45.90.28.0/24", "45.90.30.0/24",
        "2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111",
        "2606:4700:4700::1001", "2620:fe::fe", "2620:fe::9",
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Admission:
    """An address admitted into a DNS-filled allow set for `timeout` seconds."""

    address: IPAddress
    timeout: int


def render_ruleset(
    policy: Policy,
    resolver: tuple[str, int],
    *,
    admitted: Iterable[Admission] = (),
    doh_resolvers: Sequence[IPNetwork] = DOH_RESOLVERS,
    protected: Sequence[IPNetwork] = (),
) -> str:
    """The whole `nft -f` script that (re)defines table `inet osbox` for `policy`, atomically.

    `resolver` is the (address, port) DNS is redirected to; `admitted` re-seeds the DNS-filled allow sets
    (e.g. the still-allowed addresses when the policy is replaced). `protected` networks (the host's own
    addresses, other sandboxes) are refused whatever the default, unless an IP/CIDR rule allows them;
    the resolver's address is always protected but for its DNS port.
    """
    host, port = resolver
    resolver_ip = ipaddress.ip_address(host)
    ip_kw = _family_keyword(resolver_ip.version)
    deny = policy.default_action == "deny"
    seeds = list(admitted)
    guarded = [*protected, ipaddress.ip_network(resolver_ip)]
    lines = [
        # Creating the table first makes the delete valid when it does not exist yet.
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
    ]
    for version in (4, 6):
        lines += _set(f"allow_v{version}", version, ["timeout"], _seed_elements(seeds, version))
        for name, networks in (
            ("static_allow", policy.networks("allow", version)),
            ("static_deny", policy.networks("deny", version)),
            ("protected", guarded),
            ("doh", doh_resolvers),
        ):
            elements = interval_elements(n for n in networks if n.version == version)
            lines += _set(f"{name}_v{version}", version, ["interval"], elements)
    lines += _dns_chain(resolver_ip, port)
    lines += [
        # Every refusal goes through here: reported to NFLOG (rate-limited, so a flood costs nothing),
        # then refused at once (a reset or an ICMP error, not a silent drop that clients wait out).
        "  chain refuse {",
        f"    limit rate {REFUSAL_LOG_RATE}/second burst {REFUSAL_LOG_RATE} packets log group {NFLOG_GROUP}",
        "    meta l4proto tcp reject with tcp reset",
        "    reject with icmpx type admin-prohibited",
        "  }",
        "  chain output {",
        f"    type filter hook output priority 0; policy {'drop' if deny else 'accept'};",
        '    oif "lo" accept',
        "    ct state established,related accept",
        "    ct state invalid drop",
        # IPv6 needs these on the link itself (neighbour and router discovery, multicast listener
        # reports): never a way out of the namespace.
        "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, "
        "mld-listener-report, mld2-listener-report } ip6 hoplimit { 1, 255 } accept",
        f"    {ip_kw} daddr {resolver_ip} meta l4proto {{ tcp, udp }} th dport {port} accept",
        "    meta l4proto { tcp, udp } th dport 53 goto refuse",
        "    ip daddr @static_deny_v4 goto refuse",
        "    ip6 daddr @static_deny_v6 goto refuse",
        # Before the DNS-filled sets too: a public name resolving to a protected address (DNS rebinding)
        # gets nowhere.
        "    ip daddr @protected_v4 ip daddr != @static_allow_v4 goto refuse",
        "    ip6 daddr @protected_v6 ip6 daddr != @static_allow_v6 goto refuse",
    ]
    if deny:
        lines += [
            "    meta l4proto { tcp, udp } th dport 853 goto refuse",
            "    ip daddr @doh_v4 meta l4proto { tcp, udp } th dport 443 goto refuse",
            "    ip6 daddr @doh_v6 meta l4proto { tcp, udp } th dport 443 goto refuse",
        ]
    lines += [
        "    ip daddr @static_allow_v4 accept",
        "    ip6 daddr @static_allow_v6 accept",
        "    ip daddr @allow_v4 accept",
        "    ip6 daddr @allow_v6 accept",
    ]
    if deny:
        lines.append("    goto refuse")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def render_policy_update(policy: Policy, *, admitted: Iterable[Admission] = ()) -> str:
    """The `nft -f` script that puts `policy` in force in a table `render_ruleset` made for a policy of
    the same `defaultAction` (and the same resolver, protected networks and DoH list): only the sets
    change, the chains are the same. One transaction, much lighter than redefining the table.

    The static sets get `policy`'s IPs and CIDRs, the DNS-filled sets just `admitted` (as in
    `render_ruleset`: what a replacement keeps).
    """
    seeds = list(admitted)
    lines = []
    for version in (4, 6):
        contents = {
            f"allow_v{version}": _seed_elements(seeds, version),
            f"static_allow_v{version}": interval_elements(policy.networks("allow", version)),
            f"static_deny_v{version}": interval_elements(policy.networks("deny", version)),
        }
        for name, elements in contents.items():
            lines.append(f"flush set inet {TABLE} {name}")
            if elements:
                lines.append(f"add element inet {TABLE} {name} {{ {', '.join(elements)} }}")
    return "\n".join(lines) + "\n"


def render_dns_redirect(resolver: tuple[str, int]) -> str:
    """The `nft -f` script that (re)defines table `inet osbox` with the DNS redirect alone: what an
    unfiltered (`open`) sandbox gets, so its DNS reaches its resolver whatever its resolv.conf names."""
    host, port = resolver
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    lines += _dns_chain(ipaddress.ip_address(host), port)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dns_chain(resolver: IPAddress, port: int) -> list[str]:
    """Chain `dns`: DNS to any address, UDP or TCP port 53, DNAT'ed to the resolver."""
    return [
        "  chain dns {",
        "    type nat hook output priority -100; policy accept;",
        f"    meta l4proto {{ tcp, udp }} th dport 53 dnat {_family_keyword(resolver.version)} to "
        f"{_host_port(resolver, port)}",
        "  }",
    ]


def render_admissions(admissions: Iterable[Admission]) -> str:
    """The `nft -f` script that (re)sets these addresses' timeouts in the DNS-filled allow sets.

    `add` leaves an existing element's timeout alone, so each element is added, deleted and added again
    with its new timeout: one transaction, valid whether or not the element was there.
    """
    lines = []
    for item in admissions:
        set_name = f"allow_v{item.address.version}"
        target = f"inet {TABLE} {set_name}"
        lines += [
            f"add element {target} {{ {item.address} timeout 1s }}",
            f"delete element {target} {{ {item.address} }}",
            f"add element {target} {{ {item.address} timeout {item.timeout}s }}",
        ]
    return "\n".join(lines) + "\n" if lines else ""


def render_removal() -> str:
    """The `nft -f` script that removes osbox's table (and so all enforcement), whether or not it exists."""
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"


def _set(name: str, version: int, flags: list[str], elements: list[str]) -> list[str]:
    lines = [
        f"  set {name} {{",
        f"    type {'ipv4_addr' if version == 4 else 'ipv6_addr'};",
        f"    flags {', '.join(flags)};",
    ]
    if elements:
        lines.append(f"    elements = {{ {', '.join(elements)} }}")
    lines.append("  }")
    return lines


def interval_elements(networks: Iterable[IPNetwork]) -> list[str]:
    """`networks` as elements of an interval set: nested ranges (which nft refuses) folded into the
    widest, single addresses bare."""
    kept: list[IPNetwork] = []
    for net in sorted(set(networks), key=lambda n: (n.prefixlen, int(n.network_address))):
        if not any(net.subnet_of(k) for k in kept if k.version == net.version):  # type: ignore[arg-type]
            kept.append(net)
    return [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in kept]


def _seed_elements(seeds: Sequence[Admission], version: int) -> list[str]:
    return [f"{s.address} timeout {s.timeout}s" for s in seeds if s.address.version == version]


def _family_keyword(version: int) -> Literal["ip", "ip6"]:
    return "ip" if version == 4 else "ip6"


def _host_port(address: IPAddress, port: int) -> str:
    return f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"
