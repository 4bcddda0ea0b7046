"""The agent: PID 1 inside every sandbox.

Started by bubblewrap as `python3 -S -I main.py --listen-fd N --log-fd M`, stdlib only (it must not
import `osbox`: site-packages are not on its path). It

- reaps every zombie in the sandbox's PID namespace (it is PID 1),
- starts the entrypoint when the server says `start` (stdout+stderr appended to the log fd),
- serves the server over the inherited listening unix socket, one request per connection
  (see `protocol.py` for the ops and the framing).

The listening socket was created by the server and bound to a path in the server's state dir,
which is hidden inside the sandbox: only the host can connect, and a restarted server reconnects
through the same path.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import protocol
else:  # run as a script: only this directory is on the path
    sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]
    import protocol

_lock = _thread.allocate_lock()  # held while forking and while reaping, so no exit is missed
_waiters: dict[int, socket.socket] = {}  # pid -> connection waiting for its exit status
_entrypoint: dict[str, int | None] = {"pid": None, "exit": None}
_log_fd = -1
_ops: dict[str, object] | None = None


def _fs_ops() -> dict[str, object]:
    """The file-system ops, imported on first use (keeps start-up fast and small)."""
    global _ops
    if _ops is None:
        if TYPE_CHECKING:
            from . import fs
        else:
            import fs  # the sibling module with the file-system ops

        _ops = dict(fs.OPS)
    return _ops


# --- I/O helpers ---------------------------------------------------------------------------------


def _send(conn: socket.socket, message: dict[str, object], fds: list[int] | None = None) -> None:
    data = protocol.encode(message)
    if fds:
        sent = socket.send_fds(conn, [data], fds)
        data = data[sent:]
    if data:
        conn.sendall(data)


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    buffer = protocol.LineBuffer()
    fds: list[int] = []
    while True:
        message = buffer.next_message()
        if message is not None:
            return message, fds
        data, new_fds, _flags, _addr = socket.recv_fds(conn, 65536, protocol.MAX_FDS)
        fds.extend(new_fds)
        if not data:
            raise EOFError("connection closed before a full request arrived")
        buffer.feed(data)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# --- children -----------------------------------------------------------------------------------


def _check_ids(uid: object, gid: object) -> None:
    """Only the sandbox's own uid/gid exist in its user namespace; anything else is refused."""
    for name, value, own in (("uid", uid, os.getuid()), ("gid", gid, os.getgid())):
        if value is None or value == own:
            continue
        raise ValueError(f"{name} {value} does not exist in this sandbox: only {name} {own} is mapped")


def _start_child(
    argv: object, env: object, cwd: object, stdio: list[int | None], waiter: socket.socket | None
) -> int:
    """Fork+exec `argv` in a new session; returns its pid.

    With a `waiter`, the pid and a pidfd are sent to it and it gets the exit line later: both
    happen under the reaper's lock, so the exit line can never overtake the pid.
    """
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    if not isinstance(cwd, str) or not cwd:
        raise ValueError("cwd must be a non-empty string")
    merged = dict(os.environ)
    if env is not None:
        if not isinstance(env, dict):
            raise ValueError("env must be an object of strings")
        merged.update({str(k): str(v) for k, v in env.items()})
    streams = [subprocess.DEVNULL if fd is None else fd for fd in stdio]
    with _lock:
        child = subprocess.Popen(
            argv,
            stdin=streams[0],
            stdout=streams[1],
            stderr=streams[2],
            cwd=cwd,
            env=merged,
            start_new_session=True,
            close_fds=True,
        )
        # The reaper owns this pid from now on: mark the Popen finished so that subprocess never
        # calls waitpid on it (it would steal the exit status, or worse, a reused pid's).
        child.returncode = 0
        if waiter is not None:
            pidfd = os.pidfd_open(child.pid)
            try:
                _send(waiter, protocol.ok_reply({"pid": child.pid}, nfds=1), [pidfd])
            finally:
                os.close(pidfd)
            _waiters[child.pid] = waiter
    return child.pid


def _reap() -> None:
    with _lock:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if pid == _entrypoint["pid"]:
                _entrypoint["exit"] = code
            conn = _waiters.pop(pid, None)
            if conn is not None:
                try:
                    conn.settimeout(2.0)
                    _send(conn, {"exit": code})
                except OSError:
                    pass
                finally:
                    conn.close()


# --- ops ----------------------------------------------------------------------------------------


def _op_ping(request: dict[str, object]) -> tuple[object, list[int]]:
    info = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "entrypoint": _entrypoint}
    return info, [os.pidfd_open(os.getpid())]


def _op_start(request: dict[str, object]) -> tuple[object, list[int]]:
    if _entrypoint["pid"] is not None:
        raise ValueError("the entrypoint was already started")
    argv = request.get("argv")
    if not argv:
        return {"pid": None}, []
    pid = _start_child(
        argv, request.get("env"), request.get("cwd", "/workspace"), [None, _log_fd, _log_fd], None
    )
    _entrypoint["pid"] = pid
    return {"pid": pid}, []


def _op_kill(request: dict[str, object]) -> tuple[object, list[int]]:
    pgid, signum = request.get("pgid"), request.get("signal")
    if not isinstance(pgid, int) or pgid <= 1 or not isinstance(signum, int):
        raise ValueError("kill needs an integer pgid > 1 and signal")
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False, []
    return True, []


def _op_connect(request: dict[str, object]) -> tuple[object, list[int]]:
    port = request.get("port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("port must be an integer between 1 and 65535")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return {"port": port}, [os.dup(sock.fileno())]
    finally:
        sock.close()


def _op_open(request: dict[str, object]) -> tuple[object, list[int]]:
    path, flags, mode = request.get("path"), request.get("flags"), request.get("mode", 0o644)
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ValueError("path must be a non-empty string")
    if not isinstance(flags, int) or not isinstance(mode, int):
        raise ValueError("flags and mode must be integers")
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOCTTY, mode)
    return {"path": path}, [fd]


def _op_call(request: dict[str, object]) -> tuple[object, list[int]]:
    name, args = request.get("name"), request.get("args") or {}
    ops = _fs_ops()
    if not isinstance(name, str) or name not in ops:
        raise ValueError(f"unknown file-system op: {name!r}")
    if not isinstance(args, dict):
        raise ValueError("args must be an object")
    function = ops[name]
    return function(**args), []  # type: ignore[operator]


_OPS = {
    "ping": _op_ping,
    "start": _op_start,
    "kill": _op_kill,
    "connect": _op_connect,
    "open": _op_open,
    "call": _op_call,
}


def _serve(conn: socket.socket) -> None:
    """Answer one request on `conn` (runs in its own thread)."""
    fds: list[int] = []
    keep_open = False
    try:
        request, fds = _receive(conn)
        op = request.get("op")
        try:
            if op == "spawn":
                stdio: list[int | None] = [None, None, None]
                slots = request.get("stdio") or []
                if not isinstance(slots, list) or len(fds) != sum(1 for s in slots if s is not None):
                    raise ValueError("stdio slots do not match the descriptors sent")
                received = iter(fds)
                for index, slot in enumerate(slots[:3]):
                    stdio[index] = None if slot is None else next(received)
                _check_ids(request.get("uid"), request.get("gid"))
                _start_child(request.get("argv"), request.get("env"), request.get("cwd"), stdio, conn)
                keep_open = True
                return
            handler = _OPS.get(op) if isinstance(op, str) else None
            if handler is None:
                raise ValueError(f"unknown op: {op!r}")
            result, out_fds = handler(request)
            try:
                _send(conn, protocol.ok_reply(result, nfds=len(out_fds)), out_fds)
            finally:
                _close_all(out_fds)
        except Exception as exc:
            _send(conn, protocol.error_reply(exc))
    except (OSError, EOFError, protocol.AgentError):
        pass  # the server went away or sent garbage: nothing to answer
    finally:
        _close_all(fds)
        if not keep_open:
            conn.close()


def main(argv: list[str]) -> None:
    """Run the agent until the sandbox is destroyed (PID 1 never returns)."""
    global _log_fd
    options = dict(zip(argv[0::2], argv[1::2], strict=False))
    listener = socket.socket(fileno=int(options["--listen-fd"]))
    listener.set_inheritable(False)
    _log_fd = int(options["--log-fd"])
    os.set_inheritable(_log_fd, False)
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    while True:
        try:
            events = poller.poll()
            for fd, _event in events:
                if fd == wake_read:
                    while True:
                        try:
                            if not os.read(wake_read, 512):
                                break
                        except BlockingIOError:
                            break
                    _reap()
                else:
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        continue
                    _thread.start_new_thread(_serve, (conn,))
        except KeyboardInterrupt:
            continue  # SIGINT sent to PID 1 from inside the sandbox: ignore


if __name__ == "__main__":
    main(sys.argv[1:])
