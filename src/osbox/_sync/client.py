# Generated from src/osbox/_async/client.py by scripts/unasync.py: do not edit.
"""`SyncAPIClient`: the I/O shell every client stands on: send with retries, read or stream a body.

Everything that does no I/O (options, request building, retry decisions, error mapping) is in
`BaseClient` (`osbox._base_client`), shared by both twins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2

from .. import _base_client
from .._base_client import BaseClient, _raw_is_body, shared_ssl_context
from .._operation import APIRequest, PageRequest, StreamRequest
from .streaming import Stream

if TYPE_CHECKING:
    from typing import Self

__all__ = ["SyncAPIClient"]

T = TypeVar("T")
E = TypeVar("E")
R = TypeVar("R")

#: Chunk size of downloads whose body must go through the decoder.
_CHUNK = 1024 * 1024


class SyncAPIClient(BaseClient):
    """Sends requests with an `httpx2.Client`."""

    _http: httpx2.Client

    def _new_http_client(self) -> httpx2.Client:
        return httpx2.Client(
            headers=self._headers, timeout=self.timeout, follow_redirects=False, verify=shared_ssl_context()
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (unless it was passed in as `http_client`)."""
        if self._owns_http:
            self._http.close()

    def _send(self, request: httpx2.Request) -> httpx2.Response:
        """Send with retries; returns a response whose status is < 400 and whose body is unread."""
        attempt = 0
        while True:
            try:
                response = self._http.send(request, stream=True)
                if response.status_code < 400:
                    return response
                try:
                    response.read()
                finally:
                    response.close()
            except httpx2.TransportError as exc:
                delay = self._retry_after_error(attempt, request, exc)
            else:
                delay = self._retry_after_status(attempt, response)
            _base_client._sleep(delay)  # looked up on the module: tests replace it
            attempt += 1

    def _call(self, req: APIRequest[T]) -> T:
        """Send one request and parse its answer (a download streams into its sink on the way)."""
        try:
            request = self._build(req)
            response = self._send(request)
            try:
                if req.download_to is not None:
                    req.download_to.begin(response)
                    write = req.download_to.write
                    chunks = response.iter_raw() if _raw_is_body(response) else response.iter_bytes(_CHUNK)
                    for chunk in chunks:
                        write(chunk)
                else:
                    response.read()
            except httpx2.TransportError as exc:
                raise self._map_error(exc, request, answered=True) from exc
            finally:
                response.close()
            return req.parse(response)
        finally:
            for closer in req.closers:
                closer.close()

    def _send_stream(self, req: APIRequest[Any]) -> httpx2.Response:
        return self._send(self._build(req, stream=True))

    def _stream(self, spec: StreamRequest[E, R]) -> Stream[E, R]:
        return Stream(self, spec)

    def _paginate(self, spec: PageRequest[T]) -> Iterator[T]:
        page = 1
        while True:
            result = self._call(spec.page(page))
            for item in spec.items(result):
                yield item
            if not spec.has_next(result):
                return
            page += 1
