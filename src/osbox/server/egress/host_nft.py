"""The nftables table of the host side of sandbox networks, rendered as `nft -f` scripts. Pure: no I/O.

One table per server (`inet <prefix>_host`), in the host's network namespace; every sandbox's host-end
veth is named `<prefix>-…`, so the rules match all of them with one wildcard and a sandbox's own facts
are set elements, added at attach and deleted at detach:

* set `sources` (host end . sandbox address): a packet from a sandbox must carry its own address
  (no spoofing another sandbox's, or an outside one);
* set `links` (host end . sandbox address . host-end address): the one host address a sandbox may
  talk to, on port 53 only: its policy resolver;
* set `exceptions` (host end . network, intervals): protected networks this sandbox's policy allows.

Chains:

* `input` (to the host itself, from a sandbox): established/related accepted, DNS to the sandbox's own
  resolver accepted, connections redirected to the credential proxy accepted, everything else refused:
  the host's addresses, its loopback services and the server's port are out of reach whatever the
  destination address (a host-end address, another interface's, or a 127.0.0.0/8 one, which the
  kernel drops as a martian anyway);
* `forward`: from a sandbox, after the source check: another sandbox refused, protected networks refused
  unless excepted, the rest accepted; to a sandbox, only replies (nothing from outside or from another
  sandbox opens a connection into one); and nothing but replies is routed in from an uplink whose
  forwarding osbox turned on (it did so for sandboxes' replies: its own, and those of other servers on
  the machine, whose tables let them through);
* `postrouting` (nat): the pool masqueraded on the way out.

IPv4 only: IPv6 from a sandbox is dropped (the host end has IPv6 disabled, no link-local address).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network

from .nft import interval_elements
from .policy import IPNetwork

__all__ = [
    "render_exceptions",
    "render_host_table",
    "render_link",
    "render_table_removal",
    "render_unlink",
    "table_name",
]


def table_name(prefix: str) -> str:
    """The server's host table: `<prefix>_host` (in family inet)."""
    return f"{prefix}_host"


def render_host_table(
    prefix: str,
    pool: IPv4Network,
    protected: Sequence[IPNetwork],
    *,
    uplinks: Iterable[str] = (),
) -> str:
    """The script that (re)creates the server's host table, empty of sandboxes, in one transaction.

    `protected` networks are refused from every sandbox unless its `exceptions` allow them; `uplinks`
    are the interfaces whose forwarding osbox turned on (see the module docstring).
    """
    table = table_name(prefix)
    sandboxes = f'"{prefix}-*"'
    guarded = interval_elements(n for n in protected if n.version == 4)
    routed = sorted(set(uplinks))
    lines = [
        # Creating the table first makes the delete valid when it does not exist yet.
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  set sources { type ifname . ipv4_addr; }",
        "  set links { type ifname . ipv4_addr . ipv4_addr; }",
        "  set exceptions { type ifname . ipv4_addr; flags interval; }",
        "  set protected {",
        "    type ipv4_addr; flags interval;",
        *([f"    elements = {{ {', '.join(guarded)} }}"] if guarded else []),
        "  }",
        "  set uplinks {",
        "    type ifname;",
        *([f"    elements = {{ {', '.join(_quoted(routed))} }}"] if routed else []),
        "  }",
        "  chain refuse {",
        "    meta l4proto tcp reject with tcp reset",
        "    reject with icmpx type admin-prohibited",
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f"    iifname {sandboxes} jump from_sandbox_to_host",
        "  }",
        "  chain from_sandbox_to_host {",
        "    meta nfproto ipv6 drop",
        "    ct state established,related accept",
        "    iifname . ip saddr . ip daddr @links meta l4proto { tcp, udp } th dport 53 accept",
        # What a host-side redirect sent to a local port: the credential proxy's (credential_proxy.py).
        "    ct status dnat meta l4proto tcp accept",
        "    goto refuse",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f"    iifname {sandboxes} jump from_sandbox",
        f"    oifname {sandboxes} ct state established,related accept",
        f"    oifname {sandboxes} drop",
        # Not a plain drop: replies to another server's sandboxes (its own table accepts them) pass too.
        "    iifname @uplinks ct state established,related accept",
        "    iifname @uplinks drop",
        "  }",
        "  chain from_sandbox {",
        "    meta nfproto ipv6 drop",
        "    iifname . ip saddr != @sources drop",
        "    ct state established,related accept",
        f"    oifname {sandboxes} goto refuse",
        "    iifname . ip daddr @exceptions accept",
        "    ip daddr @protected goto refuse",
        "    accept",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    ip saddr {pool} oifname != {sandboxes} masquerade",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_link(prefix: str, interface: str, sandbox: IPv4Address, host: IPv4Address) -> str:
    """The script that registers one sandbox's link (its source address and its resolver address)."""
    table = table_name(prefix)
    return (
        f'add element inet {table} sources {{ "{interface}" . {sandbox} }}\n'
        f'add element inet {table} links {{ "{interface}" . {sandbox} . {host} }}\n'
    )


def render_unlink(
    prefix: str, interface: str, sandbox: IPv4Address, host: IPv4Address, exceptions: Sequence[IPNetwork]
) -> str:
    """The script that removes one sandbox's elements, valid whether or not they are there (each is
    added, then deleted: one transaction)."""
    table = table_name(prefix)
    elements = [
        ("sources", f'"{interface}" . {sandbox}'),
        ("links", f'"{interface}" . {sandbox} . {host}'),
        *(("exceptions", e) for e in _exception_elements(interface, exceptions)),
    ]
    lines = []
    for set_name, element in elements:
        lines += [
            f"add element inet {table} {set_name} {{ {element} }}",
            f"delete element inet {table} {set_name} {{ {element} }}",
        ]
    return "\n".join(lines) + "\n"


def render_exceptions(prefix: str, interface: str, old: Sequence[IPNetwork], new: Sequence[IPNetwork]) -> str:
    """The script that replaces one sandbox's excepted networks `old` by `new` (IPv4 ones; one
    transaction)."""
    table = table_name(prefix)
    lines = []
    for element in _exception_elements(interface, old):
        lines.append(f"delete element inet {table} exceptions {{ {element} }}")
    for element in _exception_elements(interface, new):
        lines.append(f"add element inet {table} exceptions {{ {element} }}")
    return "\n".join(lines) + "\n" if lines else ""


def render_table_removal(prefix: str) -> str:
    """The script that removes the server's host table, whether or not it exists."""
    table = table_name(prefix)
    return f"table inet {table}\ndelete table inet {table}\n"


def _exception_elements(interface: str, networks: Sequence[IPNetwork]) -> list[str]:
    return [f'"{interface}" . {e}' for e in interval_elements(n for n in networks if n.version == 4)]


def _quoted(names: Iterable[str]) -> list[str]:
    return [f'"{n}"' for n in names]
