"""The credential proxy's mitmproxy addon: which requests get which headers. Stdlib only.

`mitmdump -s injection_addon.py` loads this file in mitmproxy's own virtualenv (it cannot import
osbox); osbox's server imports the same file for `rules_match`, so the matching has one definition.

The server hands the rules over a socketpair whose end is the fd named by `$OSBOX_INJECTION_FD`, one
JSON line per change (the whole table: sandbox address → rules, each rule with its ready-made headers)
and reads back one `ok` line once the new table is in force, so a binding removed by the vault's
PATCH is gone for the very next request. The secrets live only in the two processes' memory.

What the addon does, per connection from a sandbox:

* TLS: the ClientHello's SNI is peeked; a connection whose SNI no rule of that sandbox names (on that
  port, for https) is passed through untouched (`ignore_connection`: the bytes are spliced, no
  certificate is minted). Otherwise mitmproxy terminates TLS with a leaf for the SNI, signed by the
  server's CA, and connects upstream to the sandbox's original destination, verifying the upstream's
  certificate for that same name; the rules are then matched against the SNI, never the Host header.
* Plain HTTP (http rules only): matched against the Host header, injected only when that name resolves
  to the address the sandbox connected to (a sandbox cannot send a secret to a server of its own by
  naming another host), asking the DNS server `$OSBOX_INJECTION_DNS` (`ip:port`: the one the
  sandboxes' resolvers ask) or, without it, the system's resolver.
* A client address without rules (nothing but redirected sandboxes reach the proxy) is cut off.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import secrets
import socket
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["Injector", "host_matches", "rules_match"]

Rule = Mapping[str, Any]
"""One compiled binding: hosts, schemes, ports, methods, paths (lists) and headers ([name, value] pairs)."""


def host_matches(pattern: str, host: str) -> bool:
    """`pattern` names `host`: exactly (case-insensitive), or `*.suffix` for any subdomain of it (never
    the apex itself)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def _path_matches(pattern: str, path: str) -> bool:
    """`/*` style globs over the path without its query (`*` crosses `/`, as the reference's `/*`)."""
    return fnmatch.fnmatchcase(path.split("?", 1)[0] or "/", pattern)


def rules_match(
    rules: Iterable[Rule],
    *,
    host: str,
    scheme: str,
    port: int,
    method: str | None = None,
    path: str | None = None,
) -> list[Rule]:
    """The rules that apply to a request (`method`/`path` None: to any request of that connection)."""
    found = []
    for rule in rules:
        if scheme not in rule["schemes"] or port not in rule["ports"]:
            continue
        if not any(host_matches(pattern, host) for pattern in rule["hosts"]):
            continue
        if method is not None and method.upper() not in rule["methods"]:
            continue
        if path is not None and not any(_path_matches(p, path) for p in rule["paths"]):
            continue
        found.append(rule)
    return found


class Injector:
    """The addon: the rule table, kept current by a reader thread on the server's socketpair."""

    def __init__(self, fd: int | None = None) -> None:
        self._table: dict[str, Sequence[Rule]] = {}
        given = os.environ.get("OSBOX_INJECTION_FD") if fd is None else str(fd)
        self._channel = socket.socket(fileno=int(given)) if given else None

    # -- mitmproxy hooks ----------------------------------------------------------------------------

    def running(self) -> None:
        """The listeners are up (mitmproxy starts them before this hook): start reading, say so."""
        if self._channel is not None:
            threading.Thread(target=self._read_updates, name="osbox-injection", daemon=True).start()
            self._channel.sendall(b"ready\n")

    def client_connected(self, client: Any) -> None:
        if client.peername[0] not in self._table:
            client.error = "not a sandbox with credential bindings"

    def tls_clienthello(self, data: Any) -> None:
        client = data.context.client
        server = data.context.server
        sni = data.client_hello.sni
        rules = self._table.get(client.peername[0], ())
        port = server.address[1] if server.address else 0
        if not sni or not rules_match(rules, host=sni, scheme="https", port=port):
            data.ignore_connection = True

    async def requestheaders(self, flow: Any) -> None:
        # At the headers, not the whole request: a streamed body (`stream_large_bodies`) has its
        # headers sent upstream before the `request` hook would run.
        client_address = flow.client_conn.peername[0]
        rules = self._table.get(client_address, ())
        destination, port = flow.server_conn.address
        if flow.request.scheme == "https":
            host = flow.client_conn.sni or ""
        else:
            host = flow.request.pretty_host  # the Host header (transparent mode: .host is the address)
            if not rules or not await _resolves_to(host, port, destination):
                return
        matched = rules_match(
            rules,
            host=host,
            scheme=flow.request.scheme,
            port=port,
            method=flow.request.method,
            path=flow.request.path,
        )
        for rule in matched:
            for name, value in rule["headers"]:
                flow.request.headers[name] = value

    # -- the server's channel -----------------------------------------------------------------------

    def _read_updates(self) -> None:
        assert self._channel is not None
        with self._channel.makefile("rb") as lines:
            for line in lines:
                table = json.loads(line)
                self._table = {address: tuple(rules) for address, rules in table.items()}
                self._channel.sendall(b"ok\n")
        os._exit(0)  # the server is gone (or closed the channel): so is the reason to run


async def _resolves_to(host: str, port: int, address: str) -> bool:
    server = os.environ.get("OSBOX_INJECTION_DNS")
    try:
        if server:
            ip, _, dns_port = server.rpartition(":")
            return address in await asyncio.to_thread(ipv4_addresses, host, (ip, int(dns_port)))
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError, struct.error):
        return False
    return any(info[4][0] == address for info in infos)


def ipv4_addresses(name: str, server: tuple[str, int], timeout: float = 3.0) -> list[str]:
    """The A records of `name` from one UDP query to `server` (no recursion of our own, no cache)."""
    query_id = secrets.randbits(16)
    labels = name.rstrip(".").encode("idna").split(b".")
    question = b"".join(bytes([len(label)]) + label for label in labels) + b"\0" + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect(server)
        sock.send(struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question)
        answer = sock.recv(4096)
    answer_id, flags, _, count = struct.unpack_from("!HHHH", answer)
    if answer_id != query_id or flags & 0x000F or answer[12 : 12 + len(question)] != question:
        return []
    offset, found = 12 + len(question), []
    for _ in range(count):
        while answer[offset] and answer[offset] < 0xC0:  # the owner name: labels, maybe ending in a pointer
            offset += answer[offset] + 1
        offset += 2 if answer[offset] >= 0xC0 else 1
        kind, klass, _, length = struct.unpack_from("!HHIH", answer, offset)
        offset += 10
        if kind == 1 and klass == 1 and length == 4:
            found.append(socket.inet_ntoa(answer[offset : offset + 4]))
        offset += length
    return found


addons = [Injector()] if os.environ.get("OSBOX_INJECTION_FD") else []
