"""PTY sessions: `POST /pty`, `GET`/`DELETE /pty/{id}`, and the WebSocket `/pty/{id}/ws`; `GET /pty`
(osbox's) lists them, so a viewer can find the session to watch.

The reference execd's protocol (wire-behaviour §1.11; frames in `osbox._pty`). A session is
created empty; the first WebSocket starts its shell (`bash`, else `sh`; `bash -c command` when the
session has a command): by default on a real terminal whose controlling process it is (a pty
pair on the host, the follower end handed to the sandbox, `spawn(..., controlling_tty=True)`), so
job control, Ctrl-C through the terminal and window-size changes behave as in a login; with
`?pty=0` on plain pipes (stdout and stderr apart). `TERM` is `xterm-256color` on a terminal.

One client holds a session at a time: a second gets 409 `ALREADY_CONNECTED` before the upgrade,
unless it asks `?takeover=1`, which closes the holder's socket with code 4001 `TAKEN_OVER` and
hands the session over; the shell goes on. Besides the holder, up to `MAX_VIEWERS` read-only
viewers (`?readonly=1`, osbox's) receive the same output (replay first, as for the holder) and the
exit frame; their keystrokes, resizes and signals are refused with an `error` frame `READ_ONLY`
(the connection stays), and they never slow the shell down: one that falls behind what is kept
resumes at the oldest byte kept, in a replay frame that says its offset. Output is kept (1 MiB,
`ptylog.OutputLog`) so a client that reconnects with `?since=offset` is sent what it missed as one
replay frame (without `since`, everything kept). When the process ends, the holder (and every
viewer) gets `{"type":"exit","exit_code":N}` and a normal close.

Decisions where the reference differs or is silent:
- exit statuses are a shell's: 128 + N for a process killed by signal N (the reference says -1);
- connecting to a session whose process has ended replays its output and sends `exit` again
  (the reference starts a new shell in the old session);
- a bad control frame (unknown type, bad JSON, a size of 0) is answered with an `error` frame
  `INVALID_FRAME` (the reference ignores some of them silently);
- `connected` also carries `offset`, where the live output starts, and `readonly`;
- `POST /pty` also takes `cols` and `rows` (osbox's; the reference ignores them): the terminal has
  that size before the shell starts, so its first output (`stty size`, a prompt's layout) sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import struct
import termios
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from osbox._pty import (
    ALREADY_CONNECTED,
    INVALID_FRAME,
    PTY_CLOSE_TAKEN_OVER,
    READ_ONLY,
    START_FAILED,
    STDERR,
    STDIN,
    STDIN_WRITE_FAILED,
    STDOUT,
    TAKEN_OVER,
    control,
    output_frame,
    replay_frame,
)
from osbox.server._backend.base import BackendError, SandboxHandle, SandboxProcess

from .commands import DEFAULT_CWD, new_id
from .errors import (
    CONTEXT_NOT_FOUND,
    INVALID_REQUEST_BODY,
    ExecdError,
    bad_request,
    error_body,
    in_sandbox,
    not_found,
)
from .inputs import json_body, json_object, optional_str, sandbox_of
from .ptylog import OutputLog
from .request_state import request_state
from .state import LIMIT_EXCEEDED, Budget

__all__ = ["PtyApi"]

#: PTY sessions one sandbox may keep at once (running or ended but not deleted).
MAX_PTY_SESSIONS = 32
DEFAULT_SIZE = (80, 24)  # cols, rows: the reference's
TAKEOVER_WAIT_SECONDS = 5.0
#: Read-only viewers one session may have at once, besides its holder.
MAX_VIEWERS = 16
#: Keystrokes queued for a process that does not read them: the WebSocket waits beyond this.
INPUT_HIGH_WATER = 256 * 1024
READ_CHUNK = 64 * 1024
_MAX_SIDE = 65535
#: Linux's unlockpt and "open the follower of this controller" ioctls (the generic values, those of
#: x86 and arm; Python's termios has neither).
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441


@dataclass
class _Holder:
    """The WebSocket connection holding a session."""

    evicted: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)


def shell_status(code: int) -> int:
    """A wait status as a shell reports it: -N (killed by signal N) becomes 128 + N."""
    return 128 - code if code < 0 else code


class PtySession:
    """One session: its process once started, its output log, its input, its holder."""

    def __init__(
        self, session_id: str, cwd: str, command: str | None, size: tuple[int, int] = DEFAULT_SIZE
    ) -> None:
        self.id = session_id
        self.cwd = cwd
        self.command = command
        self.size = size  # (cols, rows) the terminal starts with
        self.viewers = 0
        self.mode: str | None = None  # "pty" or "pipe" once started
        self.launch_failed = False
        self.process: SandboxProcess | None = None
        self.exit_code: int | None = None
        self.log = OutputLog()
        self.holder: _Holder | None = None
        self.ended = asyncio.Event()
        self._start_lock = asyncio.Lock()
        self._input_fd = -1
        self._terminal_fd = -1  # the pty's controller end (pty mode), also `_input_fd`
        self._outputs: dict[int, int] = {}  # fd -> channel, while open
        self._pending = bytearray()
        self._drained = asyncio.Event()
        self._waiter: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.exit_code is None

    def status(self) -> dict[str, Any]:
        """`GET /pty/{id}`: the reference's fields, plus osbox's `command`, `connected` (a client holds
        it), `viewers`, and `mode` and `exit_code` once known."""
        body: dict[str, Any] = {
            "session_id": self.id,
            "running": self.running,
            "output_offset": self.log.total,
            "launch_attempted": self.mode is not None or self.launch_failed,
            "launch_failed": self.launch_failed,
            "command": self.command,
            "connected": self.holder is not None,
            "viewers": self.viewers,
        }
        if self.mode is not None:
            body["mode"] = self.mode
        if self.exit_code is not None:
            body["exit_code"] = self.exit_code
        return body

    # -- starting --

    async def start(self, handle: SandboxHandle, *, pipe: bool) -> None:
        """Start the shell (once; later callers find it started). Failures raise `ExecdError`."""
        async with self._start_lock:
            if self.mode is not None:
                return
            if self._closed:
                raise ExecdError(404, CONTEXT_NOT_FOUND, f"pty session {self.id} was deleted")
            try:
                await (self._start_pipe(handle) if pipe else self._start_terminal(handle))
            except BaseException:
                self.launch_failed = True
                raise
            self.mode = "pipe" if pipe else "pty"
            loop = asyncio.get_running_loop()
            for fd in self._outputs:
                loop.add_reader(fd, self._on_output, fd)
            self.log.pause_producer = self._pause_output
            self._waiter = asyncio.create_task(self._wait_exit(), name=f"osbox-pty-{self.id}")

    async def _spawn(self, handle: SandboxHandle, **kwargs: Any) -> SandboxProcess:
        # `bash`: the sandbox's agent runs `sh` instead where the image has no bash.
        argv = ["bash", "-c", self.command] if self.command else ["bash"]
        return await in_sandbox(handle.spawn(argv, cwd=self.cwd, **kwargs), "pty_spawn")

    async def _start_terminal(self, handle: SandboxHandle) -> None:
        controller, follower = await open_terminal(handle)
        try:
            set_size(controller, *self.size)
            os.set_blocking(controller, False)
            self.process = await self._spawn(
                handle,
                env={"TERM": "xterm-256color"},
                stdin=follower,
                stdout=follower,
                stderr=follower,
                controlling_tty=True,
            )
        except BaseException:
            os.close(controller)
            raise
        finally:
            os.close(follower)
        self._terminal_fd = self._input_fd = controller
        self._outputs = {controller: STDOUT}

    async def _start_pipe(self, handle: SandboxHandle) -> None:
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
        (in_r, in_w), (out_r, out_w), (err_r, err_w) = pipes
        try:
            self.process = await self._spawn(handle, env={}, stdin=in_r, stdout=out_w, stderr=err_w)
        except BaseException:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        self._input_fd = in_w
        self._outputs = {out_r: STDOUT, err_r: STDERR}

    # -- output --

    def _on_output(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal's last follower closed
            data = b""
        if data:
            self.log.append(self._outputs[fd], data)
        else:
            self._close_output(fd)

    def _close_output(self, fd: int) -> None:
        if self._outputs.pop(fd, None) is None:
            return
        asyncio.get_running_loop().remove_reader(fd)
        if fd != self._terminal_fd:
            os.close(fd)

    def _pause_output(self, paused: bool) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._outputs:
            if paused:
                loop.remove_reader(fd)
            else:
                loop.add_reader(fd, self._on_output, fd)

    def _drain_output(self) -> None:
        """After the exit: take what the outputs hold now, then close them."""
        for fd in list(self._outputs):
            with contextlib.suppress(OSError):
                while data := os.read(fd, READ_CHUNK):
                    self.log.append(self._outputs[fd], data)
            self._close_output(fd)

    async def _wait_exit(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        self._drain_output()
        self.exit_code = shell_status(code)
        self._close_input()
        self.log.end()
        self.ended.set()

    # -- input and control --

    async def write(self, data: bytes) -> None:
        """Queue keystrokes; waits while too many are queued. Raises OSError when input is closed."""
        if self._input_fd < 0:
            raise OSError(errno.EPIPE, "the session's input is closed")
        self._pending += data
        self._flush()
        while len(self._pending) > INPUT_HIGH_WATER and self._input_fd >= 0:
            self._drained.clear()
            await self._drained.wait()

    def _flush(self) -> None:
        fd = self._input_fd
        if fd < 0:
            return
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                written = os.write(fd, self._pending)
                del self._pending[:written]
        except BlockingIOError:
            pass
        except OSError:
            self._pending.clear()  # the reader is gone: what was queued cannot arrive
        if self._pending:
            loop.add_writer(fd, self._flush)
        else:
            loop.remove_writer(fd)
            self._drained.set()

    def _close_input(self) -> None:
        fd, self._input_fd = self._input_fd, -1
        self._pending.clear()
        self._drained.set()
        if fd >= 0:
            loop = asyncio.get_running_loop()
            loop.remove_writer(fd)
            if fd in self._outputs:
                self._close_output(fd)
            os.close(fd)
        self._terminal_fd = -1

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal's size (the foreground job gets SIGWINCH); nothing in pipe mode."""
        if self._terminal_fd >= 0:
            set_size(self._terminal_fd, cols, rows)

    def signal(self, signum: int) -> None:
        """Signal the shell's process group."""
        if self.running and self.process is not None:
            self.process.signal_group(signum)

    async def close(self) -> None:
        """Kill the process group, end the output, release every descriptor."""
        async with self._start_lock:  # a start in flight finishes first, and is killed here
            self._closed = True
        if self.running and self.process is not None:
            self.process.signal_group(signal.SIGKILL)
        if self._waiter is not None:
            with contextlib.suppress(Exception):
                await self._waiter
        self._drain_output()
        self._close_input()
        self.log.end()
        self.ended.set()  # the holder's socket sends the exit frame and closes


async def open_terminal(handle: SandboxHandle) -> tuple[int, int]:
    """A pty pair (controller, follower) from the sandbox's own `/dev/ptmx`, so that inside it the
    terminal has a name (`tty` says `/dev/pts/0`) and belongs to the sandbox user; a host pty where
    the sandbox has none (a backend without its own /dev). Opened by the sandbox (as its user, in
    its view); the server only unlocks it and opens its follower through the controller itself
    (TIOCGPTPEER), never through a path."""
    try:
        controller = await handle.files.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    except (OSError, ValueError, BackendError):
        return os.openpty()
    try:
        fcntl.ioctl(controller, _TIOCSPTLCK, struct.pack("i", 0))
        follower = fcntl.ioctl(controller, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:  # not a pty controller after all
        os.close(controller)
        return os.openpty()
    return controller, follower


def set_size(fd: int, cols: int, rows: int) -> None:
    """TIOCSWINSZ on a terminal."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyApi:
    """The PTY endpoints and every sandbox's sessions."""

    def __init__(self) -> None:
        self._sessions: dict[str, dict[str, PtySession]] = {}
        self._budgets: dict[str, Budget] = {}

    def _of(self, handle: SandboxHandle) -> dict[str, PtySession]:
        return self._sessions.setdefault(handle.sandbox_id, {})

    def _session(self, request: Request) -> PtySession:
        session_id = request.path_params["id"]
        session = self._of(sandbox_of(request)).get(session_id)
        if session is None:
            raise not_found(f"pty session {session_id} not found", CONTEXT_NOT_FOUND)
        return session

    async def create(self, request: Request) -> Response:
        """`POST /pty {cwd?, command?, cols?, rows?}` → 201 `{session_id}`; the cwd is created if missing."""
        body = await json_body(request, required=False)
        fields = json_object(body) if body is not None else {}
        cwd = optional_str(fields.get("cwd"), "cwd") or DEFAULT_CWD
        command = optional_str(fields.get("command"), "command") or None
        size = DEFAULT_SIZE
        for index, side in enumerate(("cols", "rows")):
            value = fields.get(side)
            if value is None:
                continue
            if not _side(value):
                raise bad_request(f"'{side}' must be an integer from 1 to {_MAX_SIDE}")
            size = (value, size[1]) if index == 0 else (size[0], value)
        handle = sandbox_of(request)
        sessions = self._of(handle)
        budget = self._budgets.setdefault(handle.sandbox_id, Budget("pty sessions", MAX_PTY_SESSIONS))
        with budget.claim(len(sessions)):
            await in_sandbox(handle.files.make_dirs({cwd: {"mode": 0}}), "pty_cwd")
            resolved = await in_sandbox(handle.files.resolve_dir(cwd), "pty_cwd")
            session = PtySession(new_id(), resolved, command, size)
            sessions[session.id] = session
        return JSONResponse({"session_id": session.id}, status_code=201)

    async def list(self, request: Request) -> Response:
        """`GET /pty` (osbox's): every session of the sandbox, oldest first, as `GET /pty/{id}` shows it."""
        return JSONResponse([session.status() for session in self._of(sandbox_of(request)).values()])

    async def status(self, request: Request) -> Response:
        """`GET /pty/{id}` → `{session_id, running, output_offset, ...}`."""
        return JSONResponse(self._session(request).status())

    async def delete(self, request: Request) -> Response:
        """`DELETE /pty/{id}`: kill its process group, close its socket, forget it."""
        session = self._session(request)
        self._of(sandbox_of(request)).pop(session.id, None)
        await session.close()
        return Response(status_code=200)

    async def forget(self, sandbox_id: str) -> None:
        """End every session of a sandbox (it is being deleted)."""
        sessions = self._sessions.pop(sandbox_id, {})
        self._budgets.pop(sandbox_id, None)
        await asyncio.gather(*(s.close() for s in sessions.values()), return_exceptions=True)

    async def aclose(self) -> None:
        """End every session of every sandbox."""
        for sandbox_id in list(self._sessions):
            await self.forget(sandbox_id)

    # -- the WebSocket --

    async def websocket(self, ws: WebSocket) -> None:
        """`/pty/{id}/ws?since=&takeover=1&pty=0`: see the module docstring."""
        handle = request_state(ws).sandbox
        session_id = ws.path_params["id"]
        session = self._of(handle).get(session_id)
        if session is None:
            await _deny(ws, 404, CONTEXT_NOT_FOUND, f"pty session {session_id} not found")
            return
        query = ws.query_params
        if query.get("readonly") == "1":
            await self._view(ws, handle, session)
            return
        previous = session.holder
        if previous is not None and query.get("takeover") != "1":
            message = f"another client is connected to pty session {session_id}; connect with takeover=1"
            await _deny(ws, 409, ALREADY_CONNECTED, message)
            return
        me = session.holder = _Holder()
        if previous is not None:
            previous.evicted.set()
        try:
            await ws.accept()
            if previous is not None:
                try:
                    await asyncio.wait_for(previous.released.wait(), TAKEOVER_WAIT_SECONDS)
                except TimeoutError:
                    await _error_and_close(ws, ALREADY_CONNECTED, "the holder did not let go in time")
                    return
            await self._serve(ws, handle, session, me, pipe=query.get("pty") == "0", since=_since(query))
        except WebSocketDisconnect:
            pass
        finally:
            if session.holder is me:
                session.holder = None
                session.log.detach()
            me.released.set()

    async def _view(self, ws: WebSocket, handle: SandboxHandle, session: PtySession) -> None:
        """A read-only viewer (`?readonly=1`): the output and the exit, no input, no hold."""
        query = ws.query_params
        if query.get("takeover") == "1":
            await _deny(ws, 400, INVALID_REQUEST_BODY, "readonly=1 and takeover=1 cannot go together")
            return
        if session.viewers >= MAX_VIEWERS:
            message = f"pty session {session.id} has {MAX_VIEWERS} viewers already, the most it may have"
            await _deny(ws, 429, LIMIT_EXCEEDED, message)
            return
        session.viewers += 1
        try:
            await ws.accept()
            await self._serve(ws, handle, session, None, pipe=query.get("pty") == "0", since=_since(query))
        except WebSocketDisconnect:
            pass
        finally:
            session.viewers -= 1

    async def _serve(
        self,
        ws: WebSocket,
        handle: SandboxHandle,
        session: PtySession,
        me: _Holder | None,
        *,
        pipe: bool,
        since: int,
    ) -> None:
        """Serve one connection: `me` holds the session, or None for a read-only viewer."""
        try:
            await session.start(handle, pipe=pipe)
        except ExecdError as exc:
            await _error_and_close(ws, START_FAILED, exc.message)
            return
        start, replay = session.log.read(since)
        offset = start + len(replay)
        lock = asyncio.Lock()

        async def send(message: bytes | str) -> None:
            async with lock:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_text(message)

        if replay:
            await send(replay_frame(start, replay))
        readonly = me is None
        connected = {"session_id": session.id, "mode": session.mode, "offset": offset, "readonly": readonly}
        await send(control("connected", **connected))
        if not readonly:
            session.log.attach(offset)
        sender = asyncio.create_task(_send_output(session, offset, send, holder=not readonly))
        receiver = asyncio.create_task(_receive_input(ws, session, send, readonly=readonly))
        evicted = asyncio.create_task(me.evicted.wait() if me is not None else asyncio.Event().wait())
        tasks = (sender, receiver, evicted)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if evicted in done:
            with contextlib.suppress(Exception):
                await ws.close(PTY_CLOSE_TAKEN_OVER, TAKEN_OVER)
        elif sender in done:
            sender.result()  # a failure propagates (and is logged by the server)
            with contextlib.suppress(Exception):
                await ws.close(1000, "process exited")
        else:
            receiver.result()


async def _send_output(session: PtySession, offset: int, send: Any, *, holder: bool) -> None:
    """Send the log from `offset` as it grows, then the exit frame. The holder's reading paces the
    shell (`OutputLog.consumed`); a viewer that fell behind what is kept skips to the oldest byte
    kept, sent as a replay frame, which carries its offset."""
    log = session.log
    while True:
        skipped = offset < log.oldest
        offset = max(offset, log.oldest)
        for channel, data in log.chunks_from(offset):
            await send(replay_frame(offset, data) if skipped else output_frame(channel, data))
            skipped = False
            offset += len(data)
        if holder:
            log.consumed(offset)
        if log.ended and offset >= log.total:
            break
        await log.wait_beyond(offset)
    await session.ended.wait()
    await send(control("exit", exit_code=session.exit_code))


async def _receive_input(ws: WebSocket, session: PtySession, send: Any, *, readonly: bool) -> None:
    """Keystrokes and control frames from the client, until it goes away (a viewer's are refused,
    but for `ping`)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if readonly and not _is_ping(message.get("text")):
            refusal = "this connection is read-only (readonly=1): input, resize and signals are refused"
            await send(control("error", error=refusal, code=READ_ONLY))
            continue
        data: bytes | None = message.get("bytes")
        if data is not None:
            if data[:1] == bytes((STDIN,)) and not await _write(session, data[1:], send):
                return
            continue
        text = message.get("text")
        if text is not None:
            problem = await _control(session, text, send)
            if problem is False:
                return
            if problem:
                await send(control("error", error=problem, code=INVALID_FRAME))


async def _write(session: PtySession, data: bytes, send: Any) -> bool:
    try:
        await session.write(data)
    except OSError as exc:
        if session.exit_code is None:
            await send(control("error", error=f"could not write: {exc.strerror}", code=STDIN_WRITE_FAILED))
            return False
    return True


async def _control(session: PtySession, text: str, send: Any) -> str | bool | None:
    """Act on a JSON control frame: None when done, a message for a bad frame, False to stop."""
    try:
        frame = json.loads(text)
    except ValueError:
        return "a text frame must be a JSON object with a 'type'"
    if not isinstance(frame, dict):
        return "a text frame must be a JSON object with a 'type'"
    kind = frame.get("type")
    if kind == "resize":
        cols, rows = frame.get("cols"), frame.get("rows")
        if not (_side(cols) and _side(rows)):
            return f"resize needs integer cols and rows from 1 to {_MAX_SIDE}"
        assert isinstance(cols, int) and isinstance(rows, int)
        session.resize(cols, rows)
    elif kind == "signal":
        name = frame.get("signal")
        signum = _signal_number(name)
        if signum is None:
            return f"unknown signal {name!r}: use a name such as SIGINT, SIGTERM, SIGKILL, SIGHUP"
        session.signal(signum)
    elif kind == "ping":
        await send(control("pong"))
    elif kind == "stdin":
        data = frame.get("data")
        if not isinstance(data, str):
            return "stdin needs a string 'data'"
        return None if await _write(session, data.encode(), send) else False
    else:
        return f"unknown frame type {kind!r}"
    return None


def _is_ping(text: str | None) -> bool:
    try:
        frame = json.loads(text) if text is not None else None
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("type") == "ping"


def _side(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_SIDE


def _signal_number(name: object) -> int | None:
    if not isinstance(name, str):
        return None
    upper = name.upper()
    try:
        return int(signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper])
    except KeyError:
        return None


def _since(query: Any) -> int:
    value = query.get("since", "")
    return int(value) if value.isdigit() else 0


async def _deny(ws: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse the upgrade with an HTTP `{code, message}` answer (a close where the server can't)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse(error_body(code, message), status_code=status))
    else:
        await ws.close(4000 + status, message[:120])


async def _error_and_close(ws: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(control("error", error=message, code=code))
        await ws.close(1011, code)
