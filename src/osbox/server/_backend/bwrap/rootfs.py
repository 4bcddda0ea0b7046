"""A sandbox's image root: the image's layers, shifted into its ids, under a writable layer of its own.

    <state_dir>/fs/upper    the sandbox's writable layer (on its disk, so the disk quota caps it)
    <state_dir>/fs/work     overlayfs's work dir (same file system as upper)
    <state_dir>/lower/<i>   mount points of the layers' id-shifted views (empty dirs on the host)
    <state_dir>/root        where the overlay is mounted; bwrap binds it into the sandbox

Layers are shared by every sandbox of every image (`server/images`) and stay as the image wrote
them: owned by uid 0..N. A sandbox's ids are a host range of its own (`idranges`: sandbox id N is
host id `base + N`), so each layer is mounted through an idmapped mount (`mount_setattr` with
`MOUNT_ATTR_IDMAP`) that shows uid N as `base + N`, and overlayfs stacks those views under the
sandbox's own upper dir. Inside, the image's root owns the image's files, as in a container.

Where the mounts live: in the sandbox's own mount namespace, never the host's. bwrap creates that
namespace and waits (`--userns-block-fd`) until the server has written its user namespace's id
maps; in that window a short-lived thread of the server joins the namespace (`setns`), mounts
the layers and the overlay at `root`, and leaves. bwrap then binds `root` into the sandbox's view.
Nothing is ever mounted on the host, so nothing is left to unmount: the overlay goes when the
sandbox's last process ends, however the server or the sandbox ended.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from ..base import BackendError

__all__ = ["ImageRootLayout", "mount_image_root"]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# Syscall numbers of the new mount API: the same on x86_64 and aarch64 (the generic table).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_IDMAP = 0x00100000
_CLONE_FS = 0x00000200
_CLONE_NEWNS = 0x00020000
_MS_NODEV = 0x4


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class ImageRootLayout:
    """The image-root paths of one sandbox's state dir (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.upper = state_dir / "fs" / "upper"
        self.work = state_dir / "fs" / "work"
        self.lower = state_dir / "lower"
        self.root = state_dir / "root"

    def prepare(self, layer_count: int, root_owner: tuple[int, int]) -> None:
        """Make the dirs (kept when they exist: a restored snapshot brings its upper dir).

        The upper dir's root is the merged root's: owned by the image's root (`root_owner`, host
        ids), mode 0755. The work dir is overlayfs's own: root only.
        """
        if not self.upper.exists():
            self.upper.mkdir(mode=0o755)
            os.chown(self.upper, *root_owner)
            self.upper.chmod(0o755)
        self.work.mkdir(mode=0o700, exist_ok=True)
        for directory in (self.lower, self.root):
            directory.mkdir(mode=0o700, exist_ok=True)
        for index in range(layer_count):
            (self.lower / str(index)).mkdir(mode=0o700, exist_ok=True)

    def overlay_options(self, layer_count: int) -> str:
        """overlayfs's mount options: the id-shifted layers (topmost first) under `upper`."""
        lowers = ":".join(str(self.lower / str(index)) for index in reversed(range(layer_count)))
        return f"lowerdir={lowers},upperdir={self.upper},workdir={self.work}"


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _idmapped_bind(source: Path, target: Path, userns_fd: int) -> None:
    """Bind `source` at `target`, read-only and with the ids of `userns_fd`'s maps."""
    tree = _check(
        _libc.syscall(
            ctypes.c_long(_SYS_OPEN_TREE),
            ctypes.c_long(_AT_FDCWD),
            ctypes.c_char_p(os.fsencode(source)),
            ctypes.c_long(_OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC),
        ),
        f"open_tree {source}",
    )
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP | _MOUNT_ATTR_RDONLY, 0, 0, userns_fd)
        _check(
            _libc.syscall(
                ctypes.c_long(_SYS_MOUNT_SETATTR),
                ctypes.c_long(tree),
                ctypes.c_char_p(b""),
                ctypes.c_long(_AT_EMPTY_PATH),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
            f"idmapping {source}",
        )
        _check(
            _libc.syscall(
                ctypes.c_long(_SYS_MOVE_MOUNT),
                ctypes.c_long(tree),
                ctypes.c_char_p(b""),
                ctypes.c_long(_AT_FDCWD),
                ctypes.c_char_p(os.fsencode(target)),
                ctypes.c_long(_MOVE_MOUNT_F_EMPTY_PATH),
            ),
            f"mounting {source}",
        )
    finally:
        os.close(tree)


def _mount_in(child_pid: int, layers: Sequence[Path], paths: ImageRootLayout) -> None:
    """In this (disposable) thread: join the child's mount namespace and mount its image root."""
    _check(_libc.unshare(ctypes.c_int(_CLONE_FS)), "unshare(CLONE_FS)")  # setns needs our own root/cwd
    mount_ns = os.open(f"/proc/{child_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    user_ns = os.open(f"/proc/{child_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(ctypes.c_int(mount_ns), ctypes.c_int(_CLONE_NEWNS)), "joining the mount namespace")
        for index, layer in enumerate(layers):
            _idmapped_bind(layer, paths.lower / str(index), user_ns)
        options = paths.overlay_options(len(layers))
        _check(
            _libc.mount(b"overlay", os.fsencode(paths.root), b"overlay", _MS_NODEV, options.encode()),
            "mounting the overlay",
        )
    finally:
        os.close(mount_ns)
        os.close(user_ns)


def mount_image_root(child_pid: int, layers: Sequence[Path], paths: ImageRootLayout) -> None:
    """Mount the image root of bwrap's waiting child (blocks; run it from a worker thread).

    The work runs in a thread of its own, made for it and ended after it: a thread that joined
    another mount namespace can never be handed back to a pool. Raises `BackendError`.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _mount_in(child_pid, layers, paths)
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"osbox-rootfs-{child_pid}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        exc = failure[0]
        raise BackendError(f"the image's root filesystem could not be mounted: {exc}") from None
