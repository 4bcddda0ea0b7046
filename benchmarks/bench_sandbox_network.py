"""Sandbox networks end to end: real bwrap sandboxes of an `osbox serve` reaching a fake internet.

As a user meets it: `osbox serve --network open` is a subprocess (warm pool 2, the default), as in
`bench_sandbox_start.py`, and the sync clients talk to it over its loopback. Both run inside a network
namespace the benchmark makes to play the machine ("host"), so the machine's own routes and nftables are
never touched: its uplink `to-pub` leads, through a default route, to a "public" namespace serving DNS
(198.18.0.2, the server's `--dns-upstream`) and HTTP (198.18.0.10). Measured, each against a baseline of
the same run, interleaved:
- create -> first output (as `bench_sandbox_start.py`: create, endpoint, execd client, first stdout
  of `echo ready`) with a policy (default deny, one name and one CIDR allowed) vs without a network
  (`osbox.network=none`) and in mode `open`;
- HTTP throughput: `curl` in a sandbox (open with the default 1 CPU and with 2 CPUs, and filtered with
  the server allowed by CIDR) downloading a body vs the same `curl` in the host namespace;
- TCP connect latency: a probe script timing connects, in the sandbox vs in the host namespace;
- DNS lookup latency: the probe timing UDP queries for an allowed name through the policy resolver (from a
  filtered sandbox) vs straight to the upstream (from the host namespace).
The public side's servers run on a loop thread of this process (the server does not).
Goals: with a policy, p50 create -> first output <= 50 ms; sandbox (open) throughput >= 0.8x the host's.
Root only.

    python benchmarks/bench_sandbox_network.py [--quick]
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from _common import REPO, Goal, Report, median, ms, osbox_server, parse_args, percentile, us
from bench_egress import LoopThread
from bench_hostnet import SERVER, bulk_server

from osbox import ExecdClient, LifecycleClient

sys.path.insert(0, str(REPO))
from tests.integration.egress.fake_internet import DNS_ADDRESS, HOSTS, HOSTS_V6, public_servers
from tests.integration.egress.netns import netns_missing, netns_path, network_namespaces, run

GOAL_P50_S = 0.050
GOAL_RATIO = 0.8
POLICY = {
    "defaultAction": "deny",
    "egress": [
        {"action": "allow", "target": "allowed.test"},
        {"action": "allow", "target": f"{SERVER[0]}/32"},
    ],
}
KINDS: dict[str, dict[str, Any]] = {
    "none": {"extensions": {"osbox.network": "none"}},
    "open": {},
    "policy": {"network_policy": POLICY},
}
PROBE = """
import json, socket, sys, time
kind, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
times = []
if kind == "connect":
    for _ in range(count):
        sock = socket.socket()
        start = time.perf_counter()
        sock.connect((host, port))
        times.append(time.perf_counter() - start)
        sock.close()
else:
    query = b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00"
    query += b"\\x07allowed\\x04test\\x00\\x00\\x01\\x00\\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
        for _ in range(count):
            start = time.perf_counter()
            sock.send(query)
            sock.recv(512)
            times.append(time.perf_counter() - start)
print(json.dumps(times))
"""
HOST_PROBE = f"/tmp/osbox-bench-probe-{os.getpid()}.py"
CURL = ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download}", f"http://{SERVER[0]}:{SERVER[1]}/"]


#: The host's uplink: a /30 to the public side, which is the default route (the public hosts are not
#: on-link, so they are not LANs the server protects).
UPLINK = ("198.19.255.1", "198.19.255.2")
_CLONE_NEWNET = 0x40000000


@contextlib.asynccontextmanager
async def routed_internet(size: int) -> AsyncIterator[dict[str, str]]:
    """The `host` and `public` namespaces, routed, with the public DNS and HTTP servers running."""
    async with network_namespaces(["host", "public"]) as names:
        host, public = names["host"], names["public"]
        run(
            "ip", "-n", host, "link", "add", "to-pub", "type", "veth", "peer", "name", "eth0", "netns", public
        )
        run("ip", "-n", host, "addr", "add", f"{UPLINK[0]}/30", "dev", "to-pub")
        run("ip", "-n", host, "link", "set", "to-pub", "up")
        run("ip", "-n", host, "route", "add", "default", "via", UPLINK[1])
        run("ip", "-n", public, "addr", "add", f"{UPLINK[1]}/30", "dev", "eth0")
        for address in (DNS_ADDRESS[0], *HOSTS.values()):
            run("ip", "-n", public, "addr", "add", f"{address}/24", "dev", "eth0")
        for address in HOSTS_V6.values():  # served too (the host has no IPv6 route to them)
            run("ip", "-n", public, "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
        run("ip", "-n", public, "link", "set", "eth0", "up")
        async with public_servers(public):
            server, close_body = await bulk_server(public, size)
            try:
                yield names
            finally:
                server.close()
                await server.wait_closed()
                close_body()


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """This thread (and the processes it starts) in the network namespace at `netns` until the end."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net", "rb") as home, open(netns, "rb") as target:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        try:
            yield
        finally:
            libc.setns(home.fileno(), _CLONE_NEWNET)


def start_one(lifecycle: LifecycleClient, fields: dict[str, Any]) -> float:
    """Seconds from create to the first stdout of `echo ready`; the sandbox is deleted after (untimed)."""
    t0 = time.perf_counter()
    sandbox = lifecycle.create_sandbox(
        image="python:3.11", entrypoint=["sleep", "infinity"], timeout=600, **fields
    )
    try:
        if sandbox.status.state != "Running":
            raise RuntimeError(f"sandbox {sandbox.id} is {sandbox.status.state}: {sandbox.status.message}")
        endpoint = lifecycle.get_endpoint(sandbox.id, 44772)
        with ExecdClient.from_endpoint(endpoint) as execd, execd.run_command("echo ready") as stream:
            for event in stream:
                if event.type == "stdout":
                    return time.perf_counter() - t0
        raise RuntimeError("the command ended without stdout")
    finally:
        lifecycle.delete_sandbox(sandbox.id)


def in_sandbox(execd: ExecdClient, command: str) -> str:
    execution = execd.run_command(command).run()
    if execution.exit_code != 0:
        raise RuntimeError(f"{command!r} failed: {execution.stderr}")
    return execution.stdout


def in_host(host: str, argv: list[str]) -> str:
    done = subprocess.run(["ip", "netns", "exec", host, *argv], capture_output=True, text=True, check=True)
    return done.stdout


def main() -> None:
    args = parse_args(__doc__ or "")
    starts, rounds, size, probes = (6, 4, 128 << 20, 50) if args.quick else (30, 10, 512 << 20, 200)
    report = Report.start("sandbox_network", args.quick)
    missing = netns_missing()
    if missing is not None:
        report.notes.append(f"skipped: {missing}")
        report.emit()
        return
    runner = LoopThread()
    stack = contextlib.AsyncExitStack()
    try:
        names = runner.call(stack.enter_async_context(routed_internet(size)))
        options = ["--network", "open", "--dns-upstream", DNS_ADDRESS[0]]
        with (
            inside(netns_path(names["host"])),
            osbox_server(*options) as server,
            LifecycleClient(server.lifecycle_url, timeout=60) as lifecycle,
        ):
            for fields in KINDS.values():
                start_one(lifecycle, fields)  # warm-up, not counted
            start_times: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for _ in range(starts):
                for kind, fields in KINDS.items():
                    start_times[kind].append(start_one(lifecycle, fields))
            figures: dict[str, Any] = {}
            print(f"\ncreate -> first output, {starts} each (interleaved)")
            for kind, values in start_times.items():
                p50, p95 = median(values), percentile(values, 95)
                print(f"  {kind:8s} p50 {ms(p50):>10s}  p95 {ms(p95):>10s}")
                figures[f"start_{kind}_p50_ms"] = round(p50 * 1000, 2)
                figures[f"start_{kind}_p95_ms"] = round(p95 * 1000, 2)
            report.goals.append(
                Goal(
                    "p50 create -> first output with a policy",
                    median(start_times["policy"]) * 1000,
                    50,
                    "<=",
                    " ms",
                )
            )
            measure_traffic(lifecycle, names["host"], rounds, probes, figures, report)
            report.figures["sandbox_network"] = figures
    finally:
        runner.call(stack.aclose())
        runner.stop()
    report.emit()


def measure_traffic(
    lifecycle: LifecycleClient,
    host: str,
    rounds: int,
    probes: int,
    figures: dict[str, Any],
    report: Report,
) -> None:
    """Throughput, connect and DNS latency: sandboxes (open, filtered) vs the `host` namespace."""
    made = {
        # The server's default limits (1 CPU), and the same open sandbox with 2 CPUs: what the cap costs.
        "open": lifecycle.create_sandbox(image="python:3.11", entrypoint=["sleep", "infinity"], timeout=600),
        "open_2cpu": lifecycle.create_sandbox(
            image="python:3.11", entrypoint=["sleep", "infinity"], timeout=600, resource_limits={"cpu": "2"}
        ),
        "filtered": lifecycle.create_sandbox(
            image="python:3.11", entrypoint=["sleep", "infinity"], timeout=600, network_policy=POLICY
        ),
    }
    clients = {
        name: ExecdClient.from_endpoint(lifecycle.get_endpoint(s.id, 44772)) for name, s in made.items()
    }
    try:
        for execd in clients.values():
            execd.upload_file("/tmp/probe.py", PROBE)
        with open(HOST_PROBE, "w") as probe:
            probe.write(PROBE)
        speeds: dict[str, list[float]] = {"host": [], **{name: [] for name in clients}}
        for round_no in range(rounds):
            order = ["host", *clients]
            for name in reversed(order) if round_no % 2 else order:  # neither side always goes first
                if name == "host":
                    speeds[name].append(float(in_host(host, CURL)))
                else:
                    speeds[name].append(float(in_sandbox(clients[name], " ".join(CURL))))
        print(f"\nHTTP download of the body, {rounds} rounds (MiB/s, median)")
        for name, values in speeds.items():
            print(f"  {name:8s} {median(values) / 2**20:10.0f}")
            figures[f"http_{name}_mib_s"] = round(median(values) / 2**20, 1)
        ratio = median(speeds["open"]) / median(speeds["host"])
        figures["http_open_vs_host"] = round(ratio, 3)
        for name in clients:
            if name != "open":
                figures[f"http_{name}_vs_host"] = round(median(speeds[name]) / median(speeds["host"]), 3)
        report.goals.append(Goal("sandbox (open) HTTP throughput vs host", ratio, GOAL_RATIO, ">=", "x"))

        connect_args = ["connect", SERVER[0], str(SERVER[1]), str(probes)]
        host_connects = json.loads(in_host(host, ["python3", HOST_PROBE, *connect_args]))
        print(f"\nTCP connect, {probes} each (p50 / p95)")
        rows = {"host": host_connects}
        for name, execd in clients.items():
            if name == "open_2cpu":
                continue  # latency: the CPU cap does not matter
            rows[name] = json.loads(in_sandbox(execd, "python3 /tmp/probe.py " + " ".join(connect_args)))
        for name, values in rows.items():
            print(f"  {name:8s} {us(median(values)):>10s} {us(percentile(values, 95)):>10s}")
            figures[f"connect_{name}_p50_us"] = round(median(values) * 1e6, 1)

        direct = json.loads(
            in_host(
                host,
                ["python3", HOST_PROBE, "dns", DNS_ADDRESS[0], "53", str(probes)],
            )
        )
        resolver = json.loads(
            in_sandbox(clients["filtered"], f"python3 /tmp/probe.py dns 192.0.2.53 53 {probes}")
        )
        print(f"\nDNS lookup of allowed.test, {probes} each (p50 / p95)")
        for name, values in (("direct", direct), ("resolver", resolver)):
            print(f"  {name:8s} {us(median(values)):>10s} {us(percentile(values, 95)):>10s}")
            figures[f"dns_{name}_p50_us"] = round(median(values) * 1e6, 1)
        figures["dns_resolver_vs_direct"] = round(median(resolver) / median(direct), 2)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(HOST_PROBE)
        for execd in clients.values():
            execd.close()
        for sandbox in made.values():
            lifecycle.delete_sandbox(sandbox.id)


if __name__ == "__main__":
    main()
