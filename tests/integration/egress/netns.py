"""Network namespaces for the egress tests: created with unique names, always removed, and sockets in them.

Everything here needs root, `ip` (iproute2), `nft` and `nsenter`; `netns_missing()` says what is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence

import pytest

from osbox.server.egress.netns import netns_socket_factory

__all__ = [
    "MADE_HERE",
    "NETNS_PREFIX",
    "netns_missing",
    "netns_path",
    "netns_socket_factory",
    "network_namespaces",
    "requires_netns",
    "run",
    "run_in",
]

NETNS_PREFIX = "osbxt-"
"""Every namespace the tests make is named osbxt-<random>-<role>."""
MADE_HERE: set[str] = set()
"""The namespaces this test process made and has not deleted: what the leak check looks at (other
test runs on the machine make namespaces of the same prefix at the same time)."""


def netns_missing() -> str | None:
    """Why these tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces, veths and nftables need root"
    tools = (("ip", "iproute2"), ("nft", "nftables"), ("nsenter", "util-linux"), ("curl", "curl"))
    for tool, package in tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed: apt-get install {package}"
    return None


requires_netns = pytest.mark.skipif(netns_missing() is not None, reason=netns_missing() or "")


def netns_path(name: str) -> str:
    """The path of a named namespace (what `nsenter --net=` and setns take)."""
    return f"/run/netns/{name}"


def run(*argv: str, stdin: str | None = None) -> None:
    """Run a setup command; its stderr becomes the error when it fails."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


async def run_in(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside the named namespace (with its /etc/netns overlay) and capture its output
    (killed after 30 s: every command here bounds itself far below that)."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())


@contextlib.asynccontextmanager
async def network_namespaces(roles: Sequence[str]) -> AsyncIterator[dict[str, str]]:
    """Fresh namespaces, one per role (role → name), deleted on exit whatever happened (their veths and
    nft tables go with them), with their /etc/netns/<name> overlays."""
    tag = secrets.token_hex(3)
    names = {role: f"{NETNS_PREFIX}{tag}-{role}" for role in roles}
    made: list[str] = []
    try:
        for name in names.values():
            run("ip", "netns", "add", name)
            made.append(name)
            MADE_HERE.add(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in made:
            shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)
            with contextlib.suppress(RuntimeError):
                run("ip", "netns", "del", name)
                MADE_HERE.discard(name)
