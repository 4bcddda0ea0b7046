"""`AsyncSandbox`: one sandbox, ready to use, over the low-level clients.

    async with await AsyncSandbox.create("python:3.11", base_url="http://127.0.0.1:8080/v1") as sandbox:
        result = await sandbox.run("echo $((6 * 7))", check=True)   # CommandFailedError unless exit 0
        print(result.stdout)                                       # 42
        await sandbox.files.write("/workspace/in.csv", "1,2\n")
        server = await sandbox.spawn("python3 -m http.server")      # in the background: a handle
        await sandbox.execd.upload_file("/workspace/big.bin", Path("big.bin"))   # streamed
    # deleted here (keep=True leaves it running; AsyncSandbox.connect(id) attaches again)

`create` returns once the sandbox can run commands: it waits for the lifecycle state `Running`, then
for execd to answer, and deletes the sandbox if either does not happen within `ready_timeout` (a
failed sandbox's reason is in the error). Beyond `run`, `spawn` and `files`, everything is on the two
clients it holds: `sandbox.lifecycle` and `sandbox.execd`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, Unpack

from .. import _base_client
from .._base_client import ClientOptions
from .._exceptions import APIError, AuthenticationError, NotFoundError, PermissionDeniedError, SandboxError
from .._sandbox import DEFAULT_IMAGE, EXECD_PORT, _Backoff, _checked, _create_fields, _is_running
from .._stdin import AsyncStdinSource
from ..models.events import Execution
from ..models.lifecycle import NetworkPolicy
from ..models.lifecycle import Sandbox as SandboxInfo
from .commands import AsyncCommandHandle
from .execd import AsyncExecdClient
from .lifecycle import AsyncLifecycleClient
from .sandbox_egress import AsyncSandboxEgress
from .sandbox_files import AsyncSandboxFiles
from .sandbox_pty import AsyncSandboxPty

__all__ = ["AsyncSandbox"]


class AsyncSandbox:
    """One sandbox, ready to run commands; a context manager that deletes it on exit (unless `keep`).

        async with await AsyncSandbox.create("python:3.11", lifetime=600) as sandbox:
            result = await sandbox.run("pip list")
            await sandbox.execd.download_file("/workspace/out.csv", "out.csv")

    `base_url` and `api_key` fall back to `OPEN_SANDBOX_DOMAIN` and `OPEN_SANDBOX_API_KEY`, as for
    `AsyncLifecycleClient`; or pass a `lifecycle=` client you already have (it is then left open).
    """

    def __init__(
        self,
        sandbox_id: str,
        lifecycle: AsyncLifecycleClient,
        *,
        owns_lifecycle: bool,
        keep: bool,
        ready_timeout: float,
        use_server_proxy: bool,
        options: ClientOptions,
    ) -> None:
        self.id = sandbox_id
        self.keep = keep
        self._lifecycle = lifecycle
        self._owns_lifecycle = owns_lifecycle
        self._execd: AsyncExecdClient | None = None
        self._ready_timeout = ready_timeout
        self._use_server_proxy = use_server_proxy
        self._options = options
        self._killed = False
        #: Background commands spawned with `kill_on_disconnect=True`: killed by `close`.
        self._killed_on_close: list[AsyncCommandHandle] = []
        #: Read, write, list and test files: `sandbox.files.write(path, "text")`, `.read(path)`, ...
        self.files = AsyncSandboxFiles(lambda: self.execd)
        #: Interactive terminals: `sandbox.pty.create(cols, rows, on_data=...)`, `.connect(session_id)`.
        self.pty = AsyncSandboxPty(lambda: self.execd)
        #: The outbound network policy: `sandbox.egress.get()`, `.patch(rules)`, `.replace(policy)`, ...
        self.egress = AsyncSandboxEgress(lambda: self.id, lifecycle, options)

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
        network_policy: NetworkPolicy | Mapping[str, Any] | None = None,
        credential_proxy: bool = False,
        keep: bool = False,
        use_server_proxy: bool = False,
        lifecycle: AsyncLifecycleClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> Self:
        """Create a sandbox and return once it can run commands.

        Three timeouts, each for one thing: `lifetime` is how long the sandbox lives, in seconds (None:
        no expiry); `ready_timeout` bounds the wait until it runs and execd answers, after which it is
        deleted and `SandboxError` says why; the client option `timeout` bounds each HTTP request.
        `entrypoint` defaults to one that idles (`tail -f /dev/null`). `resource_limits` is always sent
        (every OpenSandbox server accepts that): the given keys over the defaults `{"cpu": "1", "memory":
        "2Gi"}`. `network_policy` (`{"defaultAction": "deny", "egress": [{"action": "allow", "target":
        "pypi.org"}]}`) filters its outbound traffic from the start; change it later through `egress`.
        `credential_proxy=True` puts it behind the credential proxy: its Credential Vault's bindings
        are injected into its matching requests (`await sandbox.egress.client()` has the vault).
        `options` (timeout, max_retries, headers, http_client) go to the clients.
        """
        sandbox = cls._open("", lifecycle, base_url, api_key, keep, ready_timeout, use_server_proxy, options)
        fields = _create_fields(
            image, entrypoint, lifetime, env, metadata, resource_limits, network_policy, credential_proxy
        )
        await sandbox._start(fields)
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
        """Attach to a running sandbox. It is kept on exit by default (`keep=False` deletes it)."""
        sandbox = cls._open(
            sandbox_id, lifecycle, base_url, api_key, keep, ready_timeout, use_server_proxy, options
        )
        await sandbox._start(None)
        return sandbox

    @classmethod
    def _open(
        cls,
        sandbox_id: str,
        lifecycle: AsyncLifecycleClient | None,
        base_url: str | None,
        api_key: str | None,
        keep: bool,
        ready_timeout: float,
        use_server_proxy: bool,
        options: ClientOptions,
    ) -> Self:
        """The object, before any request: the caller's lifecycle client, or a new one it owns."""
        owned = lifecycle is None
        if lifecycle is None:
            lifecycle = AsyncLifecycleClient(base_url, api_key, **options)
        return cls(
            sandbox_id,
            lifecycle,
            owns_lifecycle=owned,
            keep=keep,
            ready_timeout=ready_timeout,
            use_server_proxy=use_server_proxy,
            options=options,
        )

    async def _start(self, fields: dict[str, Any] | None) -> None:
        """Create the sandbox from `fields` (None: it exists) and wait until it is ready.

        If that fails, a sandbox created here is deleted again and the clients are closed.
        """
        try:
            if fields is not None:
                created = await self._lifecycle.create_sandbox(**fields)
                self.id = created.id
                try:
                    await self._until_ready()
                except BaseException:
                    with contextlib.suppress(APIError):  # the original error says more
                        await self._lifecycle.delete_sandbox(created.id)
                    raise
            else:
                await self._until_ready()
        except BaseException:
            await self._close_clients()
            raise

    async def _until_ready(self) -> None:
        """Wait for the state `Running`, open execd, wait until it answers a ping."""
        deadline = time.monotonic() + self._ready_timeout
        pause = _Backoff()
        while True:
            info = await self._lifecycle.get_sandbox(self.id)
            out_of_time = time.monotonic() > deadline
            if _is_running(self.id, info, out_of_time=out_of_time, ready_timeout=self._ready_timeout):
                break
            await _base_client._asleep(pause.next())
        endpoint = await self._lifecycle.get_endpoint(
            self.id, EXECD_PORT, use_server_proxy=self._use_server_proxy
        )
        if self._execd is not None:
            await self._execd.aclose()
        self._execd = execd = AsyncExecdClient.from_endpoint(endpoint, **self._options)
        while True:
            try:
                await execd.ping()
                return
            except (AuthenticationError, PermissionDeniedError):
                raise  # the endpoint's credentials are refused: waiting will not change that
            except APIError as exc:
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"execd of sandbox {self.id} did not answer within {self._ready_timeout:g} s: {exc}"
                    ) from exc
            await _base_client._asleep(pause.next())

    @property
    def lifecycle(self) -> AsyncLifecycleClient:
        """The lifecycle client (pause, renew, snapshots, diagnostics, ...)."""
        return self._lifecycle

    @property
    def execd(self) -> AsyncExecdClient:
        """The sandbox's execd client: commands, sessions, files, metrics, code."""
        if self._execd is None:
            raise SandboxError(f"sandbox {self.id} is not connected (closed, or never became ready)")
        return self._execd

    async def info(self) -> SandboxInfo:
        """The sandbox as the lifecycle API describes it now (state, expiry, metadata, ...)."""
        return await self._lifecycle.get_sandbox(self.id)

    async def run(
        self,
        command: str,
        *,
        check: bool = False,
        cwd: str | None = None,
        timeout: float | None = None,
        envs: Mapping[str, str] | None = None,
        uid: int | None = None,
        gid: int | None = None,
        background: bool = False,
        stdin: AsyncStdinSource | None = None,
        kill_on_disconnect: bool | None = None,
    ) -> Execution:
        """Run a shell command to its end and return its `Execution` (stdout, stderr, exit code, ...).

        By default a failing command is a result, not an exception: look at `exit_code` and `error`.
        `check=True` raises `CommandFailedError` (exit code, stdout, stderr) unless it exits 0. The other
        arguments are those of `execd.run_command` (`timeout` in seconds). For a command that runs on
        in the background, `spawn` returns a handle to wait for, kill or read. `stdin`: what the command
        reads (bytes, str, a binary file, an iterator of bytes), fed as it runs, then end-of-file.
        `kill_on_disconnect` (osbox's): whether the command dies if this client goes away before it
        ends (an exception, a crash, a lost network): None is the server's default (`osbox serve`
        kills it), False leaves it running there.

            sandbox.run("pip install -r requirements.txt", check=True, timeout=300)
            sandbox.run("wc -l", stdin=open("data.csv", "rb")).stdout
            sandbox.run("./migrate.sh", kill_on_disconnect=False)   # finishes even if we don't
        """
        execution = await self.execd.run_command(
            command,
            cwd=cwd,
            timeout=timeout,
            envs=envs,
            uid=uid,
            gid=gid,
            background=background,
            stdin=stdin,
            kill_on_disconnect=kill_on_disconnect,
        ).run()
        return _checked(command, execution) if check else execution

    async def spawn(
        self,
        command: str,
        *,
        cwd: str | None = None,
        timeout: float | None = None,
        envs: Mapping[str, str] | None = None,
        uid: int | None = None,
        gid: int | None = None,
        stdin: AsyncStdinSource | bool | None = None,
        kill_on_disconnect: bool | None = None,
    ) -> AsyncCommandHandle:
        """Start a shell command in the background and return its handle once it runs:
        `logs()`, `status()`, `wait()`, `kill()`, `send_stdin()`, `close_stdin()`. `timeout` (seconds)
        kills it when it expires. `stdin=True` keeps its stdin open for `send_stdin`; bytes, str, a
        binary file or an iterator of bytes are written to it (then end-of-file) before `spawn` returns;
        without `stdin` it reads an empty one. A background command has no stream to drop, so it
        outlives its client by default; `kill_on_disconnect=True` kills it when this `Sandbox` object
        closes (`with` block exit or `close()`), also when the sandbox is kept (`keep=True`, `connect`).
        That is done by this client: one that is killed outright cannot, and leaves it running.

            server = sandbox.spawn("python3 -m http.server 8000")
            server.kill()
            print(server.wait().stdout)
        """
        started = await self.execd.run_command(
            command, cwd=cwd, timeout=timeout, envs=envs, uid=uid, gid=gid, background=True, stdin=stdin
        ).run()
        if started.id is None:
            raise SandboxError(f"the server did not say which id it gave the command {command!r}")
        handle = AsyncCommandHandle(lambda: self.execd, started.id, command)
        if kill_on_disconnect:
            self._killed_on_close.append(handle)
        return handle

    async def pause(self) -> None:
        """Freeze the sandbox (its processes stop; its memory stays)."""
        await self._lifecycle.pause_sandbox(self.id)

    async def resume(self) -> None:
        """Thaw a paused sandbox; returns once execd answers again."""
        await self._lifecycle.resume_sandbox(self.id)
        await self._until_ready()

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
        """Delete the sandbox (unless `keep`), then close the clients this object opened. Background
        commands spawned with `kill_on_disconnect=True` are killed first when the sandbox is kept."""
        try:
            if self.keep:
                await self._kill_spawned()
            else:
                await self.kill()
        finally:
            await self._close_clients()

    async def _kill_spawned(self) -> None:
        handles, self._killed_on_close = self._killed_on_close, []
        for handle in handles:
            with contextlib.suppress(APIError, SandboxError):  # it has gone already, or the sandbox has
                await handle.kill()

    async def _close_clients(self) -> None:
        await self.egress.aclose()
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"
