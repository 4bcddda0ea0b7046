"""Watching a directory inside the sandbox with inotify, for `files.watch` (the agent's `watch` op).

Stdlib only (the agent runs it). inotify through libc (`identity.libc_function`, `_ctypes` alone): no
`inotifywait` needed in the image.

The op streams over its own agent connection:

    request   {"op": "watch", "path": "/workspace", "recursive": true}
    reply     {"ok": true, "result": {"path": "/workspace"}}     (the watch is in place)
    then      {"event": {"type": "create", "path": "/workspace/a", "is_dir": false}}  ... one per line

until the server closes the connection (or the watched directory itself goes away: a `delete`
event for it, then the agent closes). Event types: `create`, `modify`, `delete`, `move` (with
`from`, the old path; a move into the tree from outside is a `create`, out of it a `delete`), and
`overflow` (the kernel's queue overflowed: events were lost). With `recursive`, every subdirectory
is watched too, including each one made later (and what it already holds when its watch is added
is reported as `create`, so nothing made in between is missed).
"""

from __future__ import annotations

import errno
import os
import select
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from . import fs, identity, protocol
else:
    try:
        from . import fs, identity, protocol
    except ImportError:  # run by the agent, which imports its modules top-level
        import fs
        import identity
        import protocol

__all__ = ["serve"]

IN_MODIFY = 0x002
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
_MASK = (IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF) | (
    IN_ONLYDIR | IN_EXCL_UNLINK
)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then the name, NUL-padded)
_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC
_LIBC: dict[str, Any] = {}


class _Inotify:
    """One inotify instance and the directories it watches (wd → path)."""

    def __init__(self) -> None:
        if "add_watch" not in _LIBC:  # once per agent: libc through _ctypes (see identity)
            _LIBC["init"] = identity.libc_function("inotify_init1")
            _LIBC["add_watch"] = identity.libc_function("inotify_add_watch")
        self.fd: int = _LIBC["init"](_NONBLOCK_CLOEXEC)
        self.paths: dict[int, str] = {}

    def add(self, path: str) -> None:
        try:
            wd: int = _LIBC["add_watch"](self.fd, os.fsencode(path), _MASK)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from None
        self.paths[wd] = path

    def close(self) -> None:
        os.close(self.fd)


def serve(request: dict[str, Any], conn: Any, send: Callable[[Any, dict[str, Any]], None]) -> None:
    """Run one watch: reply once it is in place, then send events until the server hangs up."""
    path = fs.expand_path(request.get("path"))  # type: ignore[arg-type]
    recursive = bool(request.get("recursive", True))
    inotify = _Inotify()
    try:
        inotify.add(path)
        if recursive:
            for sub in _subdirectories(path):
                _add_quietly(inotify, sub)
        send(conn, protocol.ok_reply({"path": path}))
        _stream(inotify, path, recursive, conn, send)
    finally:
        inotify.close()


def _subdirectories(path: str) -> list[str]:
    found: list[str] = []
    for root, dirs, _files in os.walk(path):
        found.extend(os.path.join(root, name) for name in dirs)
    return found


def _add_quietly(inotify: _Inotify, path: str) -> bool:
    """Watch `path`; False if it went away or is no directory (any more) — not an error."""
    try:
        inotify.add(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
            return False
        raise
    return True


def _stream(inotify: _Inotify, root: str, recursive: bool, conn: Any, send: Callable[..., None]) -> None:
    poller = select.poll()
    poller.register(inotify.fd, select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN)
    while True:
        for fd, _mask in poller.poll():
            if fd != inotify.fd:
                return  # the server hung up (or sent something: there is nothing it may send)
            events, ended = _read(inotify, root, recursive)
            for event in events:
                send(conn, {"event": event})
            if ended:
                return


def _read(inotify: _Inotify, root: str, recursive: bool) -> tuple[list[dict[str, Any]], bool]:
    """The events of what inotify has queued, and whether the watched directory itself is gone."""
    try:
        data = os.read(inotify.fd, 1 << 16)
    except BlockingIOError:
        return [], False
    events: list[dict[str, Any]] = []
    moved_from: dict[int, dict[str, Any]] = {}  # cookie → a pending move's old side
    ended = False
    offset = 0
    while offset < len(data):
        wd, mask, cookie, size = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        name = os.fsdecode(data[offset : offset + size].rstrip(b"\0"))
        offset += size
        if mask & IN_Q_OVERFLOW:
            events.append({"type": "overflow", "path": root, "is_dir": True})
            continue
        directory = inotify.paths.get(wd)
        if directory is None:
            continue
        if mask & IN_IGNORED:
            del inotify.paths[wd]
            continue
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            if directory == root:
                events.append({"type": "delete", "path": root, "is_dir": True})
                ended = True
            continue
        path = os.path.join(directory, name)
        is_dir = bool(mask & IN_ISDIR)
        if mask & IN_MOVED_FROM:
            moved_from[cookie] = {"type": "delete", "path": path, "is_dir": is_dir}
            events.append(moved_from[cookie])
        elif mask & IN_MOVED_TO:
            old = moved_from.pop(cookie, None)
            if old is not None:  # a move within the tree: its `delete` becomes the `move`
                old.update({"type": "move", "path": path, "old_path": old["path"]})
            else:
                events.append({"type": "create", "path": path, "is_dir": is_dir})
            if is_dir and recursive:
                _watch_new(inotify, path, events if old is None else None)
        elif mask & IN_CREATE:
            events.append({"type": "create", "path": path, "is_dir": is_dir})
            if is_dir and recursive:
                _watch_new(inotify, path, events)
        elif mask & IN_DELETE:
            events.append({"type": "delete", "path": path, "is_dir": is_dir})
        elif mask & IN_MODIFY:
            last = events[-1] if events else None
            if last != {"type": "modify", "path": path, "is_dir": is_dir}:  # one per burst of writes
                events.append({"type": "modify", "path": path, "is_dir": is_dir})
    return events, ended


def _watch_new(inotify: _Inotify, path: str, events: list[dict[str, Any]] | None) -> None:
    """Watch a directory that appeared (and those below it); report what it already holds as
    `create` events (`events`), as it may have been filled before its watch was in place."""
    if not _add_quietly(inotify, path):
        return
    for root, dirs, files in os.walk(path):
        for name in dirs:
            sub = os.path.join(root, name)
            if _add_quietly(inotify, sub) and events is not None:
                events.append({"type": "create", "path": sub, "is_dir": True})
        if events is not None:
            events.extend({"type": "create", "path": os.path.join(root, n), "is_dir": False} for n in files)
