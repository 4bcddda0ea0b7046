"""`osbox ls | create | exec | upload | download | rm` against a real `osbox serve`."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from osbox import LifecycleClient, NotFoundError
from osbox.cli import main
from osbox.server import LocalServer

from .server_fixtures import API_KEY, lifecycle_client, requires_runtime

pytestmark = requires_runtime


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key=API_KEY) as srv:
        yield srv


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def osbox(server: LocalServer, capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    """Runs `osbox ARGS --url ... --api-key ...` in-process; returns (status, stdout, stderr)."""

    def run(command: str, *args: str) -> tuple[int, str, str]:
        status = main([command, "--url", server.base_url + "/v1", "--api-key", API_KEY, *args])
        out, err = capsys.readouterr()
        return status, out, err

    yield run


def test_a_sandbox_from_create_to_rm(osbox: Run, server: LocalServer, tmp_path: Path) -> None:
    run = osbox
    status, out, _ = run("create", "--env", "WHO=cli", "--metadata", "origin=cli-test", "--lifetime", "none")
    sandbox_id = out.strip()
    assert status == 0 and sandbox_id

    status, out, _ = run("ls", "--metadata", "origin=cli-test")
    lines = [line.split("\t") for line in out.splitlines()]
    assert status == 0 and lines[0] == ["id", "state", "image", "metadata", "expires"]
    assert [(row[0], row[1], row[3], row[4]) for row in lines[1:]] == [
        (sandbox_id, "Running", "origin=cli-test", "never")
    ]

    status, out, err = run("exec", sandbox_id, "echo $WHO; echo oops >&2; exit 3")
    assert (status, out, err) == (3, "cli\n", "oops\n")

    local = tmp_path / "in.bin"
    local.write_bytes(bytes(range(256)) * 1000)
    assert run("upload", sandbox_id, str(local), "/tmp/in.bin")[0] == 0
    assert run("download", sandbox_id, "/tmp/in.bin", str(tmp_path / "out.bin"))[0] == 0
    assert (tmp_path / "out.bin").read_bytes() == local.read_bytes()

    assert run("rm", sandbox_id) == (0, f"deleted {sandbox_id}\n", "")
    with LifecycleClient(server.base_url + "/v1", API_KEY) as lifecycle, pytest.raises(NotFoundError):
        lifecycle.get_sandbox(sandbox_id)


def test_errors_are_one_line_and_status_1(osbox: Run, tmp_path: Path) -> None:
    run = osbox
    status, out, err = run("exec", "no-such-sandbox", "true")
    assert status == 1 and out == "" and err.startswith("osbox: ") and err.count("\n") == 1
    status, _, err = run("upload", "no-such-sandbox", str(tmp_path / "missing"), "/tmp/x")
    assert status == 1 and "is not a file" in err
    with pytest.raises(SystemExit, match="--env must be KEY=VALUE"):
        run("create", "--env", "novalue")


# --- the real `osbox` command, as a user runs it ---------------------------------------------------------


def _osbox_command(server: LocalServer, *args: str, tty_columns: int | None = None) -> tuple[int, str, str]:
    """Runs this environment's `osbox` executable with OPEN_SANDBOX_* naming the server.

    With `tty_columns`, its stdout is a pseudo-terminal that wide (what a user's terminal shows).
    """
    env = {
        **os.environ,
        "OPEN_SANDBOX_DOMAIN": server.base_url.removeprefix("http://"),
        "OPEN_SANDBOX_API_KEY": API_KEY,
    }
    argv = [str(Path(sys.executable).parent / "osbox"), *args]
    if tty_columns is None:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout, done.stderr
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, tty_columns, 0, 0))
    env |= {"COLUMNS": str(tty_columns), "TERM": "xterm", "NO_COLOR": "1"}
    with subprocess.Popen(argv, env=env, stdout=terminal, stderr=subprocess.PIPE, text=True) as process:
        os.close(terminal)
        shown = bytearray()
        while chunk := _read_terminal(controller):
            shown += chunk
        os.close(controller)
        err = process.stderr.read() if process.stderr else ""
        status = process.wait(timeout=120)
    return status, shown.decode().replace("\r\n", "\n"), err


def _read_terminal(fd: int) -> bytes:
    """What the terminal shows next; b"" once its writer has gone (Linux raises EIO then)."""
    try:
        return os.read(fd, 65536)
    except OSError as exc:
        if exc.errno == errno.EIO:
            return b""
        raise


@pytest.fixture(scope="module")
def cli_sandbox(server: LocalServer) -> Iterator[str]:
    status, out, err = _osbox_command(server, "create", "--metadata", "origin=cli-proc", "--lifetime", "600")
    assert status == 0, err
    sandbox_id = out.strip()
    yield sandbox_id
    _osbox_command(server, "rm", sandbox_id)


def test_create_sends_resource_limits_and_takes_cpu_and_memory(server: LocalServer) -> None:
    status, out, err = _osbox_command(
        server, "create", "--cpu", "500m", "--memory", "1Gi", "--lifetime", "120"
    )
    assert status == 0, err
    sandbox_id = out.strip()
    try:
        with lifecycle_client(server) as api:
            limits = api.get(f"/sandboxes/{sandbox_id}").raise_for_status().json()["resourceLimits"]
        assert (limits["cpu"], limits["memory"]) == ("500m", "1Gi")
    finally:
        _osbox_command(server, "rm", sandbox_id)


def test_exec_takes_its_options_after_the_id(server: LocalServer, cli_sandbox: str) -> None:
    assert _osbox_command(server, "exec", cli_sandbox, "--cwd", "/tmp", "pwd") == (0, "/tmp\n", "")
    assert _osbox_command(server, "exec", cli_sandbox, "--cwd=/var", "pwd")[1] == "/var\n"
    assert _osbox_command(server, "exec", "--cwd", "/tmp", cli_sandbox, "pwd")[1] == "/tmp\n"
    # From the command's first word on, everything is the command's, option-like words too.
    assert _osbox_command(server, "exec", cli_sandbox, "echo", "--cwd", "/x")[1] == "--cwd /x\n"
    status, _, err = _osbox_command(server, "exec", cli_sandbox, "--cwd")
    assert status == 2 and "--cwd: expected one argument" in err


def test_exec_passes_an_argv_through_word_for_word(server: LocalServer, cli_sandbox: str) -> None:
    words = ["my file", "it's", "$HOME", "a;b", "*", ""]
    status, _, err = _osbox_command(
        server, "exec", cli_sandbox, "--cwd", "/tmp", "--", "mkdir", "-p", "argv-test"
    )
    assert status == 0, err
    for word in words[:-1]:
        assert _osbox_command(server, "exec", cli_sandbox, "--", "touch", f"/tmp/argv-test/{word}")[0] == 0
    status, out, _ = _osbox_command(server, "exec", cli_sandbox, "ls", "-A", "/tmp/argv-test")
    assert status == 0 and sorted(out.splitlines()) == sorted(words[:-1])
    status, out, _ = _osbox_command(server, "exec", cli_sandbox, "printf", r"[%s]\n", *words)
    assert out == "".join(f"[{word}]\n" for word in words)
    # One word is a shell command line, as before.
    assert _osbox_command(server, "exec", cli_sandbox, "echo a | tr a b; exit 4") == (4, "b\n", "")


def test_ls_on_a_narrow_terminal_shows_whole_ids(server: LocalServer, cli_sandbox: str) -> None:
    status, shown, err = _osbox_command(server, "ls", "--metadata", "origin=cli-proc", tty_columns=50)
    assert status == 0, err
    assert cli_sandbox in shown and "…" not in shown
    assert "not shown: image, metadata, expires" in " ".join(shown.split())
    status, shown, _ = _osbox_command(server, "ls", "--metadata", "origin=cli-proc", tty_columns=20)
    assert status == 0 and cli_sandbox in shown.replace("\n", "")  # narrower than an id: lines, wrapped


def test_a_transfer_ends_with_a_summary_line(server: LocalServer, cli_sandbox: str, tmp_path: Path) -> None:
    local = tmp_path / "data.bin"
    local.write_bytes(b"x" * 3 * 1024 * 1024)
    status, out, err = _osbox_command(server, "upload", cli_sandbox, str(local), "/tmp/data.bin")
    assert status == 0 and out == ""
    assert re.fullmatch(
        rf"uploaded {local} to {cli_sandbox}:/tmp/data.bin: 3.1 MB in [\d.]+ s \(.+/s\)\n", err
    )
    status, _, err = _osbox_command(server, "download", cli_sandbox, "/tmp/data.bin", str(tmp_path / "back"))
    assert (
        status == 0 and err.startswith(f"downloaded {cli_sandbox}:/tmp/data.bin to ") and "3.1 MB in" in err
    )
    assert (tmp_path / "back").read_bytes() == local.read_bytes()
    assert _osbox_command(server, "download", "-q", cli_sandbox, "/tmp/data.bin", str(tmp_path / "q")) == (
        0, "", ""
    )  # fmt: skip


def test_exec_writes_the_output_exactly_and_exits_with_a_signal_as_a_shell_does(
    server: LocalServer, cli_sandbox: str
) -> None:
    assert _osbox_command(server, "exec", cli_sandbox, "printf abc") == (0, "abc", "")
    status, out, err = _osbox_command(server, "exec", cli_sandbox, "echo bye; kill -TERM $$")
    assert (status, out, err) == (143, "bye\n", "osbox: the command was killed by SIGTERM\n")
    status, _, err = _osbox_command(server, "exec", cli_sandbox, "kill -KILL $$")
    assert (status, err) == (137, "osbox: the command was killed by SIGKILL\n")
