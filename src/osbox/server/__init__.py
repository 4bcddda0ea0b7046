"""`osbox serve`: a local OpenSandbox-compatible runtime.

    from osbox.server import LocalServer

    with LocalServer() as server:
        print(server.base_url)   # lifecycle API at f"{server.base_url}/v1"

Names are imported lazily so that importing a submodule (the backend, execd) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ServerConfig
    from .serving import AsyncLocalServer, LocalServer

__all__ = ["AsyncLocalServer", "LocalServer", "ServerConfig"]


def __getattr__(name: str) -> Any:
    if name == "ServerConfig":
        from .config import ServerConfig

        return ServerConfig
    if name in ("LocalServer", "AsyncLocalServer"):
        from . import serving

        return getattr(serving, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
