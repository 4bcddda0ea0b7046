"""Rootless sandbox networks (`pasta.py`), for real: the server's network code runs as an unprivileged
user (uid 65534, `setpriv`) in the test's `host` namespace, which routes to the fake internet; the
"sandboxes" are what bwrap makes for a rootless server, a process in a user + network namespace of that
user's (`unshare --user --map-root-user --net`). Through real pasta, a sandbox resolves and reaches a
fake-internet host, and reaches neither the host's loopback services nor its addresses; a policy is
refused with the reason; every pasta ends with its sandbox, at disconnect and at the server's close.

This machine's /dev/net/tun is root's alone (0600; udev makes it 0666 elsewhere), so the helper runs in a
mount namespace of its own where a 0666 node of the same device is bound over it: the machine's stays
as it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbox.server.egress.netns import netns_socket_factory

from .fake_internet import DNS_ADDRESS, HOST_PUBLIC_SIDE
from .netns import netns_missing, netns_path, run_in
from .served import fake_public

pytestmark = pytest.mark.timeout(120)

UNPRIVILEGED = 65534

HELPER = r"""
import asyncio, json, os, subprocess, sys, time
from pathlib import Path
from osbox.server.egress.engine import EgressUnavailable
from osbox.server.egress.hostnet import HostNetworkConfig
from osbox.server.egress.networks import NetworkChoice, SandboxNetworks
from osbox.server.egress.pasta import PastaNetwork

CHECK = '''
connects() { timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && echo True || echo False; }
curl -sS --max-time 5 http://allowed.test/; echo
connects 100.95.0.1 "$1"; connects 127.0.0.1 "$1"; connects "$3" "$2"
'''


def sandbox():
    proc = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "sleep", "600"])
    ours = Path("/proc/self/ns/user").stat().st_ino
    while Path(f"/proc/{proc.pid}/ns/user").stat().st_ino == ours:  # until unshare has run
        time.sleep(0.005)
    return proc


def pastas():  # pasta runs as passt (or passt.avx2) by another name
    found = subprocess.run(["pgrep", "-u", str(os.getuid()), "^passt"], capture_output=True, text=True)
    return len(found.stdout.split())


async def main():
    upstream, state, loopback, public, host_address = sys.argv[1:6]
    networks = SandboxNetworks("open", HostNetworkConfig(upstream_dns=(upstream, 53), protect_lans=False))
    await networks.start()

    def connect(sandbox_id, proc, mode="open"):
        where = f"/proc/{proc.pid}/ns/net"
        return networks.connect(sandbox_id, where, Path(state), NetworkChoice(mode, requested=True))

    result = {"host": type(networks.host).__name__, "unavailable": networks.unavailable}
    one, two = sandbox(), sandbox()
    try:
        try:
            await connect("sbx-policy", two, "filtered")
        except EgressUnavailable as exc:
            result["policy"] = str(exc)
        status = await connect("sbx-one", one)
        result["status"] = status.message
        result["egress"] = networks.policy_store("sbx-one").enforcement.reason
        done = subprocess.run(
            ["nsenter", "--preserve-credentials", f"--user=/proc/{one.pid}/ns/user",
             f"--net=/proc/{one.pid}/ns/net", "bash", "-c", CHECK, "check", loopback, public, host_address],
            capture_output=True, text=True, timeout=30,
        )
        result["check"] = done.stdout.split()
        result["check_errors"] = done.stderr
        await connect("sbx-two", two)
        result["pastas"] = pastas()
        await networks.disconnect("sbx-one")
        result["after_disconnect"] = pastas()
        two.kill(); two.wait()
        deadline = time.monotonic() + 10
        while pastas() and time.monotonic() < deadline:  # the server ends it when the sandbox ends
            await asyncio.sleep(0.01)
        result["after_sandbox_died"] = pastas()
        three = sandbox()
        await connect("sbx-three", three)
        await networks.close()
        result["after_close"] = pastas()
        three.kill(); three.wait()
    finally:
        for proc in (one, two):
            proc.kill(); proc.wait()
    print(json.dumps(result))


asyncio.run(main())
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged user can use (pytest's tmp_path is root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="osbox-pasta-"))
    try:
        os.chmod(directory, 0o755)
        state = directory / "state"
        state.mkdir()
        os.chown(state, UNPRIVILEGED, UNPRIVILEGED)
        os.mknod(directory / "tun", 0o666 | stat.S_IFCHR, os.makedev(10, 200))
        os.chmod(directory / "tun", 0o666)
        yield directory
    finally:
        shutil.rmtree(directory)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the test needs root to run its server side as another user"
    for tool in ("pasta", "setpriv", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make install)"
    return netns_missing()


async def test_a_rootless_sandbox_reaches_the_internet_through_pasta_and_nothing_of_the_host(
    shared_dir: Path,
) -> None:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    async with fake_public() as names:
        # pasta takes its outbound interface from the default route, as on a real machine.
        await run_in(names["host"], "ip", "route", "add", "default", "dev", "to-pub")
        make = netns_socket_factory(netns_path(names["host"]))
        with (
            make(socket.AF_INET, socket.SOCK_STREAM) as loopback,
            make(socket.AF_INET, socket.SOCK_STREAM) as public,
        ):
            loopback.bind(("127.0.0.1", 0))  # a service on the host's loopback (as the server's port is)
            public.bind(("0.0.0.0", 0))  # and one on all the host's addresses
            for listener in (loopback, public):
                listener.listen()
            script = (
                f"mount --bind {shared_dir / 'tun'} /dev/net/tun && exec setpriv --reuid={UNPRIVILEGED} "
                f'--regid={UNPRIVILEGED} --clear-groups --inh-caps=-all "$@"'
            )
            # Not subprocess.run: the fake internet's servers run on this test's event loop.
            helper = await asyncio.create_subprocess_exec(
                *("ip", "netns", "exec", names["host"], "unshare", "--mount", "--propagation", "private"),
                *("sh", "-c", script, "sh", sys.executable, "-c", HELPER, DNS_ADDRESS[0]),
                *(str(shared_dir / "state"), str(loopback.getsockname()[1]), str(public.getsockname()[1])),
                HOST_PUBLIC_SIDE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=shared_dir,
                env={**os.environ, "HOME": str(shared_dir)},
            )
            out, err = await helper.communicate()
    assert helper.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().splitlines()[-1])
    assert (result["host"], result["unavailable"]) == ("PastaNetwork", "")
    assert result["policy"].startswith("egress policies need root")
    assert "Network: open (address 100.95.0.2, DNS 100.95.0.1)" in result["status"]
    assert result["egress"].startswith("egress policies need root")
    # The page came through DNS and pasta; the host's loopback service is reached neither through the
    # gateway nor as the sandbox's own loopback, and the host's own address is refused.
    assert result["check"] == ["allowed.test", "False", "False", "False"], result["check_errors"]
    assert result["pastas"] == 2
    assert result["after_disconnect"] == 1
    assert result["after_sandbox_died"] == 0
    assert result["after_close"] == 0
