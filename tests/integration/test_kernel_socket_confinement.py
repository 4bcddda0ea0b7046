"""The server never connects to a socket the sandbox points its kernel paths at (issue 11, finding 5).

A hostile sandbox puts its own `python3` first in `PATH`: what the server starts as the kernel
plants `<kernel dir>/<id>-N -> <a root-only host socket>` for every channel and writes a
connection file naming those ports. The server used to connect to them as host root (ZeroMQ also
reconnects, again and again); now it opens each socket beneath the kernel directory's fd without
following symlinks, and refuses the context.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbox import APIStatusError, Sandbox
from osbox.server import LocalServer
from osbox.server.execd import code
from tests.adversarial.canary import CountingListener

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime

#: Run as the kernel: `python3 -m ipykernel_launcher -f DIR/ID.json ... --ip=DIR/ID`.
FAKE_KERNEL = r"""
import json, os, sys, time
args = sys.argv[1:]
connection = args[args.index("-f") + 1]
ip = next(a for a in args if a.startswith("--ip=")).split("=", 1)[1]
ports = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
target = os.environ["HOST_SOCKET"]
for port in ports.values():
    os.symlink(target, f"{ip}-{port}")
with open(connection + ".tmp", "w") as f:
    json.dump({**ports, "key": "k", "signature_scheme": "hmac-sha256", "transport": "ipc", "ip": ip}, f)
os.rename(connection + ".tmp", connection)
time.sleep(300)
"""


@pytest.fixture
def host_socket() -> Iterator[CountingListener]:
    """A listening unix socket in a root-only (0700) host directory, counting accepts."""
    directory = Path(tempfile.mkdtemp(prefix="osbox-root-only-"))
    directory.chmod(0o700)
    listener = CountingListener(directory / "host.sock")
    try:
        yield listener
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_kernel_socket_symlinks_to_a_host_socket_are_never_connected(
    host_socket: CountingListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(code, "KERNEL_START_TIMEOUT_S", 10.0)  # bounds the wait on a server that connects
    env = {"PATH": "/workspace/bin:/usr/local/bin:/usr/bin:/bin", "HOST_SOCKET": str(host_socket.path)}
    with (
        LocalServer(api_key=API_KEY) as server,
        Sandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY, env=env) as sandbox,
    ):
        script = Path(tempfile.mkdtemp(prefix="osbox-fake-kernel-")) / "fake_kernel.py"
        try:
            script.write_text(FAKE_KERNEL)
            sandbox.execd.upload_file("/workspace/fake_kernel.py", script)
        finally:
            shutil.rmtree(script.parent)
        setup = sandbox.run(
            "mkdir -p /workspace/bin && "
            "printf '#!/bin/sh\\nexec /usr/bin/python3 /workspace/fake_kernel.py \"$@\"\\n' "
            "> /workspace/bin/python3 && chmod +x /workspace/bin/python3 && command -v python3"
        )
        assert setup.stdout.strip() == "/workspace/bin/python3", setup
        failure: BaseException | None = None
        try:
            sandbox.execd.create_context(language="python")
        except Exception as exc:
            failure = exc
        planted = sandbox.run("ls -l /tmp/.osbox/kernels/").stdout
        assert " -> " + str(host_socket.path) in planted  # the fake kernel did plant its symlinks
        with contextlib.suppress(Exception):
            sandbox.run("pkill -f fake_kernel.py || true")
    assert host_socket.accepted == 0
    assert isinstance(failure, APIStatusError), failure
    assert failure.status_code == 500 and "symlink" in str(failure)
