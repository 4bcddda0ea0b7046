"""The host canary: a root-owned tree outside every sandbox, and a digest to tell it changed.

canary = Canary.make()
before = canary.digest()
...                                  # a hostile sandbox does its worst
assert canary.digest() == before and canary.listener.accepted == 0
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Collection
from pathlib import Path

__all__ = ["Canary", "CountingListener", "tree_digest"]

#: (relative path, mode, uid, gid, content hash or link target) of every entry of a tree.
Digest = list[tuple[str, int, int, int, str]]


def tree_digest(root: Path, exclude: Collection[Path] = ()) -> Digest:
    """Paths, modes, owners and content hashes (link targets for symlinks) under `root`, itself
    included, skipping the subtrees in `exclude`. Never follows a symlink; never opens a FIFO."""
    excluded = {os.fspath(path) for path in exclude}
    digest: Digest = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if os.path.join(directory, d) not in excluded)
        for name in [".", *dirs, *sorted(f for f in files if os.path.join(directory, f) not in excluded)]:
            path = os.path.normpath(os.path.join(directory, name))
            st = os.lstat(path)
            content = ""
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as file:
                    content = hashlib.sha256(file.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            digest.append((os.path.relpath(path, root), st.st_mode, st.st_uid, st.st_gid, content))
    return digest


class CountingListener:
    """A listening unix socket at `path` that counts the connections it accepts, until `close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.accepted = 0
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            ready, _, _ = select.select([self.sock.fileno(), self._stop_read], [], [])
            if self._stop_read in ready:
                return
            conn, _ = self.sock.accept()
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        """Stop accepting and close the socket (the socket file stays)."""
        os.write(self._stop_write, b"x")
        self._thread.join(timeout=10)
        self.sock.close()
        os.close(self._stop_read)
        os.close(self._stop_write)


class Canary:
    """`root/` (0755, root-owned): `file`, `sub/inner`, and `private/` (0700) holding `secret`
    (0600) and `host.sock`, a root-only unix socket that counts who connects."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sub").mkdir()
        (root / "sub" / "inner").write_text("inner\n")
        (root / "file").write_text("canary\n")
        (root / "private").mkdir(mode=0o700)
        (root / "private" / "secret").write_text("secret\n")
        (root / "private" / "secret").chmod(0o600)
        self.listener = CountingListener(root / "private" / "host.sock")

    @classmethod
    def make(cls) -> Canary:
        """A fresh canary under /var/tmp (its parents searchable, so sandboxes may try paths in it)."""
        root = Path(tempfile.mkdtemp(prefix="osbox-canary-", dir="/var/tmp"))
        root.chmod(0o755)
        return cls(root)

    def digest(self) -> Digest:
        return tree_digest(self.root)

    def remove(self) -> None:
        self.listener.close()
        shutil.rmtree(self.root, ignore_errors=True)
