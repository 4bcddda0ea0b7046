"""The credential proxy: credentials from the vault put into a sandbox's matching requests, on the host.

One per server, for the sandboxes created with `credentialProxy: {enabled: true}` and a network:

* a CA of the server's (`<data dir>/credential-proxy/`, 0700: `mitmproxy-ca.pem` holds its key, 0600),
  whose certificate (never its key) goes into those sandboxes' trust stores before their entrypoint;
* `mitmdump` (mitmproxy, from a virtualenv of its own: see `find_mitmdump`) in transparent mode, in the
  host's network namespace, as `nobody` (it parses what sandboxes send: never as root), with a private
  copy of the CA in a 0700 temp dir of its own, and with `injection_addon.py`: it terminates TLS only
  for names a sandbox has a binding for, verifies the upstream's certificate (`upstream_ca`: the
  system's bundle unless told), and sets the binding's headers. It runs while some sandbox has
  bindings, and gets the rules, secrets included, over a socketpair: never through a file, an argument
  or a log;
* the nft table `inet <prefix>_intercept`: the sandbox's TCP to its bindings' ports is redirected to
  the proxy (`iifname . saddr . dport` elements, the host end's source check making the address
  trustworthy), and the proxy's port takes nothing but such redirected connections.

A proxy that dies on its own is noticed at once (a task waits on the process: the child watcher, no
polling), logged, and started again on the same port with every sandbox's rules; the redirect stays
in place meanwhile, so an intercepted connection is refused (fail closed: never sent on without its
credential or unverified). Crashes in a row back off (`ProxySettings.restart_delays`) and are reported
to `ProxySettings.on_event` for the sandboxes concerned (their diagnostics events); a vault change
retries at once. Its output goes to `proxy.log` (rotated to `proxy.log.1` past
`ProxySettings.log_max_bytes`), every secret of the current rules masked: mitmdump never prints
headers (`flow_detail=0`), and the masking keeps a value out of the file even if some message quoted it.

The secrets stay out of the sandbox: it sees a certificate for the name it asked for, and its request
leaves the host with the header added.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import pwd
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .hostnet import HostNetwork
from .nft_runner import NftError, run_nft

__all__ = [
    "CredentialProxy",
    "ProxySettings",
    "ProxyUnavailable",
    "find_mitmdump",
    "render_intercept_table",
]

_log = logging.getLogger(__name__)

_ADDON = Path(__file__).with_name("injection_addon.py")
_CA_FILE = "mitmproxy-ca.pem"  # the name mitmproxy looks for in its confdir: key and certificate
_CA_CERT = "ca-cert.pem"
_UPSTREAM_CA = "upstream-ca.pem"
_SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_START_TIMEOUT = 30.0
_UPDATE_TIMEOUT = 10.0
_LOG = "proxy.log"
_MASK = "[secret]"

Rule = Mapping[str, Any]

ProxyEventSink = Callable[[Sequence[str], str, str], None]
"""Told of the proxy's crashes and recoveries: (the sandbox ids concerned, a reason code, a message)."""


@dataclass(frozen=True)
class ProxySettings:
    """How the credential proxy runs (`ServerConfig.credential_proxy_*`)."""

    log_max_bytes: int = 8 << 20
    """`proxy.log` is rotated to `proxy.log.1` when a line would take it past this: at most twice it."""
    restart_delays: tuple[float, ...] = (0.0, 1.0, 5.0, 30.0)
    """The wait before restarting after the 1st, 2nd, ... crash in a row (the last one repeats)."""
    stable_seconds: float = 60.0
    """A proxy that ran this long before dying starts the count of crashes in a row again."""
    on_event: ProxyEventSink | None = None
    """Told of each crash and recovery, with the sandboxes that have bindings (diagnostics events)."""


class ProxyUnavailable(RuntimeError):
    """The credential proxy cannot run here; the message says why (safe to show users)."""


def find_mitmdump() -> str | None:
    """`mitmdump`: `$OSBOX_MITMDUMP`, the virtualenv `make install` makes beside osbox's
    (`<venv>/mitmproxy`: mitmproxy pins other versions of shared libraries than osbox), or PATH."""
    given = os.environ.get("OSBOX_MITMDUMP")
    if given:
        return given
    beside = Path(sys.prefix) / "mitmproxy" / "bin" / "mitmdump"
    if beside.is_file():
        return str(beside)
    return shutil.which("mitmdump")


def table_name(prefix: str) -> str:
    """The server's interception table: `<prefix>_intercept` (family inet, host namespace)."""
    return f"{prefix}_intercept"


def render_intercept_table(prefix: str, port: int) -> str:
    """The script that (re)creates the interception table, empty of sandboxes, redirecting to `port`."""
    table = table_name(prefix)
    return "\n".join(
        [
            f"table inet {table}",
            f"delete table inet {table}",
            f"table inet {table} {{",
            "  set intercepted { type ifname . ipv4_addr . inet_service; }",
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat; policy accept;",
            f"    iifname . ip saddr . tcp dport @intercepted redirect to :{port}",
            "  }",
            "  chain input {",
            "    type filter hook input priority filter; policy accept;",
            # Only what the redirect above sent: the host's own processes and the LAN never reach it.
            f"    tcp dport {port} ct status dnat accept",
            f"    tcp dport {port} drop",
            "  }",
            "}",
            "",
        ]
    )


def _elements(interface: str, address: IPv4Address, ports: Sequence[int]) -> list[str]:
    return [f'"{interface}" . {address} . {port}' for port in sorted(set(ports))]


def _set_script(prefix: str, old: Sequence[str], new: Sequence[str]) -> str:
    table = table_name(prefix)
    lines = [f"delete element inet {table} intercepted {{ {e} }}" for e in old if e not in new]
    lines += [f"add element inet {table} intercepted {{ {e} }}" for e in new if e not in old]
    return "\n".join(lines) + "\n" if lines else ""


def load_or_create_ca(directory: Path) -> str:
    """The server's CA in `directory` (made 0700), created on first use; returns its certificate (PEM)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    cert_path = directory / _CA_CERT
    if (directory / _CA_FILE).is_file() and cert_path.is_file():
        return cert_path.read_text()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "osbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, "osbox credential proxy CA"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    _write_private(directory / _CA_FILE, key_pem + cert_pem)
    _write_private(cert_path, cert_pem)
    return cert_pem


def _write_private(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temp, path)


@dataclass
class _Sandbox:
    interface: str
    address: IPv4Address
    rules: list[Rule] = field(default_factory=list)
    elements: list[str] = field(default_factory=list)


class CredentialProxy:
    """The server's credential proxy (see the module docstring); `close` it with the server.

    proxy = CredentialProxy(host, data_dir / "credential-proxy")
    await proxy.start()                      # the (empty) nft table; CA created on first use
    await proxy.attach("sbx-1", "osbx-1f2e3d4c5b6a", IPv4Address("100.96.0.2"))
    await proxy.set_rules("sbx-1", rules)    # in force when it returns
    await proxy.detach("sbx-1")
    """

    def __init__(
        self,
        host: HostNetwork,
        directory: Path,
        *,
        upstream_ca: Path | None = None,
        mitmdump: str | None = None,
        settings: ProxySettings | None = None,
    ) -> None:
        """`upstream_ca`: the bundle upstream certificates are verified against (None: the system's);
        `settings`: log cap, restart back-off and where crashes are reported."""
        self._host = host
        self._dir = directory
        self._upstream_ca = upstream_ca or (_SYSTEM_BUNDLE if _SYSTEM_BUNDLE.is_file() else None)
        self._mitmdump = mitmdump or find_mitmdump()
        self._prefix = host.prefix
        self._netns = host.config.host_netns
        self._sandboxes: dict[str, _Sandbox] = {}
        self._lock = asyncio.Lock()
        self._port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._channel: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._run_dir: Path | None = None
        self._settings = settings or ProxySettings()
        self._watcher: asyncio.Task[None] | None = None  # waits for the process to end
        self._pump: asyncio.Task[None] | None = None  # copies its output into the capped log
        self._restart: asyncio.Task[None] | None = None  # the restart after a crash, when one is due
        self._started_at = 0.0
        self._crashes = 0  # in a row: each within `stable_seconds` of its start
        self._output = _CappedLog(directory / _LOG, self._settings.log_max_bytes)
        self.unavailable = "" if self._mitmdump else "mitmdump (mitmproxy) is not installed (make install)"
        """Why no sandbox can have its credentials injected here ("" when they can)."""

    @property
    def ca_certificate(self) -> str:
        """The CA certificate (PEM) the sandboxes are to trust; created on first use."""
        return load_or_create_ca(self._dir)

    async def start(self) -> None:
        """Choose the proxy's port and install the (empty) interception table; remove the run dirs a
        crashed server's proxy left (its mitmdump died with it)."""
        if self.unavailable:
            return
        await asyncio.to_thread(self._remove_run_dirs)
        self._port = await asyncio.to_thread(self._free_port)
        try:
            await run_nft(self._netns, render_intercept_table(self._prefix, self._port))
        except NftError as exc:
            self.unavailable = f"the interception table could not be installed: {exc}"

    async def attach(
        self, sandbox_id: str, interface: str, address: IPv4Address, rules: Sequence[Rule]
    ) -> None:
        """Take on a sandbox (its host end and address) with its current `rules` (e.g. after a restart).
        On `ProxyUnavailable` it is not taken on: its create fails, so nothing of it stays here."""
        if self.unavailable:
            raise ProxyUnavailable(self.unavailable)
        async with self._lock:
            self._sandboxes[sandbox_id] = _Sandbox(interface, address)
        try:
            await self.set_rules(sandbox_id, rules)
        except BaseException:
            await self.detach(sandbox_id)
            raise

    async def set_rules(self, sandbox_id: str, rules: Sequence[Rule]) -> None:
        """Put the sandbox's compiled bindings in force: for its next connection and request.
        `ProxyUnavailable` when the proxy did not take them (it is then restarted with them)."""
        async with self._lock:
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is None:
                raise ProxyUnavailable("credential injection is not on for this sandbox")
            sandbox.rules = list(rules)
            try:
                await self._publish()
            finally:
                # Also when the proxy failed: it restarts with these rules, and the ports must match.
                elements = _elements(
                    sandbox.interface, sandbox.address, [p for r in rules for p in r["ports"]]
                )
                try:
                    await run_nft(self._netns, _set_script(self._prefix, sandbox.elements, elements))
                except NftError as exc:
                    raise ProxyUnavailable(
                        f"the redirect to the credential proxy could not be changed: {exc}"
                    ) from None
                sandbox.elements = elements
            if not self._bound():
                await self._stop()

    async def detach(self, sandbox_id: str) -> None:
        """Forget the sandbox: its redirect and rules go (the proxy too when no sandbox has any)."""
        async with self._lock:
            sandbox = self._sandboxes.pop(sandbox_id, None)
            if sandbox is None:
                return
            try:
                with contextlib.suppress(NftError):  # the table may be gone with a closing server
                    await run_nft(self._netns, _set_script(self._prefix, sandbox.elements, []))
            finally:
                if not self._bound():
                    await self._stop()
                elif self._channel is not None:
                    with contextlib.suppress(ProxyUnavailable):  # a failed proxy restarts without it
                        await self._publish()

    async def close(self) -> None:
        """Stop the proxy and remove the table."""
        async with self._lock:
            self._sandboxes.clear()
            await self._stop()
            if self._port:
                table = table_name(self._prefix)
                with contextlib.suppress(NftError):
                    await run_nft(self._netns, f"table inet {table}\ndelete table inet {table}\n")
            self._output.close()

    @property
    def log_path(self) -> Path:
        """The proxy's log (`proxy.log`; the rotated one is `proxy.log.1`)."""
        return self._output.path

    @property
    def pid(self) -> int | None:
        """The running mitmdump's process id (None: not running)."""
        return self._process.pid if self._process is not None else None

    # -- the mitmdump process -----------------------------------------------------------------------

    def _bound(self) -> list[str]:
        """The sandboxes with rules, whose connections the proxy takes."""
        return [sandbox_id for sandbox_id, s in self._sandboxes.items() if s.rules]

    def _free_port(self) -> int:
        with self._host.socket_factory(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("0.0.0.0", 0))
            port: int = probe.getsockname()[1]
            return port

    async def _publish(self) -> None:
        """Hand the whole table to the proxy (started when needed) and wait until it is in force.
        `ProxyUnavailable` when it did not take it: it is then treated as crashed (restarted later)."""
        table = {str(s.address): s.rules for s in self._sandboxes.values() if s.rules}
        if not table:
            return
        if self._channel is None:
            if self._restart is not None:  # a change retries at once rather than at the back-off's end
                self._restart.cancel()
                self._restart = None
            await self._spawn()
        assert self._channel is not None
        # Masked from then on, and those of earlier rules still (a late message may quote one).
        self._output.secrets = _secrets(table, self._output.secrets)
        reader, writer = self._channel
        try:
            writer.write(json.dumps(table).encode() + b"\n")
            async with asyncio.timeout(_UPDATE_TIMEOUT):
                await writer.drain()
                answer = await reader.readline()
        except (OSError, TimeoutError):
            answer = b""
        if answer != b"ok\n":
            await self._crashed("did not take the new bindings")
            raise ProxyUnavailable(
                "the credential proxy did not take the new bindings; it is restarted with them "
                f"({self._restart_delay():g} s), meanwhile the bound connections are refused"
            )

    async def _spawn(self) -> None:
        assert self._mitmdump is not None
        run_dir = self._run_dir = await asyncio.to_thread(self._make_run_dir)
        ours, theirs = socket.socketpair()
        user = _unprivileged()
        verbosity = "debug" if _log.isEnabledFor(logging.DEBUG) else "warn"
        proxy = [self._mitmdump, "--mode", "transparent", "--listen-port", str(self._port)]
        proxy += ["--set", f"confdir={run_dir}", "--set", f"termlog_verbosity={verbosity}"]
        # Never the flows: their headers would hold the secrets. Bodies over 1 MiB stream through
        # rather than being held whole in the proxy's memory (the addon works on headers alone).
        proxy += ["--set", "flow_detail=0", "--set", "stream_large_bodies=1m", "-s", str(_ADDON)]
        if self._upstream_ca is not None:
            proxy += ["--set", f"ssl_verify_upstream_trusted_ca={run_dir / _UPSTREAM_CA}"]
        # The uid change last (nsenter needs root); the parent-death signal after it (a uid change
        # clears it): a server that dies takes its proxy along.
        argv = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--no-new-privs"]
        argv += ["--pdeathsig", "KILL", "--", *proxy]
        if self._netns is not None:
            argv = ["nsenter", f"--net={self._netns}", "--", *argv]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(run_dir)}
        env["PYTHONUNBUFFERED"] = "1"  # its log lines as they come, not when a buffer fills
        env["OSBOX_INJECTION_FD"] = str(theirs.fileno())
        if self._host.upstream_dns is not None:  # what the sandboxes' names resolve through
            env["OSBOX_INJECTION_DNS"] = "{}:{}".format(*self._host.upstream_dns)
        try:
            process = self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
            )
        finally:
            theirs.close()
        self._started_at = asyncio.get_running_loop().time()
        assert process.stdout is not None
        self._pump = asyncio.create_task(self._output.copy(process.stdout))
        self._watcher = asyncio.create_task(self._watch(process))
        self._channel = await asyncio.open_connection(sock=ours)
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                ready = await self._channel[0].readline()
        except TimeoutError:
            ready = b""
        if ready != b"ready\n":
            await self._crashed("did not start")
            raise ProxyUnavailable(f"the credential proxy (mitmdump) did not start; see {self.log_path}")

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        """Wait for the process to end; an end the server did not ask for is a crash."""
        code = await process.wait()
        if self._process is not process:
            return  # stopped by the server
        async with self._lock:
            if self._process is process:
                await self._crashed(f"exited with status {code}")

    async def _crashed(self, what: str) -> None:
        """The proxy failed (`what` happened): discard it and schedule its restart, backing off when
        it keeps failing; the bound sandboxes are told. Called with the lock held."""
        pid = self.pid
        await self._stop()
        now = asyncio.get_running_loop().time()
        stable = now - self._started_at >= self._settings.stable_seconds
        self._crashes = 1 if stable else self._crashes + 1
        delay = self._restart_delay()
        bound = self._bound()
        if not bound:
            return
        message = (
            f"The credential proxy (mitmdump, pid {pid}) {what}; it is restarted in {delay:g} s "
            f"(failure {self._crashes} in a row; see {self.log_path}). Meanwhile the connections it "
            "takes are refused, never sent on without their credentials."
        )
        _log.warning("%s", message)
        self._report(bound, "credential_proxy_down", message)
        self._restart = asyncio.create_task(self._restart_after(delay))

    def _restart_delay(self) -> float:
        delays = self._settings.restart_delays
        return delays[min(max(self._crashes, 1), len(delays)) - 1] if delays else 0.0

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)  # the back-off itself, not a poll
        async with self._lock:
            if self._restart is not asyncio.current_task():
                return  # a change restarted it meanwhile
            self._restart = None
            if self._channel is not None or not self._bound():
                return
            try:
                await self._publish()
            except ProxyUnavailable:
                return  # `_crashed` scheduled the next attempt and said so
            except Exception:
                _log.exception("restarting the credential proxy failed")
                await self._crashed("could not be restarted")
                return
            message = f"The credential proxy was restarted (pid {self.pid}); injection works again."
            _log.warning("%s", message)
            self._report(self._bound(), "credential_proxy_restarted", message)

    def _report(self, sandbox_ids: Sequence[str], reason: str, message: str) -> None:
        if self._settings.on_event is None:
            return
        try:
            self._settings.on_event(sandbox_ids, reason, message)
        except Exception:  # a report must never stop the restart it reports
            _log.exception("reporting a credential proxy event failed")

    def _remove_run_dirs(self) -> None:
        for stale in Path(tempfile.gettempdir()).glob(f"osbox-proxy-{self._prefix}-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def _make_run_dir(self) -> Path:
        """A 0700 temp dir of the proxy's user, holding copies of the CA (key included) and of the
        upstream bundle (which may lie where that user cannot read) for mitmproxy."""
        uid, gid = _unprivileged()
        self.ca_certificate  # noqa: B018 - made on first use
        copies = {_CA_FILE: (self._dir / _CA_FILE).read_bytes()}
        if self._upstream_ca is not None:
            copies[_UPSTREAM_CA] = self._upstream_ca.read_bytes()
        run_dir = Path(tempfile.mkdtemp(prefix=f"osbox-proxy-{self._prefix}-"))
        try:
            for name, content in copies.items():
                fd = os.open(run_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(content)
                os.chown(run_dir / name, uid, gid)
            os.chown(run_dir, uid, gid)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return run_dir

    async def _stop(self) -> None:
        process, channel, run_dir = self._process, self._channel, self._run_dir
        self._process = self._channel = self._run_dir = None
        if self._restart is not None and self._restart is not asyncio.current_task():
            self._restart.cancel()
        self._restart = None
        if channel is not None:
            channel[1].close()
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        watcher, pump = self._watcher, self._pump
        self._pump = self._watcher = None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()  # it may wait for the lock its caller holds
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if pump is not None:
            await pump  # it ends with the output, which ends with the process
        if run_dir is not None:
            await asyncio.to_thread(shutil.rmtree, run_dir, True)


class _CappedLog:
    """The proxy's output, line by line, into `path` (0600): rotated to `path.1` when a line would take
    it past `max_bytes`, each of `secrets` masked."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self._max = max(max_bytes, 1024)
        self._fd: int | None = None
        self._size = 0
        self.secrets: list[str] = []
        """The values to mask, longest first (so a value holding another is masked whole)."""

    async def copy(self, output: asyncio.StreamReader) -> None:
        """Copy `output` until its end. A line over the reader's limit (64 KiB) is left out whole, a
        marker in its place: cut in pieces, a secret in it could straddle two and escape the mask."""
        overlong = False
        while True:
            try:
                line, more = await output.readuntil(b"\n"), True
            except asyncio.IncompleteReadError as end:  # the output's end: its last line, if any
                line, more = end.partial, False
            except asyncio.LimitOverrunError as over:
                await output.readexactly(over.consumed)  # what the reader holds of it; more follows
                overlong = True
                continue
            if overlong and line:
                overlong, line = False, b"[a line over 64 KiB, left out]\n"
            if line:
                self.write(line)
            if not more:
                return

    def write(self, line: bytes) -> None:
        """Append one line (masked); a write error is logged, never raised (the proxy keeps running)."""
        text = line.decode(errors="replace")
        for secret in self.secrets:
            text = text.replace(secret, _MASK)
        data = text.encode()
        try:
            if self._fd is None:
                self._open()
            if self._size and self._size + len(data) > self._max:
                self.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._open()
            assert self._fd is not None
            self._size += os.write(self._fd, data[: self._max])
        except OSError as exc:
            _log.warning("the credential proxy's log could not be written: %s", exc)

    def close(self) -> None:
        """Close the file (the next write opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o600)
        self._size = os.fstat(self._fd).st_size


def _secrets(table: Mapping[str, Sequence[Rule]], known: Sequence[str] = ()) -> list[str]:
    """What the log masks: `known`, every header value the rules set, and its part after an auth
    scheme (`Bearer <token>`: the token alone too), longest first."""
    found: set[str] = set(known)
    for rules in table.values():
        for rule in rules:
            for _, value in rule["headers"]:
                found.add(value)
                scheme, _, rest = value.partition(" ")
                if rest and scheme in ("Bearer", "Basic"):
                    found.add(rest)
    return sorted((v for v in found if v), key=len, reverse=True)


def _unprivileged() -> tuple[int, int]:
    """The proxy's user and group: `nobody`'s (65534 where there is no such user)."""
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid
