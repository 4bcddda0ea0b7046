"""`osbox exec`, the real executable: our stdin to the command's, and Ctrl-C typed on a terminal (the test
is the terminal: it sends ^C through a pseudo-terminal, as a user's keyboard does)."""

from __future__ import annotations

import fcntl
import os
import pty
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from osbox import Sandbox
from osbox.server import LocalServer
from tests.polling import wait_until

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime

INTERRUPTED = "osbox: interrupted (Ctrl-C again kills it)\n"
OSBOX = str(Path(sys.executable).parent / "osbox")


@pytest.fixture(scope="module")
def env(server: LocalServer) -> dict[str, str]:
    return {
        **os.environ,
        "OPEN_SANDBOX_DOMAIN": server.base_url.removeprefix("http://"),
        "OPEN_SANDBOX_API_KEY": API_KEY,
    }


def _gone(sandbox: Sandbox, marker: str) -> bool:
    # `pgrep -f` matches its own shell's command line too: leave that one out.
    return sandbox.run(f"pgrep -f -- '{marker}' | grep -vx $$ | wc -l").stdout.strip() == "0"


def test_a_piped_stdin_is_the_commands(sandbox: Sandbox, env: dict[str, str], tmp_path: Path) -> None:
    piped = subprocess.run(
        f"echo hello | {OSBOX} exec {sandbox.id} cat", shell=True, env=env, capture_output=True, text=True
    )
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "hello\n", "")
    data = os.urandom(2 * 1024 * 1024)
    (tmp_path / "in.bin").write_bytes(data)
    with (tmp_path / "in.bin").open("rb") as file:
        counted = subprocess.run(
            [OSBOX, "exec", sandbox.id, "wc -c"], stdin=file, env=env, capture_output=True
        )
    assert counted.stdout.strip() == str(len(data)).encode()
    # /dev/null, and --no-stdin, give the command an empty stdin.
    for extra, stdin in (([], subprocess.DEVNULL), (["--no-stdin"], subprocess.PIPE)):
        empty = subprocess.run(
            [OSBOX, "exec", *extra, sandbox.id, "cat; echo end"], stdin=stdin, env=env, capture_output=True
        )
        assert empty.stdout == b"end\n", extra


def _run_on_a_terminal(argv: list[str], env: dict[str, str], ready: bytes, presses: int) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal as its controlling terminal; once `ready` shows, type ^C `presses`
    times (the second once the first was taken: two at once are one signal). Returns its exit status
    and its stderr."""
    controller, terminal = pty.openpty()

    def take_the_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # after setsid: this pty is its controlling terminal

    with subprocess.Popen(
        argv,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=take_the_terminal,
    ) as process:
        os.close(terminal)
        shown = b""
        while ready not in shown:
            shown += os.read(controller, 4096)
        assert process.stderr is not None
        try:
            os.write(controller, b"\x03")
            err = process.stderr.readline().decode()  # the first Ctrl-C was taken
            for _ in range(presses - 1):
                os.write(controller, b"\x03")
            err += process.stderr.read().decode()
            status = process.wait(timeout=60)
        finally:
            process.kill()
    os.close(controller)
    return status, err


def test_ctrl_c_interrupts_the_remote_command(sandbox: Sandbox, env: dict[str, str]) -> None:
    status, err = _run_on_a_terminal(
        [OSBOX, "exec", sandbox.id, "echo ready; exec sleep 7301"], env, b"ready", presses=1
    )
    assert (status, err) == (130, INTERRUPTED)
    wait_until(lambda: _gone(sandbox, "sleep 7301"), what="the remote sleep to be gone")


def test_a_second_ctrl_c_kills_a_command_that_ignores_the_first(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    # SIGINT ignored (inherited by sleep): only the second Ctrl-C, SIGKILL, ends it.
    command = "trap '' INT; echo ready; sleep 7302; echo survived"
    status, err = _run_on_a_terminal([OSBOX, "exec", sandbox.id, command], env, b"ready", presses=2)
    assert (status, err) == (130, INTERRUPTED)
    wait_until(lambda: _gone(sandbox, "sleep 7302"), what="the remote sleep to be gone")


def test_a_killed_osbox_exec_leaves_nothing_unless_asked_to_keep_it(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    # Past the server's keepalive (3 s), by when a dropped stream has been noticed however it dropped.
    for options, name in (([], "killed"), (["--keep-on-disconnect"], "kept")):
        command = f"echo ready; sleep 3.5; echo done > /tmp/{name}"
        client = subprocess.Popen(
            [OSBOX, "exec", *options, sandbox.id, command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        try:
            assert client.stdout is not None and client.stdout.readline() == b"ready\n"
        finally:
            client.kill()  # no Ctrl-C: the connection just drops
            client.communicate()
    wait_until(lambda: sandbox.files.exists("/tmp/kept"), what="the kept command to finish")
    wait_until(lambda: _gone(sandbox, "sleep 3.5"), what="every sleep to be over")
    assert not sandbox.files.exists("/tmp/killed")
