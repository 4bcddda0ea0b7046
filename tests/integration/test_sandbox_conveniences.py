"""What `Sandbox` users reach for first, against a real `osbox serve`, on both twins: `files` on text and
bytes, `run(..., check=True)` and its typed error, background commands (`spawn`: logs, wait, kill), and
`files.watch` (inotify inside the sandbox, streamed over execd's `GET /files/watch`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest

from osbox import (
    AsyncSandbox,
    BadRequestError,
    CommandFailedError,
    NotFoundError,
    Sandbox,
    SandboxError,
)
from osbox.models import FileWatchEvent
from osbox.server import LocalServer
from tests.polling import wait_until

from .server_fixtures import API_KEY, requires_runtime

pytestmark = requires_runtime


def test_files_write_and_read_text_and_bytes(sandbox: Sandbox) -> None:
    sandbox.files.write("/tmp/conv/deep/note.txt", "héllo\nwörld\n")  # parents are created
    assert sandbox.files.read("/tmp/conv/deep/note.txt") == "héllo\nwörld\n"
    assert sandbox.run("cat /tmp/conv/deep/note.txt").stdout == "héllo\nwörld\n"

    raw = bytes(range(256)) * 3
    sandbox.files.write("/tmp/conv/raw.bin", raw)
    assert sandbox.files.read_bytes("/tmp/conv/raw.bin") == raw
    with pytest.raises(UnicodeDecodeError):
        sandbox.files.read("/tmp/conv/raw.bin")
    assert sandbox.files.read("/tmp/conv/raw.bin", encoding="latin-1") == raw.decode("latin-1")

    sandbox.files.write("/tmp/conv/run.sh", "#!/bin/sh\necho ran\n", mode=0o755)
    assert sandbox.run("/tmp/conv/run.sh").stdout == "ran\n"
    sandbox.files.write("/tmp/conv/deep/note.txt", b"")  # replaced, now empty
    assert sandbox.files.read("/tmp/conv/deep/note.txt") == ""
    with pytest.raises(TypeError, match="str or bytes"):
        sandbox.files.write("/tmp/conv/x", 42)  # type: ignore[arg-type]


def test_files_list_and_exists(sandbox: Sandbox) -> None:
    sandbox.run("mkdir -p /tmp/listed/sub && touch /tmp/listed/a /tmp/listed/sub/b", check=True)
    assert sorted(entry.path for entry in sandbox.files.list("/tmp/listed")) == [
        "/tmp/listed/a",
        "/tmp/listed/sub",
    ]
    deep = sorted(entry.path for entry in sandbox.files.list("/tmp/listed", depth=2))
    assert deep == ["/tmp/listed/a", "/tmp/listed/sub", "/tmp/listed/sub/b"]
    assert sandbox.files.exists("/tmp/listed/a") and sandbox.files.exists("/tmp/listed/sub")
    assert not sandbox.files.exists("/tmp/listed/nothing")


def test_a_missing_path_raises_not_found_naming_it(sandbox: Sandbox) -> None:
    with pytest.raises(NotFoundError, match=re.escape("/tmp/no/such.txt does not exist in the sandbox")):
        sandbox.files.read("/tmp/no/such.txt")
    with pytest.raises(NotFoundError, match=re.escape("/tmp/no/such.bin")):
        sandbox.files.read_bytes("/tmp/no/such.bin")
    with pytest.raises(NotFoundError, match=re.escape("/tmp/no/dir does not exist")) as caught:
        sandbox.files.list("/tmp/no/dir")
    assert caught.value.status_code == 404


def test_run_check_raises_a_typed_error_with_the_outcome(sandbox: Sandbox) -> None:
    assert sandbox.run("echo fine", check=True).stdout == "fine\n"
    assert sandbox.run("exit 3").exit_code == 3  # check=False (the default): a result, not an exception
    command = "echo partial; echo 'no such thing' >&2; exit 3"
    with pytest.raises(CommandFailedError) as caught:
        sandbox.run(command, check=True)
    error = caught.value
    assert isinstance(error, SandboxError)
    assert (error.command, error.exit_code, error.stdout, error.stderr) == (
        command,
        3,
        "partial\n",
        "no such thing\n",
    )
    assert str(error).startswith(f"command {command!r} exited with 3") and str(error).endswith(
        ":\nno such thing"
    )


def test_spawn_wait_returns_the_outcome_and_output(sandbox: Sandbox) -> None:
    handle = sandbox.spawn("echo out; echo err >&2; exit 4", cwd="/tmp")
    assert handle.id and handle.command == "echo out; echo err >&2; exit 4"
    execution = handle.wait()
    assert (execution.id, execution.exit_code, execution.complete) == (handle.id, 4, True)
    assert sorted(execution.stdout.splitlines()) == ["err", "out"]  # one merged log
    assert not handle.status().running
    with pytest.raises(CommandFailedError, match="exited with 4"):
        handle.wait(check=True)
    assert sandbox.spawn("pwd", cwd="/var").wait(check=True).stdout == "/var\n"


def test_spawn_kill_stops_it_and_wait_times_out_while_it_runs(sandbox: Sandbox) -> None:
    handle = sandbox.spawn("echo ready; exec sleep 600")
    wait_until(lambda: "ready" in handle.logs(), what="the command's first output")
    assert handle.status().running
    with pytest.raises(SandboxError, match=re.escape("still running after 0.1 s; kill")):
        handle.wait(timeout=0.1)
    handle.kill()
    execution = handle.wait()
    assert execution.exit_code != 0 and execution.stdout == "ready\n"
    assert not sandbox.run("pgrep -x sleep").stdout  # nothing left behind
    handle.kill()  # it has exited: nothing to do


async def test_the_async_twin(server: LocalServer) -> None:
    async with await AsyncSandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY) as sandbox:
        await sandbox.files.write("/tmp/a/text.txt", "async text\n")
        assert await sandbox.files.read("/tmp/a/text.txt") == "async text\n"
        await sandbox.files.write("/tmp/a/raw.bin", b"\xff\x00")
        assert await sandbox.files.read_bytes("/tmp/a/raw.bin") == b"\xff\x00"
        assert sorted(e.path for e in await sandbox.files.list("/tmp/a")) == [
            "/tmp/a/raw.bin",
            "/tmp/a/text.txt",
        ]
        assert await sandbox.files.exists("/tmp/a/raw.bin") and not await sandbox.files.exists("/tmp/a/none")
        with pytest.raises(NotFoundError, match=re.escape("/tmp/a/none does not exist in the sandbox")):
            await sandbox.files.read("/tmp/a/none")

        with pytest.raises(CommandFailedError) as caught:
            await sandbox.run("echo bad >&2; exit 7", check=True)
        assert (caught.value.exit_code, caught.value.stderr) == (7, "bad\n")

        handle = await sandbox.spawn("echo one; exit 5")
        execution = await handle.wait()
        assert (execution.exit_code, execution.stdout) == (5, "one\n")
        with pytest.raises(CommandFailedError):
            await handle.wait(check=True)
        sleeper = await sandbox.spawn("exec sleep 600")
        await sleeper.kill()
        assert (await sleeper.wait()).exit_code != 0


# --- files.watch ------------------------------------------------------------------------------------

Change = tuple[str, str]  # (type, path)


def read_until(events: Iterable[FileWatchEvent], expected: list[Change]) -> list[FileWatchEvent]:
    """Events until every expected (type, path) was seen, in that order among the others."""
    seen: list[FileWatchEvent] = []
    left = list(expected)
    for event in events:
        seen.append(event)
        if left and (event.type, event.path) == left[0]:
            left.pop(0)
        if not left:
            return seen
    raise AssertionError(f"the watch ended before {left}; saw {seen}")


def test_create_modify_move_delete_and_new_subdirectories(sandbox: Sandbox) -> None:
    sandbox.run("mkdir -p /tmp/w1/old/deeper", check=True)
    with sandbox.files.watch("/tmp/w1") as changes:
        events = iter(changes)
        sandbox.run("echo one > /tmp/w1/a.txt && echo two >> /tmp/w1/a.txt", check=True)
        seen = read_until(events, [("create", "/tmp/w1/a.txt"), ("modify", "/tmp/w1/a.txt")])
        assert all(not e.is_dir for e in seen if e.path == "/tmp/w1/a.txt")

        sandbox.run("mv /tmp/w1/a.txt /tmp/w1/b.txt && rm /tmp/w1/b.txt", check=True)
        seen = read_until(events, [("move", "/tmp/w1/b.txt"), ("delete", "/tmp/w1/b.txt")])
        assert next(e for e in seen if e.type == "move").old_path == "/tmp/w1/a.txt"

        # Recursive: directories there before the watch, and those made after it, are watched.
        sandbox.run("touch /tmp/w1/old/deeper/x", check=True)
        read_until(events, [("create", "/tmp/w1/old/deeper/x")])
        sandbox.run("mkdir -p /tmp/w1/new/sub && touch /tmp/w1/new/sub/y", check=True)
        seen = read_until(events, [("create", "/tmp/w1/new"), ("create", "/tmp/w1/new/sub/y")])
        assert next(e for e in seen if e.path == "/tmp/w1/new").is_dir
        sandbox.run("echo later > /tmp/w1/new/sub/y", check=True)  # a watch added for the new subdir
        read_until(events, [("modify", "/tmp/w1/new/sub/y")])


def test_a_flat_watch_ignores_subdirectories(sandbox: Sandbox) -> None:
    sandbox.run("mkdir -p /tmp/w2/sub", check=True)
    with sandbox.files.watch("/tmp/w2", recursive=False) as changes:
        sandbox.run("touch /tmp/w2/sub/hidden && touch /tmp/w2/top", check=True)
        seen = read_until(changes, [("create", "/tmp/w2/top")])
    assert "/tmp/w2/sub/hidden" not in [e.path for e in seen]


def test_closing_a_watch_ends_it_inside_the_sandbox(sandbox: Sandbox) -> None:
    """More watches than a user may hold inotify instances at once (128 by default), each closed
    before the next: none may be left behind by a client that closed its watch."""
    sandbox.run("mkdir -p /tmp/w3", check=True)
    for i in range(140):
        with sandbox.files.watch("/tmp/w3") as changes:
            sandbox.run(f"touch /tmp/w3/f{i}", check=True)
            read_until(changes, [("create", f"/tmp/w3/f{i}")])


def test_the_watched_directory_going_away_ends_the_stream(sandbox: Sandbox) -> None:
    sandbox.run("mkdir -p /tmp/w4", check=True)
    with sandbox.files.watch("/tmp/w4") as changes:
        sandbox.run("rm -r /tmp/w4", check=True)
        assert ("delete", "/tmp/w4") in [(e.type, e.path) for e in changes]  # and the loop ends


def test_bad_paths_raise_typed_errors(sandbox: Sandbox) -> None:
    with pytest.raises(NotFoundError, match="/tmp/none does not exist"):
        sandbox.files.watch("/tmp/none")
    sandbox.files.write("/tmp/plain.txt", "x")
    with pytest.raises(BadRequestError):
        sandbox.files.watch("/tmp/plain.txt")


async def test_the_async_twin_watches_too(server: LocalServer) -> None:
    async with await AsyncSandbox.create(base_url=server.base_url + "/v1", api_key=API_KEY) as sandbox:
        await sandbox.run("mkdir -p /tmp/aw", check=True)
        async with await sandbox.files.watch("/tmp/aw") as changes:
            # files.write makes sub/, then writes a temp file beside the target and moves it there.
            await sandbox.files.write("/tmp/aw/sub/f.txt", "x")
            expected = [("create", "/tmp/aw/sub"), ("move", "/tmp/aw/sub/f.txt")]
            async for event in changes:
                if (event.type, event.path) == expected[0]:
                    expected.pop(0)
                if not expected:
                    break
