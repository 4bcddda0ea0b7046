"""What the credential proxy costs: HTTPS from a sandbox whose requests get a credential injected, against
the same request from a sandbox without the proxy, and from the host itself.

The set-up is the integration tests' (`tests/integration/egress/`): a "host" namespace playing the
machine, a "public" one serving the fake internet, an in-process `AsyncLocalServer` (mode `open`) whose
credential proxy trusts the fake internet's CA. In "public", a keep-alive HTTPS server of this benchmark's
(a subprocess: `SERVER` below) answers `allowed.test:8443` with a certificate of that CA: `GET /` a small
body saying whether an `Authorization` header arrived, `GET /bulk` a large body. Three clients run the
same probe (`PROBE`, Python's `http.client` over `ssl`, connecting to the address with the name as SNI):
- proxied: a sandbox created with `credentialProxy`, whose vault binds a bearer credential to
  allowed.test:8443 (each request goes through mitmdump, which terminates TLS, verifies the upstream and
  adds the header);
- sandbox: a sandbox without the proxy (its connection goes straight out through its veth and NAT);
- host: the probe in the host namespace (no sandbox network at all).
Measured per client, interleaved in rounds (the order alternating): latency of a small GET on a reused
connection, of a new connection + TLS handshake + GET, and the throughput of a large body's download.
The probe checks that only the proxied client's requests carried the header.
Goals: the proxy adds at most 10 ms to the p50 of a request on a reused connection (an API call, what
injection is for, takes tens to hundreds of ms upstream); proxied throughput >= 0.25x the sandbox's
(mitmproxy is Python: it decrypts and re-encrypts every byte).
Root only (namespaces, nftables).

    python benchmarks/bench_credential_proxy.py [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from _common import REPO, Goal, Report, image_mirror, median, parse_args, percentile, us
from cryptography.hazmat.primitives import serialization

from osbox import AsyncSandbox

sys.path.insert(0, str(REPO))
from tests.integration.egress.fake_internet import HOSTS
from tests.integration.egress.fake_tls import _ca, _leaf
from tests.integration.egress.netns import netns_missing
from tests.integration.egress.served import API_KEY, Served, fake_public, served_internet

from osbox.server.egress.credential_proxy import find_mitmdump

NAME = "allowed.test"
PORT = 8443
GOAL_RATIO = 0.25
GOAL_ADDED_MS = 10.0
SECRET = "bench-" + "0123456789abcdef"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SERVER = r"""
import http.server, socket, ssl, sys
leaf, address, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
bulk = b"x" * (1 << 20)

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self):
        if self.path == "/bulk":
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            for _ in range(size >> 20):
                self.wfile.write(bulk)
            return
        body = b"auth" if self.headers.get("Authorization") else b"none"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        sock, peer = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return context.wrap_socket(sock, server_side=True), peer

context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(leaf)
server = Server((address, port), Handler)
print("ready", flush=True)
server.serve_forever()
"""
PROBE = r"""
import http.client, json, socket, ssl, sys, time
address, name, port, cafile, count, rounds = sys.argv[1:7]
port, count, rounds = int(port), int(count), int(rounds)
context = ssl.create_default_context(cafile=cafile)

class Connection(http.client.HTTPSConnection):
    def connect(self):  # to the address, verified for the name (SNI)
        sock = socket.create_connection((address, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(sock, server_hostname=name)

def get(connection, path):
    connection.request("GET", path)
    response = connection.getresponse()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status}")
    total, body = 0, b""
    while chunk := response.read(1 << 20):
        total += len(chunk)
        body = body or chunk[:16]
    return total, body

reused, fresh, speeds = [], [], []
connection = Connection(name, port, context=context)
_, seen = get(connection, "/")
for _ in range(count):
    start = time.perf_counter()
    get(connection, "/")
    reused.append(time.perf_counter() - start)
for _ in range(count):
    start = time.perf_counter()
    other = Connection(name, port, context=context)
    get(other, "/")
    other.close()
    fresh.append(time.perf_counter() - start)
for _ in range(rounds):
    start = time.perf_counter()
    size, _ = get(connection, "/bulk")
    speeds.append(size / (time.perf_counter() - start))
print(json.dumps({"auth": seen.decode(), "reused": reused, "new": fresh, "speeds": speeds}))
"""
CLIENTS = ("host", "sandbox", "proxied")


@contextlib.asynccontextmanager
async def bulk_server(public: str, directory: Path, size: int) -> AsyncIterator[Path]:
    """The benchmark's HTTPS server in `public`; yields the CA file its certificate chains to."""
    ca_key, ca = _ca("osbox bench CA")
    ca_file = directory / "bench-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf = _leaf(NAME, ca_key, ca, directory)
    script = directory / "server.py"
    script.write_text(SERVER)
    argv = ["ip", "netns", "exec", public, sys.executable, str(script), str(leaf), HOSTS[NAME], str(PORT)]
    process = await asyncio.create_subprocess_exec(*argv, str(size), stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        if await asyncio.wait_for(process.stdout.readline(), 30) != b"ready\n":
            raise RuntimeError("the benchmark's HTTPS server did not start")
        yield ca_file
    finally:
        process.kill()
        await process.wait()


def write_probe(directory: Path, ca_file: Path) -> str:
    """The host's probe and bundle (the system's CAs and the bench CA) in `directory`; the bench CA."""
    ca_pem = ca_file.read_text()
    (directory / "probe.py").write_text(PROBE)
    (directory / "both.pem").write_text(Path(SYSTEM_BUNDLE).read_text() + ca_pem)
    return ca_pem


async def host_probe(host: str, directory: Path, argv: list[str]) -> dict[str, Any]:
    done = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", host, sys.executable, str(directory / "probe.py"), *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await done.communicate()
    if done.returncode != 0:
        raise RuntimeError(f"the host's probe failed: {err.decode()}")
    result: dict[str, Any] = json.loads(out)
    return result


async def sandbox_probe(sandbox: AsyncSandbox, argv: list[str]) -> dict[str, Any]:
    done = await sandbox.run("python3 /tmp/probe.py " + " ".join(argv), timeout=600)
    if done.exit_code != 0:
        raise RuntimeError(f"the sandbox's probe failed: {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def prepare(sandbox: AsyncSandbox, ca_pem: str) -> None:
    """The probe and a bundle trusting the system's CAs (the proxy's among them) and the bench CA."""
    await sandbox.files.write("/tmp/probe.py", PROBE)
    await sandbox.files.write("/tmp/bench-ca.pem", ca_pem)
    done = await sandbox.run(f"cat {SYSTEM_BUNDLE} /tmp/bench-ca.pem > /tmp/both.pem")
    if done.exit_code != 0:
        raise RuntimeError(done.stderr)


async def measure(report: Report, quick: bool) -> None:
    count, rounds, bulk_rounds, size = (30, 3, 1, 32 << 20) if quick else (100, 6, 2, 128 << 20)
    with tempfile.TemporaryDirectory(prefix="osbox-bench-proxy-") as temp:
        directory = Path(temp)
        async with (
            fake_public() as names,
            bulk_server(names["public"], directory, size) as ca_file,
            served_internet(names, network="open", credential_proxy_upstream_ca=ca_file) as served,
        ):
            await run_clients(served, names["host"], directory, ca_file, count, rounds, bulk_rounds, report)


async def run_clients(
    served: Served,
    host: str,
    directory: Path,
    ca_file: Path,
    count: int,
    rounds: int,
    bulk_rounds: int,
    report: Report,
) -> None:
    url = f"{served.server.base_url}/v1"
    fields: dict[str, Any] = {"image": "python:3.11", "entrypoint": ["sleep", "infinity"], "api_key": API_KEY}
    ca_pem = await asyncio.to_thread(write_probe, directory, ca_file)
    async with (
        await AsyncSandbox.create(base_url=url, **fields) as plain,
        await AsyncSandbox.create(base_url=url, credential_proxy=True, **fields) as proxied,
    ):
        await proxied.egress.set_credential("token", SECRET)
        binding = {"name": "bench", "match": {"hosts": [NAME], "ports": [PORT]}}
        await proxied.egress.set_binding({**binding, "auth": {"type": "bearer", "credential": "token"}})
        for sandbox in (plain, proxied):
            await prepare(sandbox, ca_pem)

        def argv(bundle: str) -> list[str]:
            return [HOSTS[NAME], NAME, str(PORT), bundle, str(count), str(bulk_rounds)]

        async def probe(client: str) -> dict[str, Any]:
            if client == "host":
                return await host_probe(host, directory, argv(str(directory / "both.pem")))
            return await sandbox_probe(plain if client == "sandbox" else proxied, argv("/tmp/both.pem"))

        for client in CLIENTS:
            await probe(client)  # warm-up, not counted
        results: dict[str, dict[str, list[float]]] = {
            c: {"reused": [], "new": [], "speeds": []} for c in CLIENTS
        }
        for round_no in range(rounds):
            for client in reversed(CLIENTS) if round_no % 2 else CLIENTS:
                found = await probe(client)
                expected = "auth" if client == "proxied" else "none"
                if found["auth"] != expected:
                    raise RuntimeError(f"{client}: the header was {found['auth']!r}, not {expected!r}")
                for key in ("reused", "new", "speeds"):
                    results[client][key] += found[key]
    summarize(results, count, rounds, bulk_rounds, report)


def summarize(
    results: dict[str, dict[str, list[float]]], count: int, rounds: int, bulk_rounds: int, report: Report
) -> None:
    figures: dict[str, Any] = {}
    for key, what in (("reused", "reused connection"), ("new", "new connection (TCP + TLS + GET)")):
        print(f"\nGET / on a {what}, {count * rounds} each (p50 / p95)")
        for client in CLIENTS:
            values = results[client][key]
            print(f"  {client:8s} {us(median(values)):>10s} {us(percentile(values, 95)):>10s}")
            figures[f"{key}_{client}_p50_us"] = round(median(values) * 1e6, 1)
            figures[f"{key}_{client}_p95_us"] = round(percentile(values, 95) * 1e6, 1)
        for baseline in ("sandbox", "host"):
            ratio = median(results["proxied"][key]) / median(results[baseline][key])
            figures[f"{key}_proxied_vs_{baseline}"] = round(ratio, 2)
    print(f"\nGET /bulk, {bulk_rounds * rounds} each (MiB/s, median)")
    for client in CLIENTS:
        speed = median(results[client]["speeds"]) / 2**20
        print(f"  {client:8s} {speed:10.0f}")
        figures[f"bulk_{client}_mib_s"] = round(speed, 1)
    ratio = median(results["proxied"]["speeds"]) / median(results["sandbox"]["speeds"])
    figures["bulk_proxied_vs_sandbox"] = round(ratio, 3)
    figures["bulk_proxied_vs_host"] = round(
        median(results["proxied"]["speeds"]) / median(results["host"]["speeds"]), 3
    )
    report.figures["credential_proxy"] = figures
    added = (median(results["proxied"]["reused"]) - median(results["sandbox"]["reused"])) * 1000
    figures["reused_added_by_proxy_ms"] = round(added, 2)
    report.goals.append(Goal("p50 added by the proxy, reused connection", added, GOAL_ADDED_MS, "<=", " ms"))
    goal = Goal("proxied HTTPS throughput vs the same sandbox without", ratio, GOAL_RATIO, ">=", "x")
    report.goals.append(goal)


def main() -> None:
    args = parse_args(__doc__ or "")
    report = Report.start("credential_proxy", args.quick)
    missing = netns_missing() or (None if find_mitmdump() else "mitmdump is not installed (make install)")
    if missing is not None:
        report.notes.append(f"skipped: {missing}")
    else:
        with image_mirror():
            asyncio.run(measure(report, args.quick))
    report.emit()


if __name__ == "__main__":
    main()
