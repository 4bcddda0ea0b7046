"""The agent: PID 1 inside every sandbox.

Started by bubblewrap as `python3 -S -I main.py --listen-fd N --log-fd M`, stdlib only (it must not
import `osbox`: site-packages are not on its path). It

- reaps every zombie in the sandbox's PID namespace (it is PID 1),
- starts every child as the uid/gid asked for, without any capability (see `identity.py`),
- starts the entrypoint when the server says `start` (stdout+stderr appended to the log fd),
- serves the server over the inherited listening unix socket, one request per connection, each in
  its own thread (see `protocol.py` for the ops and the framing).

With `--lifeline-fd N` it exits, ending the sandbox, once the server's process has ended.

The listening socket was created by the server and bound to a path in the server's state dir,
which is hidden inside the sandbox: only the host can connect, and a restarted server reconnects
through the same path.

Start-up time and memory count (one agent per sandbox): only C modules are imported up front
(`_socket`, `_signal`, `_thread`, `select`, and `_ctypes` when the sandbox has a range of ids; no
`socket`/`signal`/`subprocess`/`json`/`ctypes`, which pull in `enum`, `re` or `struct`), and
children are started with a plain fork+exec.
"""

from __future__ import annotations

import _socket
import _thread
import errno
import os
import select
import sys

# Not `from typing import ...`: typing pulls in re, enum and collections (~14 ms per sandbox
# start). Type checkers treat any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same functions as its C core, `_signal`, which has no stubs
    from typing import Any

    from . import accounts, identity, protocol
else:  # run as a script: only this directory is on the path
    import _signal

    sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]
    import accounts
    import identity
    import protocol

#: With an image: its root (every request thread chroots there first) and whom children run as.
_image: dict[str, str] = {}
_lock = _thread.allocate_lock()  # held while forking and while reaping, so no exit is missed
_waiters: dict[int, Any] = {}  # pid -> connection waiting for its exit status
_entrypoint: dict[str, int | None] = {"pid": None, "exit": None}
_log_fd = -1
_ops: dict[str, Any] | None = None
_FD_BYTES = 4


def _fs_ops() -> dict[str, Any]:
    """The file-system ops, imported on first use (keeps start-up fast and small)."""
    global _ops
    if _ops is None:
        if TYPE_CHECKING:
            from . import fs
        else:
            import fs  # the sibling module with the file-system ops

        _ops = dict(fs.OPS)
    return _ops


def _watch_module() -> Any:
    """watch.py, imported on first use (most sandboxes never watch)."""
    if TYPE_CHECKING:
        from . import watch
    else:
        import watch
    return watch


def _watch(request: dict[str, Any], conn: Any) -> None:
    """The `watch` op: streams inotify events on `conn` until the server hangs up (see watch.py)."""
    _watch_module().serve(request, conn, _send)


# --- I/O helpers ---------------------------------------------------------------------------------


def _pack_fds(fds: list[int]) -> bytes:
    return b"".join(fd.to_bytes(_FD_BYTES, sys.byteorder, signed=True) for fd in fds)


def _unpack_fds(data: bytes) -> list[int]:
    usable = len(data) - len(data) % _FD_BYTES
    return [
        int.from_bytes(data[i : i + _FD_BYTES], sys.byteorder, signed=True)
        for i in range(0, usable, _FD_BYTES)
    ]


def _send(conn: Any, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = protocol.encode(message)
    if fds:
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _pack_fds(fds))]
        data = data[conn.sendmsg([data], ancillary) :]
    if data:
        conn.sendall(data)


def _receive(conn: Any) -> tuple[dict[str, Any], list[int]]:
    buffer = protocol.LineBuffer()
    fds: list[int] = []
    ancillary_size = _socket.CMSG_SPACE(protocol.MAX_FDS * _FD_BYTES)
    while True:
        message = buffer.next_message()
        if message is not None:
            return message, fds
        data, ancillary, _flags, _addr = conn.recvmsg(65536, ancillary_size)
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.extend(_unpack_fds(payload))
        if not data:
            raise EOFError("connection closed before a full request arrived")
        buffer.feed(data)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            continue


# --- children -----------------------------------------------------------------------------------


def _executables(argv: list[str], env: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Where to look for `argv[0]`, each with the argv to run it with. `bash` (how the server runs
    commands given as a string) falls back to `sh`, so that images with a POSIX shell only (busybox,
    alpine) run them too; `sh` then gets its own name as argv[0] (busybox dispatches on it)."""
    program = argv[0]
    if "/" in program:
        return [(program, argv)]
    names = [program, "sh"] if program == "bash" else [program]
    path = env.get("PATH", os.defpath).split(os.pathsep)
    return [(os.path.join(d or ".", name), [name, *argv[1:]]) for name in names for d in path]


#: A command's `oom_score_adj` where the server could not protect the agent: any process may raise its
#: own, and this ranks every command of the sandbox before the agent, whatever their sizes.
_WORKLOAD_OOM_SCORE_ADJ = b"500"


def _reset_oom_score() -> None:
    """In a child: make the workload, never the agent, what the OOM killer picks.

    The server lowers the agent's score to -1000 where it may (root with CAP_SYS_RESOURCE); fork
    inherits it, so the child goes back to 0. Where the server may not, the agent stays at 0 and
    the child raises its own score instead (else many small commands would lose to the larger agent).
    """
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_RDWR)
        try:
            protected = os.read(fd, 16).strip() == b"-1000"
            os.write(fd, b"0" if protected else _WORKLOAD_OOM_SCORE_ADJ)
        finally:
            os.close(fd)
    except OSError:
        pass


def _fork_exec(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    stdio: list[int],
    ids: tuple[int, int] | None,
    take_tty: Any = None,
) -> int:
    """Fork, and in the child: new session, stdio, ids (see `identity`), cwd, exec. Raises the
    child's OSError. `take_tty`, when given, is called in the child on its new stdin to make that
    terminal its controlling one (imported before the fork: the child must not import).

    Everything the child needs is computed before the fork; the child only makes system calls
    (no imports, no locks), so forking from this threaded process is safe.
    """
    candidates = _executables(argv, env)
    error_read, error_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child
        stage = b"cwd"
        try:
            os.setsid()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            if take_tty is not None:
                stage = b"tty"
                take_tty(0)
                stage = b"cwd"
            os.closerange(3, error_write)
            os.closerange(error_write + 1, 1 << 20)
            _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)  # Python ignores it; programs expect it
            _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
            _reset_oom_score()
            if ids is not None:
                stage = b"ids"
                identity.become(*ids)
                stage = b"cwd"
            os.chdir(cwd)
            stage = b"exec"
            first_error: OSError | None = None
            for path, exec_argv in candidates:
                try:
                    os.execve(path, exec_argv, env)  # noqa: S606 (argv as given, no shell)
                except OSError as exc:
                    if first_error is None or first_error.errno == errno.ENOENT:
                        first_error = exc  # report e.g. EACCES over "not found" further on PATH
            raise first_error or OSError(errno.ENOENT, "not found")
        except OSError as exc:
            os.write(error_write, stage + b":" + str(exc.errno or 0).encode())
        finally:
            os._exit(127)
    os.close(error_write)
    try:
        report = b""
        while chunk := os.read(error_read, 64):
            report += chunk
    finally:
        os.close(error_read)
    if report:
        stage, _, number = report.partition(b":")
        code = int(number or b"0") or 5
        names = {b"cwd": cwd, b"ids": f"uid/gid {ids}", b"tty": "the terminal given as stdin"}
        if stage == b"exec" and code == errno.ENOENT and argv[0] == "bash":
            raise OSError(code, "this sandbox has no shell (no bash, no sh on its PATH)", argv[0])
        raise OSError(code, os.strerror(code), names.get(stage, argv[0]))
    return pid


def _start_child(
    argv: object,
    env: object,
    cwd: object,
    stdio: list[int | None],
    waiter: Any,
    ids: tuple[int, int] | None = None,
    controlling_tty: bool = False,
) -> int:
    """Start `argv` in a new session (as `ids`, see `identity.child_ids`); returns its pid.
    With `controlling_tty`, stdin (a terminal) becomes the session's controlling terminal.

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
    take_tty = None
    if controlling_tty:
        import fcntl  # C modules, only for terminals: most sandboxes never need them
        import termios

        def take_tty(fd: int) -> None:
            fcntl.ioctl(fd, termios.TIOCSCTTY, 0)

    devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC) if None in stdio else -1
    try:
        with _lock:
            stdio_fds = [devnull if fd is None else fd for fd in stdio]
            pid = _fork_exec(argv, merged, cwd, stdio_fds, ids, take_tty)
            if waiter is not None:
                pidfd = os.pidfd_open(pid)
                try:
                    _send(waiter, protocol.ok_reply({"pid": pid}, nfds=1), [pidfd])
                finally:
                    os.close(pidfd)
                _waiters[pid] = waiter
    finally:
        if devnull >= 0:
            os.close(devnull)
    return pid


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


def _op_ping(request: dict[str, Any]) -> tuple[object, list[int]]:
    info = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "entrypoint": _entrypoint}
    return info, [os.pidfd_open(os.getpid())]


#: The files the server writes for an image sandbox (bound over the image's own).
_WRITTEN_ETC = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def _write_etc(files: object) -> None:
    """Rewrite files of `_WRITTEN_ETC` (e.g. resolv.conf, once the sandbox's network is up)."""
    if not isinstance(files, dict) or not set(files) <= set(_WRITTEN_ETC):
        raise ValueError(f"etc may only name {', '.join(_WRITTEN_ETC)}")
    with identity.file_capabilities():
        for path, content in files.items():
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.write(fd, str(content).encode())
            finally:
                os.close(fd)


#: Where images keep their CA bundle (Debian/Ubuntu/Alpine, Fedora/RHEL, SUSE, others' cert.pem).
_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
#: The variables that make common clients use that bundle (OpenSSL, Python requests, curl, Node).
_CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")


def _trust_ca(pem: object) -> None:
    """Add the credential proxy's CA to the image's bundles (regular files only: a symlink is another
    bundle's name, or planted) and point the usual variables at the first, for every later child."""
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("trusted_ca must be a PEM certificate")
    written = []
    with identity.file_capabilities():
        for path in _CA_BUNDLES:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # missing, or a symlink (ELOOP)
            try:
                bundle = b""
                while chunk := os.read(fd, 1 << 16):
                    bundle += chunk
                if pem.encode() not in bundle:  # a restarted server or a snapshot: there already
                    os.write(fd, (b"" if bundle.endswith(b"\n") or not bundle else b"\n") + pem.encode())
                written.append(path)
            finally:
                os.close(fd)
        if not written:  # an image without a bundle: the CA alone, where most clients look
            os.makedirs("/etc/ssl/certs", mode=0o755, exist_ok=True)
            fd = os.open(_CA_BUNDLES[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, pem.encode())
            finally:
                os.close(fd)
            written.append(_CA_BUNDLES[0])
    os.environ.update(dict.fromkeys(_CA_VARIABLES, written[0]))


def _op_start(request: dict[str, Any]) -> tuple[object, list[int]]:
    if _entrypoint["pid"] is not None:
        raise ValueError("the entrypoint was already started")
    if request.get("etc") and _image:
        _write_etc(request["etc"])
    if request.get("trusted_ca") and _image:
        _trust_ca(request["trusted_ca"])
    base_env = request.get("base_env")
    if base_env is not None:
        # A sandbox started ahead of time (warm pool) learns its owner's environment here; every
        # later child inherits it, as it would from the agent's own environment.
        if not isinstance(base_env, dict):
            raise ValueError("base_env must be an object of strings")
        os.environ.update({str(k): str(v) for k, v in base_env.items()})
    argv = request.get("argv")
    if not argv:
        return {"pid": None}, []
    stdio: list[int | None] = [None, _log_fd, _log_fd]
    ids = identity.child_ids(None, None)
    pid = _start_child(argv, request.get("env"), request.get("cwd", "/workspace"), stdio, None, ids)
    _entrypoint["pid"] = pid
    return {"pid": pid}, []


def _op_kill(request: dict[str, Any]) -> tuple[object, list[int]]:
    pgid, signum = request.get("pgid"), request.get("signal")
    if not isinstance(pgid, int) or pgid <= 1 or not isinstance(signum, int):
        raise ValueError("kill needs an integer pgid > 1 and signal")
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False, []
    return True, []


def _op_connect(request: dict[str, Any]) -> tuple[object, list[int]]:
    port = request.get("port")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("port must be an integer between 1 and 65535")
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.settimeout(10.0)
        sock.connect(("127.0.0.1", port))
        return {"port": port}, [os.dup(sock.fileno())]
    finally:
        sock.close()


def _op_open(request: dict[str, Any]) -> tuple[object, list[int]]:
    path, flags, mode = request.get("path"), request.get("flags"), request.get("mode", 0o644)
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ValueError("path must be a non-empty string")
    if not isinstance(flags, int) or not isinstance(mode, int):
        raise ValueError("flags and mode must be integers")
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOCTTY, mode)
    return {"path": path}, [fd]


def _op_call(request: dict[str, Any]) -> tuple[object, list[int]]:
    name, args = request.get("name"), request.get("args") or {}
    ops = _fs_ops()
    if not isinstance(name, str) or name not in ops:
        raise ValueError(f"unknown file-system op: {name!r}")
    if not isinstance(args, dict):
        raise ValueError("args must be an object")
    return ops[name](**args), []


_OPS = {
    "ping": _op_ping,
    "start": _op_start,
    "kill": _op_kill,
    "connect": _op_connect,
    "open": _op_open,
    "call": _op_call,
}


def _spawn(request: dict[str, Any], fds: list[int], conn: Any) -> None:
    slots = request.get("stdio") or []
    if not isinstance(slots, list) or len(slots) > 3 or len(fds) != sum(s is not None for s in slots):
        raise ValueError("stdio slots do not match the descriptors sent")
    stdio: list[int | None] = [None, None, None]
    received = iter(fds)
    for index, slot in enumerate(slots):
        stdio[index] = None if slot is None else next(received)
    ids = identity.child_ids(request.get("uid"), request.get("gid"))
    controlling_tty = request.get("controlling_tty") is True
    if controlling_tty and stdio[0] is None:
        raise ValueError("controlling_tty needs a terminal as stdin")
    argv, env, cwd = request.get("argv"), request.get("env"), request.get("cwd")
    _start_child(argv, env, cwd, stdio, conn, ids, controlling_tty)


def _serve(conn: Any) -> None:
    """Answer one request on `conn` (runs in its own thread, inside the image's root if any)."""
    fds: list[int] = []
    keep_open = False
    try:
        if _image:
            identity.enter_root(_image["root"])
            identity.act_as_default_user()
        request, fds = _receive(conn)
        op = request.get("op")
        try:
            if op == "spawn":
                _spawn(request, fds, conn)
                keep_open = True  # the reaper sends the exit line and closes it
                return
            if op == "watch":
                _watch(request, conn)
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


def _enter_image(root: str, user: str) -> None:
    """Set up an image sandbox: the image's user becomes the children's default, its home their
    HOME, and /workspace exists (made for that user when the image has none).

    Everything the agent will ever import is imported first, and the import path is emptied:
    request threads run chrooted in the image, where an import would load the image's files.
    """
    _fs_ops()
    _watch_module()
    import fcntl  # noqa: F401 (for terminals, see `_start_child`: imported while imports still work)
    import termios  # noqa: F401

    result: list[BaseException | None] = []

    def in_root() -> None:
        try:
            identity.enter_root(root)
            account = accounts.lookup_user(user)
            identity.set_default_ids(account.uid, account.gid)
            for name, value in (("HOME", account.home), ("USER", account.name), ("LOGNAME", account.name)):
                os.environ.setdefault(name, value)
            try:
                os.mkdir("/workspace", 0o755)
                os.chown("/workspace", account.uid, account.gid)
            except FileExistsError:
                pass
            for path in _WRITTEN_ETC:  # bwrap made them the agent's: they are root's, readable by all
                os.chown(path, 0, 0, follow_symlinks=False)
                os.chmod(path, 0o644)
            result.append(None)
        except BaseException as exc:  # reported by the main thread
            result.append(exc)

    done = _thread.allocate_lock()
    done.acquire()

    def run() -> None:
        try:
            in_root()
        finally:
            done.release()

    _thread.start_new_thread(run, ())
    done.acquire()
    if result[0] is not None:
        raise result[0]
    _image["root"] = root
    sys.path[:] = []
    sys.path_importer_cache.clear()


def main(argv: list[str]) -> None:
    """Run the agent until the sandbox is destroyed (PID 1 never returns).

    With `--lifeline-fd N` (the read end of a pipe only the server holds the write end of), the
    agent exits when that pipe reports end-of-file: the server's process ended, however it ended,
    and PID 1 exiting takes every process of the sandbox with it.
    """
    global _log_fd
    options = dict(zip(argv[0::2], argv[1::2], strict=False))
    identity.start()  # before any child exists: capabilities stay with the agent alone
    if "--root" in options:
        _enter_image(options["--root"], options.get("--user", ""))
    listener: Any = _socket.socket(fileno=int(options["--listen-fd"]))
    os.set_inheritable(listener.fileno(), False)
    _log_fd = int(options["--log-fd"])
    os.set_inheritable(_log_fd, False)
    lifeline = int(options.get("--lifeline-fd", "-1"))
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(wake_write)
    _signal.signal(_signal.SIGCHLD, lambda _signum, _frame: None)
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    if lifeline >= 0:
        os.set_inheritable(lifeline, False)
        poller.register(lifeline, select.POLLIN)
    while True:
        try:
            for fd, _event in poller.poll():
                if fd == lifeline:
                    os._exit(0)  # nobody writes to it: any event is the server's end
                if fd == wake_read:
                    try:
                        while os.read(wake_read, 512):
                            pass
                    except BlockingIOError:
                        pass
                    _reap()
                    continue
                try:
                    conn_fd, _addr = listener._accept()
                except OSError:
                    continue
                conn = _socket.socket(fileno=conn_fd)
                try:
                    _thread.start_new_thread(_serve, (conn,))
                except RuntimeError:
                    # No thread to be had: the sandbox is at its pids limit (a fork bomb, say).
                    # Refuse this one request and stay alive: PID 1 exiting would end the sandbox.
                    conn.close()
        except KeyboardInterrupt:
            continue  # SIGINT sent to PID 1 from inside the sandbox: ignore


if __name__ == "__main__":
    main(sys.argv[1:])
