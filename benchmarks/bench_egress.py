"""DNS lookup latency through the egress policy resolver vs straight to the upstream.

Upstream: the tests' fake authoritative server (`tests/integration/egress/fake_dns.py`) on 127.0.0.1.
Resolver: `PolicyResolver` on 127.0.0.1 with a deny-by-default policy allowing the looked-up name, so
every query is decided, forwarded and its answer admitted. Both servers run on one asyncio loop in a
background thread; the client is a blocking UDP socket in the main thread, sending one query at a time.
Measured, interleaved in rounds:
- direct: client -> upstream;
- resolver: client -> resolver -> upstream, the admission hook a no-op (the resolver's own cost);
- resolver + nft, warm: the same with the real `NftEnforcer` in a throw-away network namespace, the
  name's address already admitted (the steady state: no nft call, see ADMISSION_SLACK) -- root only;
- resolver + nft, cold: first lookups of distinct names, each admission one nft transaction (libnftables
  in the session thread, or an `nft` process where it is missing) -- root only.
Goal: median resolver lookup <= 3x direct (the resolver adds a second hop and a second parse).

    python benchmarks/bench_egress.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import dns.message
from _common import REPO, Goal, Report, median, parse_args, percentile, us

from osbox.server.egress.enforcer import NftEnforcer
from osbox.server.egress.policy import policy_from_body
from osbox.server.egress.resolver import PolicyResolver, ResolvedAddress

sys.path.insert(0, str(REPO))
from tests.integration.egress.fake_dns import FakeAuthority

GOAL_RATIO = 3.0
NAME = "allowed.test"
T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a background thread; `call` runs a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def lookup_times(server: tuple[str, int], names: Sequence[str]) -> list[float]:
    """Seconds per lookup of each name, one UDP query at a time."""
    times = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect(server)
        for name in names:
            wire = dns.message.make_query(name, "A").to_wire()
            start = time.perf_counter()
            sock.send(wire)
            reply = sock.recv(65535)
            times.append(time.perf_counter() - start)
            if reply[:2] != wire[:2] or reply[3] & 0x0F != 0:
                raise RuntimeError(f"bad answer for {name}: rcode {reply[3] & 0x0F}")
    return times


@contextmanager
def throwaway_netns() -> Iterator[str | None]:
    """A fresh network namespace's path (None when not root or nft/ip/nsenter are missing)."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "nsenter")):
        yield None
        return
    name = f"osbxb-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def main() -> None:
    args = parse_args(__doc__ or "")
    rounds, per_round, cold_names = (3, 100, 20) if args.quick else (10, 300, 150)
    report = Report.start("egress", args.quick)
    names = {NAME: ["198.18.0.10"]} | {
        f"n{i}.allowed.test": [f"198.18.{1 + i // 250}.{1 + i % 250}"] for i in range(cold_names)
    }
    policy = policy_from_body(
        {
            "defaultAction": "deny",
            "egress": [{"action": "allow", "target": NAME}, {"action": "allow", "target": "*.allowed.test"}],
        }
    )
    runner = LoopThread()
    with throwaway_netns() as netns:
        authority = FakeAuthority(names, ttl=300)

        async def no_op(name: str, addresses: Sequence[ResolvedAddress]) -> None:
            return None

        enforcer = NftEnforcer(netns, ("127.0.0.1", 53)) if netns else None
        upstream = runner.call(authority.start("127.0.0.1"))
        plain = PolicyResolver(lambda: policy, upstream, on_allowed=no_op)
        try:
            variants = {"direct": upstream, "resolver": runner.call(plain.start("127.0.0.1", 0))}
            nft_resolver = None
            if enforcer is not None:
                runner.call(enforcer.apply(policy))
                nft_resolver = PolicyResolver(lambda: policy, upstream, on_allowed=enforcer.admit)
                variants["resolver + nft, warm"] = runner.call(nft_resolver.start("127.0.0.1", 0))
            else:
                report.notes.append("resolver + nft skipped: needs root with ip, nft and nsenter")

            samples: dict[str, list[float]] = {label: [] for label in variants}
            for address in variants.values():
                lookup_times(address, [NAME] * 20)  # warm-up (and the first admission)
            for round_no in range(rounds):
                order = list(variants.items())
                if round_no % 2:
                    order.reverse()
                for label, address in order:
                    samples[label] += lookup_times(address, [NAME] * per_round)

            figures: dict[str, Any] = {}
            for label, values in samples.items():
                figures[label] = {"p50_us": median(values) * 1e6, "p95_us": percentile(values, 95) * 1e6}
                print(f"{label:>22}: p50 {us(median(values))}, p95 {us(percentile(values, 95))}")
            if nft_resolver is not None:
                cold_list = [n for n in names if n != NAME]
                cold = lookup_times(variants["resolver + nft, warm"], cold_list)
                figures["resolver + nft, cold"] = {
                    "p50_us": median(cold) * 1e6,
                    "p95_us": percentile(cold, 95) * 1e6,
                }
                print(f"{'resolver + nft, cold':>22}: p50 {us(median(cold))}, p95 {us(percentile(cold, 95))}")
                runner.call(nft_resolver.close())
            ratio = median(samples["resolver"]) / median(samples["direct"])
            figures["resolver_over_direct_p50"] = ratio
            print(f"resolver / direct (p50): {ratio:.2f}x")
            report.figures.update(figures)
            report.goals.append(Goal("resolver p50 / direct p50", ratio, GOAL_RATIO, "<=", "x"))
        finally:
            runner.call(plain.close())
            runner.call(authority.close())
            if enforcer is not None:
                runner.call(enforcer.remove())
            runner.stop()
    report.emit()


if __name__ == "__main__":
    main()
