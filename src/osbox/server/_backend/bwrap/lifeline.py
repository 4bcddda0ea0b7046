"""The process lifeline: sandboxes that must not outlive the server's process watch it.

One pipe per server process. Its write end never leaves this process: it is close-on-exec (so
no program the server starts, sandbox or command, inherits it) and a child forked without exec
closes its copy at once. Each sandbox's agent gets a copy of the read end and exits when the pipe
reports end-of-file, which happens when the last write end closes: when this process ends, by
`exit`, a crash or SIGKILL alike. Nothing is ever written to it.

Unlike bwrap's `--die-with-parent` (PR_SET_PDEATHSIG), which fires when the *thread* that
started bwrap exits (an executor thread, an event loop thread that is restarted), this follows
the process.
"""

from __future__ import annotations

import os
import threading

__all__ = ["lifeline_fd"]

_lock = threading.Lock()
_ends: dict[str, int] = {}


def _forget_in_child() -> None:
    # The child's copy of the write end would keep the parent's sandboxes alive after it.
    for name in ("write", "read"):
        fd = _ends.pop(name, None)
        if fd is not None:
            os.close(fd)


def lifeline_fd() -> int:
    """The read end to hand to a sandbox (close-on-exec here; the caller passes it explicitly)."""
    with _lock:
        if "read" not in _ends:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            _ends.update(read=read_end, write=write_end)
            if not _ends.get("hooked"):
                os.register_at_fork(after_in_child=_forget_in_child)
                _ends["hooked"] = 1
        return _ends["read"]
