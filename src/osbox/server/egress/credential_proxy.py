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
from collections.abc import Mapping, Sequence
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

__all__ = ["CredentialProxy", "ProxyUnavailable", "find_mitmdump", "render_intercept_table"]

_log = logging.getLogger(__name__)

_ADDON = Path(__file__).with_name("injection_addon.py")
_CA_FILE = "mitmproxy-ca.pem"  # the name mitmproxy looks for in its confdir: key and certificate
_CA_CERT = "ca-cert.pem"
_UPSTREAM_CA = "upstream-ca.pem"
_SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_START_TIMEOUT = 30.0
_UPDATE_TIMEOUT = 10.0

Rule = Mapping[str, Any]


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
    ) -> None:
        """`upstream_ca`: the bundle upstream certificates are verified against (None: the system's)."""
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
        """Take on a sandbox (its host end and address) with its current `rules` (e.g. after a restart)."""
        if self.unavailable:
            raise ProxyUnavailable(self.unavailable)
        async with self._lock:
            self._sandboxes[sandbox_id] = _Sandbox(interface, address)
        await self.set_rules(sandbox_id, rules)

    async def set_rules(self, sandbox_id: str, rules: Sequence[Rule]) -> None:
        """Put the sandbox's compiled bindings in force: for its next connection and request."""
        async with self._lock:
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is None:
                raise ProxyUnavailable("credential injection is not on for this sandbox")
            sandbox.rules = list(rules)
            await self._publish()
            elements = _elements(sandbox.interface, sandbox.address, [p for r in rules for p in r["ports"]])
            try:
                await run_nft(self._netns, _set_script(self._prefix, sandbox.elements, elements))
            except NftError as exc:
                raise ProxyUnavailable(
                    f"the redirect to the credential proxy could not be changed: {exc}"
                ) from None
            sandbox.elements = elements
            if not any(s.rules for s in self._sandboxes.values()):
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
                if any(s.rules for s in self._sandboxes.values()):
                    await self._publish()
                else:
                    await self._stop()

    async def close(self) -> None:
        """Stop the proxy and remove the table."""
        async with self._lock:
            self._sandboxes.clear()
            await self._stop()
            if self._port:
                table = table_name(self._prefix)
                with contextlib.suppress(NftError):
                    await run_nft(self._netns, f"table inet {table}\ndelete table inet {table}\n")

    # -- the mitmdump process -----------------------------------------------------------------------

    def _free_port(self) -> int:
        with self._host.socket_factory(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("0.0.0.0", 0))
            port: int = probe.getsockname()[1]
            return port

    async def _publish(self) -> None:
        """Hand the whole table to the proxy (started when needed) and wait until it is in force."""
        table = {str(s.address): s.rules for s in self._sandboxes.values() if s.rules}
        if not table:
            return
        if self._channel is None:
            await self._spawn()
        assert self._channel is not None
        reader, writer = self._channel
        try:
            writer.write(json.dumps(table).encode() + b"\n")
            async with asyncio.timeout(_UPDATE_TIMEOUT):
                await writer.drain()
                answer = await reader.readline()
        except (OSError, TimeoutError):
            answer = b""
        if answer != b"ok\n":
            await self._stop()
            raise ProxyUnavailable("the credential proxy did not take the new bindings; it was stopped")

    async def _spawn(self) -> None:
        assert self._mitmdump is not None
        run_dir = self._run_dir = await asyncio.to_thread(self._make_run_dir)
        ours, theirs = socket.socketpair()
        user = _unprivileged()
        proxy = [self._mitmdump, "--mode", "transparent", "--listen-port", str(self._port), "-q"]
        proxy += ["--set", f"confdir={run_dir}", "--set", "flow_detail=0", "-s", str(_ADDON)]
        if self._upstream_ca is not None:
            proxy += ["--set", f"ssl_verify_upstream_trusted_ca={run_dir / _UPSTREAM_CA}"]
        # The uid change last (nsenter needs root); the parent-death signal after it (a uid change
        # clears it): a server that dies takes its proxy along.
        argv = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--no-new-privs"]
        argv += ["--pdeathsig", "KILL", "--", *proxy]
        if self._netns is not None:
            argv = ["nsenter", f"--net={self._netns}", "--", *argv]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(run_dir)}
        env["OSBOX_INJECTION_FD"] = str(theirs.fileno())
        if self._host.upstream_dns is not None:  # what the sandboxes' names resolve through
            env["OSBOX_INJECTION_DNS"] = "{}:{}".format(*self._host.upstream_dns)
        log = os.open(self._dir / "proxy.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                env=env,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
            )
        finally:
            os.close(log)
            theirs.close()
        self._channel = await asyncio.open_connection(sock=ours)
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                ready = await self._channel[0].readline()
        except TimeoutError:
            ready = b""
        if ready != b"ready\n":
            await self._stop()
            raise ProxyUnavailable(
                f"the credential proxy (mitmdump) did not start; see {self._dir / 'proxy.log'}"
            )

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
        if channel is not None:
            channel[1].close()
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if run_dir is not None:
            await asyncio.to_thread(shutil.rmtree, run_dir, True)


def _unprivileged() -> tuple[int, int]:
    """The proxy's user and group: `nobody`'s (65534 where there is no such user)."""
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid
