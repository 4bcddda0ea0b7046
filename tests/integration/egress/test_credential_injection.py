"""Credential injection through a real `osbox serve`: image sandboxes created with `credentialProxy`
curl HTTPS hosts of the fake internet (fake_tls.py), and the hosts see what arrived."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from osbox import AsyncEgressClient, AsyncSandbox, PreconditionFailedError
from osbox.server.egress.credential_proxy import find_mitmdump
from tests.polling import wait_until_async

from .fake_internet import HOSTS
from .fake_tls import PLAIN_PORT, FakeTLS, tls_servers
from .netns import netns_missing, run_in
from .served import API_KEY, Served, fake_public, served_internet

pytestmark = pytest.mark.timeout(180)

SECRET = "tok-" + "7f3c9a1e5b"  # never written whole in a sandbox-visible place by the test itself
CURL = "curl -sS --max-time 10"
IMAGE = "python:3.11"


@dataclass
class Injecting:
    served: Served
    tls: FakeTLS


def _skip_unless_possible() -> None:
    reason = netns_missing() or (None if find_mitmdump() else "mitmdump is not installed (make install)")
    if reason is not None:
        pytest.skip(reason)


@contextlib.asynccontextmanager
async def _injecting(directory: Path) -> AsyncIterator[Injecting]:
    _skip_unless_possible()
    async with (
        fake_public() as names,
        tls_servers(names["public"], directory) as tls,
        _served(names, tls) as served,
    ):
        yield Injecting(served, tls)


def _served(
    names: dict[str, str], tls: FakeTLS, **config: Any
) -> contextlib.AbstractAsyncContextManager[Served]:
    return served_internet(names, network="open", credential_proxy_upstream_ca=tls.ca_file, **config)


@pytest.fixture
async def injecting(tmp_path: Path) -> AsyncIterator[Injecting]:
    """A server (mode `open`) whose credential proxy trusts the fake internet's CA, and its HTTPS hosts."""
    async with _injecting(tmp_path) as built:
        yield built


async def _sandbox(served: Served, *, proxied: bool = True) -> AsyncSandbox:
    return await served.sandbox(image=IMAGE, entrypoint=["sleep", "600"], credential_proxy=proxied)


BEARER: dict[str, Any] = {
    "name": "allowed",
    "match": {"hosts": ["allowed.test"]},
    "auth": {"type": "bearer", "credential": "token"},
}


async def _vault(sandbox: AsyncSandbox, *bindings: dict[str, Any]) -> AsyncEgressClient:
    egress = await sandbox.egress.client()
    await egress.create_credential_vault(
        credentials=[{"name": "token", "source": {"type": "inline", "value": SECRET}}],
        bindings=list(bindings),
    )
    return egress


def _proxy_processes(prefix: str) -> list[int]:
    """Processes whose command line names the run dir of the credential proxy of the server whose
    network prefix is `prefix` (its mitmdump); none may be left without their run dir either."""
    marker = f"/osbox-proxy-{prefix}-".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if marker in cmdline.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Uid:"))


async def test_a_bearer_binding_reaches_the_host_and_never_the_sandbox(injecting: Injecting) -> None:
    served, tls = injecting.served, injecting.tls
    async with await _sandbox(served) as sandbox:
        await _vault(sandbox, BEARER)
        done = await sandbox.run(f"{CURL} https://allowed.test/v1/things")
        assert done.exit_code == 0, done.stderr
        assert "GET /v1/things HTTP/1.1" in done.stdout
        assert f"Authorization: Bearer {SECRET}" in tls.received["allowed.test"][-1]
        # The sandbox trusts the proxy's CA through its bundle and the usual variables ...
        env = (await sandbox.run("env")).stdout
        assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in env
        assert "REQUESTS_CA_BUNDLE=" in env and "NODE_EXTRA_CA_CERTS=" in env
        # ... and never sees the secret: not in its environment, nor in any file it can read.
        assert SECRET not in env
        grep = await sandbox.run(f"grep -rlsF {SECRET} /etc /tmp /root /home /var /run /workspace || true")
        assert grep.stdout.strip() == ""
        python = await sandbox.run(
            "python3 -c \"import urllib.request; print(urllib.request.urlopen('https://allowed.test/').status)\""
        )
        assert python.stdout.strip() == "200", python.stderr


async def test_an_http_binding_needs_the_name_to_resolve_to_the_destination(injecting: Injecting) -> None:
    served, tls = injecting.served, injecting.tls
    plain = {**BEARER, "match": {"hosts": ["allowed.test"], "schemes": ["http"], "ports": [PLAIN_PORT]}}
    async with await _sandbox(served) as sandbox:
        await _vault(sandbox, plain)
        done = await sandbox.run(f"{CURL} http://allowed.test:{PLAIN_PORT}/")
        assert done.exit_code == 0, done.stderr
        assert f"Authorization: Bearer {SECRET}" in tls.received["http://allowed.test"][-1]
        # Another server named as allowed.test in the Host header: allowed.test is not its address.
        spoofed = f"{CURL} -H 'Host: allowed.test' http://{HOSTS['other.test']}:{PLAIN_PORT}/"
        assert (await sandbox.run(spoofed)).exit_code == 0
        assert "Authorization" not in tls.received["http://other.test"][-1]


async def test_a_host_without_a_binding_is_spliced_not_intercepted(injecting: Injecting) -> None:
    served, tls = injecting.served, injecting.tls
    async with await _sandbox(served) as sandbox:
        await _vault(sandbox, BEARER)
        await sandbox.files.write("/tmp/fake-ca.pem", tls.ca_pem)
        # Verified against the fake internet's CA alone: the certificate is the host's own, untouched.
        done = await sandbox.run(f"{CURL} --cacert /tmp/fake-ca.pem https://other.test/")
        assert done.exit_code == 0, done.stderr
        assert "Authorization" not in tls.received["other.test"][-1]


async def test_a_binding_removed_by_patch_stops_at_the_next_request(injecting: Injecting) -> None:
    served, tls = injecting.served, injecting.tls
    async with await _sandbox(served) as sandbox:
        egress = await _vault(sandbox, BEARER)
        # Trusted either way: the proxy's CA (in the bundle) while intercepted, the host's CA after.
        await sandbox.files.write("/tmp/fake-ca.pem", tls.ca_pem)
        await sandbox.run("cat /etc/ssl/certs/ca-certificates.crt /tmp/fake-ca.pem > /tmp/both.pem")
        assert (await sandbox.run(f"{CURL} --cacert /tmp/both.pem https://allowed.test/")).exit_code == 0
        assert "Authorization: Bearer" in tls.received["allowed.test"][-1]
        state = await egress.patch_credential_vault(bindings={"delete": ["allowed"]})
        assert state.bindings == []
        done = await sandbox.run(f"{CURL} --cacert /tmp/both.pem https://allowed.test/")
        assert done.exit_code == 0, done.stderr
        assert "Authorization" not in tls.received["allowed.test"][-1]


async def test_an_upstream_with_a_wrong_certificate_never_gets_the_secret(injecting: Injecting) -> None:
    served, tls = injecting.served, injecting.tls
    impostor = {**BEARER, "name": "impostor", "match": {"hosts": ["denied.test"]}}
    async with await _sandbox(served) as sandbox:
        await _vault(sandbox, impostor)
        done = await sandbox.run(f"{CURL} -o /dev/null -w '%{{http_code}}' https://denied.test/")
        assert done.stdout.strip() != "200"
        assert all(SECRET not in head for head in tls.received["denied.test"])


async def test_bindings_are_refused_without_the_proxy(injecting: Injecting) -> None:
    async with await _sandbox(injecting.served, proxied=False) as sandbox:
        egress = await sandbox.egress.client()
        with pytest.raises(PreconditionFailedError, match="credentialProxy"):
            await egress.create_credential_vault(
                credentials=[{"name": "token", "source": {"type": "inline", "value": SECRET}}],
                bindings=[BEARER],
            )


async def test_nothing_is_left_after_delete_and_stop(tmp_path: Path) -> None:
    _skip_unless_possible()
    async with fake_public() as names, tls_servers(names["public"], tmp_path) as tls:
        async with _served(names, tls) as served:
            host, table = served.host, f"{served.prefix}_intercept"
            async with await _sandbox(served) as sandbox:
                await _vault(sandbox, BEARER)
                listed = await run_in(host, "nft", "list", "set", "inet", table, "intercepted")
                assert ". 443" in listed.stdout
                proxies = _proxy_processes(served.prefix)
                assert proxies != []
                assert all(_uid(pid) != 0 for pid in proxies)  # it parses what sandboxes send: never root
            listed = await run_in(host, "nft", "list", "set", "inet", table, "intercepted")
            assert ". 443" not in listed.stdout
            assert _proxy_processes(served.prefix) == []
            # Again, and the server stops with the sandbox (and so the proxy) running.
            sandbox = await _sandbox(served)
            sandbox.keep = True
            await _vault(sandbox, BEARER)
            assert _proxy_processes(served.prefix) != []
        await sandbox.close()
        assert (await run_in(host, "nft", "list", "table", "inet", table)).returncode != 0
        assert _proxy_processes(served.prefix) == []
        assert [
            d for d in os.listdir(tempfile.gettempdir()) if d.startswith(f"osbox-proxy-{served.prefix}-")
        ] == []


async def test_a_filtered_sandbox_gets_injection_and_keeps_its_policy(injecting: Injecting) -> None:
    served, tls = injecting.served, injecting.tls
    policy = {"defaultAction": "deny", "egress": [{"action": "allow", "target": "allowed.test"}]}
    other = {**BEARER, "name": "other", "match": {"hosts": ["other.test"]}}
    async with await served.sandbox(
        image=IMAGE, entrypoint=["sleep", "600"], credential_proxy=True, network_policy=policy
    ) as sandbox:
        await _vault(sandbox, BEARER, other)
        done = await sandbox.run(f"{CURL} https://allowed.test/")
        assert done.exit_code == 0, done.stderr
        assert f"Authorization: Bearer {SECRET}" in tls.received["allowed.test"][-1]
        assert (await sandbox.run(f"{CURL} https://other.test/")).exit_code == 6  # a binding allows nothing
        assert tls.received["other.test"] == []


async def test_a_readopted_sandbox_keeps_its_bindings(reachable_dir: Path, tmp_path: Path) -> None:
    _skip_unless_possible()
    async with fake_public() as names, tls_servers(names["public"], tmp_path) as tls:
        config: dict[str, Any] = {"data_dir": reachable_dir, "prefix": "otci", "keep": True}
        async with served_internet(names, credential_proxy_upstream_ca=tls.ca_file, **config) as first:
            sandbox = await _sandbox(first)
            sandbox.keep = True
            await _vault(sandbox, BEARER)
            await sandbox.close()
        assert _proxy_processes("otci") == []  # the server took its proxy with it
        async with served_internet(names, credential_proxy_upstream_ca=tls.ca_file, **config) as second:
            url = f"{second.server.base_url}/v1"
            again = await AsyncSandbox.connect(sandbox.id, keep=False, base_url=url, api_key=API_KEY)
            async with again:
                done = await again.run(f"{CURL} https://allowed.test/")
                assert done.exit_code == 0, done.stderr
                assert f"Authorization: Bearer {SECRET}" in tls.received["allowed.test"][-1]


async def _events(served: Served, sandbox: AsyncSandbox) -> str:
    async with served.lifecycle() as lifecycle:
        return (await lifecycle.get_diagnostic_events(sandbox.id)).content or ""


async def _event(served: Served, sandbox: AsyncSandbox, text: str) -> str:
    """The sandbox's diagnostics events once they hold `text`."""

    async def recorded() -> str | None:
        events = await _events(served, sandbox)
        return events if text in events else None

    return await wait_until_async(recorded, timeout=40, what=f"an event saying {text!r}")


async def _injected(sandbox: AsyncSandbox, tls: FakeTLS) -> bool:
    done = await sandbox.run(f"{CURL} https://allowed.test/")
    assert done.exit_code == 0, done.stderr
    return f"Authorization: Bearer {SECRET}" in tls.received["allowed.test"][-1]


async def test_a_crashed_proxy_is_restarted_and_fails_closed_while_down(tmp_path: Path) -> None:
    _skip_unless_possible()
    # The first crash in a row is restarted at once, the second waits an hour: the test sees it down.
    delays = (0.0, 3600.0)
    async with (
        fake_public() as names,
        tls_servers(names["public"], tmp_path) as tls,
        _served(names, tls, credential_proxy_restart_delays=delays) as served,
        await _sandbox(served) as first,
        await _sandbox(served) as second,
    ):
        await _vault(first, BEARER)
        await _vault(second, {**BEARER, "match": {"hosts": ["other.test"]}})
        [pid] = _proxy_processes(served.prefix)
        os.kill(pid, signal.SIGKILL)
        await _event(served, first, "injection works again")
        [pid] = _proxy_processes(served.prefix)
        # Every sandbox's rules were sent again: both are injected on their next connection.
        assert await _injected(first, tls)
        assert (await second.run(f"{CURL} https://other.test/")).exit_code == 0
        assert f"Authorization: Bearer {SECRET}" in tls.received["other.test"][-1]
        for sandbox in (first, second):
            events = await _events(served, sandbox)
            assert "credential_proxy_down" in events and "credential_proxy_restarted" in events

        # Again at once: the back-off holds it down, and the sandboxes' events say so.
        os.kill(pid, signal.SIGKILL)
        assert "failure 2 in a row" in await _event(served, first, "restarted in 3600 s")
        assert _proxy_processes(served.prefix) == []
        # Meanwhile a bound connection is refused: neither sent without its header nor unverified.
        count = len(tls.received["allowed.test"])
        down = await first.run(f"{CURL} https://allowed.test/")
        assert down.exit_code == 7, (down.exit_code, down.stderr)  # connection refused
        insecure = await first.run(f"{CURL} --insecure https://allowed.test/")
        assert insecure.exit_code == 7
        assert len(tls.received["allowed.test"]) == count

        # A change of the vault starts it again at once, with every rule.
        await first.egress.set_credential("spare", "spare-value")
        assert _proxy_processes(served.prefix) != []
        assert await _injected(first, tls)


async def test_the_proxy_log_is_capped_and_never_holds_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _skip_unless_possible()
    caplog.set_level(logging.DEBUG)  # the server's log and the proxy's (it follows) at their most verbose
    limit = 4096
    async with (
        fake_public() as names,
        tls_servers(names["public"], tmp_path) as tls,
        _served(names, tls, credential_proxy_log_max_bytes=limit) as served,
    ):
        log = served.server.data_dir / "credential-proxy" / "proxy.log"
        async with await _sandbox(served) as sandbox:
            await _vault(sandbox, BEARER, {**BEARER, "name": "plain", "match": {"hosts": ["other.test"]}})
            for _ in range(3):
                assert await _injected(sandbox, tls)
            # Connections the proxy refuses upstream (an impostor's certificate) log warnings.
            impostor = {**BEARER, "name": "impostor", "match": {"hosts": ["denied.test"]}}
            egress = await sandbox.egress.client()
            await egress.patch_credential_vault(bindings={"add": [impostor]})
            for _ in range(12):
                await sandbox.run(f"{CURL} https://denied.test/")
        rotated = log.with_name("proxy.log.1")
        assert log.stat().st_size > 0 and rotated.exists()  # at debug it said enough to be rotated
        for path in (log, rotated):
            assert path.stat().st_size <= limit
            assert path.stat().st_mode & 0o777 == 0o600
            assert SECRET not in path.read_text(errors="replace")
    assert any(r.name.startswith("osbox.server") for r in caplog.records)
    assert SECRET not in caplog.text


async def test_the_cli_binds_a_credential_that_the_proxy_injects(injecting: Injecting) -> None:
    served, tls = injecting.served, injecting.tls

    async def osbox(*argv: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("osbox")),
            "egress",
            *argv,
            "--url",
            f"{served.server.base_url}/v1",
            "--api-key",
            API_KEY,
            env={**os.environ, "TOKEN": SECRET},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async with await _sandbox(served) as sandbox:
        await osbox("credential-set", sandbox.id, "token", "--from-env", "TOKEN")
        shown = await osbox(
            "binding-set", sandbox.id, "api", "--host", "allowed.test", "--path", "/v1/*",
            "--key-header", "X-Api-Key=token",
        )  # fmt: skip
        assert shown.splitlines()[1:] == [
            "credential token inline ******** (revision 1)",
            "binding api allowed.test /v1/* apiKey X-Api-Key (revision 2)",
        ]
        assert SECRET not in shown
        assert (await sandbox.run(f"{CURL} https://allowed.test/v1/things")).exit_code == 0
        assert f"X-Api-Key: {SECRET}" in tls.received["allowed.test"][-1]
        assert (await sandbox.run(f"{CURL} https://allowed.test/elsewhere")).exit_code == 0
        assert "X-Api-Key" not in tls.received["allowed.test"][-1]
        # Replaced by name: custom headers now, every path.
        replaced = await osbox(
            "binding-set", sandbox.id, "api", "--host", "allowed.test",
            "--header", "X-One=token", "--header", "X-Two=token",
        )  # fmt: skip
        assert "binding api allowed.test customHeaders (revision 3)" in replaced
        assert (await sandbox.run(f"{CURL} https://allowed.test/elsewhere")).exit_code == 0
        head = tls.received["allowed.test"][-1]
        assert f"X-One: {SECRET}" in head and f"X-Two: {SECRET}" in head and "X-Api-Key" not in head
        await osbox("binding-rm", sandbox.id, "api")
        await sandbox.files.write("/tmp/fake-ca.pem", tls.ca_pem)
        assert (
            await sandbox.run(f"{CURL} --cacert /tmp/fake-ca.pem https://allowed.test/v1/x")
        ).exit_code == 0
        assert "X-Api-Key" not in tls.received["allowed.test"][-1]


async def test_a_streamed_upload_gets_its_header_too(injecting: Injecting) -> None:
    served, tls = injecting.served, injecting.tls
    async with await _sandbox(served) as sandbox:
        await _vault(sandbox, BEARER)
        # Over 1 MiB: the proxy streams the body, so the header goes with the request's head.
        await sandbox.run("head -c 3000000 /dev/zero > /tmp/big")
        await sandbox.run(f"{CURL} --data-binary @/tmp/big https://allowed.test/upload")
        heads = [head for head in tls.received["allowed.test"] if head.startswith("POST /upload")]
        assert heads and f"Authorization: Bearer {SECRET}" in heads[-1]
        assert "Content-Length: 3000000" in heads[-1]
