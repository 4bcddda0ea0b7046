"""A sandbox's disk quota: its writable dirs live on a file system of their own, of the quota's size.

    state_dir/disk.img    a sparse ext4 image: on the host it takes only the blocks written to it
    state_dir/fs/         the image, loop-mounted here by the server (nodev, nosuid, discard)

Everything a sandbox can write apart from its volumes (`/workspace`, `/tmp`, `/home/sandbox`) is a
directory in `fs/` (see `layout.StateLayout`), so a write past the quota fails with ENOSPC inside
the sandbox while the host's disk and the other sandboxes are untouched.

Why an image: the host's file system need not have project quotas (ext4 here does not), and a
tmpfs `size=` would take the quota from memory. Made without a journal and with lazy inode tables,
a fresh image is ~0.2 MiB of blocks: mkfs runs once per size and each sandbox's image is a copy
(~0.3 ms), mounted in ~5 ms; `discard` hands deleted files' blocks back to the host.
`mount -o loop` marks the loop device autoclear: it goes by itself once the file system is
unmounted from the host and the sandbox's own mount namespace is gone.

The mount outlives the sandbox's processes (a failed sandbox's files stay readable, e.g. for a
snapshot) and a server restart; `remove_tree` ends it with the state dir.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..base import BackendError
from .cgroups import unescape_mountinfo

__all__ = ["IMAGE_NAME", "DiskError", "ensure_mounted", "provision", "remove_tree", "unavailable_reason"]

IMAGE_NAME = "disk.img"
#: Fast to make and small on the host: no journal (a sandbox's scratch space needs no crash
#: consistency), no reserve for online growth, no blocks reserved for root (the sandbox's root is
#: not the host's), inode tables initialised lazily and never zeroed (`noinit_itable`).
_MKFS = ["mkfs.ext4", "-q", "-F", "-O", "^has_journal,^resize_inode", "-m", "0"]
_MKFS += ["-E", "lazy_itable_init=1,nodiscard"]
_MOUNT_OPTIONS = "loop,nodev,nosuid,noinit_itable,discard"
#: One inode per 64 KiB written, but never fewer than this (small quotas still hold many small files).
_MIN_INODES = 4096
_UMOUNT_NOFOLLOW = 8
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


class DiskError(Exception):
    """The image could not be made or mounted; the message says why."""


def unavailable_reason() -> str:
    """Why quotas cannot be enforced on this machine ("" when they can)."""
    if os.geteuid() != 0:
        return "the server is not root (mounting a sandbox's disk image needs root)"
    for tool in ("mkfs.ext4", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package e2fsprogs / mount)"
    if not os.path.exists("/dev/loop-control"):
        return "this machine has no loop devices (/dev/loop-control is missing)"
    return ""


def provision(state_dir: Path, size_bytes: int) -> None:
    """Put `state_dir/fs` on an image of `size_bytes` (a no-op when it is already).

    What `fs/` held already (a snapshot's files) is copied onto the image, sparse files kept
    sparse. Raises `DiskError` when the image cannot be made or mounted, `BackendError` when the
    files do not fit; either way having undone what it did.
    """
    fs_dir, image, seed = state_dir / "fs", state_dir / IMAGE_NAME, state_dir / "fs.seed"
    if os.path.ismount(fs_dir):
        return
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    seeded = fs_dir.is_dir() and any(fs_dir.iterdir())
    if seeded:
        os.rename(fs_dir, seed)
    try:
        _make_image(image, size_bytes)
        fs_dir.mkdir(mode=0o700, exist_ok=True)
        _run(["mount", "-t", "ext4", "-o", _MOUNT_OPTIONS, str(image), str(fs_dir)])
        if seeded:
            try:
                _run(["cp", "-a", "--sparse=always", "--no-target-directory", str(seed), str(fs_dir)])
            except DiskError as exc:  # e.g. a snapshot larger than the quota: the create fails
                if "No space left on device" in str(exc):  # cp's message names host paths: not shown
                    raise BackendError("the sandbox's files do not fit on its disk") from None
                raise BackendError(f"copying the sandbox's files onto its disk failed: {exc}") from None
            shutil.rmtree(seed)
    except BaseException:
        _unmount(fs_dir)
        with contextlib.suppress(FileNotFoundError):
            image.unlink()
        if seeded:
            shutil.rmtree(fs_dir, ignore_errors=True)
            os.rename(seed, fs_dir)
        raise


def ensure_mounted(state_dir: Path) -> None:
    """Mount the state dir's image again if it is not (after a reboot); nothing if it has none.

    Should a loop device still hold the image (its sandbox's namespace still has it mounted),
    that device is mounted: a second loop device would make a second, diverging file system on
    the same blocks.
    """
    fs_dir, image = state_dir / "fs", state_dir / IMAGE_NAME
    if not image.is_file() or os.path.ismount(fs_dir):
        return
    fs_dir.mkdir(mode=0o700, exist_ok=True)
    device = _loop_device_of(image)
    if device is not None:
        options = _MOUNT_OPTIONS.removeprefix("loop,")
        _run(["mount", "-t", "ext4", "-o", options, device, str(fs_dir)])
    else:
        _run(["mount", "-t", "ext4", "-o", _MOUNT_OPTIONS, str(image), str(fs_dir)])


def _loop_device_of(image: Path) -> str | None:
    """The loop device set up on `image`, if there is one."""
    wanted = str(image.resolve())
    for device in Path("/sys/block").glob("loop*"):
        with contextlib.suppress(OSError):
            if (device / "loop" / "backing_file").read_text().strip() == wanted:
                return f"/dev/{device.name}"
    return None


def remove_tree(root: Path) -> None:
    """Unmount every file system mounted in `root` (deepest first), then delete it. Never raises."""
    for mount_point in sorted(_mounts_under(root), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            _unmount(mount_point)
    shutil.rmtree(root, ignore_errors=True)


def _make_image(image: Path, size_bytes: int) -> None:
    """A fresh file system of `size_bytes` at `image`: a sparse file holding a fresh image's blocks."""
    extents = _fresh_image(size_bytes)
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size_bytes)  # sparse: only the blocks written below take space
        for offset, data in extents:
            os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=4)
def _fresh_image(size_bytes: int) -> tuple[tuple[int, bytes], ...]:
    """The written extents (offset, bytes) of a fresh image of `size_bytes`: mkfs runs once per size
    (~5 ms, a process), copying its ~0.2 MiB of blocks is ~10x faster. The images share a UUID,
    which ext4 does not mind."""
    with tempfile.TemporaryDirectory(prefix="osbox-disk-") as directory:
        template = Path(directory) / IMAGE_NAME
        with open(template, "wb") as file:
            file.truncate(size_bytes)
        _run([*_MKFS, "-N", str(max(_MIN_INODES, size_bytes // 65536)), str(template)])
        extents = []
        fd = os.open(template, os.O_RDONLY | os.O_CLOEXEC)
        try:
            offset = 0
            while True:
                try:
                    start = os.lseek(fd, offset, os.SEEK_DATA)
                except OSError as exc:  # ENXIO: no data past `offset`
                    if exc.errno == errno.ENXIO:
                        break
                    raise
                offset = os.lseek(fd, start, os.SEEK_HOLE)
                extents.append((start, os.pread(fd, offset - start, start)))
        finally:
            os.close(fd)
    return tuple(extents)


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip() or f"exit status {exc.returncode}"
        raise DiskError(f"{argv[0]} failed: {detail}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskError(f"{argv[0]} failed: {exc}") from None


def _unmount(mount_point: Path) -> None:
    """Unmount (without following a symlink); lazily if something still holds it open."""
    if not os.path.ismount(mount_point):
        return
    path = os.fsencode(mount_point)
    if _libc.umount2(path, _UMOUNT_NOFOLLOW) == 0:
        return
    code = ctypes.get_errno()
    if code == errno.EBUSY and _libc.umount2(path, _UMOUNT_NOFOLLOW | _MNT_DETACH) == 0:
        return
    code = ctypes.get_errno() or code
    raise OSError(code, f"cannot unmount {mount_point}: {os.strerror(code)}")


def _mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, from this process's mountinfo."""
    root = root.absolute()
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as mountinfo:
        for line in mountinfo:
            fields = line.split(" ")
            if len(fields) > 4:
                point = Path(unescape_mountinfo(fields[4]))
                if point == root or root in point.parents:
                    found.append(point)
    return found
