"""What the bubblewrap backend needs from the host: programs, a python for the agent, memfds."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from ..._confined import open_under
from ..base import BackendError, Mount

__all__ = [
    "data_fd",
    "id_ranges_unavailable",
    "memfd",
    "open_mount_source",
    "read_text",
    "reopen",
    "sandbox_python",
    "which",
]


def which(program: str) -> str:
    """The full path of `program` (bwrap); raises `BackendError` saying what to install."""
    found = shutil.which(program)
    if found is None:
        raise BackendError(
            f"{program} is not installed: install the 'bubblewrap' package (apt-get install bubblewrap)"
        )
    return found


def sandbox_python(as_root: bool) -> str:
    """A python3 (>= 3.9) the sandbox user can run: the agent needs one visible inside."""
    candidates = [sys.executable, shutil.which("python3") or "", "/usr/bin/python3", "/usr/local/bin/python3"]
    for candidate in candidates:
        if not candidate or not os.path.isfile(candidate):
            continue
        path = Path(os.path.realpath(candidate))
        if path.parts[1:2] and path.parts[1] in ("tmp", "home", "run"):
            continue  # replaced inside the sandbox
        if as_root and not others_can_run(path):
            continue
        if sys.version_info >= (3, 9) and candidate == sys.executable:
            return str(path)
        version = subprocess.run(
            [str(path), "-S", "-I", "-c", "import sys; print(sys.version_info >= (3, 9))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if version.stdout.strip() == "True":
            return str(path)
    raise BackendError(
        "no python3 >= 3.9 that an unprivileged user can run was found (the sandbox agent needs one): "
        "install the 'python3' package"
    )


def others_can_run(path: Path) -> bool:
    """Whether any user may execute `path` (and reach it)."""
    try:
        if os.stat(path).st_mode & (stat.S_IXOTH | stat.S_IROTH) != (stat.S_IXOTH | stat.S_IROTH):
            return False
        return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in path.parents)
    except OSError:
        return False


def read_text(path: str) -> str:
    """The file's text, or "" when it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding `data` (close-on-exec)."""
    fd = os.memfd_create(f"osbox-{name}", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def data_fd(name: str, data: bytes) -> int:
    """A memfd holding `data`, positioned at its start: what bwrap's `--bind-data` reads."""
    fd = memfd(name, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def reopen(fd: int) -> int:
    """A fresh open file description (offset 0) of a memfd, for bwrap to read."""
    return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)


def open_mount_source(mount: Mount) -> int:
    """An `O_PATH` fd of the mount's host directory, for bwrap's `--bind-fd`.

    Below `mount.beneath` no symlink is followed (ELOOP), and the fd is what gets mounted: a
    symlink a sandbox plants after the create was checked changes nothing.
    """
    if mount.beneath is None:
        return os.open(mount.host_path, os.O_PATH | os.O_CLOEXEC)
    return open_under(mount.beneath, str(mount.host_path.relative_to(mount.beneath)), os.O_PATH)


def id_ranges_unavailable(bwrap: str, python: str) -> str:
    """Why sandboxes cannot get a range of ids here ("" when they can; the server must be root).

    bwrap must be able to wait for maps written from outside (`--userns-block-fd`, bubblewrap
    >= 0.3.0) and the agent's python must have `_ctypes` (it drops capabilities with `capset`).
    """
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, check=False, timeout=30)
        if "--userns-block-fd" not in usage.stdout + usage.stderr:
            return "this bubblewrap lacks --userns-block-fd"
        probe = subprocess.run(
            [python, "-S", "-I", "-c", "import _ctypes"], capture_output=True, check=False, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot check bubblewrap and python: {exc}"
    return "" if probe.returncode == 0 else f"{python} has no _ctypes"
