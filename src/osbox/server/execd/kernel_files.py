"""A code context's kernel files (connection file, sockets), opened without trusting the sandbox.

The kernel directory (`/tmp/.osbox/kernels`) belongs to the sandbox: anything in it may have been
planted there, e.g. `<id>-1 -> /run/some-root-only.sock`, to make the server, which is root on the
host, connect to a host socket. So the server resolves nothing in it by path. It opens the
directory through the agent (as the sandbox user, in the sandbox's view), then each file beneath
that fd with openat2 refusing symlinks and mount crossings (`osbox.server._confined`), checks what
it got (a regular file, or a socket, owned by one of the sandbox's host uids), and uses that very
fd: ZeroMQ connects to `/proc/self/fd/<fd>` of the socket, so a reconnect (zmq reconnects on its
own whenever a connection drops) reaches the same socket inode, never a path swapped in later.
The connection file is opened non-blocking (a FIFO cannot hang the server) and read up to a size.

(SO_PEERCRED would name the peer, but zmq never hands out its connections' fds; the socket
inode's owner is the next best: only a process running as that uid can have bound it.)

A kernel killed by the server (its context deleted, or restarted after ignoring an interrupt) cleans
nothing up: `remove` unlinks its connection file and sockets, by name beneath the same directory fd
(`unlinkat` removes a planted symlink itself, never what it points to).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
from collections.abc import Callable
from typing import Any

from osbox.server._confined import is_symlink_refusal, open_beneath

from .errors import RUNTIME_ERROR, ExecdError

__all__ = ["CHANNELS", "MAX_CONNECTION_FILE_BYTES", "KernelFiles", "confined_client"]

#: The kernel's ZeroMQ channels, each a unix socket `<dir>/<context id>-<port>`.
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
#: A connection file is ~300 bytes; a larger one is not the kernel's.
MAX_CONNECTION_FILE_BYTES = 64 * 1024


class KernelFiles:
    """The kernel directory and, once the kernel made them, its connection info and socket fds.

    `owners` are the host uids the sandbox runs as; a file owned by anyone else is refused.
    """

    def __init__(self, dir_fd: int, owners: range) -> None:
        self.dir_fd = dir_fd
        self.owners = owners
        #: The kernel's name (`<name>.json`, `<name>-<port>`), once `ready` was asked about it.
        self.name: str | None = None
        self.info: dict[str, Any] | None = None
        #: channel → an O_PATH fd of its socket, opened confined.
        self.sockets: dict[str, int] = {}
        try:
            self._check(os.fstat(dir_fd), stat.S_ISDIR, "the kernel directory", "a directory")
        except BaseException:
            self.close()
            raise

    def ready(self, context_id: str) -> bool:
        """Open whatever the kernel has made by now; True once the connection file and every
        socket are open. Raises a 500 `ExecdError` for anything planted instead of them."""
        self.name = context_id
        if self.info is None:
            self.info = self._read_info(f"{context_id}.json")
            if self.info is None:
                return False
        for channel in CHANNELS:
            if channel not in self.sockets:
                name = f"{context_id}-{self.info[f'{channel}_port']}"
                fd = self._open(name, os.O_PATH, stat.S_ISSOCK, "a unix socket")
                if fd is None:
                    return False  # the heartbeat binds in its own thread, maybe after the file
                self.sockets[channel] = fd
        return True

    def remove(self) -> None:
        """Unlink the kernel's connection file and sockets (those it has made), then `close`. For a
        kernel that is dead: a live one would go on serving sockets nobody can reach any more."""
        try:
            if self.dir_fd >= 0 and self.name is not None:
                names = [f"{self.name}.json"]
                if self.info is not None:
                    names += [f"{self.name}-{self.info[f'{channel}_port']}" for channel in CHANNELS]
                for name in names:
                    with contextlib.suppress(OSError):  # not made, or gone already
                        os.unlink(name, dir_fd=self.dir_fd)
        finally:
            self.close()

    def close(self) -> None:
        """Close every fd (idempotent)."""
        for fd in [*self.sockets.values(), self.dir_fd]:
            if fd >= 0:
                os.close(fd)
        self.sockets.clear()
        self.dir_fd = -1

    def _read_info(self, name: str) -> dict[str, Any] | None:
        """The connection file's settings, checked; None while it is missing or half-written."""
        fd = self._open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, stat.S_ISREG, "a regular file")
        if fd is None:
            return None
        try:
            data = os.read(fd, MAX_CONNECTION_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_CONNECTION_FILE_BYTES:
            raise _refused(name, f"is larger than {MAX_CONNECTION_FILE_BYTES} bytes")
        try:
            info = json.loads(data)
        except ValueError:
            return None  # still being written
        if not isinstance(info, dict) or not isinstance(info.get("key"), str):
            return None
        return _connection_settings(name, info)

    def _open(self, name: str, flags: int, is_kind: Callable[[int], bool], kind: str) -> int | None:
        try:
            fd = open_beneath(self.dir_fd, name, flags, same_mount=True)
        except FileNotFoundError:
            return None
        except OSError as exc:
            why = "is a symlink" if is_symlink_refusal(exc) else f"cannot be opened ({exc.strerror})"
            raise _refused(name, why) from None
        try:
            self._check(os.fstat(fd), is_kind, repr(name), kind)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check(self, st: os.stat_result, is_kind: Callable[[int], bool], what: str, kind: str) -> None:
        if not is_kind(st.st_mode):
            raise _refused(what, f"is not {kind}")
        if st.st_uid not in self.owners:
            raise _refused(what, f"is owned by host uid {st.st_uid}, not by the sandbox")


def _connection_settings(name: str, info: dict[str, Any]) -> dict[str, Any]:
    """Only what the client needs from the sandbox-written file, each value checked."""
    settings: dict[str, Any] = {"transport": "ipc", "ip": "/proc/self/fd", "key": info["key"]}
    scheme = info.get("signature_scheme", "hmac-sha256")
    if not isinstance(scheme, str) or not scheme.startswith("hmac-"):
        raise _refused(name, "names no HMAC signature scheme")
    settings["signature_scheme"] = scheme
    for channel in CHANNELS:
        port = info.get(f"{channel}_port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 2**31:
            raise _refused(name, f"has no valid {channel}_port")
        settings[f"{channel}_port"] = port
    return settings


def _refused(what: str, why: str) -> ExecdError:
    return ExecdError(
        500,
        RUNTIME_ERROR,
        f"refused to use the kernel's {what}: it {why}. The server only connects to sockets the "
        "sandbox's own kernel made, never through a symlink",
    )


@functools.cache
def _client_class() -> type[Any]:
    from jupyter_client.asynchronous.client import AsyncKernelClient

    class ConfinedKernelClient(AsyncKernelClient):
        """Connects each channel to `/proc/self/fd/<fd>` of the socket the server opened itself."""

        socket_fds: dict[str, int]

        def _make_url(self, channel: str) -> str:
            return f"ipc:///proc/self/fd/{self.socket_fds[channel]}"

    return ConfinedKernelClient


def confined_client(files: KernelFiles) -> Any:
    """A `jupyter_client` async client connected through `files`' socket fds (not yet started)."""
    if files.info is None or len(files.sockets) != len(CHANNELS):
        raise ValueError("the kernel's files are not all open yet")
    client = _client_class()()
    client.socket_fds = dict(files.sockets)
    client.load_connection_info(files.info)
    return client
