"""PTY sessions against a real `osbox serve`, through the server proxy, on both twins: a real terminal
(python3 interactive, resize, `stty size`, job control and Ctrl-C through the tty), replay on reconnect,
one holder at a time and takeover, pipe mode, the reference's frames on the wire, bad input, and
`osbox shell` driven through a pseudo-terminal like a user's.

Every wait reads output until what is expected appears, with a deadline; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from osbox import (
    APIStatusError,
    AsyncSandbox,
    BadRequestError,
    ConflictError,
    ExecdClient,
    NotFoundError,
    PtyError,
    PtyExit,
    PtyOutput,
    PtySessionStatus,
    Sandbox,
)
from osbox.server import LocalServer
from tests.polling import wait_until

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime

PROMPT = "$ "
#: A job that says when it runs (in the foreground: bash hands it the terminal before it starts).
FOREGROUND_JOB = "sh -c 'echo job-$((6*7)); exec sleep 300'\n"


def test_python3_interactive_resize_and_stty_size(sandbox: Sandbox) -> None:
    seen: list[bytes] = []
    with sandbox.pty.create(100, 30, on_data=seen.append) as term:
        term.read_until(PROMPT)
        term.send_input("stty size; tty\n")
        assert term.read_until("30 100").endswith(b"30 100")
        assert term.read_until("/dev/pts/").endswith(b"/dev/pts/")  # a terminal of the sandbox's own

        term.send_input("python3 -q\n")
        term.read_until(">>> ")
        term.send_input("import os, sys; print(sys.stdin.isatty(), os.get_terminal_size())\n")
        term.read_until("True os.terminal_size(columns=100, lines=30)")
        term.resize(132, 43)
        term.send_input("print(os.get_terminal_size())\n")
        term.read_until("os.terminal_size(columns=132, lines=43)")
        term.send_input("exit()\n")
        term.read_until(PROMPT)
        term.send_input("stty size\n")
        term.read_until("43 132")
        term.send_input("exit 5\n")
        assert term.wait() == 5
    assert b"".join(seen).count(b"43 132") >= 1  # on_data saw everything read


async def test_the_async_twin_python3_resize_job_control(server: LocalServer) -> None:
    async with await AsyncSandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY) as sandbox:
        term = await sandbox.pty.create(90, 20)
        await term.read_until(PROMPT)
        await term.send_input("python3 -q\n")
        await term.read_until(">>> ")
        await term.resize(61, 17)
        await term.send_input("import os; print(os.get_terminal_size())\n")
        await term.read_until("columns=61, lines=17")
        await term.send_input("print('loop', 6 * 7) or exec('while True: pass')\n")
        await term.read_until("loop 42")
        await term.send_input("\x03")  # Ctrl-C through the terminal: the loop, not python, is interrupted
        await term.read_until("KeyboardInterrupt")
        await term.read_until(">>> ")
        await term.send_input("exit()\n")
        await term.read_until(PROMPT)
        await term.send_input("stty size\n")
        await term.read_until("17 61")
        # Job control: a stopped job, then Ctrl-C on a foreground one; the shell survives both.
        await term.send_input(FOREGROUND_JOB)
        await term.read_until("job-42")  # printed by the job: it is in the foreground now
        await term.send_input("\x1a")  # Ctrl-Z
        await term.read_until("Stopped")
        await term.send_input("kill -9 %1; wait; echo gone-$((6*7))\n")
        await term.read_until("gone-42")
        await term.send_input(FOREGROUND_JOB)
        await term.read_until("job-42")
        await term.send_input("\x03")
        await term.send_input("echo after=$?\n")
        await term.read_until("after=130")
        await term.send_input("exit 3\n")
        assert await term.wait() == 3
        status = await sandbox.execd.get_pty(term.session_id)
        assert (status.running, status.exit_code, status.mode) == (False, 3, "pty")
        await term.kill()
        with pytest.raises(NotFoundError):
            await sandbox.execd.get_pty(term.session_id)


def test_reconnect_replays_exactly_what_was_missed(sandbox: Sandbox) -> None:
    term = sandbox.pty.create()
    try:
        term.read_until(PROMPT)
        term.send_input("echo one-$((1+1))\n")
        term.read_until("one-2")
        term.read_until(PROMPT)
        seen_until = term.offset
        term.disconnect()
        # Output made while nobody is connected: the server keeps it.
        other = sandbox.pty.connect(term.session_id, since=seen_until)
        other.send_input("echo two-$((2+2))\n")
        other.read_until("two-4")
        other.disconnect()

        term.reconnect()  # resumes at the offset it had: the echo and "two-4", once, and nothing before
        replayed = term.read_until("two-4")
        assert b"one-2" not in replayed and replayed.count(b"two-4") == 1
        assert sandbox.execd.get_pty(term.session_id).output_offset >= term.offset

        everything = sandbox.pty.connect(term.session_id)  # no `since`: all that was kept
        assert b"one-2" in everything.read_until("two-4")
        everything.send_input("exit 0\n")
        assert everything.wait() == 0
        # After the exit a reconnect still gets the replay and the exit status.
        late = sandbox.pty.connect(term.session_id, since=0)
        assert b"two-4" in late.read_until("two-4")
        assert late.wait() == 0
    finally:
        sandbox.pty.kill(term.session_id)


def test_one_holder_at_a_time_and_takeover(sandbox: Sandbox) -> None:
    first = sandbox.pty.create()
    try:
        first.read_until(PROMPT)
        with pytest.raises(ConflictError) as refused:
            sandbox.pty.connect(first.session_id, takeover=False)
        assert refused.value.code == "ALREADY_CONNECTED"

        second = sandbox.pty.connect(first.session_id, takeover=True)
        with pytest.raises(PtyError) as taken:
            first.read(timeout=30)
            first.read(timeout=30)  # (its replay may be pending)
        assert taken.value.code == "TAKEN_OVER"
        second.send_input("echo x-$((3*3))\n")
        second.read_until("x-9")  # the same shell goes on
        first.reconnect()  # and the first can take it back
        first.send_input("echo y-$((4*4))\n")
        first.read_until("y-16")
    finally:
        first.kill()


def test_pipe_mode_keeps_stdout_and_stderr_apart(sandbox: Sandbox) -> None:
    execd = sandbox.execd
    session_id = execd.create_pty(cwd="/tmp/pty-new-dir")
    try:
        with execd.connect_pty(session_id, pipe=True) as conn:
            conn.send_input("pwd; echo out; echo err >&2; tty; exit 4\n")
            outputs: dict[str, bytes] = {"stdout": b"", "stderr": b""}
            end = None
            while end is None:
                event = conn.recv(timeout=30)
                if isinstance(event, PtyOutput):
                    outputs[event.channel] += event.data
                else:
                    end = event
            assert conn.mode == "pipe"
        assert end == PtyExit(4)
        assert outputs == {"stdout": b"/tmp/pty-new-dir\nout\nnot a tty\n", "stderr": b"err\n"}
        assert execd.get_pty(session_id).mode == "pipe"
    finally:
        execd.delete_pty(session_id)


def test_command_sessions_and_kill(sandbox: Sandbox) -> None:
    with sandbox.pty.create(command="printf 'a\\nb\\n'") as listed:
        assert b"".join(listed) == b"a\r\nb\r\n"  # the iterator form: every chunk until the exit
        assert listed.exit_code == 0
    term = sandbox.pty.create(command="printf 'ready\\n'; exec sleep 300")
    term.read_until("ready")
    term.kill()  # its processes die, the session goes
    with pytest.raises(NotFoundError):
        sandbox.execd.get_pty(term.session_id)
    killed = sandbox.pty.create(command="echo started; exec sleep 300")
    killed.read_until("started")
    killed.signal("SIGTERM")
    assert killed.wait() == 128 + 15
    killed.kill()


def test_the_reference_frames_on_the_wire(sandbox: Sandbox) -> None:
    """What a client of the reference execd sends and expects, byte for byte."""
    execd = sandbox.execd
    headers = {name: value for name, value in execd._headers.items() if name.lower() != "accept"}
    session_id = execd.create_pty()
    url = execd.base_url.replace("http", "ws", 1) + f"/pty/{session_id}/ws"
    try:
        with connect(url, additional_headers=headers) as ws:
            connected = json.loads(ws.recv(timeout=30))
            assert connected["type"] == "connected" and connected["mode"] == "pty"
            assert connected["session_id"] == session_id
            ws.send(json.dumps({"type": "ping"}))
            ws.send(json.dumps({"type": "bogus"}))
            ws.send(json.dumps({"type": "resize", "cols": 0, "rows": 5}))
            ws.send(json.dumps({"type": "signal", "signal": "SIGNOPE"}))
            ws.send(json.dumps({"type": "stdin", "data": "echo text-$((5*5))\n"}))
            ws.send(b"\x00exit 9\n")
            frames: list[str] = []
            output = b""
            while not frames or json.loads(frames[-1])["type"] != "exit":
                message = ws.recv(timeout=30)
                if isinstance(message, bytes):
                    assert message[0] == 1  # stdout
                    output += message[1:]
                else:
                    frames.append(message)
        kinds = [json.loads(frame) for frame in frames]
        assert kinds[0] == {"type": "pong"}
        assert [k["code"] for k in kinds if k["type"] == "error"] == ["INVALID_FRAME"] * 3
        assert kinds[-1] == {"type": "exit", "exit_code": 9}
        assert b"text-25" in output
        with connect(url + "?since=3", additional_headers=headers) as ws:
            replay = ws.recv(timeout=30)
            assert isinstance(replay, bytes) and replay[0] == 3
            assert int.from_bytes(replay[1:9], "big") == 3 and replay[9:] == output[3:]
            assert json.loads(ws.recv(timeout=30))["offset"] == len(output)
            assert json.loads(ws.recv(timeout=30)) == {"type": "exit", "exit_code": 9}
        with pytest.raises(InvalidStatus) as missing:
            connect(url.replace(session_id, "nope"), additional_headers=headers)
        assert missing.value.response.status_code == 404
        assert json.loads(missing.value.response.body)["code"] == "CONTEXT_NOT_FOUND"
    finally:
        execd.delete_pty(session_id)


def test_bad_input_is_a_typed_error(sandbox: Sandbox) -> None:
    execd = sandbox.execd
    with pytest.raises(NotFoundError):
        execd.get_pty("nope")
    with pytest.raises(NotFoundError):
        execd.delete_pty("nope")
    with pytest.raises(NotFoundError):
        execd.connect_pty("nope")
    with pytest.raises(BadRequestError):
        _post(execd, {"cwd": 5})
    with pytest.raises(ValueError, match="cols"):
        sandbox.pty.create(0, 10)
    session_id = execd.create_pty()
    try:
        with (
            ExecdClient(execd.base_url, access_token="wrong") as stranger,
            pytest.raises(APIStatusError) as denied,
        ):
            stranger.connect_pty(session_id)  # the proxy checks the token on the upgrade too
        assert denied.value.status_code in (401, 403)
    finally:
        execd.delete_pty(session_id)
    term = sandbox.pty.create()
    try:
        with pytest.raises(TypeError):
            term.send_input(42)  # type: ignore[arg-type]
    finally:
        term.kill()


def _post(execd: object, body: object) -> None:
    from osbox._operation import APIRequest, no_content

    execd._call(APIRequest("POST", "/pty", json=body, parse=no_content))  # type: ignore[attr-defined]


def test_the_size_holds_before_the_shell_starts(sandbox: Sandbox) -> None:
    execd = sandbox.execd
    session_id = execd.create_pty(command="stty size", cols=101, rows=31)  # no resize from the client
    try:
        with execd.connect_pty(session_id) as conn:
            assert b"".join(output.data for output in conn) == b"31 101\r\n"  # its first output
            assert conn.exit_code == 0
    finally:
        execd.delete_pty(session_id)
    with sandbox.pty.create(132, 43, command="stty size") as term:
        assert term.read_until("\n") == b"43 132\r\n"
    for bad in ({"cols": 0}, {"rows": "40"}, {"cols": 70000, "rows": 10}, {"cols": True}):
        with pytest.raises(BadRequestError, match=r"cols|rows"):
            _post(execd, bad)
    with pytest.raises(ValueError, match="rows"):
        execd.create_pty(cols=80, rows=0)


def test_read_only_viewers_watch_beside_the_holder(sandbox: Sandbox) -> None:
    term = sandbox.pty.create()
    try:
        term.send_input("echo before-$((2*3))\n")
        term.read_until("before-6")
        viewer = sandbox.pty.connect(term.session_id, readonly=True)
        second = sandbox.pty.connect(term.session_id, readonly=True, since=term.offset)
        viewer.read_until("before-6")  # what was kept comes first, as for any client
        term.send_input("echo live-$((6*7))\n")  # the holder still holds it: viewers took nothing
        viewer.read_until("live-42")
        second.read_until("live-42")
        with pytest.raises(PtyError) as refused:
            viewer.send_input("echo nope\n")
        assert refused.value.code == "READ_ONLY"
        with pytest.raises(PtyError):
            viewer.resize(10, 10)

        taker = sandbox.pty.connect(term.session_id, takeover=True)  # takeover still works
        with pytest.raises(PtyError) as taken:
            while True:
                term.read(timeout=30)
        assert taken.value.code == "TAKEN_OVER"
        taker.send_input("echo taken-$((5*5)); exit 6\n")
        viewer.read_until("taken-25")
        assert viewer.wait() == 6 and second.wait() == 6 and taker.wait() == 6  # every viewer sees the exit
    finally:
        term.kill()


def test_a_viewer_is_refused_input_on_the_wire(sandbox: Sandbox) -> None:
    execd = sandbox.execd
    headers = {name: value for name, value in execd._headers.items() if name.lower() != "accept"}
    term = sandbox.pty.create()
    url = execd.base_url.replace("http", "ws", 1) + f"/pty/{term.session_id}/ws"
    try:
        term.read_until(PROMPT)
        with connect(url + "?readonly=1", additional_headers=headers) as ws:
            frames = [ws.recv(timeout=30) for _ in range(2)]  # the replay and `connected`
            connected = json.loads(next(f for f in frames if isinstance(f, str)))
            assert connected["readonly"] is True and connected["type"] == "connected"
            ws.send(b"\x00touch /tmp/typed-by-a-viewer\n")
            ws.send(json.dumps({"type": "resize", "cols": 20, "rows": 5}))
            ws.send(json.dumps({"type": "ping"}))
            answers = [json.loads(ws.recv(timeout=30)) for _ in range(3)]
            assert [a.get("code") for a in answers] == ["READ_ONLY", "READ_ONLY", None]
            assert answers[2] == {"type": "pong"}
        term.send_input("stty size; test -e /tmp/typed-by-a-viewer || echo absent-$((2+2))\n")
        assert b"24 80" in term.read_until("absent-4")  # neither the keys nor the resize arrived
        with pytest.raises(InvalidStatus) as both:
            connect(url + "?readonly=1&takeover=1", additional_headers=headers)
        assert both.value.response.status_code == 400
    finally:
        term.kill()


async def test_the_async_twin_size_and_viewer(server: LocalServer) -> None:
    async with await AsyncSandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY) as sandbox:
        term = await sandbox.pty.create(77, 19, command="stty size; read line; echo got $line")
        viewer = await sandbox.pty.connect(term.session_id, readonly=True)
        assert await term.read_until("\n") == b"19 77\r\n"
        await viewer.read_until("19 77")
        (listed,) = await sandbox.pty.list()  # the one session, with its holder and its viewer
        assert (listed.session_id, listed.running, listed.connected, listed.viewers) == (
            term.session_id,
            True,
            True,
            1,
        )
        with pytest.raises(PtyError):
            await viewer.send_input("no\n")
        await term.send_input("yes\n")
        await viewer.read_until("got yes")
        assert await viewer.wait() == 0 and await term.wait() == 0
        await term.kill()


# --- `osbox shell`, as a user runs it in a terminal ------------------------------------------------------


class _Terminal:
    """The user's side of a pseudo-terminal that runs `osbox shell`."""

    def __init__(self, fd: int, saved: list[Any] | None = None) -> None:
        self.fd = fd
        self.seen = b""
        #: The terminal's settings before osbox started on it.
        self.saved = saved

    def read_until(self, wanted: bytes, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {wanted!r} on the terminal; it shows {self.seen[-800:]!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError as exc:  # EIO: the program has gone
                    assert exc.errno == errno.EIO
                    chunk = b""
                assert chunk, f"the terminal closed before {wanted!r}; it showed {self.seen[-800:]!r}"
                self.seen += chunk

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)


@contextlib.contextmanager
def _osbox_on_a_terminal(
    server: LocalServer, *args: str, size: tuple[int, int] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], _Terminal, int]]:
    """`osbox ARGS...` run on a new pseudo-terminal (of `size`, cols x rows): its process, the user's
    side and the terminal's follower end; all ended and closed on the way out."""
    controller, follower = os.openpty()
    if size is not None:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    argv = [str(Path(sys.executable).parent / "osbox"), *args]
    user = _Terminal(controller, saved=termios.tcgetattr(follower))
    process = subprocess.Popen(
        argv,
        env=_client_env(server),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    try:
        yield process, user, follower
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(follower)
        os.close(controller)


def _client_env(server: LocalServer) -> dict[str, str]:
    return {
        **os.environ,
        "OPEN_SANDBOX_DOMAIN": server.base_url.removeprefix("http://"),
        "OPEN_SANDBOX_API_KEY": API_KEY,
        "TERM": "xterm",
    }


def test_osbox_shell_in_a_pseudo_terminal(server: LocalServer, sandbox: Sandbox) -> None:
    with _osbox_on_a_terminal(server, "shell", sandbox.id, size=(111, 33)) as (process, user, follower):
        user.read_until(PROMPT.encode())
        user.type(b"stty size\r")
        user.read_until(b"33 111")
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
        os.killpg(process.pid, signal.SIGWINCH)  # , as the terminal emulator's resize sends
        user.type(FOREGROUND_JOB.replace("\n", "\r").encode())
        user.read_until(b"job-42")
        user.type(b"\x03")  # raw mode: Ctrl-C reaches the sandbox's terminal, not osbox
        user.type(b"stty size; echo code=$?\r")
        user.read_until(b"40 150")
        user.read_until(b"code=0")
        user.type(b"exit 7\r")
        assert process.wait(timeout=60) == 7
        assert termios.tcgetattr(follower) == user.saved  # the terminal is as osbox found it


def test_a_connected_client_loses_no_output(sandbox: Sandbox) -> None:
    """More than the 1 MiB the server keeps, read slowly: the process waits for the client instead."""
    term = sandbox.pty.create(command="stty -onlcr; seq 1 300000; echo done-$((9*9))", pipe=False)
    try:
        output = bytearray()
        while (chunk := term.read(timeout=60)) is not None:
            output += chunk
        assert term.exit_code == 0
        lines = bytes(output).split(b"\n")
        assert lines[:300000] == [str(n).encode() for n in range(1, 300001)]
        assert lines[300000] == b"done-81"
    finally:
        term.kill()


def test_kill_leaves_no_process_and_no_descriptor(server: LocalServer, sandbox: Sandbox) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))  # the server runs in this process

    sandbox.pty.create().kill()  # warm-up: first-use imports and pools
    before = open_fds()
    for _ in range(5):
        term = sandbox.pty.create(command="echo up; exec sleep 301")
        term.read_until("up")
        term.kill()
    assert sandbox.run("pgrep -f 'sleep 30[1]' || echo none").stdout == "none\n"
    wait_until(lambda: open_fds() <= before, what=f"the server's descriptors back to {before}")


def test_osbox_shell_with_piped_input_and_a_bad_id(server: LocalServer, sandbox: Sandbox) -> None:
    env = {
        **os.environ,
        "OPEN_SANDBOX_DOMAIN": server.base_url.removeprefix("http://"),
        "OPEN_SANDBOX_API_KEY": API_KEY,
    }
    osbox = str(Path(sys.executable).parent / "osbox")
    typed = b"echo piped-$((2*3))\nexit 2\n"
    done = subprocess.run(
        [osbox, "shell", sandbox.id], input=typed, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 2 and b"piped-6" in done.stdout, done
    # Without a command line of its own, piped input ends with Ctrl-D: the shell exits 0.
    done = subprocess.run(
        [osbox, "shell", sandbox.id, "--", "cat"], input=b"one\n", env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.count(b"one") == 2, done  # the echo, then cat's copy
    done = subprocess.run([osbox, "shell", "no-such-sandbox"], env=env, capture_output=True, timeout=120)
    assert done.returncode == 1 and done.stderr.decode().count("\n") == 1, done


# --- `osbox shell --readonly`: watching a session another client drives -------------------------------


def _session(sandbox: Sandbox, session_id: str) -> PtySessionStatus:
    return next(s for s in sandbox.pty.list() if s.session_id == session_id)


def test_osbox_shell_readonly_watches_what_another_client_types(
    server: LocalServer, sandbox: Sandbox
) -> None:
    held: list[bytes] = []
    term = sandbox.pty.create(on_data=held.append)
    term.read_until(PROMPT)
    term.send_input("echo before-$((2*4))\n")
    term.read_until("before-8")
    try:
        with _osbox_on_a_terminal(server, "shell", sandbox.id, "--readonly") as (process, user, follower):
            user.read_until(b"read-only")  # says so, on stderr; it watches the one running session
            user.read_until(b"before-8")  # what the session kept comes first
            user.type(b"echo typed-by-the-viewer\r")  # not sent
            term.send_input("echo live-$((3*3))\n")
            user.read_until(b"live-9")  # then its output as it comes
            term.send_input("exit 5\n")
            assert process.wait(timeout=60) == 5  # the session's end ends it, with its status
            assert term.wait(timeout=60) == 5
            assert b"typed-by-the-viewer" not in b"".join(held) + user.seen
            assert termios.tcgetattr(follower) == user.saved  # the terminal is as osbox found it
    finally:
        term.kill()


def test_osbox_shell_readonly_leaves_on_ctrl_bracket_and_finds_sessions(
    server: LocalServer, sandbox: Sandbox
) -> None:
    osbox = str(Path(sys.executable).parent / "osbox")
    env = _client_env(server)
    viewer = [osbox, "shell", sandbox.id, "--readonly"]
    done = subprocess.run(viewer, env=env, capture_output=True, timeout=120)
    assert done.returncode == 1 and b"no terminal session is running" in done.stderr, done

    first = sandbox.pty.create(command="echo one-$((1+1)); exec sleep 600")
    second = sandbox.pty.create(command="echo two-$((1+2)); exec sleep 600")
    try:
        first.read_until("one-2")
        second.read_until("two-3")
        assert _session(sandbox, first.session_id).running and _session(sandbox, first.session_id).connected
        assert _session(sandbox, second.session_id).command == "echo two-$((1+2)); exec sleep 600"
        done = subprocess.run(viewer, env=env, capture_output=True, timeout=120)
        assert done.returncode == 1, done  # which one? the error names both
        assert first.session_id.encode() in done.stderr and second.session_id.encode() in done.stderr

        watching = ("shell", sandbox.id, "--readonly", "--session", second.session_id)
        with _osbox_on_a_terminal(server, *watching) as (process, user, _):
            user.read_until(b"two-3")
            wait_until(lambda: _session(sandbox, second.session_id).viewers == 1, what="the viewer counted")
            user.type(b"\x1d")  # Ctrl-]: the viewer leaves, the session goes on
            assert process.wait(timeout=60) == 0
        assert _session(sandbox, second.session_id).running
        # Piped (no terminal), it watches until the session ends; its input is ignored.
        piped = subprocess.Popen(
            [*viewer, "--session", first.session_id], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert piped.stdin is not None and piped.stdout is not None
        piped.stdin.write(b"echo ignored\n")
        piped.stdin.close()
        wait_until(lambda: _session(sandbox, first.session_id).viewers == 1, what="the piped viewer")
        first.signal("SIGTERM")
        assert piped.wait(timeout=60) == 128 + signal.SIGTERM
        watched = piped.stdout.read()
        assert b"one-2" in watched and b"ignored" not in watched  # typed input would echo
    finally:
        first.kill()
        second.kill()


def test_osbox_shell_readonly_leaves_at_once_while_its_terminal_is_not_read(
    server: LocalServer, sandbox: Sandbox
) -> None:
    """A viewer stuck writing to a terminal nobody reads (here: the test's) still leaves on Ctrl-]:
    restoring the terminal with TCSADRAIN used to wait for that output forever, a hang."""
    term = sandbox.pty.create(command="seq 1 150000; echo all-$((5*5)); exec sleep 600")  # ~900 KB kept
    try:
        term.read_until("all-25", timeout=120)
        watching = ("shell", sandbox.id, "--readonly", "--session", term.session_id)
        with _osbox_on_a_terminal(server, *watching) as (process, user, _):
            user.read_until(b"read-only")

            def unread() -> int:
                (count,) = struct.unpack("i", fcntl.ioctl(user.fd, termios.FIONREAD, b"\0" * 4))
                return int(count)

            # The terminal's buffer is full: the replay (far larger) blocks the viewer's writes.
            wait_until(lambda: unread() >= 4095, what="the viewer to fill its terminal")
            user.type(b"\x1d")
            assert process.wait(timeout=60) == 0
    finally:
        term.kill()
