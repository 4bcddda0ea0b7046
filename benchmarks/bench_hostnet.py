"""HTTP throughput and TCP connect latency from a sandbox's network namespace vs from the host.

The setup is the tests' (`tests/integration/egress/host_side.py`): a namespace playing the host runs
`HostNetwork`; a "public" namespace serves HTTP on 198.18.0.10:8080 (a body sent with sendfile); stand-in
sandbox namespaces are attached through veths, NAT and the host table:
- host: the client in the host namespace, straight to the public side (no NAT, no sandbox rules);
- sandbox, open: a stand-in in mode `open` (veth, forwarding, masquerade, the host table);
- sandbox, filtered: a stand-in in mode `filtered` (also the namespace's own nft table; the policy
  denies by default and allows the server's address by CIDR).
Throughput: `curl` downloading the body (`speed_download`), interleaved rounds. Connect latency: a TCP
connect from a socket made inside the namespace (created beforehand, so only the handshake is timed).
Also the time `connect_sandbox` takes per mode (what networking adds to a create).
Goal: sandbox (open) throughput >= 0.8x the host's. Root only (namespaces, veths, nftables).

    python benchmarks/bench_hostnet.py [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import REPO, Goal, Report, median, parse_args, percentile, us
from bench_egress import LoopThread

from osbox.server.egress.hostnet import HostNetwork
from osbox.server.egress.netns import netns_socket_factory
from osbox.server.egress.policy import Policy, policy_from_body
from osbox.server.egress.sandbox_network import NetworkMode, SandboxNetwork, connect_sandbox

sys.path.insert(0, str(REPO))
from tests.integration.egress.host_side import host_side, stand_in_sandbox
from tests.integration.egress.netns import netns_missing, netns_path

SERVER = ("198.18.0.10", 8080)
GOAL_RATIO = 0.8


async def bulk_server(public: str, size: int) -> tuple[asyncio.Server, Callable[[], None]]:
    """An HTTP server in `public` answering every GET with `size` bytes, sent with sendfile."""
    fd = os.memfd_create("bench-body")
    os.ftruncate(fd, size)
    body = os.fdopen(fd, "rb")
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size
    loop = asyncio.get_running_loop()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            await writer.drain()
            await loop.sendfile(writer.transport, body, offset=0)  # one request at a time
        writer.close()

    sock = netns_socket_factory(netns_path(public))(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(SERVER)
    sock.listen(256)
    sock.setblocking(False)
    server = await asyncio.start_server(serve, sock=sock)
    return server, body.close


def download_speed(netns: str) -> float:
    """Bytes per second of one download of the body from inside `netns`."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download}",
         f"http://{SERVER[0]}:{SERVER[1]}/"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return float(done.stdout)


def connect_times(netns: str, count: int) -> list[float]:
    """Seconds per TCP connect to the server from sockets made inside `netns`."""
    factory = netns_socket_factory(netns_path(netns))
    socks = [factory(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    times = []
    try:
        for sock in socks:
            start = time.perf_counter()
            sock.connect(SERVER)
            times.append(time.perf_counter() - start)
            sock.close()
    finally:
        for sock in socks:
            sock.close()
    return times


def setup_times(
    runner: LoopThread, host: HostNetwork, netns: str, mode: NetworkMode, policy: Policy, count: int
) -> list[float]:
    """Seconds per `connect_sandbox` in `mode` (what a create will add), each undone after (untimed)."""
    times = []
    for i in range(count):
        start = time.perf_counter()
        network = runner.call(
            connect_sandbox(host, f"bench-setup-{i}", netns_path(netns), mode, policy=policy)
        )
        times.append(time.perf_counter() - start)
        runner.call(network.close())
    return times


def main() -> None:
    args = parse_args(__doc__ or "")
    rounds, size, connects = (3, 64 << 20, 50) if args.quick else (8, 256 << 20, 200)
    report = Report.start("hostnet", args.quick)
    missing = netns_missing()
    if missing is not None:
        report.notes.append(f"skipped: {missing}")
        report.emit()
        return
    runner = LoopThread()
    stack = contextlib.AsyncExitStack()
    try:
        side = runner.call(stack.enter_async_context(host_side()))
        server, release = runner.call(bulk_server(side.names["public"], size))
        stack.callback(release)
        stack.callback(server.close)
        opened = runner.call(stack.enter_async_context(stand_in_sandbox()))
        filtered = runner.call(stack.enter_async_context(stand_in_sandbox()))
        spare = runner.call(stack.enter_async_context(stand_in_sandbox()))
        policy = policy_from_body(
            {"defaultAction": "deny", "egress": [{"action": "allow", "target": f"{SERVER[0]}/32"}]}
        )
        networks: list[SandboxNetwork] = [
            runner.call(connect_sandbox(side.network, "bench-open", netns_path(opened), "open")),
            runner.call(
                connect_sandbox(
                    side.network, "bench-filtered", netns_path(filtered), "filtered", policy=policy
                )
            ),
        ]
        for network in networks:
            stack.push_async_callback(network.close)
        variants = {"host": side.host, "sandbox, open": opened, "sandbox, filtered": filtered}
        speeds: dict[str, list[float]] = {label: [] for label in variants}
        latencies: dict[str, list[float]] = {label: [] for label in variants}
        for netns in variants.values():
            download_speed(netns)  # warm-up: conntrack, neighbour entries, page cache
            connect_times(netns, 10)
        for round_no in range(rounds):
            order = list(variants.items())
            if round_no % 2:
                order.reverse()
            for label, netns in order:
                speeds[label].append(download_speed(netns))
                latencies[label] += connect_times(netns, connects)

        figures: dict[str, Any] = {}
        for label in variants:
            mib_s = median(speeds[label]) / (1 << 20)
            p50, p95 = median(latencies[label]), percentile(latencies[label], 95)
            figures[label] = {
                "throughput_mib_s": mib_s,
                "connect_p50_us": p50 * 1e6,
                "connect_p95_us": p95 * 1e6,
            }
            print(f"{label:>18}: {mib_s:8.0f} MiB/s, connect p50 {us(p50)}, p95 {us(p95)}")
        for label in ("sandbox, open", "sandbox, filtered"):
            ratio = median(speeds[label]) / median(speeds["host"])
            latency = median(latencies[label]) / median(latencies["host"])
            figures[f"{label} / host"] = {"throughput": ratio, "connect_p50": latency}
            print(f"{label} / host: throughput {ratio:.2f}x, connect p50 {latency:.2f}x")
        for mode in ("open", "filtered"):
            setup = setup_times(runner, side.network, spare, mode, policy, 5 if args.quick else 20)
            p50, p95 = median(setup), percentile(setup, 95)
            figures[f"connect_sandbox {mode}"] = {"p50_ms": p50 * 1e3, "p95_ms": p95 * 1e3}
            print(f"connect_sandbox({mode}) (veth, addresses, nft, resolver): p50 {p50 * 1e3:.1f} ms, "
                  f"p95 {p95 * 1e3:.1f} ms")  # fmt: skip
        report.figures.update(figures)
        ratio = figures["sandbox, open / host"]["throughput"]
        report.goals.append(Goal("sandbox (open) throughput / host", ratio, GOAL_RATIO, ">=", "x"))
    finally:
        runner.call(stack.aclose())
        runner.stop()
    report.emit()


if __name__ == "__main__":
    main()
