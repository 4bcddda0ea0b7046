"""Requests as data (`APIRequest`, `PageRequest`), sent and parsed by both twins' I/O shells."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest

from osbox._async.client import AsyncAPIClient
from osbox._operation import APIRequest, PageRequest, model, path
from osbox._sync.client import SyncAPIClient
from osbox.models import PaginationInfo


def test_path_encodes_parameters() -> None:
    assert path("/sandboxes/{id}/endpoints/{port}", id="a b/c", port=44772) == (
        "/sandboxes/a%20b%2Fc/endpoints/44772"
    )


@pytest.mark.parametrize("bad", ["", ".", ".."])
def test_path_rejects_empty_and_dot_segments(bad: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        path("/sandboxes/{id}", id=bad)


def _page(number: int, last: int | None = None) -> APIRequest[PaginationInfo]:
    params = {"page": number} if last is None else {"page": number, "last": last}
    return APIRequest("GET", "/pages", params=params, parse=model(PaginationInfo))


def _numbers(last: int) -> PageRequest[int]:
    return PageRequest(
        page=lambda n: _page(n, last), items=lambda p: [p.page], has_next=lambda p: bool(p.has_next_page)
    )


class _Client(SyncAPIClient):
    _auth_header = "X-Test-Token"

    def get_page(self, number: int) -> PaginationInfo:
        """Fetch one page."""
        return self._call(_page(number))

    def iter_numbers(self, last: int) -> Iterator[int]:
        """Every page number up to `last`."""
        return self._paginate(_numbers(last))


class _AsyncClient(AsyncAPIClient):
    _auth_header = "X-Test-Token"

    async def get_page(self, number: int) -> PaginationInfo:
        """Fetch one page."""
        return await self._call(_page(number))

    def iter_numbers(self, last: int) -> AsyncIterator[int]:
        """Every page number up to `last`."""
        return self._paginate(_numbers(last))


def _pages(request: httpx2.Request) -> httpx2.Response:
    page = int(request.url.params["page"])
    last = int(request.url.params.get("last", page))
    body = {"page": page, "pageSize": 1, "totalItems": last, "totalPages": last, "hasNextPage": page < last}
    return httpx2.Response(
        200, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


def test_sync_twin_sends_and_parses() -> None:
    with _Client(
        "http://svc/v1", "t0ken", http_client=httpx2.Client(transport=httpx2.MockTransport(_pages))
    ) as c:
        assert c.get_page(3).page == 3
        assert list(c.iter_numbers(4)) == [1, 2, 3, 4]
        assert c.get_page.__doc__ == "Fetch one page."


async def test_operations_look_like_methods_of_the_client() -> None:
    # help() and IDEs see the operation's own parameters: the client is bound, as for any method.
    sync, asynchronous = _Client("http://svc/v1"), _AsyncClient("http://svc/v1")
    for client in (sync, asynchronous):
        for name, params in (("get_page", ["number"]), ("iter_numbers", ["last"])):
            method = getattr(client, name)
            assert list(inspect.signature(method).parameters) == params
            assert method.__name__ == name
            assert method.__self__ is client
    assert inspect.iscoroutinefunction(asynchronous.get_page)
    assert not inspect.iscoroutinefunction(sync.get_page)
    sync.close()
    await asynchronous.aclose()


async def test_async_twin_sends_and_parses() -> None:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(_pages))
    async with _AsyncClient("http://svc/v1", "t0ken", http_client=http) as c:
        assert (await c.get_page(2)).page == 2
        assert [n async for n in c.iter_numbers(3)] == [1, 2, 3]
    await http.aclose()


def test_repr_hides_the_token() -> None:
    client = _Client("svc:8080/v1", "s3cret-token")
    assert "s3cret" not in repr(client)
    assert repr(client) == "_Client(base_url='http://svc:8080/v1')"
    client.close()
