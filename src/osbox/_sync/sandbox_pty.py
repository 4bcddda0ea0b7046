# Generated from src/osbox/_async/sandbox_pty.py by scripts/unasync.py: do not edit.
"""`sandbox.pty`: interactive terminals in a sandbox, with reconnects that lose nothing.

    with Sandbox.create() as sandbox:
        term = sandbox.pty.create(cols=100, rows=30, on_data=sys.stdout.buffer.write)
        term.send_input("python3\\n")
        term.read_until(">>> ")
        term.send_input("exit()\\n")
        term.send_input("exit 3\\n")
        assert term.wait() == 3

A handle reads its output as its methods run (`read`, `read_until`, `wait`, iterating it) and hands
every chunk to `on_data` too; it keeps the output offset, so `reconnect()` after a dropped connection
(or from another process, with `sandbox.pty.connect(session_id)`) gets exactly what was missed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

from .._exceptions import NotFoundError
from .._pty import PtyExit, PtyOutput, PtySessionStatus, check_size
from .execd import ExecdClient
from .pty import PtyConnection

__all__ = ["PtyHandle", "SandboxPty"]

OnData = Callable[[bytes], object]


class PtyHandle:
    """A PTY session and this client's connection to it (from `sandbox.pty.create` or `.connect`).

    `session_id` names the session; `exit_code` is set once its process ended (128 + N for signal N).
    Leaving `with` kills the session; `disconnect()` leaves it running.
    """

    def __init__(
        self, execd: Callable[[], ExecdClient], connection: PtyConnection, on_data: OnData | None
    ) -> None:
        self._execd = execd
        self._connection = connection
        self._on_data = on_data
        self._unread = bytearray()
        self.session_id = connection.session_id

    @property
    def exit_code(self) -> int | None:
        return self._connection.exit_code

    @property
    def offset(self) -> int:
        """Where the next output byte starts in the session's output (what `reconnect` resumes from)."""
        return self._connection.offset

    def send_input(self, data: bytes | str) -> None:
        """Type `data` (text as UTF-8): `"ls\\n"`; `"\\x03"` is Ctrl-C, `"\\x04"` Ctrl-D."""
        self._connection.send_input(data)

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal's size; the program in front gets SIGWINCH."""
        self._connection.resize(cols, rows)

    def signal(self, name: str) -> None:
        """Signal the shell's process group by name (`"SIGTERM"`); Ctrl-C is `send_input("\\x03")`."""
        self._connection.signal(name)

    def _next(self, timeout: float | None) -> bytes | None:
        """The next output chunk (given to `on_data`), or None at the exit."""
        while True:
            event = self._connection.recv(timeout)
            if isinstance(event, PtyOutput):
                if self._on_data is not None:
                    self._on_data(event.data)
                return event.data
            if event is None or isinstance(event, PtyExit):
                return None

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next output (or what `read_until` left unread); None once the process has exited.
        TimeoutError after `timeout` seconds without any."""
        if self._unread:
            data = bytes(self._unread)
            self._unread.clear()
            return data
        return self._next(timeout)

    def read_until(self, marker: bytes | str, *, timeout: float = 30.0) -> bytes:
        """Read until the output contains `marker`; returns it up to and including the marker (the
        rest stays for the next read). TimeoutError after `timeout` seconds, EOFError if the process
        exits first; both say what was read."""
        wanted = marker.encode() if isinstance(marker, str) else marker
        deadline = time.monotonic() + timeout
        while (found := self._unread.find(wanted)) < 0:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                data = self._next(left)
            except TimeoutError:
                raise TimeoutError(f"no {wanted!r} within {timeout} s; read: {self._tail()!r}") from None
            if data is None:
                raise EOFError(f"the process exited before {wanted!r}; read: {self._tail()!r}")
            self._unread += data
        end = found + len(wanted)
        data = bytes(self._unread[:end])
        del self._unread[:end]
        return data

    def _tail(self) -> bytes:
        return bytes(self._unread[-500:])

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        while (data := self.read()) is not None:
            yield data

    def wait(self, timeout: float | None = None) -> int:
        """Read (and hand to `on_data`) until the process exits; its exit status."""
        self._unread.clear()
        while self._next(timeout) is not None:
            pass
        code = self.exit_code
        assert code is not None
        return code

    def reconnect(self, *, takeover: bool = True) -> None:
        """Open a new connection that resumes at `offset` (after a `PtyError` "DISCONNECTED", say):
        the output missed comes first. `takeover` takes the session from whoever holds it now (a
        read-only handle reconnects read-only)."""
        old = self._connection
        with contextlib.suppress(Exception):  # the old socket may be broken already
            old.close()
        execd = self._execd()
        readonly = old.readonly
        self._connection = execd.connect_pty(
            self.session_id, since=old.offset, takeover=takeover and not readonly, readonly=readonly
        )

    def disconnect(self) -> None:
        """Close this connection; the session and its process go on."""
        self._connection.close()

    def kill(self) -> None:
        """Kill the session's processes and delete the session."""
        self._execd().delete_pty(self.session_id)
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(NotFoundError):  # already gone
            self.kill()


class SandboxPty:
    """Terminals in one sandbox (`sandbox.pty`)."""

    def __init__(self, execd: Callable[[], ExecdClient]) -> None:
        self._execd = execd

    def create(
        self,
        cols: int = 80,
        rows: int = 24,
        *,
        on_data: OnData | None = None,
        cwd: str | None = None,
        command: str | None = None,
        pipe: bool = False,
    ) -> PtyHandle:
        """Start a shell on a new terminal of `cols` x `rows` (or `command` instead of a shell; with
        `pipe=True` on pipes, stdout and stderr apart, no terminal). `on_data` gets each output chunk.
        The size holds from the start (the shell's first output sees it) on `osbox serve`.

            term = sandbox.pty.create(120, 40, on_data=sys.stdout.buffer.write)
        """
        check_size(cols, rows)
        execd = self._execd()
        session_id = execd.create_pty(cwd=cwd, command=command, cols=cols, rows=rows)
        connection = execd.connect_pty(session_id, pipe=pipe)
        if not pipe:
            connection.resize(cols, rows)  # for servers that start every terminal at 80 x 24
        return PtyHandle(self._execd, connection, on_data)

    def connect(
        self,
        session_id: str,
        *,
        on_data: OnData | None = None,
        since: int | None = None,
        takeover: bool = True,
        readonly: bool = False,
    ) -> PtyHandle:
        """Attach to an existing session: what it wrote since `since` comes first (everything kept,
        up to 1 MiB, when None); `takeover` takes it from the client holding it. `readonly=True`
        watches beside the holder instead (osbox's): output only, `send_input` raises `PtyError`.

            viewer = sandbox.pty.connect(term.session_id, readonly=True)
        """
        takeover = takeover and not readonly
        connection = self._execd().connect_pty(session_id, since=since, takeover=takeover, readonly=readonly)
        return PtyHandle(self._execd, connection, on_data)

    def list(self) -> list[PtySessionStatus]:
        """The sandbox's terminal sessions (osbox's `GET /pty`): `session_id`, `running`, `command`,
        `connected`, ... — to find one to `connect` to, e.g. read-only.

            watched = sandbox.pty.connect(sandbox.pty.list()[0].session_id, readonly=True)
        """
        return self._execd().list_pty()

    def kill(self, session_id: str) -> None:
        """Kill a session's processes and delete it."""
        self._execd().delete_pty(session_id)
