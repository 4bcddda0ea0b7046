"""The machinery every client shares: options, request building, retry decisions, error mapping.

`BaseClient` holds every step that does no I/O. The I/O shell on top of it is `AsyncAPIClient`
(`osbox._async.client`, written by hand) and its generated twin `SyncAPIClient` (`osbox._sync.client`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import httpx2

from ._exceptions import APIConnectionError, APIError, APITimeoutError, make_status_error, parse_retry_after
from ._operation import APIRequest
from ._retry import RetryPolicy

if TYPE_CHECKING:
    import ssl
    from typing import Self, Unpack

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "BaseClient",
    "ClientOptions",
    "shared_ssl_context",
]

log = logging.getLogger("osbox")

DEFAULT_TIMEOUT = httpx2.Timeout(30.0, connect=10.0)
DEFAULT_MAX_RETRIES = 2


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()


def _as_timeout(value: float | httpx2.Timeout | None) -> httpx2.Timeout:
    return value if isinstance(value, httpx2.Timeout) else httpx2.Timeout(value)


_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """The SSL context of every http client osbox creates itself: built once per process, on first use.

    Building one loads the CA store (tens of milliseconds), and httpx2 builds it for every client, even
    for `http://` URLs: without sharing, each `ExecdClient.from_endpoint` would pay for it. It is made
    like httpx2's default (`SSL_CERT_FILE` / `SSL_CERT_DIR` are read then, once). A client given its own
    `http_client` does not use it.
    """
    global _ssl_context
    if _ssl_context is None:
        with _ssl_lock:
            if _ssl_context is None:
                _ssl_context = httpx2.create_ssl_context()
    return _ssl_context


class ClientOptions(TypedDict, total=False):
    """The options every client's constructor and `from_endpoint` take (see `BaseClient`)."""

    timeout: float | httpx2.Timeout | None
    max_retries: int
    headers: Mapping[str, str] | None
    http_client: Any


class BaseClient:
    """Options and request building shared by every client (no I/O here)."""

    #: The header that carries this API's credential, e.g. `OPEN-SANDBOX-API-KEY`.
    _auth_header: ClassVar[str]

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float | httpx2.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        headers: Mapping[str, str] | None = None,
        http_client: Any = None,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required, e.g. 'http://127.0.0.1:8080/v1'")
        if "://" not in base_url:
            base_url = f"http://{base_url}"
        self.base_url = base_url.rstrip("/")
        self.timeout = _as_timeout(timeout)
        self.max_retries = max_retries
        self._retry = RetryPolicy(max_retries=max_retries)
        self._headers = httpx2.Headers({"User-Agent": _user_agent(), "Accept": "application/json"})
        if token:
            self._headers[self._auth_header] = token
        self._headers.update(headers or {})
        self._owns_http = http_client is None
        # A pool osbox creates carries these headers itself, so requests need not merge them each time.
        self._pool_has_headers = http_client is None
        self._http = http_client if http_client is not None else self._new_http_client()

    def _new_http_client(self) -> Any:
        raise NotImplementedError

    @classmethod
    def from_endpoint(cls, endpoint: Any, *, scheme: str = "http", **options: Unpack[ClientOptions]) -> Self:
        """A client for what `LifecycleClient.get_endpoint` returned.

        The endpoint has no scheme (`host:port/path`): `scheme` is added unless one is there; its path
        prefix is kept (requests go to `{endpoint}/command`, ...); every endpoint header (the access
        token among them) is sent with every request, as are the `headers` given here.

            endpoint = lifecycle.get_endpoint(sandbox.id, 44772)
            execd = ExecdClient.from_endpoint(endpoint)
        """
        url: str = endpoint.endpoint
        if "://" not in url:
            url = f"{scheme}://{url}"
        options["headers"] = {**(endpoint.headers or {}), **(options.get("headers") or {})}
        return cls(url, None, **options)

    def __repr__(self) -> str:
        # Never the token or the headers: they carry credentials.
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def with_options(
        self,
        *,
        timeout: float | httpx2.Timeout | None = NOT_GIVEN,
        max_retries: int = NOT_GIVEN,
        headers: Mapping[str, str] | None = NOT_GIVEN,
    ) -> Self:
        """A copy of this client with some options changed; it shares the connection pool.

        execd.with_options(timeout=600).run_command("make -j2").run()
        """
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        if timeout is not NOT_GIVEN:
            clone.timeout = _as_timeout(timeout)
        if max_retries is not NOT_GIVEN:
            clone.max_retries = max_retries
            clone._retry = RetryPolicy(max_retries=max_retries)
        if headers is not NOT_GIVEN:
            clone._headers = self._headers.copy()
            clone._headers.update(headers or {})
            clone._pool_has_headers = False  # the shared pool still carries the original's
        clone._owns_http = False  # the original closes the pool
        return clone

    def _build(self, req: APIRequest[Any], *, stream: bool = False) -> httpx2.Request:
        """The `httpx2.Request` for `req`; `stream=True` for an event stream (`Accept`, unbounded reads)."""
        headers: Mapping[str, str] | None
        if self._pool_has_headers:
            headers = req.headers  # the pool adds self._headers (request headers win, as below)
        else:
            headers = self._headers
            if req.headers:
                headers = self._headers.copy()
                headers.update(req.headers)
        timeout = self.timeout
        if stream or req.download_to is not None:
            # A command may print nothing for minutes: only connecting and sending are bounded.
            timeout = httpx2.Timeout(timeout.connect, connect=timeout.connect, read=None, write=timeout.write)
        request: httpx2.Request = self._http.build_request(
            req.method,
            self.base_url + req.path,
            params=req.params,
            json=req.json,
            content=req.content,
            files=req.files,
            headers=headers,
            timeout=timeout,
        )
        if stream:
            request.headers["Accept"] = "text/event-stream"
        return request

    def _retry_after_error(self, attempt: int, request: httpx2.Request, exc: httpx2.TransportError) -> float:
        """The delay before another try after a transport error; raises when there is none."""
        if not self._retry.should_retry_error(attempt, request.method, exc):
            raise self._map_error(exc, request) from exc
        return self._retry.delay(attempt)

    def _retry_after_status(self, attempt: int, response: httpx2.Response) -> float:
        """The delay before another try after a status >= 400 (body read); raises when there is none."""
        retry_after = parse_retry_after(response.headers)
        if not self._retry.should_retry_status(
            attempt, response.request.method, response.status_code, retry_after
        ):
            raise make_status_error(response)
        delay = self._retry.delay(attempt, retry_after)
        log.debug("retrying %s %s in %.2fs", response.request.method, response.request.url.path, delay)
        return delay

    @staticmethod
    def _map_error(exc: Exception, request: httpx2.Request, *, answered: bool = False) -> APIError:
        """The one place where transport errors become osbox errors.

        `answered`: the server had begun its answer (a body broke off), so it was reachable.
        """
        where = f"{request.method} {request.url.copy_with(query=None)}"
        if isinstance(exc, httpx2.TimeoutException):
            return APITimeoutError(
                f"{where} timed out ({type(exc).__name__}); raise timeout= if the operation is slow",
                request=request,
            )
        hint = (
            "the connection broke while the answer was arriving; what came before was delivered"
            if answered
            else "is the server running and the base_url right?"
        )
        return APIConnectionError(
            f"{where} failed: {type(exc).__name__}: {exc or 'connection error'}; {hint}", request=request
        )


def _raw_is_body(response: httpx2.Response) -> bool:
    """Whether the raw stream is the body as it is: unread, and no content encoding (gzip, ...).

    Then downloads take the transport's chunks straight to the file (`iter_raw`), skipping the decoder
    and the re-chunking copies (about half of the client's CPU time). A body already in memory (e.g.
    from a mock transport) is no stream any more: `iter_bytes` serves it.
    """
    if response.is_stream_consumed:
        return False
    return response.headers.get("content-encoding", "identity").strip().lower() in ("", "identity")


def _sleep(seconds: float) -> None:
    """Wait before a retry or a poll (the sync twins' `_asleep`)."""
    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    """`anyio.sleep` (asyncio or trio), imported on the first retry: importing anyio costs ~10 ms."""
    import anyio

    await anyio.sleep(seconds)


def _user_agent() -> str:
    from . import __version__

    return f"osbox-python/{__version__}"
