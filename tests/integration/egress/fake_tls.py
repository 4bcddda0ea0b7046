"""HTTPS hosts of the fake internet: a test CA of its own, and servers that echo the request they got.

    public  allowed.test:443, other.test:443   leaves signed by the fake internet's CA (`ca.pem`)
            denied.test:443                    an impostor: a leaf for its name from a CA nobody trusts
            allowed.test:8080, other.test:8080 plain HTTP (`received["http://<name>"]`)

Each server answers with the request head it received (request line and headers) and records it in
`received[name]`, so a test sees exactly what reached the upstream, e.g. whether an Authorization header
was added on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .fake_internet import HOSTS
from .netns import netns_path, netns_socket_factory

__all__ = ["PLAIN_PORT", "TLS_HOSTS", "FakeTLS", "tls_servers"]

TLS_HOSTS = ("allowed.test", "other.test")
"""Hosts served with certificates of the fake internet's CA."""
PLAIN_PORT = 8080
"""The plain-HTTP echo servers' port."""
IMPOSTOR = "denied.test"
"""Served with a certificate for its name from an untrusted CA."""


@dataclass
class FakeTLS:
    """The CA file the fake internet's certificates chain to, and what each server received."""

    ca_file: Path
    received: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(host: str, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, directory: Path) -> Path:
    """A key+certificate PEM for `host` signed by `ca`, written to `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    path = directory / f"{host}.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(key_pem + cert.public_bytes(serialization.Encoding.PEM))
    return path


@contextlib.asynccontextmanager
async def tls_servers(public: str, directory: Path) -> AsyncIterator[FakeTLS]:
    """The HTTPS echo servers in namespace `public` (on the addresses `wire_public` gave it), their
    certificates in `directory`."""
    ca_key, ca = _ca("osbox fake internet CA")
    ca_file = directory / "fake-internet-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    impostor_key, impostor = _ca("nobody's CA")
    fake = FakeTLS(ca_file)
    servers: list[asyncio.Server] = []
    try:
        leaves = {host: _leaf(host, ca_key, ca, directory) for host in TLS_HOSTS}
        leaves[IMPOSTOR] = _leaf(IMPOSTOR, impostor_key, impostor, directory)
        for host, leaf in leaves.items():
            servers.append(await _echo_server(public, host, leaf, fake.received.setdefault(host, [])))
        for host in TLS_HOSTS:
            received = fake.received.setdefault(f"http://{host}", [])
            servers.append(await _echo_server(public, host, None, received, port=PLAIN_PORT))
        yield fake
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def _echo_server(
    public: str, host: str, leaf: Path | None, received: list[str], port: int = 443
) -> asyncio.Server:
    context = None
    if leaf is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            received.append(head)
            body = head.encode("latin-1")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            writer.write(body)
            await writer.drain()
        writer.close()

    sock = netns_socket_factory(netns_path(public))(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOSTS[host], port))
    sock.listen(64)
    sock.setblocking(False)
    return await asyncio.start_server(serve, sock=sock, ssl=context)
