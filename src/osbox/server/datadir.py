"""Who may touch the data dir: the server only, and sandbox users just enough to reach their files.

The data dir holds the database, the token key, sandbox state and snapshots. Start-up refuses a data
dir that another user could write to, directly or by replacing it through a parent (a directory owned by
someone else, or group/world-writable without the sticky bit), since that user could have planted
files or links the server would trust. Then the layout gets its modes: 0700 for what only the server
reads, 0711 (search, no listing) for the dirs bubblewrap, running as a sandbox's uid, must traverse
to its bind sources (`sandboxes/`, `volumes/`, the data dir itself). Files are 0600 (the store and
the key make theirs so).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .config import ServerConfig

__all__ = ["UnsafeDataDirError", "check_data_dir", "prepare_data_dir"]

#: Searchable by sandbox users (bwrap resolves bind sources below it as them), listable by nobody.
_TRAVERSABLE = 0o711
_PRIVATE = 0o700


class UnsafeDataDirError(Exception):
    """The data dir (or a parent of it) can be written by a user other than the server's."""


def check_data_dir(data_dir: Path) -> None:
    """Raise `UnsafeDataDirError` if a user other than ours (or root) can write the data dir, or
    replace it by writing one of its parents. A dir that does not exist yet is judged by its parents."""
    given, data_dir = Path(os.path.abspath(data_dir)), data_dir.resolve()
    euid = os.geteuid()
    # Both the path as given and the real one: whoever can write a dir holding a symlink on the way
    # can re-point it.
    for path in dict.fromkeys((data_dir, *data_dir.parents, given, *given.parents)):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue  # made at start-up, below parents that are checked
        if info.st_uid not in (0, euid):
            raise UnsafeDataDirError(
                f"refusing the data dir {data_dir}: {path} belongs to uid {info.st_uid}, who could replace "
                "its contents; use a data dir whose every parent belongs to root or to this server's user"
            )
        group_writable = info.st_mode & stat.S_IWGRP and info.st_gid != 0
        # A sticky parent (/tmp) lets others add entries but not replace ours: fine above the data dir.
        sticky_parent = path not in (data_dir, given) and info.st_mode & stat.S_ISVTX
        others_writable = info.st_mode & stat.S_IWOTH and not sticky_parent
        if group_writable or others_writable:
            raise UnsafeDataDirError(
                f"refusing the data dir {data_dir}: {path} is writable by other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}); run 'chmod go-w {path}' or choose another data dir"
            )


def prepare_data_dir(config: ServerConfig) -> None:
    """Check the data dir (see `check_data_dir`), then make its layout with the modes above (also
    tightening the modes an older version left)."""
    check_data_dir(config.data_dir)
    modes = {
        config.data_dir: _TRAVERSABLE,
        config.sandboxes_dir: _TRAVERSABLE,
        config.volumes_dir: _TRAVERSABLE,
        config.snapshots_dir: _PRIVATE,
    }
    for directory, mode in modes.items():
        directory.mkdir(parents=True, exist_ok=True, mode=_PRIVATE)
        directory.chmod(mode)
