"""`/command`, `/command/status`, `/command/{id}/logs`, interrupt, errors — against a real sandbox."""

from __future__ import annotations

from tests.integration.execd_fixtures import Execd, check_spec, parse_events
from tests.polling import wait_until_async


async def test_ping(execd: Execd) -> None:
    response = await execd.client.get("/ping")
    assert response.status_code == 200 and response.content == b""


async def test_foreground_streams_lines_then_completes(execd: Execd) -> None:
    response = await execd.client.post("/command", json={"command": "echo out; echo err >&2; echo $GREETING"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "data:" not in response.text
    events = parse_events(response.text)
    assert events[0]["type"] == "init" and len(events[0]["text"]) == 32
    assert all(isinstance(e["timestamp"], int) for e in events)
    assert [e["text"] for e in events if e["type"] == "stdout"] == ["out", "hello"]
    assert [e["text"] for e in events if e["type"] == "stderr"] == ["err"]
    assert events[-1]["type"] == "execution_complete" and events[-1]["execution_time"] >= 0
    status = await execd.client.get(f"/command/status/{events[0]['text']}")
    check_spec(status)
    body = status.json()
    assert body["running"] is False and body["exit_code"] == 0 and body["content"].startswith("echo out")


async def test_output_framing_details(execd: Execd) -> None:
    # empty line, CRLF, CR, no trailing newline, a multi-byte character written in two pieces
    command = r"printf 'a\n\nb\r\nc\rd'; printf '\xc3' ; sleep 0.05; printf '\xa9\n'; printf 'tail'"
    events = await execd.run(command)
    lines = [e["text"] for e in events if e["type"] == "stdout"]
    assert lines == ["a", "\n", "b", "c", "d\u00e9", "tail"]


async def test_nonzero_exit_is_an_error_event(execd: Execd) -> None:
    events = await execd.run("echo before; exit 3")
    assert events[-1]["type"] == "error"
    assert events[-1]["error"] == {"ename": "CommandExecError", "evalue": "3", "traceback": ["exit status 3"]}
    assert not any(e["type"] == "execution_complete" for e in events)


async def test_envs_and_cwd(execd: Execd) -> None:
    await execd.sh("mkdir -p /workspace/sub")
    events = await execd.run("pwd; echo $FOO", cwd="/workspace/sub", envs={"FOO": "bar"})
    assert [e["text"] for e in events if e["type"] == "stdout"] == ["/workspace/sub", "bar"]
    events = await execd.run("pwd", cwd="$D/sub", envs={"D": "/workspace"})
    assert events[1]["text"] == "/workspace/sub"


async def test_timeout_kills_process_group(execd: Execd) -> None:
    events = await execd.run("sleep 30 & sleep 30; echo never", timeout=300)
    assert events[-1]["type"] == "error"
    # 128 + 9, as a shell reports it; the reference's traceback wording; which signal, and why.
    assert events[-1]["error"]["evalue"] == "137"
    assert events[-1]["error"]["traceback"] == ["signal: killed"]
    assert (events[-1]["signal"], events[-1]["timed_out"]) == ("SIGKILL", True)
    status = (await execd.client.get(f"/command/status/{events[0]['text']}")).json()
    assert status["exit_code"] == 137 and status["error"] == "signal: killed (timeout after 300 ms)"
    assert (status["signal"], status["timed_out"]) == ("SIGKILL", True)


async def test_background_logs_with_cursor_and_interrupt(execd: Execd) -> None:
    response = await execd.client.post(
        "/command",
        json={"command": "echo one; echo two >&2; while true; do sleep 0.05; done", "background": True},
    )
    events = parse_events(response.text)
    assert [e["type"] for e in events] == ["init", "execution_complete"]
    command_id = events[0]["text"]

    async def logged() -> bool:
        logs = await execd.client.get(f"/command/{command_id}/logs")
        return "one" in logs.text and "two" in logs.text

    await wait_until_async(logged, what="background output in the log")
    logs = await execd.client.get(f"/command/{command_id}/logs")
    assert logs.headers["content-type"].startswith("text/plain")
    cursor = int(logs.headers["EXECD-COMMANDS-TAIL-CURSOR"])
    assert cursor == len(logs.content)
    again = await execd.client.get(f"/command/{command_id}/logs", params={"cursor": cursor})
    assert again.content == b"" and int(again.headers["EXECD-COMMANDS-TAIL-CURSOR"]) == cursor
    partial = await execd.client.get(f"/command/{command_id}/logs", params={"cursor": 4})
    assert partial.content == logs.content[4:]

    status = await execd.client.get(f"/command/status/{command_id}")
    check_spec(status)
    assert status.json()["running"] is True and "exit_code" not in status.json()

    interrupted = await execd.client.delete("/command", params={"id": command_id})
    assert interrupted.status_code == 200
    status = (await execd.client.get(f"/command/status/{command_id}")).json()
    assert status["running"] is False and status["exit_code"] == 143 and status["finished_at"]
    assert status["signal"] == "SIGTERM" and status["error"] == "signal: terminated"
    assert "timed_out" not in status


async def test_background_timeout(execd: Execd) -> None:
    body = {"command": "sleep 30", "background": True, "timeout": 200}
    response = await execd.client.post("/command", json=body)
    command_id = parse_events(response.text)[0]["text"]

    async def finished() -> bool:
        return (await execd.client.get(f"/command/status/{command_id}")).json()["running"] is False

    await wait_until_async(finished, what="the timeout to kill the background command")


async def test_command_errors(execd: Execd) -> None:
    headers = {"content-type": "application/json"}
    bad_json = await execd.client.post("/command", content=b"{not json", headers=headers)
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "INVALID_REQUEST_BODY"
    missing = await execd.client.post("/command", json={"cwd": "/"})
    assert missing.status_code == 400 and missing.json()["code"] == "INVALID_REQUEST_BODY"
    bad_cwd = await execd.client.post("/command", json={"command": "true", "cwd": "/no/such/dir"})
    assert bad_cwd.status_code == 400 and set(bad_cwd.json()) == {"code", "message"}
    gid_only = await execd.client.post("/command", json={"command": "true", "gid": 0})
    assert gid_only.status_code == 400
    no_id = await execd.client.delete("/command")
    assert no_id.status_code == 400 and no_id.json()["code"] == "MISSING_QUERY"
    unknown = await execd.client.get("/command/status/" + "0" * 32)
    assert unknown.status_code == 404
    check_spec(unknown)
    unknown_logs = await execd.client.get("/command/" + "0" * 32 + "/logs")
    assert unknown_logs.status_code == 404
    # Code routes check their input before any kernel starts (kernels: test_code_contexts.py).
    no_code = await execd.client.post("/code", json={})
    assert no_code.status_code == 400 and no_code.json()["code"] == "INVALID_REQUEST_BODY"
    java = await execd.client.post("/code/context", json={"language": "java"})
    assert java.status_code == 501 and java.json()["code"] == "NOT_SUPPORTED"
    unknown_context = await execd.client.get("/code/contexts/abc")
    assert unknown_context.status_code == 404 and unknown_context.json()["code"] == "CONTEXT_NOT_FOUND"
    no_language = await execd.client.delete("/code/contexts")
    assert no_language.status_code == 400 and no_language.json()["code"] == "MISSING_QUERY"
    nowhere = await execd.client.get("/no/such/route")
    assert nowhere.status_code == 404 and set(nowhere.json()) == {"code", "message"}


async def test_commands_do_not_run_as_host_root(execd: Execd) -> None:
    uid = await execd.sh("id -u")
    shadow = await execd.run("cat /etc/shadow")
    assert shadow[-1]["type"] == "error", f"sandbox uid {uid} could read /etc/shadow"


async def test_forget_kills_running_commands(execd: Execd) -> None:
    response = await execd.client.post("/command", json={"command": "sleep 60", "background": True})
    command_id = parse_events(response.text)[0]["text"]
    await execd.service.forget(execd.handle.sandbox_id)
    unknown = await execd.client.get(f"/command/status/{command_id}")
    assert unknown.status_code == 404
