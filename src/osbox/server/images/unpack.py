"""Unpacking one layer blob into a directory overlayfs can use as a lowerdir, safely.

Our own extractor over `tarfile`'s stream reader, not `tarfile.extractall` (which follows symlinks
it created itself and knows nothing of whiteouts) and not umoci (`umoci raw unpack` applies a whole
image into one rootfs; it can't give us one directory per layer to share between images).

Every write goes through directory fds opened component by component with O_NOFOLLOW from the
layer's own root, so an entry can't leave that directory however the archive is crafted:
- `..` components and absolute names are refused;
- an entry whose parent is a symlink (`link -> /etc` then `link/passwd`) is refused (ELOOP), symlinks
  themselves are created but never followed;
- hard links must name an entry already in this layer (same walk), so no link to the host's files.

OCI whiteouts become overlayfs ones: `.wh.NAME` -> a 0/0 character device NAME, `.wh..wh..opq` ->
the `trusted.overlay.opaque=y` xattr on its directory (so the lowerdir needs a root-mounted overlay).
Ownership, modes (setuid/setgid/sticky), device nodes, FIFOs and `SCHILY.xattr.*` are kept. The
uncompressed stream is hashed and must equal the config's diff_id.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import StoreFull, UnsafeLayer

__all__ = ["check_diff_id", "looks_like_layer", "unpack_layer"]

_WHITEOUT_PREFIX = ".wh."
_OPAQUE_MARKER = ".wh..wh..opq"
_OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX_PREFIX = "SCHILY.xattr."
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _HashingReader:
    """A read-only stream that hashes what passes through it (the layer's diff_id)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        return data

    def drain(self) -> None:
        """Hash what the tar reader did not need (the end-of-archive padding)."""
        while self.read(_CHUNK):
            pass


@contextmanager
def _decompressed(blob: Path) -> Iterator[IO[bytes]]:
    """The layer's uncompressed tar stream, whatever its compression (detected by magic bytes)."""
    with blob.open("rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw) as stream:
                yield stream  # type: ignore[misc]  # GzipFile is a binary stream
            return
        if magic == _ZSTD_MAGIC:
            # Python 3.11 has no zstd module: Debian's `zstd` decompresses into a pipe.
            process = subprocess.Popen(
                ["zstd", "-d", "-c", "-q", str(blob)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert process.stdout is not None
            try:
                yield process.stdout
            finally:
                process.stdout.close()
                _, stderr = process.communicate()
            if process.returncode not in (0, -13):  # -13: SIGPIPE when we stopped reading early
                raise UnsafeLayer(f"zstd could not decompress the layer: {stderr.decode(errors='replace')}")
            return
        yield raw


def looks_like_layer(blob: Path) -> bool:
    """Whether a blob is a layer (gzip, zstd or tar) rather than a JSON manifest or config."""
    with blob.open("rb") as handle:
        head = handle.read(512)
    return head.startswith((_GZIP_MAGIC, _ZSTD_MAGIC)) or head[257:262] == b"ustar"


def unpack_layer(blob: Path, destination: Path, diff_id: str | None, *, max_bytes: int) -> tuple[int, str]:
    """Unpack the layer `blob` into the empty directory `destination`: (bytes of its files, diff_id).

    A layer whose files add up to more than `max_bytes` is refused as soon as the tar says so (a
    small compressed blob can expand to fill the disk).

    Raises UnsafeLayer (leaving a partial `destination` for the caller to remove) when an entry would
    write outside `destination`, or when the uncompressed content does not hash to `diff_id` (when
    given; a caller that unpacks before it has the config checks the returned digest itself).
    """
    with _decompressed(blob) as stream:
        reader = _HashingReader(stream)
        root_fd = os.open(destination, _DIR_OPEN)
        try:
            os.fchmod(root_fd, 0o755)  # a root directory as Docker makes it, unless the tar has "./"
            extractor = _Extractor(root_fd, max_bytes)
            # bufsize: the stream reader's default (10 KiB) means many small reads and joins.
            with tarfile.open(fileobj=reader, mode="r|", bufsize=_CHUNK) as tar:  # type: ignore[call-overload]
                for member in tar:
                    extractor.add(tar, member)
            reader.drain()
        except tarfile.TarError as error:
            raise UnsafeLayer(f"the layer is not a readable tar archive: {error}") from None
        finally:
            os.close(root_fd)
    actual = "sha256:" + reader.sha256.hexdigest()
    if diff_id is not None:
        check_diff_id(actual, diff_id)
    return extractor.file_bytes, actual


def check_diff_id(actual: str, expected: str) -> None:
    """Raise UnsafeLayer unless a layer's uncompressed digest is the one its image config names."""
    if actual != expected:
        raise UnsafeLayer(f"the layer's content is {actual}, not {expected} as the image config says")


def _components(name: str, what: str) -> list[str]:
    """`name`'s path components; refuses absolute names and `..` (the entry would leave the layer)."""
    if name.startswith("/"):
        raise UnsafeLayer(f"layer entry {what} {name!r} has an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"layer entry {what} {name!r} has a '..' component")
    return parts


class _Extractor:
    """Applies tar entries under one root directory fd, never following a symlink."""

    def __init__(self, root_fd: int, max_bytes: int) -> None:
        self._root_fd = root_fd
        self._max_bytes = max_bytes
        self.file_bytes = 0

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _components(member.name, "")
        if not parts:  # "./": the layer's root directory itself
            if member.isdir():
                self._set_metadata(self._root_fd, member)
            return
        parent_fd = self._open_parent(parts[:-1], member.name, create=True)
        try:
            self._add_in(tar, member, parent_fd, parts[-1])
        finally:
            os.close(parent_fd)

    def _open_parent(self, parts: list[str], name: str, *, create: bool) -> int:
        """An fd of the directory `parts` under the root, walked with O_NOFOLLOW (created if missing)."""
        fd = os.dup(self._root_fd)
        try:
            for part in parts:
                try:
                    next_fd = os.open(part, _DIR_OPEN, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise UnsafeLayer(
                            f"layer entry {name!r} refers to {'/'.join(parts)!r}, which is not in this layer"
                        ) from None
                    os.mkdir(part, 0o755, dir_fd=fd)  # tars may omit parents: Docker makes them 0755
                    next_fd = os.open(part, _DIR_OPEN, dir_fd=fd)
                except OSError as error:
                    if error.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeLayer(
                            f"layer entry {name!r} goes through {part!r}, which is a symlink or not a "
                            "directory: it could write outside the layer"
                        ) from None
                    raise
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _add_in(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, base: str) -> None:
        if base == _OPAQUE_MARKER:
            os.setxattr(parent_fd, _OPAQUE_XATTR, b"y")
            return
        if base.startswith(_WHITEOUT_PREFIX):
            hidden = base.removeprefix(_WHITEOUT_PREFIX)
            if hidden.startswith(_WHITEOUT_PREFIX):
                return  # other AUFS metadata (.wh..wh.plnk etc.): nothing for overlayfs
            self._replace(parent_fd, hidden, keep_directory=False)
            os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
            return
        self._replace(parent_fd, base, keep_directory=member.isdir())
        if member.isdir():
            # A directory listed again (or made earlier as a missing parent) is updated in place.
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700, dir_fd=parent_fd)
            fd = os.open(base, _DIR_OPEN, dir_fd=parent_fd)
            try:
                self._set_metadata(fd, member)
            finally:
                os.close(fd)
        elif member.isreg():
            self._write_file(tar, member, parent_fd, base)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent_fd)
            os.chown(base, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        elif member.islnk():
            self._hard_link(member, parent_fd, base)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent_fd)
            os.chown(base, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
            os.chmod(base, stat.S_IMODE(member.mode), dir_fd=parent_fd)  # our own fresh node: no link
        else:
            raise UnsafeLayer(f"layer entry {member.name!r} has an unsupported type {member.type!r}")

    def _replace(self, parent_fd: int, base: str, *, keep_directory: bool) -> None:
        """Remove what an entry replaces (a later entry with the same name wins, as in Docker)."""
        try:
            existing = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(existing.st_mode):
            if not keep_directory:
                shutil.rmtree(base, dir_fd=parent_fd)
        else:
            os.unlink(base, dir_fd=parent_fd)

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, base: str) -> None:
        if self.file_bytes + member.size > self._max_bytes:
            raise StoreFull(
                f"a layer expands to more than {self._max_bytes} bytes (at {member.name!r}), the "
                "image store's cap"
            )
        source = tar.extractfile(member)
        assert source is not None  # regular files always have a stream
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=parent_fd)
        try:
            with os.fdopen(os.dup(fd), "wb") as target:
                shutil.copyfileobj(source, target, _CHUNK)
            self._set_metadata(fd, member)
        finally:
            os.close(fd)
        self.file_bytes += member.size

    def _hard_link(self, member: tarfile.TarInfo, parent_fd: int, base: str) -> None:
        target_parts = _components(member.linkname, "hard link target of")
        if not target_parts:
            raise UnsafeLayer(f"layer entry {member.name!r} is a hard link to the layer's root")
        target_parent = self._open_parent(target_parts[:-1], member.name, create=False)
        try:
            os.link(
                target_parts[-1], base, src_dir_fd=target_parent, dst_dir_fd=parent_fd, follow_symlinks=False
            )
        except FileNotFoundError:
            raise UnsafeLayer(
                f"layer entry {member.name!r} is a hard link to {member.linkname!r}, which is not in "
                "this layer"
            ) from None
        finally:
            os.close(target_parent)

    @staticmethod
    def _set_metadata(fd: int, member: tarfile.TarInfo) -> None:
        """Owner, then mode (chown clears setuid/setgid), xattrs and mtime of an open file or dir."""
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, stat.S_IMODE(member.mode))
        for key, value in member.pax_headers.items():
            if key.startswith(_XATTR_PAX_PREFIX):
                os.setxattr(fd, key.removeprefix(_XATTR_PAX_PREFIX), value.encode("utf-8", "surrogateescape"))
        os.utime(fd, (member.mtime, member.mtime))
