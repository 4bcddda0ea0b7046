"""Per-sandbox access tokens, derived from a server key so that the database holds nothing secret.

The server keeps 32 random bytes in `<data_dir>/secret.key` (0600, made once, atomically). A sandbox
record holds only a random salt; its tokens are HMAC-SHA256(key, purpose, sandbox id, salt). So the
server can hand a token out any number of times and it survives restarts, while a copy of `osbox.db`
(a backup, a leaked file) reveals no token. Deleting the key file rotates every token at the next start.

    minter = TokenMinter(load_or_create_key(config.secret_key_path))
    salt = new_salt()                                  # stored in the record
    minter.token("execd", sandbox_id, salt)            # what the endpoint returns, what the proxy checks
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Literal

__all__ = ["SecretKeyError", "TokenMinter", "load_or_create_key", "new_salt"]

_KEY_BYTES = 32

#: What a token opens: the execd API (through the proxy) or the egress sidecar's API.
Purpose = Literal["execd", "egress", "vault"]


class SecretKeyError(Exception):
    """The key file exists but cannot be trusted (wrong owner, mode, type or size)."""


class TokenMinter:
    """Derives sandbox tokens from the server key; never shows the key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "TokenMinter(key=<hidden>)"

    def token(self, purpose: Purpose, sandbox_id: str, salt: str) -> str:
        """The token of `purpose` for one sandbox: 43 URL-safe characters, like `token_urlsafe(32)`."""
        message = "\0".join(("osbox-sandbox-token-v1", purpose, sandbox_id, salt)).encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_salt() -> str:
    """A fresh per-sandbox salt (not secret: it is stored in the sandbox's record)."""
    return secrets.token_urlsafe(16)


def load_or_create_key(path: Path) -> bytes:
    """The server key at `path`, made on first use (0600; a crash never leaves a partial key)."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(_KEY_BYTES)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(key)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # exclusive, like O_EXCL, but the name only ever shows a whole key
        except FileExistsError:
            return _read_key(path)  # another server on the same data dir made it first
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return key


def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise SecretKeyError(f"{path} must be a regular file owned by uid {os.geteuid()}")
        if info.st_mode & 0o077:
            raise SecretKeyError(
                f"{path} is readable by other users (mode {stat.S_IMODE(info.st_mode):o}), so every sandbox "
                "token may be known: delete it (every token is then replaced) and start again"
            )
        key = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != _KEY_BYTES:
        raise SecretKeyError(f"{path} must hold exactly {_KEY_BYTES} bytes; delete it to make a new one")
    return key


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
