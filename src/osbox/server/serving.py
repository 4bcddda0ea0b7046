"""Running the app: `LocalServer` (background thread), `AsyncLocalServer`, and the foreground runner.

    with LocalServer() as server:                      # temp data dir, free port
        httpx2.get(f"{server.base_url}/v1/sandboxes")   # lifecycle routes at /v1

`LocalServer` destroys every sandbox and removes its temporary data dir on exit; should its process
be killed instead, its sandboxes end with it (`ServerConfig.sandboxes_die_with_server`), and the next
`LocalServer` to start removes what they left (`tempdirs.py`). The
foreground runner behind `osbox serve` keeps sandboxes running on SIGINT/SIGTERM (and when it is
killed) so the next start re-adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette

from ._backend.base import Backend
from .app import create_app
from .config import ServerConfig
from .headlimits import http_protocol
from .tempdirs import TempDataDir, sweep_abandoned

__all__ = ["AsyncLocalServer", "LocalServer", "run_foreground"]

_START_TIMEOUT = 60.0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _ServerBase:
    """What both local-server forms share: config, temp dir, socket, uvicorn server."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        backend: Backend | None = None,
        log_level: str = "warning",
        **config: Any,
    ) -> None:
        self._data_dir = None if data_dir is None else Path(data_dir)
        self._api_key = api_key
        self._host, self._port = host, port
        self._backend = backend
        self._log_level = log_level
        self._config_overrides = config
        self._temp_dir: TempDataDir | None = None
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._app: Starlette | None = None
        self.config: ServerConfig | None = None

    @property
    def api_key(self) -> str | None:
        """The API key clients must send, or None when authentication is off."""
        return self._api_key

    @property
    def base_url(self) -> str:
        """e.g. `http://127.0.0.1:43121`; lifecycle routes are under `/v1`."""
        if self._sock is None:
            raise RuntimeError("the server is not running")
        host, port = self._sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def data_dir(self) -> Path:
        """Where the server keeps its database, sandbox state and snapshots."""
        if self.config is None:
            raise RuntimeError("the server is not running")
        return self.config.data_dir

    def _prepare(self) -> tuple[uvicorn.Server, socket.socket]:
        data_dir = self._data_dir
        if data_dir is None:
            self._temp_dir = TempDataDir()
            data_dir = self._temp_dir.path
        settings: dict[str, Any] = {
            "destroy_on_shutdown": True,
            "sandboxes_die_with_server": True,  # SIGKILLed, it leaves no sandbox behind
            **self._config_overrides,
        }
        self.config = ServerConfig(data_dir=data_dir, api_key=self._api_key, host=self._host, **settings)
        self._app = app = create_app(self.config, backend=self._backend)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level=self._log_level,
                lifespan="on",
                access_log=False,
                log_config=None,
                http=http_protocol(self.config),
            )
        )
        self._sock = _bind(self._host, self._port)
        self._server = server
        return server, self._sock

    def _startup_failure(self) -> RuntimeError:
        error = getattr(self._app.state, "startup_error", None) if self._app is not None else None
        failure = RuntimeError(f"osbox server failed to start: {error or 'see the log'}")
        failure.__cause__ = error
        return failure

    def _cleanup(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._temp_dir is not None:
            self._temp_dir.remove()
            self._temp_dir = None


class LocalServer(_ServerBase):
    """The whole `osbox serve` app on a free port, in a background thread.

        with LocalServer(api_key="k") as server:
            client = httpx2.Client(base_url=server.base_url + "/v1",
                                   headers={"OPEN-SANDBOX-API-KEY": server.api_key})

    On exit every sandbox is destroyed and the temporary data dir (if it made one) is removed; the
    temporary dirs of LocalServers that were killed are removed when the next one starts. Extra keyword
    arguments are `ServerConfig` fields (e.g. `min_timeout_seconds=1` in tests).
    """

    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start serving; returns once the server accepts requests (raises if it cannot start)."""
        if self._data_dir is None:
            sweep_abandoned()
        server, sock = self._prepare()
        self._thread = threading.Thread(
            target=self._run, args=(server, sock), name="osbox-local-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:  # uvicorn exposes no event to wait on; poll its flag with a deadline
            if not self._thread.is_alive() or time.monotonic() > deadline:
                failure = self._startup_failure()
                self.stop()
                raise failure
            time.sleep(0.01)

    @staticmethod
    def _run(server: uvicorn.Server, sock: socket.socket) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits on a startup failure; start() reports it
            server.run(sockets=[sock])

    def stop(self) -> None:
        """Stop serving, destroy every sandbox, remove the temporary data dir. Idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._server = None
        self._cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class AsyncLocalServer(_ServerBase):
    """`LocalServer` on the caller's event loop: `async with AsyncLocalServer() as server: ...`."""

    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving on the running loop; returns once requests are accepted."""
        if self._data_dir is None:
            await asyncio.to_thread(sweep_abandoned)
        server, sock = self._prepare()
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if self._task.done() or time.monotonic() > deadline:
                failure = self._startup_failure()
                await self.stop()
                raise failure
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving, destroy every sandbox, remove the temporary data dir. Idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception, SystemExit, asyncio.CancelledError):
                await self._task
            self._task = None
        self._server = None
        self._cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class _ForegroundServer(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; `osbox serve` exits 0 instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for open connections
        self.should_exit = True


def run_foreground(config: ServerConfig, *, port: int, log_level: str) -> None:
    """Serve until SIGINT/SIGTERM, then shut down cleanly (sandboxes keep running if the config says)."""
    app = create_app(config)
    _ForegroundServer(
        uvicorn.Config(
            app,
            host=config.host,
            port=port,
            log_level=log_level,
            lifespan="on",
            log_config=None,
            http=http_protocol(config),
        )
    ).run()
