"""The official code-interpreter image's contract, where clients depend on it, on a real `osbox serve`:
its entrypoint path runs, and its Jupyter port (44771) answers a TCP connect, which the official
code-interpreter SDK probes (as a command through execd) before it calls the sandbox ready.

The image is the test session's Debian image served as `opensandbox/code-interpreter:v1.1.1` (see
`tests/sandbox_image.py`), whose entrypoint script starts a Jupyter kernel on that port.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from osbox import Sandbox
from osbox.server import LocalServer
from osbox.server.images.debian import CODE_INTERPRETER_SCRIPT

from ..polling import wait_until
from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime
PROBE = "python3 -c \"import socket; socket.create_connection(('127.0.0.1', 44771), timeout=1).close()\""


@pytest.fixture(scope="module")
def interpreter() -> Iterator[Sandbox]:
    with (
        LocalServer(api_key=API_KEY) as server,
        Sandbox.create(
            "opensandbox/code-interpreter:v1.1.1",
            entrypoint=[CODE_INTERPRETER_SCRIPT],
            base_url=server.base_url + "/v1",
            api_key=API_KEY,
        ) as created,
    ):
        yield created


def test_the_entrypoint_runs_and_the_jupyter_port_answers(interpreter: Sandbox) -> None:
    wait_until(lambda: interpreter.run(PROBE).exit_code == 0, timeout=60, what="a connect to 44771")
    assert interpreter.run("pgrep -f ipykernel_launcher >/dev/null && echo kernel up").stdout == "kernel up\n"


def test_code_runs_in_the_images_own_python(interpreter: Sandbox) -> None:
    assert (
        interpreter.run("grep ^PRETTY_NAME /etc/os-release").stdout
        == 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
    )
    code = "import sys; print(sys.executable, sys.version_info[:2])"
    execution = interpreter.execd.execute_code(code, language="python").run()
    assert execution.stdout == "/usr/bin/python3 (3, 11)\n"
