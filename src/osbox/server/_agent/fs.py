"""File-system operations run INSIDE a sandbox by the agent, as the sandbox user.

Stdlib only: this module is executed by the in-sandbox agent, which must not import `osbox`.
Every op takes JSON-able keyword arguments and returns a JSON-able result. Failures raise
`OSError` (with an errno, so the server can pick 404 vs 400 vs 500) or `ValueError` (bad
arguments, always 400). The agent dispatches `handle.call(op, **args)` to `OPS[op](**args)`.

Paths are expanded here, not by the server, so that `$VAR` and `~` mean what they mean inside
the sandbox: `$VAR`/`${VAR}` from the environment (an undefined variable is an error), a
leading `~` is `$HOME`, and relative paths are made absolute against `/workspace`.

Modes travel as "octal digits written as a decimal integer": 755 means 0o755; 0/absent means
"leave the mode alone".
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fnmatch
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import accounts, identity
else:
    try:
        from . import accounts, identity
    except ImportError:  # run by the agent, which imports its modules top-level
        import accounts
        import identity

__all__ = ["OPS", "expand_path", "file_info"]

WORKSPACE = "/workspace"
#: Where bash-session state files live inside the sandbox (its private /tmp).
SESSION_STATE_DIR = "/tmp/.osbox/sessions"  # noqa: S108 (the sandbox's own private /tmp)

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


# --- paths -------------------------------------------------------------------------------


def expand_path(path: str, env: Mapping[str, str] | None = None) -> str:
    """Expand `$VAR`, `${VAR}` and a leading `~`, then make `path` absolute and normal."""
    if not isinstance(path, str) or not path:
        raise ValueError("path must be a non-empty string")
    if "\x00" in path:
        raise ValueError("path must not contain NUL bytes")
    scope = dict(os.environ)
    if env:
        scope.update(env)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in scope:
            raise ValueError(f"undefined environment variable ${name} in path {path!r}")
        return scope[name]

    expanded = _VAR.sub(substitute, path)
    if expanded == "~" or expanded.startswith("~/"):
        expanded = scope.get("HOME", "/root") + expanded[1:]
    if not expanded.startswith("/"):
        expanded = os.path.join(WORKSPACE, expanded)
    # normpath keeps a leading "//"; the sandbox has no use for it.
    normal = os.path.normpath(expanded)
    return "/" + normal.lstrip("/")


def _paths(value: Any, what: str = "path") -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise ValueError(f"{what} must be a non-empty list of strings")
    return value


# --- metadata ----------------------------------------------------------------------------


def _rfc3339(timestamp: float) -> str:
    moment = _dt.datetime.fromtimestamp(timestamp, _dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def file_info(path: str, st: os.stat_result | None = None) -> dict[str, Any]:
    """The FileInfo of `path` (lstat: a symlink is reported as itself)."""
    st = st if st is not None else os.lstat(path)
    return {
        "path": path,
        "type": _kind(st.st_mode),
        "size": st.st_size,
        "modified_at": _rfc3339(st.st_mtime),
        # Linux exposes no birth time through os.stat; ctime is the closest honest value.
        "created_at": _rfc3339(st.st_ctime),
        "owner": accounts.user_name(st.st_uid),
        "group": accounts.group_name(st.st_gid),
        "mode": int(format(stat.S_IMODE(st.st_mode), "o")),
    }


def _octal_mode(mode: Any) -> int:
    """Decode 755 (decimal digits meaning octal) to 0o755; 0/None means no change."""
    if mode is None:
        return 0
    if isinstance(mode, bool) or not isinstance(mode, int) or mode < 0:
        raise ValueError(f"mode must be octal digits such as 755, got {mode!r}")
    digits = str(mode)
    if len(digits) > 4 or any(d not in "01234567" for d in digits):
        raise ValueError(f"mode must be octal digits such as 755, got {mode!r}")
    return int(digits, 8)


def _uid(owner: Any) -> int:
    if owner is None or owner == "":
        return -1
    if not isinstance(owner, str):
        raise ValueError("owner must be a user name")
    if owner.isdigit():
        uid = int(owner)
    else:
        found = accounts.user_id(owner)
        if found is None:
            raise ValueError(f"unknown user {owner!r}")
        uid = found
    identity.check_mapped("uid", uid)
    return uid


def _gid(group: Any) -> int:
    if group is None or group == "":
        return -1
    if not isinstance(group, str):
        raise ValueError("group must be a group name")
    if group.isdigit():
        gid = int(group)
    else:
        found = accounts.group_id(group)
        if found is None:
            raise ValueError(f"unknown group {group!r}")
        gid = found
    identity.check_mapped("gid", gid)
    return gid


def _permission(spec: Any) -> tuple[int, int, int]:
    if not isinstance(spec, dict):
        raise ValueError("each permission must be an object {mode, owner?, group?}")
    return _octal_mode(spec.get("mode")), _uid(spec.get("owner")), _gid(spec.get("group"))


def _apply_permission(path: str, mode: int, uid: int, gid: int) -> None:
    if mode:
        os.chmod(path, mode)
    if uid != -1 or gid != -1:
        with identity.owner_change():
            os.chown(path, uid, gid)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{what} must be a non-empty object keyed by path")
    return value


# --- ops -----------------------------------------------------------------------------------


def op_expand(path: str, env: dict[str, str] | None = None) -> str:
    """Expand `path` (see `expand_path`)."""
    return expand_path(path, env)


def op_resolve_dir(path: str, env: dict[str, str] | None = None) -> str:
    """Expand `path` and check that it is an existing directory; returns the absolute path."""
    full = expand_path(path, env)
    if not os.path.isdir(full):
        if os.path.lexists(full):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", full)
        raise FileNotFoundError(errno.ENOENT, "no such directory", full)
    return full


def op_stat(paths: list[str]) -> dict[str, dict[str, Any]]:
    """FileInfo of each path, keyed by the path as given. Any missing path fails the whole call."""
    return {p: file_info(expand_path(p)) for p in _paths(paths)}


def op_delete_files(paths: list[str]) -> None:
    """Remove files (and symlinks). Missing ones are ignored; a directory is an error."""
    targets = [expand_path(p) for p in _paths(paths)]
    for target in targets:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory (use DELETE /directories)", target)
    for target in targets:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)


def op_set_permissions(items: dict[str, Any]) -> None:
    """chmod then chown every path: `{path: {mode, owner?, group?}}`."""
    plan = [(expand_path(p), *_permission(spec)) for p, spec in _object(items, "body").items()]
    for planned in plan:
        os.lstat(planned[0])  # fail before changing anything when a path is missing
    for path, mode, uid, gid in plan:
        _apply_permission(path, mode, uid, gid)


def op_move(items: list[dict[str, Any]]) -> None:
    """Move `[{src, dest}]`: dest parents are created; an existing dest is an error."""
    if not isinstance(items, list) or not items:
        raise ValueError("body must be a non-empty list of {src, dest}")
    plan = []
    for item in items:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("src"), str)
            or not isinstance(item.get("dest"), str)
        ):
            raise ValueError("each move must be an object {src, dest}")
        plan.append((expand_path(item["src"]), expand_path(item["dest"])))
    for src, dest in plan:
        os.lstat(src)
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, "destination already exists", dest)
    for src, dest in plan:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, "destination already exists", dest)
        try:
            shutil.move(src, dest)
        except shutil.Error as exc:  # e.g. a directory into itself: the caller's mistake
            raise ValueError(str(exc)) from None


def _brace_expand(pattern: str) -> list[str]:
    """`a{b,c}d` → [`abd`, `acd`], recursively (innermost-first is not needed for globs)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None or "," not in match.group(1):
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    out: list[str] = []
    for option in match.group(1).split(","):
        out.extend(_brace_expand(head + option + tail))
    return out


def op_search(path: str, pattern: str | None = None) -> list[dict[str, Any]]:
    """Files (not directories) under `path`, recursively, whose name matches the glob `pattern`.

    The glob is matched against the basename (`* ? [..] {a,b}`); a pattern containing `/` is
    matched against the path relative to `path` instead. Symlinked directories are not followed.
    """
    root = op_resolve_dir(path)
    globs = _brace_expand(pattern or "**")
    by_path = any("/" in g for g in globs)
    found: list[dict[str, Any]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(directory, name)
            subject = os.path.relpath(full, root) if by_path else name
            if any(fnmatch.fnmatchcase(subject, g) for g in globs):
                try:
                    found.append(file_info(full))
                except FileNotFoundError:
                    continue  # removed while we walked
    return found


def op_replace(items: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Replace every occurrence of `old` by `new` in each file, in place (mode and owner kept)."""
    plan = []
    for p, spec in _object(items, "body").items():
        if not isinstance(spec, dict) or not isinstance(spec.get("old"), str):
            raise ValueError("each replacement must be an object {old, new}")
        new = spec.get("new", "")
        if not isinstance(new, str):
            raise ValueError("'new' must be a string")
        if spec["old"] == "":
            raise ValueError(f"'old' must not be empty (path {p!r})")
        full = expand_path(p)
        if not os.path.isfile(full):
            if os.path.lexists(full):
                raise ValueError(f"not a regular file: {full}")
            raise FileNotFoundError(errno.ENOENT, "no such file", full)
        plan.append((p, full, spec["old"].encode(), new.encode()))
    counts: dict[str, dict[str, int]] = {}
    for key, full, old, new in plan:
        # O_NONBLOCK: a FIFO swapped in since the check above must not hang this thread.
        fd = os.open(full, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(f"not a regular file: {full}")
        with os.fdopen(fd, "r+b") as f:
            data = f.read()
            count = data.count(old)
            if count:
                f.seek(0)
                f.write(data.replace(old, new))
                f.truncate()
        counts[key] = {"replacedCount": count}
    return counts


def _walk_listing(directory: str, levels_left: int) -> Iterator[dict[str, Any]]:
    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue
        yield file_info(full, st)
        if levels_left > 1 and stat.S_ISDIR(st.st_mode):
            try:
                yield from _walk_listing(full, levels_left - 1)
            except PermissionError:
                continue  # an unreadable subdirectory is listed, not descended into


def op_list_dir(path: str, depth: int = 1) -> list[dict[str, Any]]:
    """Entries under `path` up to `depth` levels, lexical, each parent before its children."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError("depth must be an integer >= 0")
    full = expand_path(path)
    st = os.lstat(full)
    if stat.S_ISLNK(st.st_mode):
        raise ValueError(f"{full} is a symbolic link; pass the real directory path")
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", full)
    if depth == 0:
        return []
    return list(_walk_listing(full, depth))


def op_make_dirs(items: dict[str, Any]) -> None:
    """`mkdir -p` each path, then chmod/chown the leaf: `{path: {mode, owner?, group?}}`."""
    plan = [(expand_path(p), *_permission(spec)) for p, spec in _object(items, "body").items()]
    for path, mode, uid, gid in plan:
        os.makedirs(path, exist_ok=True)
        _apply_permission(path, mode, uid, gid)


def op_delete_dirs(paths: list[str]) -> None:
    """Delete directories recursively; missing ones are ignored, a file is an error."""
    targets = [expand_path(p) for p in _paths(paths)]
    for target in targets:
        if target == "/":
            raise ValueError("refusing to delete /")
        if os.path.lexists(target) and not os.path.isdir(target):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory (use DELETE /files)", target)
    for target in targets:
        if os.path.islink(target):
            os.unlink(target)  # a link to a directory: remove the link, not the target's content
        elif os.path.isdir(target):
            shutil.rmtree(target)


def op_prepare_upload(path: str) -> dict[str, str]:
    """Create the parents of `path` and name a fresh temp file beside it for the upload.

    The server writes into the temp file through `open_file` and then calls `finish_upload`,
    so a failed upload never leaves a half-written target behind.
    """
    full = expand_path(path)
    if os.path.isdir(full):
        raise IsADirectoryError(errno.EISDIR, "is a directory", full)
    parent, name = os.path.split(full)
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f".{name[:200]}.osbox-upload-{secrets.token_hex(6)}")
    return {"path": full, "temp": temp}


def op_finish_upload(
    temp: str, path: str, mode: int | None = None, owner: str | None = None, group: str | None = None
) -> dict[str, Any]:
    """Apply mode/owner/group to the uploaded temp file and rename it over `path`."""
    chosen = _octal_mode(mode)
    uid, gid = _uid(owner), _gid(group)
    if not os.path.basename(temp).startswith("."):
        raise ValueError("not an upload temp file")
    _apply_permission(temp, chosen, uid, gid)
    os.rename(temp, path)
    return file_info(path)


def op_session_init(state: str, cwd: str | None = None) -> str:
    """Set up a bash session's state files under `state` (a path prefix); returns its cwd."""
    if not state.startswith(SESSION_STATE_DIR + "/"):
        raise ValueError("session state must live under " + SESSION_STATE_DIR)
    os.makedirs(SESSION_STATE_DIR, mode=0o700, exist_ok=True)
    start = expand_path(cwd) if cwd else WORKSPACE
    os.makedirs(start, exist_ok=True)
    with open(state + ".cwd", "w", encoding="utf-8") as f:
        f.write(start + "\n")
    return start


def op_session_drop(state: str) -> None:
    """Remove a bash session's state files."""
    if not state.startswith(SESSION_STATE_DIR + "/"):
        raise ValueError("session state must live under " + SESSION_STATE_DIR)
    for suffix in (".cwd", ".env"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state + suffix)


OPS: dict[str, Callable[..., Any]] = {
    "expand": op_expand,
    "resolve_dir": op_resolve_dir,
    "stat": op_stat,
    "delete_files": op_delete_files,
    "set_permissions": op_set_permissions,
    "move": op_move,
    "search": op_search,
    "replace": op_replace,
    "list_dir": op_list_dir,
    "make_dirs": op_make_dirs,
    "delete_dirs": op_delete_dirs,
    "prepare_upload": op_prepare_upload,
    "finish_upload": op_finish_upload,
    "session_init": op_session_init,
    "session_drop": op_session_drop,
}
