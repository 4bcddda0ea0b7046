"""Confined file-system primitives: the root server never follows a path a sandbox can change.

Trees a sandbox can write (its `/workspace` and home, named volumes, a code context's kernel
directory) may hold symlinks planted there to make the server, which runs as host root, act on
host files. Every server-side operation on such a tree starts from a directory fd the server
trusts and resolves the rest with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
RESOLVE_NO_MAGICLINKS)`: no symlink is followed, not even one planted after a check, because the
fd opened is the thing used (chmod through it, bind-mount it, connect through it). Kernels without
`openat2` (before 5.6) get the same from a walk of one component at a time with `O_NOFOLLOW`.

    root = os.open(volumes_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    fd = make_dirs_beneath(root, "claim/sub", mode=0o777)   # refuses a symlink anywhere on the way
    ...                                                     # e.g. bind-mount /proc/self/fd/<fd>

Paths are relative to the directory fd. Refusals are `OSError`s: ELOOP for a symlink on the way,
EXDEV for `..`, an absolute path or (with `same_mount`) a mount crossing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

__all__ = [
    "is_symlink_refusal",
    "make_dirs_beneath",
    "open_beneath",
    "open_under",
    "relative_parts",
]

# <linux/openat2.h>
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
#: openat2 is 437 in the generic syscall table, which x86_64 and aarch64 (and every other
#: architecture since 5.6) share.
_SYS_OPENAT2 = 437
_CONFINED = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
#: Whether the kernel has openat2; set to False the first time it answers ENOSYS.
_have_openat2 = True


def relative_parts(path: str) -> list[str]:
    """The components of a relative path (`""`, `.` and empty ones dropped); EXDEV for `..` or `/x`."""
    if path.startswith("/") or "\0" in path:
        raise OSError(errno.EXDEV, f"not a relative path: {path!r}")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EXDEV, f"'..' is not allowed here: {path!r}")
    return parts


def is_symlink_refusal(exc: OSError) -> bool:
    """Whether `exc` is a confined open refusing a symlink (or a magic link, or a mount crossing)."""
    return exc.errno in (errno.ELOOP, errno.EXDEV)


def open_beneath(dir_fd: int, path: str, flags: int, mode: int = 0, *, same_mount: bool = False) -> int:
    """Open `path` beneath `dir_fd` without following any symlink; returns a close-on-exec fd.

    A symlink anywhere in `path`, its last component included, fails with ELOOP; with `same_mount`,
    so does leaving `dir_fd`'s mount (EXDEV). `path` may be empty (or `.`): `dir_fd` itself is
    opened anew with `flags`. `mode` is used with O_CREAT only.
    """
    global _have_openat2
    parts = relative_parts(path)
    flags |= os.O_CLOEXEC
    if not parts:
        return os.open(".", flags, dir_fd=dir_fd)
    if _have_openat2:
        resolve = _CONFINED | (RESOLVE_NO_XDEV if same_mount else 0)
        try:
            return _openat2(dir_fd, "/".join(parts), flags, mode if flags & os.O_CREAT else 0, resolve)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _have_openat2 = False
    return _walk_open(dir_fd, parts, flags, mode, same_mount)


def _openat2(dir_fd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    how = _OpenHow(flags, mode, resolve)
    encoded = os.fsencode(path)
    for _attempt in range(16):  # EAGAIN: a concurrent rename made the kernel unsure; try again
        fd = _libc.syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_long(dir_fd),  # the wrapper passes longs; the kernel takes the int
            ctypes.c_char_p(encoded),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            break
    raise OSError(err, f"{os.strerror(err)}: {path!r}")


def _walk_open(dir_fd: int, parts: list[str], flags: int, mode: int, same_mount: bool) -> int:
    """openat2's confinement by hand: one `O_NOFOLLOW` open per component, from `dir_fd` down."""
    device = os.fstat(dir_fd).st_dev if same_mount else None
    current, owned = dir_fd, -1
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            step_flags = (flags if last else os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) | os.O_NOFOLLOW
            try:
                fd = os.open(part, step_flags, mode, dir_fd=current)
            except OSError as exc:
                # O_DIRECTORY on a symlink says ENOTDIR: say what it really is.
                if exc.errno == errno.ENOTDIR and _is_symlink(current, part):
                    raise OSError(errno.ELOOP, f"{os.strerror(errno.ELOOP)}: {part!r}") from None
                raise
            st = os.fstat(fd)
            # O_PATH | O_NOFOLLOW opens a symlink itself instead of failing: refuse it here.
            if stat.S_ISLNK(st.st_mode) or (device is not None and st.st_dev != device):
                os.close(fd)
                code = errno.ELOOP if stat.S_ISLNK(st.st_mode) else errno.EXDEV
                raise OSError(code, f"{os.strerror(code)}: {part!r}")
            if last:
                return fd
            if owned >= 0:
                os.close(owned)
            current = owned = fd
    finally:
        if owned >= 0:
            os.close(owned)
    raise AssertionError("unreachable: parts is not empty")


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def make_dirs_beneath(dir_fd: int, path: str, mode: int = 0o755) -> int:
    """Create the directories of `path` beneath `dir_fd` that are missing; returns the last one's fd.

    No symlink is followed (ELOOP). Each directory this call creates gets exactly `mode`, set
    through its own fd whatever the umask; existing ones are left as they are. The returned fd is
    opened `O_RDONLY | O_DIRECTORY` (so `fchmod`/`fchown` work on it); the caller closes it.
    """
    current = open_beneath(dir_fd, "", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in relative_parts(path):
            created = False
            try:
                os.mkdir(part, 0o700, dir_fd=current)  # mkdirat never follows a symlink at `part`
                created = True
            except FileExistsError:
                pass
            child = open_beneath(current, part, os.O_RDONLY | os.O_DIRECTORY)
            os.close(current)
            current = child
            if created:
                os.fchmod(current, mode)
    except BaseException:
        os.close(current)
        raise
    return current


def open_under(root: Path | str, path: str, flags: int, *, same_mount: bool = False) -> int:
    """Open `root` as given (a path the server or the operator chose), then `path` beneath it.

    For a trusted directory holding an untrusted tree: `open_under(volumes_dir, "claim/sub", ...)`.
    """
    if not relative_parts(path):
        return os.open(root, flags | os.O_CLOEXEC)
    root_fd = os.open(root, os.O_PATH | os.O_CLOEXEC)
    try:
        return open_beneath(root_fd, path, flags, same_mount=same_mount)
    finally:
        os.close(root_fd)
