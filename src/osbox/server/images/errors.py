"""The image store's errors: one type per cause, each with a message a person can act on.

A sandbox whose image can't be had goes `Failed` with `str(error)` as its reason, so the messages
name the image and the cause and never contain credentials.
"""

from __future__ import annotations

from ..._exceptions import OsboxError

__all__ = [
    "ArchiveError",
    "AuthenticationFailed",
    "ImageError",
    "ImageInUse",
    "ImageNotFound",
    "InvalidReference",
    "PlatformNotFound",
    "PullTimeout",
    "RegistryUnreachable",
    "StoreFull",
    "UnsafeLayer",
]


class ImageError(OsboxError):
    """Base class: the image could not be resolved, pulled, loaded or unpacked (an `OsboxError`, so the
    CLI reports it as one line like every other osbox error)."""


class InvalidReference(ImageError, ValueError):
    """The image reference (`image.uri`) is malformed."""


class RegistryUnreachable(ImageError):
    """The registry could not be reached (DNS, connection refused, TLS)."""


class ImageNotFound(ImageError):
    """The registry answered, but has no such repository, tag or digest (or the store has no such image)."""


class AuthenticationFailed(ImageError):
    """The registry refused the credentials (or wants some and none were given)."""


class PlatformNotFound(ImageError):
    """The image index has no manifest for the requested os/architecture."""


class PullTimeout(ImageError):
    """The registry did not answer within the pull timeout."""


class ArchiveError(ImageError):
    """A local image archive (`docker save` or OCI layout tar) is unreadable or malformed."""


class UnsafeLayer(ImageError):
    """A layer tries to write outside its own directory, or its content does not match its digest."""


class ImageInUse(ImageError):
    """A running sandbox uses the image: it can't be removed (or evicted) until that sandbox is gone."""


class StoreFull(ImageError):
    """The image store is over its size cap and nothing unreferenced is left to evict."""
