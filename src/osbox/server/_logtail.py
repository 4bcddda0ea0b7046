"""The end of a log file on the host, for error messages (a kernel's or an agent's last words)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["tail"]


def tail(path: Path, limit: int = 2000) -> str:
    """The last `limit` bytes of a log file, as text ("" if there is none)."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - limit))
            return log.read().decode(errors="replace").strip()
    except OSError:
        return ""
