"""Isolation backends for `osbox serve` (see `base` for the interface, `bwrap` for Linux)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .base import Backend, BackendError, Mount, SandboxHandle, SandboxProcess, SandboxSpec
from .bwrap.disk import remove_tree

if TYPE_CHECKING:
    from ..egress.networks import SandboxNetworks

__all__ = [
    "Backend",
    "BackendError",
    "Mount",
    "SandboxHandle",
    "SandboxProcess",
    "SandboxSpec",
    "default_backend",
    "remove_tree",
]


def default_backend(
    data_dir: Path,
    *,
    pool_size: int = 0,
    die_with_server: bool = False,
    pool_disk_bytes: int | None = None,
    networks: SandboxNetworks | None = None,
) -> Backend:
    """The backend for this machine (`pool_size` sandboxes kept pre-started, each with a disk quota
    of `pool_disk_bytes`; with `die_with_server`, sandboxes end when this process does; `networks`
    gives sandboxes their networks); raises `BackendError` saying what to install when there is none."""
    if not sys.platform.startswith("linux"):
        raise BackendError(
            f"osbox serve isolates sandboxes with Linux namespaces and cgroups; this is {sys.platform}. "
            "Run it on Linux (a VM or WSL2 works)."
        )
    if shutil.which("bwrap") is None:
        raise BackendError(
            "bubblewrap (bwrap) is not installed: install it with 'apt-get install bubblewrap' "
            "(or your distribution's 'bubblewrap' package)."
        )
    from .bwrap.backend import BwrapBackend

    return BwrapBackend(
        data_dir,
        pool_size=pool_size,
        die_with_server=die_with_server,
        pool_disk_bytes=pool_disk_bytes,
        networks=networks,
    )
