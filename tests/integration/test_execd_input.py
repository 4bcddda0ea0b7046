"""osbox's execd extensions for input to a running command, on a real sandbox: `POST /command/{id}/stdin`
and `/signal`, and what happens to a foreground command whose client leaves (killed by default; kept,
as by the reference, with `kill_on_disconnect=False`). Also: a background command is reported finished
only once its output is all in its log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx2

from osbox._wire import COMMAND_ID_HEADER, STDIN_HEADER
from osbox.server.execd import ExecdLimits, ExecdService
from tests.integration.execd_fixtures import Execd, parse_events
from tests.polling import wait_until_async

PIPE = {STDIN_HEADER: "pipe"}


async def _finished(client: httpx2.AsyncClient, command_id: str) -> bool:
    return (await client.get(f"/command/status/{command_id}")).json()["running"] is False


async def _no_process(execd: Execd, marker: str) -> bool:
    # `pgrep -f` matches its own bash -c line too: count the processes other than that one.
    found = await execd.sh(f"pgrep -f -- '{marker}' | grep -vx $$ | wc -l")
    return found.strip() == "0"


async def test_stdin_route_feeds_a_piped_command_and_closes_it(execd: Execd) -> None:
    started = await execd.client.post("/command", json={"command": "cat", "background": True}, headers=PIPE)
    assert started.headers[STDIN_HEADER] == "pipe"
    command_id = started.headers[COMMAND_ID_HEADER]
    assert parse_events(started.text)[0]["text"] == command_id
    fed = await execd.client.post(f"/command/{command_id}/stdin", content=b"abc\r\n\xff")
    assert fed.status_code == 200 and fed.json() == {"written": 6}
    assert await execd.client.post(f"/command/{command_id}/stdin?eof=true", content=b"z")
    await wait_until_async(lambda: _finished(execd.client, command_id), what="cat to end at EOF")
    assert (await execd.client.get(f"/command/{command_id}/logs")).content == b"abc\r\n\xffz"
    late = await execd.client.post(f"/command/{command_id}/stdin", content=b"late")
    assert late.status_code == 409 and late.json()["code"] == "STDIN_CLOSED"


async def test_stdin_and_signal_routes_refuse_bad_input(execd: Execd) -> None:
    missing = await execd.client.post("/command/nope/stdin", content=b"x")
    assert missing.status_code == 404 and missing.json()["code"] == "CONTEXT_NOT_FOUND"
    plain = await execd.client.post("/command", json={"command": "exec sleep 600", "background": True})
    assert STDIN_HEADER not in plain.headers
    command_id = parse_events(plain.text)[0]["text"]
    unpiped = await execd.client.post(f"/command/{command_id}/stdin", content=b"x")
    assert unpiped.status_code == 409 and unpiped.json()["code"] == "STDIN_NOT_PIPED"
    bad_eof = await execd.client.post(f"/command/{command_id}/stdin?eof=maybe", content=b"")
    assert bad_eof.status_code == 400
    for bad in ({"signal": "SIGNOPE"}, {"signal": True}, {}, {"signal": 999}):
        refused = await execd.client.post(f"/command/{command_id}/signal", json=bad)
        assert refused.status_code == 400 and set(refused.json()) == {"code", "message"}, bad
    sent = await execd.client.post(f"/command/{command_id}/signal", json={"signal": "INT"})
    assert sent.status_code == 200
    await wait_until_async(lambda: _finished(execd.client, command_id), what="sleep to die of SIGINT")
    status = (await execd.client.get(f"/command/status/{command_id}")).json()
    assert "interrupt" in status["error"]
    after = await execd.client.post(f"/command/{command_id}/signal", json={"signal": 9})
    assert after.status_code == 409


async def test_a_dropped_foreground_stream_kills_the_command(execd: Execd) -> None:
    async with execd.live_client() as client:
        async with client.stream(
            "POST", "/command", json={"command": "echo up; exec sleep 4242"}
        ) as response:
            seen = ""
            async for chunk in response.aiter_text():
                seen += chunk
                if '"up"' in seen:
                    command_id = parse_events(seen)[0]["text"]
                    break
        # The stream is dropped mid-command: the server kills the command's process group.
        await wait_until_async(lambda: _finished(client, command_id), what="the dropped command to be killed")
    await wait_until_async(lambda: _no_process(execd, "sleep 4242"), what="sleep 4242 to be gone")


async def test_kill_on_disconnect_off_keeps_it_as_the_reference(execd: Execd, tmp_path: Path) -> None:
    keeping = ExecdService(log_dir=tmp_path / "keep-logs", limits=ExecdLimits(kill_on_disconnect=False))
    reference_like = dataclasses.replace(execd, service=keeping)
    try:
        async with reference_like.live_client() as client:
            command = "echo started; sleep 0.5; echo done > /workspace/after"
            async with client.stream("POST", "/command", json={"command": command}) as response:
                async for chunk in response.aiter_text():
                    if "init" in chunk:
                        command_id = parse_events(chunk)[0]["text"]
                        break
            await wait_until_async(lambda: _finished(client, command_id), what="the kept command to finish")
            assert (await client.get(f"/command/{command_id}/logs")).text == "started\n"
        assert await execd.sh("cat /workspace/after") == "done"
    finally:
        await keeping.aclose()


async def test_a_background_command_is_finished_only_with_its_output_logged(execd: Execd) -> None:
    for _ in range(3):
        command = "head -c 3000000 /dev/zero | tr '\\0' x; printf end"
        started = await execd.client.post("/command", json={"command": command, "background": True})
        command_id: str = parse_events(started.text)[0]["text"]
        await wait_until_async(
            lambda c=command_id: _finished(execd.client, c),  # type: ignore[misc]
            what="the command to finish",
        )
        logged = (await execd.client.get(f"/command/{command_id}/logs")).content
        assert len(logged) == 3000003 and logged.endswith(b"xend")
