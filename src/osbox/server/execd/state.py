"""Per-sandbox state of the execd service: commands (with their log files), bash sessions, code contexts."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from starlette.requests import Request

from .errors import CONTEXT_NOT_FOUND, not_found
from .inputs import sandbox_of
from .runner import Execution

if TYPE_CHECKING:
    from .code import CodeContext

__all__ = ["SandboxApi", "SandboxState", "Session", "StateStore", "T"]

#: Finished commands kept per sandbox (with their logs); older ones are dropped first.
MAX_FINISHED_COMMANDS = 500

T = TypeVar("T")


@dataclass
class Session:
    """A bash session: its state files inside the sandbox and the run in progress, if any."""

    id: str
    state_path: str
    current: Execution | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class SandboxState:
    """Everything the execd service remembers about one sandbox."""

    sandbox_id: str
    log_dir: Path
    commands: OrderedDict[str, Execution] = field(default_factory=OrderedDict)
    sessions: dict[str, Session] = field(default_factory=dict)
    contexts: dict[str, CodeContext] = field(default_factory=dict)
    #: The context `/code` uses for a language when no context id is given.
    default_contexts: dict[str, str] = field(default_factory=dict)
    default_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add_command(self, execution: Execution) -> None:
        """Remember a command; forget the oldest finished ones beyond the cap."""
        self.commands[execution.id] = execution
        finished = [c for c in self.commands.values() if not c.running]
        for old in finished[: max(0, len(finished) - MAX_FINISHED_COMMANDS)]:
            del self.commands[old.id]
            self.log_path(old.id).unlink(missing_ok=True)

    def log_path(self, command_id: str) -> Path:
        """Host path of a command's output log."""
        return self.log_dir / f"{command_id}.log"

    def executions(self) -> list[Execution]:
        """Every command and session run that may still be running."""
        runs = list(self.commands.values())
        runs += [s.current for s in self.sessions.values() if s.current is not None]
        return runs


class StateStore:
    """Sandbox states keyed by sandbox id, with their log files under one private temp dir."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self._owns_root = root is None
        self._states: dict[str, SandboxState] = {}

    def _root_dir(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="osbox-execd-"))
        else:
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._root

    def get(self, sandbox_id: str) -> SandboxState:
        """The state of a sandbox, created on first use."""
        state = self._states.get(sandbox_id)
        if state is None:
            safe = re.sub(r"[^A-Za-z0-9_-]", "_", sandbox_id)[:100] or "_"
            log_dir = Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=self._root_dir()))
            state = self._states[sandbox_id] = SandboxState(sandbox_id, log_dir)
        return state

    def pop(self, sandbox_id: str) -> SandboxState | None:
        """Drop a sandbox's state (its log files are removed by `discard`)."""
        return self._states.pop(sandbox_id, None)

    @staticmethod
    def discard(state: SandboxState) -> None:
        """Remove a dropped sandbox's log files."""
        shutil.rmtree(state.log_dir, ignore_errors=True)

    def all(self) -> list[SandboxState]:
        """Every known sandbox state."""
        return list(self._states.values())

    def close(self) -> None:
        """Remove the temp dir if this store created it."""
        if self._owns_root and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


class SandboxApi:
    """What each group of endpoints starts from: the state of the sandbox a request targets."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def _state(self, request: Request) -> SandboxState:
        return self._store.get(sandbox_of(request).sandbox_id)

    @staticmethod
    def _find(items: Mapping[str, T], key: str, what: str) -> T:
        """`items[key]`, or 404 `CONTEXT_NOT_FOUND` (execd's code for every unknown id)."""
        found = items.get(key)
        if found is None:
            raise not_found(f"{what} {key} not found", CONTEXT_NOT_FOUND)
        return found
