"""`osbox shell ID [--cwd DIR] [COMMAND...]`: an interactive terminal in a sandbox.

The local terminal goes into raw mode (every key, Ctrl-C included, goes to the sandbox's terminal,
whose line discipline and programs decide what it means), window-size changes (SIGWINCH) resize the
remote terminal, and osbox exits with the shell's exit status. The local terminal is restored however
the session ends. With stdin not a terminal, its bytes are typed into the shell and its end is a
Ctrl-D. The session is deleted at the end (its processes killed).

`osbox shell ID --readonly [--session SESSION]` watches a session someone else drives (a read-only
viewer, osbox's `?readonly=1`): what it kept first, then its output live. It says so on stderr as it
starts; keys are not sent (piped input is ignored), Ctrl-] or Ctrl-C leaves (status 0; the session
goes on), and the session's end ends it with the session's exit status. Without `--session` it
watches the sandbox's one running session (`GET /pty`); with several, the error lists them.

One thread reads the WebSocket and writes the output; the main thread waits (`select`) on stdin and a
wake-up pipe that the output thread (at the end) and the SIGWINCH handler write to. A viewer that
leaves does not wait for its terminal to take the output still queued (a terminal nobody reads,
e.g. a stopped emulator or a test, would otherwise hold it forever: the write blocks, and so does
restoring the settings with TCSADRAIN).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import select
import signal
import sys
import termios
import threading
import tty
from typing import TYPE_CHECKING

from ._cli_client import _command_line, _connection, _execd, _guarded, _split_exec_words

if TYPE_CHECKING:
    from . import ExecdClient, PtyConnection

__all__ = ["SHELL_SUBCOMMANDS"]

_END = b"e"
_RESIZED = b"w"
#: Keys that end a read-only viewer: Ctrl-] (as telnet's escape) and Ctrl-C.
_LEAVE_KEYS = (b"\x1d", b"\x03")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _size(fd: int) -> tuple[int, int]:
    size = os.get_terminal_size(fd)
    return size.columns or 80, size.lines or 24


class _Output(threading.Thread):
    """Copies the session's output to stdout until the exit; then wakes the main thread."""

    def __init__(self, conn: PtyConnection, out_fd: int, wake_fd: int) -> None:
        super().__init__(name="osbox-shell-output", daemon=True)
        self._conn, self._out_fd, self._wake_fd = conn, out_fd, wake_fd
        self.error: BaseException | None = None

    def run(self) -> None:
        from . import PtyOutput

        try:
            while isinstance(event := self._conn.recv(), PtyOutput):
                _write_all(self._out_fd, event.data)
        except BaseException as exc:
            self.error = exc
        finally:
            os.write(self._wake_fd, _END)


def _interact(conn: PtyConnection, *, readonly: bool = False) -> int:
    """Copy keys to `conn` and its output to stdout until it ends; its exit status. A `readonly`
    viewer sends nothing: it ends on a `_LEAVE_KEYS` key (status 0) or the session's end."""
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    terminal = os.isatty(in_fd)
    size_fd = out_fd if os.isatty(out_fd) else in_fd
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    saved = termios.tcgetattr(in_fd) if terminal else None
    previous = signal.signal(signal.SIGWINCH, lambda _signum, _frame: os.write(wake_w, _RESIZED))
    output = _Output(conn, out_fd, wake_w)
    left = False
    try:
        if terminal:
            if not readonly:  # a viewer's terminal keeps the holder's size
                conn.resize(*_size(size_fd))
            tty.setraw(in_fd)
        output.start()
        watched = [in_fd, wake_r]
        while True:
            ready, _, _ = select.select(watched, [], [])
            if wake_r in ready:
                woken = os.read(wake_r, 256)
                if _END in woken:
                    break
                if _RESIZED in woken and os.isatty(size_fd) and not readonly:
                    conn.resize(*_size(size_fd))
            if in_fd in ready:
                data = os.read(in_fd, 4096)
                if readonly:
                    if any(key in data for key in _LEAVE_KEYS):
                        left = True
                        break
                    if not data:  # piped input ended: watch on until the session ends
                        watched = [wake_r]
                elif data:
                    conn.send_input(data)
                else:  # end of piped input: the shell sees Ctrl-D
                    watched = [wake_r]
                    conn.send_input(b"\x04")
    finally:
        if saved is not None:
            # Leaving now: TCSADRAIN would wait for the terminal to take the output still queued,
            # forever if nothing reads it (the output thread is then stuck in its write too).
            termios.tcsetattr(in_fd, termios.TCSANOW if left else termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
        with contextlib.suppress(Exception):
            conn.close()
        output.join(timeout=0.5 if left else 5)
        if not output.is_alive():  # else it still holds the wake-up pipe: the process ends it
            os.close(wake_r)
            os.close(wake_w)
    if left:
        return 0
    if output.error is not None:
        raise output.error
    return conn.exit_code if conn.exit_code is not None else 1


def _shell(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from . import OsboxError

    _split_exec_words(parser, args, command_required=False)  # options may follow the id
    words = args.command
    if args.readonly or args.session:
        if words or args.cwd:
            raise SystemExit("osbox: a read-only viewer runs nothing: no COMMAND or --cwd with --readonly")
        if not args.readonly:
            raise SystemExit("osbox: --session is for watching a session: add --readonly")
        with _execd(args) as execd:
            session_id = args.session or _the_running_session(execd, args.sandbox_id)
            viewer = execd.connect_pty(session_id, readonly=True)
            print(
                f"osbox: watching session {session_id}, read-only: keys are not sent; Ctrl-] leaves",
                file=sys.stderr,
            )
            try:
                return _interact(viewer, readonly=True)
            except KeyboardInterrupt:  # without a terminal
                return 130
    command = _command_line(words) if words else None
    with _execd(args) as execd:
        session_id = execd.create_pty(cwd=args.cwd, command=command)
        try:
            return _interact(execd.connect_pty(session_id))
        except KeyboardInterrupt:  # only without a terminal (raw mode passes Ctrl-C on)
            return 130
        finally:
            with contextlib.suppress(OsboxError):
                execd.delete_pty(session_id)


def _the_running_session(execd: ExecdClient, sandbox_id: str) -> str:
    """The one session of the sandbox whose process runs; an error naming them if not one."""
    from . import OsboxError

    running = [s for s in execd.list_pty() if s.running]
    if len(running) == 1:
        return running[0].session_id
    if not running:
        raise OsboxError(
            f"no terminal session is running in sandbox {sandbox_id}: start one with osbox shell"
        )
    listed = ", ".join(f"{s.session_id} ({s.command or 'shell'})" for s in running)
    raise OsboxError(
        f"sandbox {sandbox_id} has {len(running)} terminal sessions running: {listed}; "
        "pick one with --session SESSION"
    )


def _add_shell(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    shell = commands.add_parser(
        "shell",
        parents=[_connection()],
        help="an interactive terminal in a sandbox",
        usage="osbox shell [options] ID [-- COMMAND...]\n"
        "       osbox shell ID --readonly [--session SESSION]",
        description="Open a terminal in sandbox ID running a shell (or COMMAND); osbox exits with its exit "
        "status. Keys, Ctrl-C included, go to the sandbox; window-size changes follow. With --readonly, "
        "watch the sandbox's running session (or --session SESSION) that another client drives.",
    )
    shell.add_argument("--cwd", default=None, help="working directory in the sandbox (created if missing)")
    shell.add_argument(
        "--readonly",
        action="store_true",
        help="watch a running terminal session instead (its output only; Ctrl-] leaves)",
    )
    shell.add_argument(
        "--session", default=None, help="with --readonly: the session to watch (default: the one running)"
    )
    # The id and the command are split from the options by `_split_exec_words`: options may follow the id.
    shell.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    shell.set_defaults(handler=_guarded(functools.partial(_shell, shell)))


#: Registrars `osbox.cli` adds to its parser.
SHELL_SUBCOMMANDS = [_add_shell]
