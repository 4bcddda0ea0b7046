"""Copy a directory tree a sandbox can write, without ever following a symlink in it.

Snapshots copy in both directions: capture (a sandbox's workspace and home into the snapshot's
directory) and restore (the snapshot into a new sandbox's state directory). The copy walks with
directory fds: every entry is opened relative to its parent's fd with `O_NOFOLLOW`, so a symlink
is copied as a symlink and never followed, whatever the sandbox planted or swapped in.

- Regular files keep their holes: only the data extents `SEEK_DATA`/`SEEK_HOLE` find are copied
  (with `copy_file_range`, which may share blocks), so a 3 GiB sparse file stays ~0 bytes on disk.
- Hard links stay hard links; FIFOs are made anew; sockets and device nodes are left out, but
  for overlayfs's own marks in an image sandbox's writable layer: whiteouts (0/0 character
  devices: "this file of the image was deleted") and the `trusted.overlay.opaque` flag of
  directories that replaced the image's.
- Modes, owners and times are kept.
- Every data byte written is counted against `budget`: a tree that would take more fails with
  `BudgetExceeded` (the caller removes the partial copy).

    copy = TreeCopy(budget=2**30)
    copy.copy(source_dir_fd, target_dir_fd)   # target: an empty directory
    copy.written                              # data bytes written
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from .._confined import open_beneath

__all__ = ["MAX_DEPTH", "BudgetExceeded", "TreeCopy"]

#: Deepest directory nesting copied (each level holds two fds while it is copied).
MAX_DEPTH = 128
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class BudgetExceeded(Exception):
    """The tree holds more data than the copy may write."""


@dataclass
class TreeCopy:
    """One copy of one tree (or of several, sharing the budget). Not thread-safe."""

    #: Data bytes the copy may write in all; None for no limit.
    budget: int | None = None
    #: Data bytes written so far (holes not counted; hard links counted once).
    written: int = 0
    #: (device, inode) of each multiply-linked file copied → where its copy is (dir parts, name).
    _links: dict[tuple[int, int], tuple[tuple[str, ...], str]] = field(default_factory=dict)
    _target_root: int = -1

    def copy(self, source_fd: int, target_fd: int) -> None:
        """Copy the contents of directory `source_fd` into the empty directory `target_fd`,
        and the source directory's mode, owner and times onto it."""
        self._links.clear()
        self._target_root = target_fd
        self._copy_dir(source_fd, target_fd, ())
        _set_attributes(target_fd, os.fstat(source_fd))

    def _copy_dir(self, source: int, target: int, parts: tuple[str, ...]) -> None:
        if len(parts) >= MAX_DEPTH:
            raise OSError(errno.ELOOP, f"directories nested deeper than {MAX_DEPTH} levels: not copied")
        with os.scandir(source) as entries:
            names = [entry.name for entry in entries]
        for name in names:
            try:
                st = os.stat(name, dir_fd=source, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we copied
            if stat.S_ISDIR(st.st_mode):
                self._copy_subdir(source, target, parts, name)
            elif stat.S_ISREG(st.st_mode):
                self._copy_file(source, target, parts, name)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=source), name, dir_fd=target)
                _set_entry_attributes(target, name, st)
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(name, 0o600, dir_fd=target)
                _set_entry_attributes(target, name, st)
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # an overlayfs whiteout
                os.mknod(name, stat.S_IFCHR | 0o000, 0, dir_fd=target)
                _set_entry_attributes(target, name, st)
            # Sockets and device nodes mean nothing in a copy: left out.

    def _copy_subdir(self, source: int, target: int, parts: tuple[str, ...], name: str) -> None:
        try:
            child_source = os.open(name, _DIR_FLAGS, dir_fd=source)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return  # removed, or swapped for something else, since the stat
            raise
        try:
            os.mkdir(name, 0o700, dir_fd=target)
            child_target = os.open(name, _DIR_FLAGS, dir_fd=target)
            try:
                self._copy_dir(child_source, child_target, (*parts, name))
                _copy_opaque_flag(child_source, child_target)
                _set_attributes(child_target, os.fstat(child_source))
            finally:
                os.close(child_target)
        finally:
            os.close(child_source)

    def _copy_file(self, source: int, target: int, parts: tuple[str, ...], name: str) -> None:
        try:
            # O_NONBLOCK: a FIFO swapped in since the stat must not block the copy.
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=source)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):
                return
            raise
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                return
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._links:
                self._link(key, target, name)
                return
            dst = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=target)
            try:
                self._copy_data(src, dst, st.st_size)
                _set_attributes(dst, st)
            finally:
                os.close(dst)
            if st.st_nlink > 1:
                self._links[key] = (parts, name)
        finally:
            os.close(src)

    def _link(self, key: tuple[int, int], target: int, name: str) -> None:
        """Hard-link `name` to the copy already made of the same source file."""
        first_parts, first_name = self._links[key]
        # Resolved in our own copy, whose directories we made: still no symlink is followed.
        first_dir = open_beneath(self._target_root, "/".join(first_parts), os.O_PATH | os.O_DIRECTORY)
        try:
            os.link(first_name, name, src_dir_fd=first_dir, dst_dir_fd=target, follow_symlinks=False)
        finally:
            os.close(first_dir)

    def _copy_data(self, src: int, dst: int, size: int) -> None:
        """Copy the data extents of `src` (holes stay holes), then set the size."""
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # nothing but a hole up to the end
                raise
            end = min(os.lseek(src, start, os.SEEK_HOLE), size)
            if end <= start:
                break
            self._charge(end - start)
            _copy_range(src, dst, start, end - start)
            offset = end
        os.ftruncate(dst, size)

    def _charge(self, count: int) -> None:
        self.written += count
        if self.budget is not None and self.written > self.budget:
            raise BudgetExceeded(f"the files hold more than the {self.budget} bytes left")


def _copy_range(src: int, dst: int, offset: int, count: int) -> None:
    """Copy `count` bytes at `offset` to the same offset (in-kernel where it can)."""
    end = offset + count
    while offset < end:
        try:
            done = os.copy_file_range(src, dst, end - offset, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            break  # not between these files: copy by hand below
        if done == 0:
            return  # the file shrank
        offset += done
    while offset < end:
        data = os.pread(src, min(_CHUNK, end - offset), offset)
        if not data:
            return
        os.pwrite(dst, data, offset)
        offset += len(data)


_OPAQUE = "trusted.overlay.opaque"


def _copy_opaque_flag(source: int, target: int) -> None:
    """overlayfs's "this directory hides the image's" flag (a trusted xattr: root reads it)."""
    try:
        value = os.getxattr(source, _OPAQUE)
    except OSError:
        return  # not set, or not readable here: there is nothing to keep
    os.setxattr(target, _OPAQUE, value)


def _set_attributes(fd: int, st: os.stat_result) -> None:
    """Owner, then mode (a chown clears set-id bits), then times, through an open fd."""
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _set_entry_attributes(dir_fd: int, name: str, st: os.stat_result) -> None:
    """The same for an entry that cannot be opened (a symlink, a FIFO), without following it."""
    os.chown(name, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        # A FIFO this copy just made in a directory no sandbox can reach yet: by name is safe.
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dir_fd)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
