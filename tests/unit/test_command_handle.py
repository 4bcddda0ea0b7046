"""A background command's handle (`sandbox.spawn`) on both twins, against a scripted execd: how it reads
the log (cursor after cursor, never looping on a server whose cursor stands still) and what `wait`
returns. The real thing runs in tests/integration/test_sandbox_conveniences.py."""

from __future__ import annotations

from typing import Any

import httpx2

from osbox import AsyncCommandHandle, AsyncExecdClient, CommandHandle, ExecdClient
from osbox._execd import LOGS_CURSOR_HEADER
from tests.unit.conftest import Recorder


def handle(twin: Recorder) -> Any:
    execd = twin.client(ExecdClient, AsyncExecdClient, "http://execd.test", "token")
    cls = AsyncCommandHandle if twin.is_async else CommandHandle
    return cls(lambda: execd, "c1", "make")


def log(text: str, cursor: int) -> httpx2.Response:
    return httpx2.Response(200, text=text, headers={LOGS_CURSOR_HEADER: str(cursor)})


async def test_logs_reads_on_from_its_cursor_until_nothing_is_new(twin: Recorder) -> None:
    for reply in (log("one\n", 4), log("two\n", 8), log("", 8)):
        twin.reply(reply.status_code, content=reply.content, headers=dict(reply.headers))
    command = handle(twin)
    assert await twin.call(command.logs()) == "one\ntwo\n"
    assert [r.url.params.get("cursor") for r in twin.requests] == [None, "4", "8"]
    twin.reply(200, content=b"three\n", headers={LOGS_CURSOR_HEADER: "14"})
    twin.reply(200, content=b"", headers={LOGS_CURSOR_HEADER: "14"})
    assert await twin.call(command.logs()) == "one\ntwo\nthree\n"
    assert twin.requests[3].url.params["cursor"] == "8"


async def test_a_cursor_that_stands_still_ends_the_read(twin: Recorder) -> None:
    twin.respond_with(lambda request: log("everything\n", 0))
    assert await twin.call(handle(twin).logs()) == "everything\n"
    assert len(twin.requests) == 2  # the first answer moved the cursor (from none), the second did not


async def test_wait_polls_until_it_has_exited(twin: Recorder) -> None:
    states = [
        {"id": "c1", "running": True},
        {"id": "c1", "running": False, "exit_code": 3, "error": "exit status 3"},
    ]

    def execd(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/command/status/c1":
            return httpx2.Response(200, json=states.pop(0) if len(states) > 1 else states[0])
        cursor = request.url.params.get("cursor")
        return log("done\n", 5) if cursor is None else log("", 5)

    twin.respond_with(execd)
    execution = await twin.call(handle(twin).wait())
    assert (execution.id, execution.exit_code, execution.stdout, execution.complete) == (
        "c1",
        3,
        "done\n",
        True,
    )
    assert execution.error is not None and execution.error.evalue == "3"
    assert sum(r.url.path == "/command/status/c1" for r in twin.requests) == 2
