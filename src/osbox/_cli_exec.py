"""`osbox exec`: a command's output live, its exit code ours, our stdin its stdin, Ctrl-C its Ctrl-C.

- stdin: when ours is a pipe, a file or a socket (`echo hello | osbox exec ID cat`, `< data.csv`), the
  command reads it (osbox's stdin extension; against a server without it, one line says so and
  `--no-stdin` runs the command with an empty stdin). A terminal or /dev/null is not forwarded: the
  command reads an empty stdin, as with OpenSandbox.
- Ctrl-C: the first sends SIGINT to the command's process group, the second SIGKILL (a server
  without osbox's signal route gets `DELETE /command` instead); a third gives up on the server and
  drops the stream (osbox serve then kills the command, unless `--keep-on-disconnect` asked it to
  keep commands whose client is gone). The first prints one line,
  `osbox: interrupted (Ctrl-C again kills it)`, and `osbox exec` exits 130 once the command has
  ended, as a shell does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import threading
from types import FrameType
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from . import ExecdClient
    from .models.events import StreamEvent

__all__ = ["INTERRUPTED_STATUS", "forwarded_stdin", "run_exec"]

#: A shell's exit status after SIGINT (128 + 2).
INTERRUPTED_STATUS = 128 + int(signal.SIGINT)
#: What the first Ctrl-C prints (the only line osbox adds).
INTERRUPTED_LINE = "osbox: interrupted (Ctrl-C again kills it)"


def forwarded_stdin() -> IO[bytes] | None:
    """Our stdin when it carries data for the command (a pipe, a file, a socket), else None."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return None  # closed, or replaced by something without a descriptor
    if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
        return sys.stdin.buffer
    return None


class _Interrupts:
    """The SIGINT handler while a command runs: SIGINT, then SIGKILL to it, then give up."""

    def __init__(self, execd: ExecdClient) -> None:
        self._execd = execd
        self.count = 0
        #: Known once the stream's `init` event came.
        self.command_id: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            print(INTERRUPTED_LINE, file=sys.stderr, flush=True)
        if self.command_id is None or self.count > 2:
            raise KeyboardInterrupt  # drops the stream; the server kills what it started
        # Not from the handler itself: it may have interrupted the client in the middle of a read.
        sent = "SIGINT" if self.count == 1 else "SIGKILL"
        threading.Thread(target=self._send, args=(self.command_id, sent), daemon=True).start()

    def _send(self, command_id: str, sent: str) -> None:
        from . import ConflictError, NotFoundError, OsboxError

        try:
            self._execd.signal_command(command_id, sent)
        except ConflictError:
            pass  # it has exited already
        except NotFoundError:  # a server without osbox's signal route: stop it the spec's way
            with contextlib.suppress(OsboxError):
                self._execd.interrupt_command(command_id)
        except OsboxError:
            pass  # the stream tells how it ends


def run_exec(
    execd: ExecdClient,
    command: str,
    *,
    cwd: str | None,
    stdin: bool = True,
    kill_on_disconnect: bool | None = None,
) -> int:
    """Run `command`, its output to ours byte for byte; returns the exit status `osbox exec` ends
    with: the command's (128 + N when signal N killed it, saying so on stderr), 130 after Ctrl-C.
    `kill_on_disconnect`: what the server does with it if we go (None: the server's default)."""
    from . import StdinNotSupportedError
    from ._execd import output_is_exact
    from .models.events import output_piece

    interrupts = _Interrupts(execd)
    exact = False

    def show(event: StreamEvent) -> None:
        if event.type == "init" and event.text:
            interrupts.command_id = event.text
        elif event.type in ("stdout", "stderr") and event.text is not None:
            out = sys.stdout if event.type == "stdout" else sys.stderr
            text = event.text if exact else output_piece(event.text)
            out.flush()
            out.buffer.write(text.encode("utf-8", "surrogateescape"))  # the bytes the command wrote
            out.buffer.flush()

    previous = signal.signal(signal.SIGINT, interrupts)
    try:
        source = forwarded_stdin() if stdin else None
        with execd.run_command(
            command, cwd=cwd, stdin=source, kill_on_disconnect=kill_on_disconnect
        ) as stream:
            exact = output_is_exact(stream.response)
            result = stream.run(on_event=show)
    except KeyboardInterrupt:
        result = None
    except StdinNotSupportedError:
        print("osbox: this server cannot feed our stdin to the command: run with --no-stdin", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupts.count:
        return INTERRUPTED_STATUS
    if result is None or result.exit_code is None:
        print("osbox: the command did not complete", file=sys.stderr)
        return 1
    if result.signal is not None:
        cause = "timed out and was killed" if result.timed_out else "was killed"
        print(f"osbox: the command {cause} by {result.signal}", file=sys.stderr)
    # A shell's exit status is 0-255: a signal is 128 + N already; anything else out of range is 255.
    return result.exit_code if 0 <= result.exit_code <= 255 else 255
