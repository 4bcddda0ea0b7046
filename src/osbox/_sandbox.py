"""`Sandbox` and `AsyncSandbox`: one sandbox, ready to use, over the low-level clients.

    with Sandbox.create("python:3.11", base_url="http://127.0.0.1:8080/v1") as sandbox:
        print(sandbox.run("python -c 'print(6 * 7)'").stdout)      # 42
        sandbox.execd.upload_file("/workspace/in.csv", Path("in.csv"))
    # deleted here (keep=True leaves it running; Sandbox.connect(id) attaches again)

`create` returns once the sandbox can run commands: it waits for the lifecycle state `Running`, then
for execd to answer, and deletes the sandbox if either does not happen within `ready_timeout` (a
failed sandbox's reason is in the error). Everything else is on the two clients it holds:
`sandbox.lifecycle` and `sandbox.execd`.

The steps between the clients (create, wait, connect, resume) are written once, as generators that
yield the calls to make (`_Call`, `_Sleep`, `_OpenExecd`); `Sandbox._drive` runs them on the sync
clients and `AsyncSandbox._drive` on the async ones, so the twins cannot drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, Unpack

from ._async.execd import AsyncExecdClient
from ._async.lifecycle import AsyncLifecycleClient
from ._base_client import ClientOptions
from ._exceptions import (
    APIError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    SandboxError,
)
from ._sync.execd import ExecdClient
from ._sync.lifecycle import LifecycleClient
from .models.events import Execution
from .models.lifecycle import Sandbox as SandboxInfo
from .models.lifecycle import SandboxState

__all__ = ["AsyncSandbox", "Sandbox"]

T = TypeVar("T")
L = TypeVar("L", LifecycleClient, AsyncLifecycleClient)
X = TypeVar("X", ExecdClient, AsyncExecdClient)

#: execd's port inside every sandbox.
EXECD_PORT = 44772
DEFAULT_IMAGE = "python:3.11"
#: Keeps a sandbox's PID 1 alive with nothing to do, as the official SDKs do.
DEFAULT_ENTRYPOINT = ("tail", "-f", "/dev/null")
_GONE = (SandboxState.FAILED, SandboxState.TERMINATED, SandboxState.STOPPING)


# --- the steps, written once ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    """Call `method` on the sandbox's lifecycle or execd client; the flow gets the result (or the error)."""

    client: Literal["lifecycle", "execd"]
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _OpenExecd:
    """Build the execd client from this endpoint (the driver knows which twin)."""

    endpoint: Any


_Step = _Call | _Sleep | _OpenExecd
_Flow = Generator[_Step, Any, T]


def _create(fields: Mapping[str, Any], ready_timeout: float, use_server_proxy: bool) -> _Flow[str]:
    """Create a sandbox and wait until it is ready; delete it again if it never is."""
    created = yield _Call("lifecycle", "create_sandbox", kwargs=fields)
    try:
        yield from _until_ready(created.id, ready_timeout, use_server_proxy)
    except BaseException:
        with contextlib.suppress(APIError):  # the original error says more
            yield _Call("lifecycle", "delete_sandbox", (created.id,))
        raise
    return str(created.id)


def _until_ready(sandbox_id: str, ready_timeout: float, use_server_proxy: bool) -> _Flow[None]:
    """Wait for the state `Running`, open execd, wait until it answers a ping."""
    deadline = time.monotonic() + ready_timeout
    pause = _Backoff()
    while True:
        info: SandboxInfo = yield _Call("lifecycle", "get_sandbox", (sandbox_id,))
        state = info.status.state
        if state == SandboxState.RUNNING:
            break
        if state in _GONE:
            why = ": ".join(filter(None, (info.status.reason, info.status.message)))
            raise SandboxError(f"sandbox {sandbox_id} is {state}{f' ({why})' if why else ''}")
        if time.monotonic() > deadline:
            raise SandboxError(
                f"sandbox {sandbox_id} is still {state} after {ready_timeout:g} s; "
                "raise ready_timeout= if the image takes longer to start"
            )
        yield _Sleep(pause.next())
    endpoint = yield _Call(
        "lifecycle", "get_endpoint", (sandbox_id, EXECD_PORT), {"use_server_proxy": use_server_proxy}
    )
    yield _OpenExecd(endpoint)
    while True:
        try:
            yield _Call("execd", "ping")
            return
        except (AuthenticationError, PermissionDeniedError):
            raise  # the endpoint's credentials are refused: waiting will not change that
        except APIError as exc:
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"execd of sandbox {sandbox_id} did not answer within {ready_timeout:g} s: {exc}"
                ) from exc
        yield _Sleep(pause.next())


def _resume(sandbox_id: str, ready_timeout: float, use_server_proxy: bool) -> _Flow[None]:
    yield _Call("lifecycle", "resume_sandbox", (sandbox_id,))
    yield from _until_ready(sandbox_id, ready_timeout, use_server_proxy)


class _Backoff:
    """Waits between polls: 50 ms, doubling up to 1 s."""

    def __init__(self) -> None:
        self._delay = 0.025

    def next(self) -> float:
        self._delay = min(self._delay * 2, 1.0)
        return self._delay


# --- the shared state and the two drivers ----------------------------------------------------------------


class _SandboxBase(Generic[L, X]):
    """What both twins hold: the id, the two clients, and whether the sandbox outlives the object."""

    _execd: X | None

    def __init__(
        self,
        sandbox_id: str,
        lifecycle: L,
        *,
        owns_lifecycle: bool,
        keep: bool,
        ready_timeout: float,
        use_server_proxy: bool,
        options: ClientOptions,
    ) -> None:
        self.id = sandbox_id
        self.keep = keep
        self._lifecycle: L = lifecycle
        self._owns_lifecycle = owns_lifecycle
        self._execd = None
        self._ready_timeout = ready_timeout
        self._use_server_proxy = use_server_proxy
        self._options = options
        self._killed = False

    @property
    def lifecycle(self) -> L:
        """The lifecycle client (pause, renew, snapshots, diagnostics, ...)."""
        return self._lifecycle

    @property
    def execd(self) -> X:
        """The sandbox's execd client: commands, sessions, files, metrics, code."""
        if self._execd is None:
            raise SandboxError(f"sandbox {self.id} is not connected (closed, or never became ready)")
        return self._execd

    @classmethod
    def _open(
        cls,
        sandbox_id: str,
        lifecycle_class: type[L],
        lifecycle: L | None,
        base_url: str | None,
        api_key: str | None,
        *,
        keep: bool,
        ready_timeout: float,
        use_server_proxy: bool,
        options: ClientOptions,
    ) -> Self:
        """The object, before any request: the caller's lifecycle client, or a new one it owns."""
        owned = lifecycle is None
        client = lifecycle_class(base_url, api_key, **options) if lifecycle is None else lifecycle
        return cls(
            sandbox_id,
            client,
            owns_lifecycle=owned,
            keep=keep,
            ready_timeout=ready_timeout,
            use_server_proxy=use_server_proxy,
            options=options,
        )

    def _step_target(self, step: _Call) -> Any:
        return getattr(self._lifecycle if step.client == "lifecycle" else self.execd, step.method)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


def _create_fields(
    image: str,
    entrypoint: Sequence[str] | None,
    lifetime: float | None,
    env: Mapping[str, str] | None,
    metadata: Mapping[str, str] | None,
    resource_limits: Mapping[str, str] | None,
) -> dict[str, Any]:
    return {
        "image": image,
        "entrypoint": list(entrypoint if entrypoint is not None else DEFAULT_ENTRYPOINT),
        "timeout": None if lifetime is None else int(lifetime),
        "env": env,
        "metadata": metadata,
        "resource_limits": resource_limits,
    }


class Sandbox(_SandboxBase[LifecycleClient, ExecdClient]):
    """One sandbox, ready to run commands; a context manager that deletes it on exit (unless `keep`).

        with Sandbox.create("python:3.11", lifetime=600) as sandbox:
            result = sandbox.run("pip list")
            sandbox.execd.download_file("/workspace/out.csv", "out.csv")

    `base_url` and `api_key` fall back to `OPEN_SANDBOX_DOMAIN` and `OPEN_SANDBOX_API_KEY`, as for
    `LifecycleClient`; or pass a `lifecycle=` client you already have (it is then left open).
    """

    @classmethod
    def create(
        cls,
        image: str = DEFAULT_IMAGE,
        *,
        entrypoint: Sequence[str] | None = None,
        lifetime: float | None = 600,
        ready_timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        resource_limits: Mapping[str, str] | None = None,
        keep: bool = False,
        use_server_proxy: bool = False,
        lifecycle: LifecycleClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> Self:
        """Create a sandbox and return once it can run commands.

        Three timeouts, each for one thing: `lifetime` is how long the sandbox lives, in seconds (None:
        no expiry); `ready_timeout` bounds the wait until it runs and execd answers, after which it is
        deleted and `SandboxError` says why; the client option `timeout` bounds each HTTP request.
        `entrypoint` defaults to one that idles (`tail -f /dev/null`). `options` (timeout, max_retries,
        headers, http_client) go to both clients.
        """
        sandbox = cls._open(
            "",
            LifecycleClient,
            lifecycle,
            base_url,
            api_key,
            keep=keep,
            ready_timeout=ready_timeout,
            use_server_proxy=use_server_proxy,
            options=options,
        )
        fields = _create_fields(image, entrypoint, lifetime, env, metadata, resource_limits)
        sandbox.id = sandbox._drive(_create(fields, ready_timeout, use_server_proxy), opening=True)
        return sandbox

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        ready_timeout: float = 60.0,
        keep: bool = True,
        use_server_proxy: bool = False,
        lifecycle: LifecycleClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> Self:
        """Attach to a running sandbox. It is kept on exit by default (`keep=False` deletes it)."""
        sandbox = cls._open(
            sandbox_id,
            LifecycleClient,
            lifecycle,
            base_url,
            api_key,
            keep=keep,
            ready_timeout=ready_timeout,
            use_server_proxy=use_server_proxy,
            options=options,
        )
        sandbox._drive(_until_ready(sandbox_id, ready_timeout, use_server_proxy), opening=True)
        return sandbox

    def _drive(self, flow: _Flow[T], *, opening: bool = False) -> T:
        """Run a flow's steps on the sync clients; `opening`: close the clients if it fails."""
        result: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = flow.send(result) if error is None else flow.throw(error)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                result, error = None, None
                try:
                    if isinstance(step, _Call):
                        result = self._step_target(step)(*step.args, **step.kwargs)
                    elif isinstance(step, _Sleep):
                        time.sleep(step.seconds)
                    else:
                        if self._execd is not None:
                            self._execd.close()
                        self._execd = ExecdClient.from_endpoint(step.endpoint, **self._options)
                except Exception as exc:
                    error = exc  # the flow decides: thrown into it at its yield
        except BaseException:
            if opening:
                self._close_clients()
            raise

    def info(self) -> SandboxInfo:
        """The sandbox as the lifecycle API describes it now (state, expiry, metadata, ...)."""
        return self._lifecycle.get_sandbox(self.id)

    def run(self, command: str, **kwargs: Any) -> Execution:
        """Run a command to its end and return its `Execution` (stdout, stderr, exit code, ...).

        Keyword arguments are those of `ExecdClient.run_command` (`cwd`, `envs`, `timeout`, ...).
        A failing command is not an exception: look at `exit_code` and `error`.
        """
        return self.execd.run_command(command, **kwargs).run()

    def pause(self) -> None:
        """Freeze the sandbox (its processes stop; its memory stays)."""
        self._lifecycle.pause_sandbox(self.id)

    def resume(self) -> None:
        """Thaw a paused sandbox; returns once execd answers again."""
        self._drive(_resume(self.id, self._ready_timeout, self._use_server_proxy))

    def renew(self, seconds: float) -> None:
        """Let the sandbox live `seconds` more from now."""
        self._lifecycle.renew_expiration(self.id, timedelta(seconds=seconds))

    def kill(self) -> None:
        """Delete the sandbox now. Idempotent; one already gone is fine."""
        if self._killed:
            return
        with contextlib.suppress(NotFoundError):
            self._lifecycle.delete_sandbox(self.id)
        self._killed = True

    def close(self) -> None:
        """Delete the sandbox (unless `keep`), then close the clients this object opened."""
        try:
            if not self.keep:
                self.kill()
        finally:
            self._close_clients()

    def _close_clients(self) -> None:
        if self._execd is not None:
            self._execd.close()
            self._execd = None
        if self._owns_lifecycle:
            self._lifecycle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncSandbox(_SandboxBase[AsyncLifecycleClient, AsyncExecdClient]):
    """`Sandbox` for asyncio: the same methods, awaited; `async with` deletes it on exit.

    async with await AsyncSandbox.create("python:3.11") as sandbox:
        result = await sandbox.run("pip list")
    """

    @classmethod
    async def create(
        cls,
        image: str = DEFAULT_IMAGE,
        *,
        entrypoint: Sequence[str] | None = None,
        lifetime: float | None = 600,
        ready_timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        resource_limits: Mapping[str, str] | None = None,
        keep: bool = False,
        use_server_proxy: bool = False,
        lifecycle: AsyncLifecycleClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> Self:
        """Create a sandbox and return once it can run commands (see `Sandbox.create`)."""
        sandbox = cls._open(
            "",
            AsyncLifecycleClient,
            lifecycle,
            base_url,
            api_key,
            keep=keep,
            ready_timeout=ready_timeout,
            use_server_proxy=use_server_proxy,
            options=options,
        )
        fields = _create_fields(image, entrypoint, lifetime, env, metadata, resource_limits)
        sandbox.id = await sandbox._drive(_create(fields, ready_timeout, use_server_proxy), opening=True)
        return sandbox

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        *,
        ready_timeout: float = 60.0,
        keep: bool = True,
        use_server_proxy: bool = False,
        lifecycle: AsyncLifecycleClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> Self:
        """Attach to a running sandbox (see `Sandbox.connect`)."""
        sandbox = cls._open(
            sandbox_id,
            AsyncLifecycleClient,
            lifecycle,
            base_url,
            api_key,
            keep=keep,
            ready_timeout=ready_timeout,
            use_server_proxy=use_server_proxy,
            options=options,
        )
        await sandbox._drive(_until_ready(sandbox_id, ready_timeout, use_server_proxy), opening=True)
        return sandbox

    async def _drive(self, flow: _Flow[T], *, opening: bool = False) -> T:
        """Run a flow's steps on the async clients; `opening`: close the clients if it fails."""
        result: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = flow.send(result) if error is None else flow.throw(error)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                result, error = None, None
                try:
                    if isinstance(step, _Call):
                        result = await self._step_target(step)(*step.args, **step.kwargs)
                    elif isinstance(step, _Sleep):
                        await asyncio.sleep(step.seconds)
                    else:
                        if self._execd is not None:
                            await self._execd.aclose()
                        self._execd = AsyncExecdClient.from_endpoint(step.endpoint, **self._options)
                except Exception as exc:
                    error = exc  # the flow decides: thrown into it at its yield
        except BaseException:
            if opening:
                await self._close_clients()
            raise

    async def info(self) -> SandboxInfo:
        """The sandbox as the lifecycle API describes it now."""
        return await self._lifecycle.get_sandbox(self.id)

    async def run(self, command: str, **kwargs: Any) -> Execution:
        """Run a command to its end and return its `Execution` (see `Sandbox.run`)."""
        return await self.execd.run_command(command, **kwargs).run()

    async def pause(self) -> None:
        """Freeze the sandbox."""
        await self._lifecycle.pause_sandbox(self.id)

    async def resume(self) -> None:
        """Thaw a paused sandbox; returns once execd answers again."""
        await self._drive(_resume(self.id, self._ready_timeout, self._use_server_proxy))

    async def renew(self, seconds: float) -> None:
        """Let the sandbox live `seconds` more from now."""
        await self._lifecycle.renew_expiration(self.id, timedelta(seconds=seconds))

    async def kill(self) -> None:
        """Delete the sandbox now. Idempotent; one already gone is fine."""
        if self._killed:
            return
        with contextlib.suppress(NotFoundError):
            await self._lifecycle.delete_sandbox(self.id)
        self._killed = True

    async def close(self) -> None:
        """Delete the sandbox (unless `keep`), then close the clients this object opened."""
        try:
            if not self.keep:
                await self.kill()
        finally:
            await self._close_clients()

    async def _close_clients(self) -> None:
        if self._execd is not None:
            await self._execd.aclose()
            self._execd = None
        if self._owns_lifecycle:
            await self._lifecycle.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
