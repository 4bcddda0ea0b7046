"""The host side of a sandbox's state dir: permissions, ownership, the adoption record, logs.

See `layout.StateLayout` for what lives where.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import BackendError
from . import layout as lay
from .agent_client import unix_address
from .procs import start_time

if TYPE_CHECKING:
    from .sandbox import BwrapSandbox

__all__ = [
    "RECORD_VERSION",
    "bind_listener",
    "forget_run_files",
    "make_traversable",
    "prepare_state_dir",
    "read_record",
    "write_record",
]

RECORD_VERSION = 1


def bind_listener(listener: socket.socket, path: Path) -> None:
    """Bind a unix socket at `path` (replacing a stale one), however long the path is."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with unix_address(path) as address:
        listener.bind(address)


def make_traversable(data_dir: Path) -> None:
    """bwrap runs as the sandbox's uid and resolves its bind sources by path: the data dir and its
    parents must be searchable (o+x) by others. The data dir is ours to chmod; its parents are not."""
    _require_searchable(data_dir, "data dir")
    _add_search_bit(data_dir)


def _require_searchable(path: Path, what: str) -> None:
    for parent in path.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise BackendError(
                f"the {what} {path} is not reachable by unprivileged users ({parent} lacks o+x); "
                f"choose a {what} elsewhere or run 'chmod o+x {parent}'"
            )


def _add_search_bit(directory: Path) -> None:
    mode = stat.S_IMODE(os.stat(directory).st_mode)
    search_only = mode & ~0o066 | stat.S_IXOTH  # others may pass through, not list or write
    if mode != search_only:
        os.chmod(directory, search_only)


#: (uid, gid) of an existing file -> the (uid, gid) it gets in this sandbox.
Owners = Callable[[int, int], tuple[int, int]]


def prepare_state_dir(
    layout: lay.StateLayout,
    data_dir: Path,
    owners: Owners | None,
    *,
    group: int | None = None,
    root: tuple[int, int] | None = None,
) -> None:
    """Make the state dir's `fs/` and `run/` dirs; with `owners`, hand `fs/*` to the sandbox's ids.

    `run/` stays the server's alone (0700). The dirs between the data dir and `fs/` get o+x (search
    only), so that bwrap, running as the sandbox's uid, can reach its bind sources; `fs/` itself is
    searchable by `group` only (bwrap's gid) when given, else by others too.

    `root` (the host uid/gid of the sandbox's root) means the sandbox has many users: `/tmp` is then
    root's with mode 1777 and `/workspace` 0755, as on any machine; otherwise all three are 0700,
    the sandbox user's alone. `/home/sandbox` is always 0700.
    """
    layout.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    layout.run.mkdir(exist_ok=True, mode=0o700)
    fs_dir = layout.state_dir / "fs"
    fs_dir.mkdir(exist_ok=True, mode=0o700)
    if owners is not None:
        state_dir = layout.state_dir.resolve()
        if group is not None:  # host users other than the sandbox's bwrap never get past fs/
            os.chown(fs_dir, 0, group)
            os.chmod(fs_dir, 0o710)  # noqa: S103 (search for root and bwrap's group only)
        else:
            _add_search_bit(fs_dir)
        _add_search_bit(state_dir)
        for directory in state_dir.parents:  # up to the data dir, when the state dir is inside it
            if directory == data_dir or data_dir not in directory.parents:
                break
            _add_search_bit(directory)
        _require_searchable(fs_dir, "state dir")
    upper = fs_dir / "upper"  # an image sandbox's writable layer, restored from a snapshot
    if owners is not None and upper.is_dir() and not upper.is_symlink():
        _chown_tree(upper, owners)
    modes = {layout.workspace: 0o755, layout.tmp: 0o1777} if root is not None else {}
    for directory in (layout.workspace, layout.home, layout.tmp):
        directory.mkdir(parents=True, exist_ok=True)
        if owners is not None:
            _chown_tree(directory, owners)
        if root is not None and directory == layout.tmp:
            os.chown(directory, *root)
        os.chmod(directory, modes.get(directory, 0o700))


def _chown_tree(root: Path, owners: Owners) -> None:
    """Give the sandbox's host ids its files (e.g. after a snapshot was copied in as root)."""

    def chown(path: str) -> None:
        st = os.lstat(path)
        uid, gid = owners(st.st_uid, st.st_gid)
        if (uid, gid) != (st.st_uid, st.st_gid):
            os.lchown(path, uid, gid)

    chown(str(root))
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            chown(os.path.join(directory, name))


def write_record(handle: BwrapSandbox, bwrap_pid: int) -> None:
    """Record what `adopt` needs to find and check this sandbox after a restart."""
    record = {
        "version": RECORD_VERSION,
        "sandbox_id": handle.sandbox_id,
        "agent_pid": handle.agent_pid,
        "agent_start": start_time(handle.agent_pid),
        "bwrap_pid": bwrap_pid,
        "bwrap_start": start_time(bwrap_pid),
        "uid": handle.host_uid,
        "gid": handle.host_gid,
        "id_base": handle.ids.base if handle.ids is not None else None,
        "ids_mapped": handle.ids_mapped,
        "cgroup": handle.cgroup.to_json() if handle.cgroup else None,
        "limits_enforced": handle.limits_enforced,
        "limits_message": handle.limits_message,
        "disk_message": handle.disk_message,
    }
    temporary = handle.layout.record.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(handle.layout.record)


def read_record(layout: lay.StateLayout) -> dict[str, Any] | None:
    """The adoption record, or None when it is missing, unreadable or of another version."""
    try:
        record = json.loads(layout.record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        return None
    return record


def forget_run_files(layout: lay.StateLayout) -> None:
    """Remove the socket and the record of a sandbox that is gone (the rest of the state dir stays)."""
    for path in (layout.socket, layout.record):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
