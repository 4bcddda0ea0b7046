"""Requests as data: what to send and how to read the answer, built without I/O.

A client method builds one of these and hands it to the I/O shell (`AsyncAPIClient` and its generated
sync twin), which sends it with retries and parses the answer:

    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        return await self._call(
            APIRequest("GET", path("/sandboxes/{id}", id=sandbox_id), parse=model(Sandbox))
        )

`APIRequest` is one exchange, `StreamRequest` an answer that is a stream of events, `PageRequest` an
auto-paginating listing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Generic, Protocol, TypeVar
from urllib.parse import quote

import httpx2
import pydantic

from ._exceptions import APIResponseValidationError

if TYPE_CHECKING:
    from ._decoder import OutputRun
    from ._streaming import StreamFolder

__all__ = [
    "APIRequest",
    "DownloadSink",
    "PageRequest",
    "StreamRequest",
    "adapter",
    "given",
    "model",
    "no_content",
    "path",
]

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
    #: A body as bytes, or as chunks (an iterator on the sync twin, an async one on the async twin).
    content: bytes | Iterator[bytes] | AsyncIterator[bytes] | None = None
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
