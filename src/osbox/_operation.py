"""Operations defined once, served by both the sync and the async clients.

An operation is a plain method that does no I/O: it takes the user's arguments and returns a
*description* of the HTTP exchange (`APIRequest`, `StreamRequest` or `PageRequest`). A decorator
turns it into a descriptor; looked up on a sync client it sends the request and returns the result,
on an async client it returns a coroutine (or an async stream / async iterator). The type checker
sees the right signature on each twin:

    class LifecycleOperations:
        @operation
        def get_sandbox(self, sandbox_id: str) -> APIRequest[Sandbox]:
            return APIRequest("GET", path("/sandboxes/{id}", id=sandbox_id), parse=model(Sandbox))

    class LifecycleClient(SyncAPIClient, LifecycleOperations): ...
    class AsyncLifecycleClient(AsyncAPIClient, LifecycleOperations): ...

    LifecycleClient().get_sandbox("abc")             # -> Sandbox
    await AsyncLifecycleClient().get_sandbox("abc")  # -> Sandbox
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MethodType
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)
from urllib.parse import quote

import httpx2
import pydantic

from ._exceptions import APIResponseValidationError

if TYPE_CHECKING:
    from ._async.client import AsyncAPIClient
    from ._async.streaming import AsyncStream
    from ._decoder import OutputRun
    from ._streaming import StreamFolder
    from ._sync.client import SyncAPIClient
    from ._sync.streaming import Stream

__all__ = [
    "APIRequest",
    "DownloadSink",
    "PageRequest",
    "StreamRequest",
    "given",
    "model",
    "operation",
    "paginated",
    "path",
    "stream_operation",
]

P = ParamSpec("P")
T = TypeVar("T")
E = TypeVar("E")
R = TypeVar("R")
M = TypeVar("M", bound=pydantic.BaseModel)

#: Response parser: gets the response, its body read (except for downloads).
Parser = Callable[[httpx2.Response], T]


class DownloadSink(Protocol):
    """Where a download's body goes: `begin` gets the response (headers only), `write` each chunk."""

    def begin(self, response: httpx2.Response) -> None: ...

    def write(self, data: bytes, /) -> object: ...


@dataclass(slots=True)
class APIRequest(Generic[T]):
    """One HTTP exchange: what to send and how to read the answer.

    `download_to`, when set, makes the sender stream the body into that sink in chunks instead of
    reading it into memory; `parse` then gets the response with its body unread.
    `closers` are file objects opened for the request, closed once it is done.
    """

    method: str
    path: str
    parse: Parser[T]
    params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None
    json: Any = None
    content: bytes | None = None
    files: Sequence[tuple[str, tuple[str, Any, str]]] | None = None
    headers: Mapping[str, str] | None = None
    download_to: DownloadSink | None = None
    closers: list[IO[bytes]] = field(default_factory=list)


@dataclass(slots=True)
class StreamRequest(Generic[E, R]):
    """A request whose answer is a stream of events.

    `event` turns each decoded JSON object into an event; `new_folder` makes the `StreamFolder` that
    builds the result of `Stream.run` (e.g. an `Execution` from command events). `run_events`, when
    set, builds the events of an `OutputRun` (stdout/stderr lines the decoder cut out without JSON
    decoding) directly; without it each goes through `event` as the dict it stands for.
    """

    request: APIRequest[None]
    event: Callable[[dict[str, Any]], E]
    new_folder: Callable[[], StreamFolder[E, R]]
    #: Whether an empty stream is an error (true for command and code streams).
    require_events: bool = True
    run_events: Callable[[OutputRun], list[E]] | None = None
    #: Whether an event is the stream's last word (`execution_complete`): once it has come, a
    #: connection that breaks loses nothing, and the stream ends normally instead of raising.
    final: Callable[[E], bool] | None = None


@dataclass(slots=True)
class PageRequest(Generic[T]):
    """An auto-paginating listing: `page(n)` describes the request for page n (1-based)."""

    page: Callable[[int], APIRequest[Any]]
    items: Callable[[Any], Sequence[T]]
    has_next: Callable[[Any], bool]


def path(template: str, **params: str | int) -> str:
    """Fill a path template, percent-encoding each parameter; an empty one is a `ValueError`.

    >>> path("/sandboxes/{id}/endpoints/{port}", id="a b", port=8080)
    '/sandboxes/a%20b/endpoints/8080'
    """
    encoded = {}
    for name, value in params.items():
        text = str(value)
        if not text or text in (".", ".."):
            raise ValueError(f"{name} must be a non-empty identifier, got {text!r}")
        encoded[name] = quote(text, safe="")
    return template.format(**encoded)


def given(**values: Any) -> dict[str, Any]:
    """The arguments that were given (not None): only those become set fields, and reach the wire.

    >>> given(cwd="/app", timeout=None)
    {'cwd': '/app'}
    """
    return {name: value for name, value in values.items() if value is not None}


def model(cls: type[M]) -> Parser[M]:
    """A parser that validates a JSON body into `cls` (made once per class, then reused)."""
    parser: Parser[M] = adapter(cls)
    return parser


@functools.cache
def adapter(tp: Any) -> Parser[Any]:
    """A parser that validates a JSON body into any type (`list[FileInfo]`, `dict[str, X]`, ...).

    Cached per type: building a pydantic validator costs milliseconds, a call microseconds.
    """
    return functools.partial(_parse_model, pydantic.TypeAdapter(tp))


def no_content(response: httpx2.Response) -> None:
    """A parser for operations that answer with an empty body (or one nobody needs)."""


def _parse_model(adapter: pydantic.TypeAdapter[Any], response: httpx2.Response) -> Any:
    try:
        return adapter.validate_json(response.content)
    except (pydantic.ValidationError, ValueError) as exc:
        body: object
        try:
            body = json.loads(response.content)
        except ValueError:
            body = response.text
        raise APIResponseValidationError(
            f"{response.request.method} {response.request.url.path} answered {response.status_code} "
            f"with a body that does not match {adapter.core_schema.get('cls', adapter)}: {exc}",
            response=response,
            body=body,
        ) from exc


def _wraps(fn: Callable[..., Any], wrapper: Callable[..., Any]) -> Callable[..., Any]:
    functools.update_wrapper(wrapper, fn)
    return wrapper


# Each decorator makes its wrapper functions once, when the class is defined; a lookup on a client only
# binds one to it (`MethodType`, as for any method), so no call pays for building or documenting them.


class operation(Generic[P, T]):
    """Decorator: an operation answered by one response (JSON model, empty body, or a download)."""

    def __init__(self, build: Callable[Concatenate[Any, P], APIRequest[T]]) -> None:
        self.build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

        def call(client: Any, /, *args: Any, **kwargs: Any) -> Any:
            return client._call(build(client, *args, **kwargs))

        async def acall(client: Any, /, *args: Any, **kwargs: Any) -> Any:
            return await client._call(build(client, *args, **kwargs))

        self._sync = _wraps(build, call)
        self._async = _wraps(build, acall)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> operation[P, T]: ...
    @overload
    def __get__(self, obj: SyncAPIClient, owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: AsyncAPIClient, owner: type[Any]) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        return MethodType(self._async if obj._is_async else self._sync, obj)


class stream_operation(Generic[P, E, R]):
    """Decorator: an operation answered by a stream of events (`Stream` / `AsyncStream`)."""

    def __init__(self, build: Callable[Concatenate[Any, P], StreamRequest[E, R]]) -> None:
        self.build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

        def open_stream(client: Any, /, *args: Any, **kwargs: Any) -> Any:
            return client._stream(build(client, *args, **kwargs))

        self._method = _wraps(build, open_stream)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> stream_operation[P, E, R]: ...
    @overload
    def __get__(self, obj: SyncAPIClient, owner: type[Any]) -> Callable[P, Stream[E, R]]: ...
    @overload
    def __get__(self, obj: AsyncAPIClient, owner: type[Any]) -> Callable[P, AsyncStream[E, R]]: ...
    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        return MethodType(self._method, obj)


class paginated(Generic[P, T]):
    """Decorator: an auto-paginating listing (an iterator / async iterator over every item)."""

    def __init__(self, build: Callable[Concatenate[Any, P], PageRequest[T]]) -> None:
        self.build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

        def iterate(client: Any, /, *args: Any, **kwargs: Any) -> Any:
            return client._paginate(build(client, *args, **kwargs))

        self._method = _wraps(build, iterate)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> paginated[P, T]: ...
    @overload
    def __get__(self, obj: SyncAPIClient, owner: type[Any]) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, obj: AsyncAPIClient, owner: type[Any]) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        return MethodType(self._method, obj)
