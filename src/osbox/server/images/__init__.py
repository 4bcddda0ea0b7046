"""The image store: resolve -> pull -> unpack -> root filesystem (a list of layer dirs + the config).

Its own module on purpose: a sandbox backend receives a root filesystem (`ImageStore.rootfs`), never
an image reference (`osbox.server.lifecycle.images` pulls; the bwrap backend mounts, see `rootfs`).
"""

from __future__ import annotations

from .errors import (
    ArchiveError,
    AuthenticationFailed,
    ImageError,
    ImageNotFound,
    InvalidReference,
    PlatformNotFound,
    PullTimeout,
    RegistryUnreachable,
    StoreFull,
    UnsafeLayer,
)
from .reference import ImageReference, parse_reference

__all__ = [
    "ArchiveError",
    "AuthenticationFailed",
    "ImageError",
    "ImageNotFound",
    "ImageReference",
    "InvalidReference",
    "PlatformNotFound",
    "PullTimeout",
    "RegistryUnreachable",
    "StoreFull",
    "UnsafeLayer",
    "parse_reference",
]
