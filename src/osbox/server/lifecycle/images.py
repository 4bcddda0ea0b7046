"""From a create request's `image` to what the backend runs: the store's layers and the image's config.

The lifecycle API's one use of the image store (`server/images`): `lookup` answers at once from the
store (a cached image: the create goes on in the same request), `pull` fetches what is missing
(the create answers `Pending` meanwhile), and `launch_settings` applies the image's config the way a
container engine does: the image's `Env` under the request's, its `Entrypoint` + `Cmd` when the
request gives no entrypoint, its `User` and `WorkingDir`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from .._backend.base import ImageRoot
from ..config import ServerConfig
from ..images.errors import ImageError, ImageNotFound
from ..images.layout import ImageConfig
from ..images.reference import parse_reference
from ..images.skopeo import Credentials
from ..images.store import ImageHold, ImageStore, ImageStoreConfig, RootFS

__all__ = ["LaunchSettings", "SandboxImages", "launch_settings"]


@dataclass(frozen=True)
class LaunchSettings:
    """What a sandbox of an image starts with."""

    image: ImageRoot
    env: dict[str, str]
    entrypoint: list[str]


def _env_pairs(entries: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        if sep and name:
            pairs[name] = value
    return pairs


def launch_settings(rootfs: RootFS, env: Mapping[str, str], entrypoint: Sequence[str]) -> LaunchSettings:
    """The image's config under the request's `env` and `entrypoint` (empty: the image's own).

    Raises ValueError when neither names a command.
    """
    config: ImageConfig = rootfs.config
    command = list(entrypoint) or [*(config.entrypoint or ()), *(config.cmd or ())]
    if not command:
        raise ValueError(
            f"the image {rootfs.name} names no command (no Entrypoint or Cmd): give an entrypoint"
        )
    return LaunchSettings(
        image=ImageRoot(layers=rootfs.layers, user=config.user, working_dir=config.working_dir),
        env={**_env_pairs(config.env), **env},
        entrypoint=command,
    )


class SandboxImages:
    """The server's image store, as sandbox creates use it (blocking work in worker threads)."""

    def __init__(self, config: ServerConfig, in_use: Callable[[], Collection[str]]) -> None:
        self.store = ImageStore(ImageStoreConfig.for_server(config), in_use=in_use)
        self._holds: dict[str, ImageHold] = {}  # sandbox id -> its claim on its image

    @staticmethod
    def name(uri: str) -> str:
        """The image's canonical name (`python:3.12` -> `docker.io/library/python:3.12`)."""
        return str(parse_reference(uri))

    async def lookup(self, uri: str) -> RootFS | None:
        """The stored image, or None when it must be pulled first."""
        try:
            return await asyncio.to_thread(self.store.rootfs, uri)
        except ImageNotFound:
            return None

    def hold(self, sandbox_id: str, uri: str) -> None:
        """While the sandbox lives, its image can't be removed or evicted (by any process)."""
        with contextlib.suppress(ImageError, OSError):  # a name that no longer parses: nothing to keep
            self._holds[sandbox_id] = self.store.hold(self.name(uri))

    def release(self, sandbox_id: str) -> None:
        """The sandbox is gone: its image may go too."""
        hold = self._holds.pop(sandbox_id, None)
        if hold is not None:
            hold.close()

    async def pull(self, uri: str, credentials: Credentials | None) -> RootFS:
        """Pull `uri` unless stored (concurrent pulls of one image fetch it once). Raises ImageError."""
        return await asyncio.to_thread(self.store.ensure, uri, credentials=credentials)
