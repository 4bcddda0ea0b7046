"""osbox's execd extensions for input to a running command, on a real sandbox: `POST /command/{id}/stdin`
and `/signal`, and what happens to a foreground command whose client leaves (killed by default; kept,
as by the reference, with `kill_on_disconnect=False`). Also: a background command is reported finished
only once its output is all in its log."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx2

from osbox._wire import COMMAND_ID_HEADER, ON_DISCONNECT_HEADER, OUTPUT_FRAMING_HEADER, STDIN_HEADER
from osbox.server.execd import ExecdLimits, ExecdService
from tests.integration.execd_fixtures import Execd, parse_events
from tests.polling import wait_until_async

PIPE = {STDIN_HEADER: "pipe"}
EXACT = {OUTPUT_FRAMING_HEADER: "exact"}


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


async def _first_events(response: httpx2.Response, until: str) -> list[dict[str, Any]]:
    """The stream's events up to the first whose text contains `until` (the rest is left unread)."""
    seen = ""
    async for chunk in response.aiter_text():
        seen += chunk
        if until in seen:
            break
    return parse_events(seen.rsplit("\n\n", 1)[0] + "\n\n")


async def test_a_session_run_reads_a_stdin_pipe_fed_by_its_run_id(execd: Execd) -> None:
    session_id = (await execd.client.post("/session", json={})).json()["session_id"]
    async with execd.live_client() as client:
        command = "read -r NAME; export NAME; cat; echo '<eof>'"
        async with client.stream(
            "POST", f"/session/{session_id}/run", json={"command": command}, headers=PIPE | EXACT
        ) as response:
            assert response.headers[STDIN_HEADER] == "pipe"
            run_id = response.headers[COMMAND_ID_HEADER]
            assert run_id.startswith(session_id)
            fed = await client.post(f"/command/{run_id}/stdin?eof=true", content=b"ada\nrest\xff")
            assert fed.json() == {"written": 9}
            body = (await response.aread()).decode()
    events = parse_events(body)
    assert "".join(e["text"] for e in events if e["type"] == "stdout") == "rest\udcff<eof>\n"
    assert events[-1]["type"] == "execution_complete"
    later = await execd.client.post(f"/session/{session_id}/run", json={"command": "echo $NAME; cat"})
    assert [e["text"] for e in parse_events(later.text) if e["type"] == "stdout"] == ["ada"]  # /dev/null


async def test_bash_and_python_cells_read_stdin(execd: Execd) -> None:
    context = (await execd.client.post("/code/context", json={"language": "bash"})).json()
    python = (await execd.client.post("/code/context", json={"language": "python"})).json()
    cells = [
        ({"code": "tr a-z A-Z", "context": {"id": context["id"], "language": "bash"}}, ["SHOUT\n"]),
        (  # input() is answered with the pipe's next line; its prompt comes as stdout
            {"code": "print(input('> ').upper())", "context": {"id": python["id"], "language": "python"}},
            ["> ", "SHOUT\n"],
        ),
    ]
    for cell, expected in cells:
        async with (
            execd.live_client() as client,
            client.stream("POST", "/code", json=cell, headers=PIPE) as response,
        ):
            assert response.headers[STDIN_HEADER] == "pipe"
            run_id = response.headers[COMMAND_ID_HEADER]
            assert run_id.startswith(cell["context"]["id"])  # type: ignore[index]
            await client.post(f"/command/{run_id}/stdin?eof=true", content=b"shout\n")
            events = parse_events((await response.aread()).decode())
        assert [e["text"] for e in events if e["type"] == "stdout"] == expected
        assert events[-1]["type"] == "execution_complete"


async def test_dropped_session_runs_and_bash_cells_leave_no_process(execd: Execd) -> None:
    session_id = (await execd.client.post("/session", json={})).json()["session_id"]
    context_id = (await execd.client.post("/code/context", json={"language": "bash"})).json()["id"]
    runs = [
        (f"/session/{session_id}/run", {"command": "echo up; exec sleep 4343"}, "sleep 4343"),
        ("/code", {"code": "echo up; sleep 4444", "context": {"id": context_id}}, "sleep 4444"),
    ]
    async with execd.live_client() as client:
        for route, body, marker in runs:
            async with client.stream("POST", route, json=body) as response:
                assert response.headers[ON_DISCONNECT_HEADER] == "kill"
                await _first_events(response, "up")
            await wait_until_async(lambda m=marker: _no_process(execd, m), what=f"{marker} to be gone")  # type: ignore[misc]
    # Not busy any more: the next run goes ahead.
    again = await execd.client.post(f"/session/{session_id}/run", json={"command": "echo next"})
    assert [e["text"] for e in parse_events(again.text) if e["type"] == "stdout"] == ["next"]


async def test_one_request_keeps_or_kills_whatever_the_servers_default(execd: Execd, tmp_path: Path) -> None:
    keeping = ExecdService(log_dir=tmp_path / "keep-logs", limits=ExecdLimits(kill_on_disconnect=False))
    reference_like = dataclasses.replace(execd, service=keeping)
    try:
        async with reference_like.live_client() as client:
            session_id = (await client.post("/session", json={})).json()["session_id"]
            route = f"/session/{session_id}/run"
            body = {"command": "echo up; exec sleep 4545"}
            async with client.stream(
                "POST", route, json=body, headers={ON_DISCONNECT_HEADER: "kill"}
            ) as answer:
                assert answer.headers[ON_DISCONNECT_HEADER] == "kill"
                await _first_events(answer, "up")
            await wait_until_async(lambda: _no_process(execd, "sleep 4545"), what="the run to be killed")

            command = {"command": "echo up; sleep 0.3; echo kept > /workspace/kept"}
            async with client.stream("POST", "/command", json=command) as answer:
                assert answer.headers[ON_DISCONNECT_HEADER] == "keep"  # the server's default
                await _first_events(answer, "up")
        assert (await execd.client.get("/command/nope/logs")).status_code == 404
        await wait_until_async(lambda: _has_file(execd, "/workspace/kept"), what="the kept command to finish")
    finally:
        await keeping.aclose()
    bad = await execd.client.post(
        "/command", json={"command": "true"}, headers={ON_DISCONNECT_HEADER: "maybe"}
    )
    assert bad.status_code == 400 and ON_DISCONNECT_HEADER in bad.json()["message"]


async def _has_file(execd: Execd, path: str) -> bool:
    return (await execd.sh(f"test -e {path} && echo yes || true")) == "yes"


async def test_a_session_run_is_signalled_and_stopped_by_its_run_id(execd: Execd) -> None:
    session_id = (await execd.client.post("/session", json={})).json()["session_id"]
    route = f"/session/{session_id}/run"
    async with execd.live_client() as client:
        async with client.stream("POST", route, json={"command": "cat"}, headers=PIPE) as response:
            run_id = response.headers[COMMAND_ID_HEADER]
            # One signal, once cat echoes: sent while bash forks it, cat could miss it (see the
            # DELETE below, which sends its SIGTERM twice for that reason).
            await client.post(f"/command/{run_id}/stdin", content=b"running\n")
            text = response.aiter_text()
            seen = ""
            while "running" not in seen:
                seen += await anext(text)
            signalled = await client.post(f"/command/{run_id}/signal", json={"signal": "SIGTERM"})
            assert signalled.status_code == 200
            events = parse_events(seen + "".join([chunk async for chunk in text]))
        assert events[-1]["error"]["evalue"] == "143"
        async with client.stream("POST", route, json={"command": "cat"}, headers=PIPE) as response:
            run_id = response.headers[COMMAND_ID_HEADER]
            # At once, however far bash has got: the run stops on SIGTERM, the session stays.
            assert (await client.delete("/command", params={"id": run_id})).status_code == 200
            events = parse_events((await response.aread()).decode())
        assert events[-1]["error"]["evalue"] == "143"
    assert (await execd.client.post(route, json={"command": "echo alive"})).status_code == 200
