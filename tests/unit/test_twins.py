"""The sync/async twins: real methods with real signatures on both, and a sync tree that is generated
from the async one (`scripts/unasync.py`) and checked, so a hand edit of a generated module fails.
"""

from __future__ import annotations

import inspect
import pydoc
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from osbox import (
    AsyncEgressClient,
    AsyncExecdClient,
    AsyncLifecycleClient,
    AsyncSandbox,
    AsyncStream,
    EgressClient,
    ExecdClient,
    LifecycleClient,
    Sandbox,
    Stream,
)
from osbox.models import PolicyStatusResponse
from osbox.models import Sandbox as SandboxInfo
from osbox.models.events import Execution, StreamEvent

REPO = Path(__file__).resolve().parents[2]
UNASYNC = REPO / "scripts" / "unasync.py"

# (sync class, async class, method, parameters, what the call gives)
SIGNATURES: list[tuple[type, type, str, list[str], Any]] = [
    (LifecycleClient, AsyncLifecycleClient, "get_sandbox", ["sandbox_id"], SandboxInfo),
    (LifecycleClient, AsyncLifecycleClient, "delete_sandbox", ["sandbox_id"], None),
    (ExecdClient, AsyncExecdClient, "read_file", ["path"], bytes),
    (EgressClient, AsyncEgressClient, "get_policy", [], PolicyStatusResponse),
    (Sandbox, AsyncSandbox, "info", [], SandboxInfo),
]


def signature(method: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(method, eval_str=True)


@pytest.mark.parametrize(("sync", "asynchronous", "name", "params", "returns"), SIGNATURES)
def test_both_twins_show_the_real_signature(
    sync: type, asynchronous: type, name: str, params: list[str], returns: Any
) -> None:
    for cls, prefix in ((sync, ""), (asynchronous, "async ")):
        method = getattr(cls, name)
        shown = signature(method)
        assert list(shown.parameters)[1:] == params  # after self
        assert shown.return_annotation is returns
        # help(): e.g. "async get_sandbox(self, sandbox_id: 'str') -> 'Sandbox'", never an APIRequest
        text = pydoc.render_doc(method, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
        headline = text.splitlines()[2]
        assert headline.startswith(f"{prefix}{name}(self")
        assert headline.endswith(f"-> {inspect.signature(method).return_annotation!r}")
        assert "APIRequest" not in text
    assert inspect.iscoroutinefunction(getattr(asynchronous, name))
    assert not inspect.iscoroutinefunction(getattr(sync, name))


def test_streams_and_listings_show_their_twin_types() -> None:
    assert signature(ExecdClient.run_command).return_annotation == Stream[StreamEvent, Execution]
    assert signature(AsyncExecdClient.run_command).return_annotation == AsyncStream[StreamEvent, Execution]
    assert signature(LifecycleClient.iter_sandboxes).return_annotation == Iterator[SandboxInfo]
    assert signature(AsyncLifecycleClient.iter_sandboxes).return_annotation == AsyncIterator[SandboxInfo]


def test_bound_methods_are_plain_methods_of_the_client() -> None:
    client = LifecycleClient("http://svc/v1")
    method: Any = client.get_sandbox
    assert method.__self__ is client and method.__name__ == "get_sandbox"
    assert "-> 'Sandbox'" in str(inspect.signature(method))
    client.close()


# --- the generated tree is checked ----------------------------------------------------------------------


def unasync(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(UNASYNC), "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the twin sources and their generated modules, to spoil."""
    for side in ("_async", "_sync"):
        shutil.copytree(REPO / "src/osbox" / side, tmp_path / "src/osbox" / side)
    return tmp_path


def test_the_generated_tree_matches_its_source(tree: Path) -> None:
    done = unasync(tree, "--check")
    assert done.returncode == 0, done.stderr


def test_every_generated_module_says_so() -> None:
    generated = sorted((REPO / "src/osbox/_sync").glob("*.py"))
    assert len(generated) > 1
    assert [p.name for p in generated] == sorted(p.name for p in (REPO / "src/osbox/_async").glob("*.py"))
    for path in generated:
        assert path.read_text().startswith(
            f"# Generated from src/osbox/_async/{path.name} by scripts/unasync.py"
        )


def test_a_hand_edit_of_a_generated_module_fails_the_check(tree: Path) -> None:
    module = tree / "src/osbox/_sync/sandbox.py"
    module.write_text(module.read_text().replace("def info(self)", "def info(self, verbose: bool = False)"))
    done = unasync(tree, "--check")
    assert done.returncode == 1
    assert "src/osbox/_sync/sandbox.py differs from its generated form" in done.stderr
    assert "+    def info(self, verbose: bool = False)" in done.stderr


def test_a_line_added_at_the_end_fails_the_check(tree: Path) -> None:
    module = tree / "src/osbox/_sync/streaming.py"
    module.write_text(module.read_text() + "\nEXTRA = 1\n")
    assert unasync(tree, "--check").returncode == 1


def test_an_orphan_or_missing_generated_module_fails_the_check(tree: Path) -> None:
    (tree / "src/osbox/_sync/orphan.py").write_text("x = 1\n")
    done = unasync(tree, "--check")
    assert done.returncode == 1 and "orphan.py has no source" in done.stderr
    (tree / "src/osbox/_sync/orphan.py").unlink()
    (tree / "src/osbox/_sync/egress.py").unlink()
    done = unasync(tree, "--check")
    assert done.returncode == 1 and "egress.py is missing" in done.stderr


def test_regenerating_repairs_the_tree(tree: Path) -> None:
    module = tree / "src/osbox/_sync/client.py"
    module.write_text(module.read_text().replace("time", "tiem"))
    assert unasync(tree).returncode == 0
    assert unasync(tree, "--check").returncode == 0


def test_a_rule_that_matches_nothing_fails(tree: Path) -> None:
    # A source that no longer uses `aiter_raw` leaves that rule dead: the check says so.
    for path in (tree / "src/osbox/_async").glob("*.py"):
        path.write_text(path.read_text().replace("aiter_raw", "aiter_bytes"))
    done = unasync(tree, "--check")
    assert done.returncode == 1
    assert "aiter_raw" in done.stderr and "matched nothing" in done.stderr
