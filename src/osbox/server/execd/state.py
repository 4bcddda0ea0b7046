"""Per-sandbox state of the execd service: commands (with their log files), bash sessions, code
contexts, and the budgets that cap how many of each one sandbox may hold.

Budgets: every running command holds a few server descriptors (see `runner`), every session run
one command's worth, every code context a kernel run plus its ZeroMQ sockets (~15). Without caps,
one sandbox's flood of background commands used up the server's descriptors and made other
sandboxes' requests and new creates fail; with the defaults a sandbox holds at most a few
hundred, and the server raises its own descriptor limit to the hard limit at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from starlette.requests import Request

from .errors import CONTEXT_NOT_FOUND, ExecdError, not_found
from .inputs import sandbox_of
from .logfile import DEFAULT_LOG_MAX_BYTES
from .runner import Execution

if TYPE_CHECKING:
    from .code import AnyContext

__all__ = [
    "LIMIT_EXCEEDED",
    "Budget",
    "ExecdLimits",
    "SandboxApi",
    "SandboxState",
    "Session",
    "StateStore",
    "T",
]

#: Finished commands kept per sandbox (with their logs); older ones are dropped first.
MAX_FINISHED_COMMANDS = 500
#: The error code of a 429 for a full budget.
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"

T = TypeVar("T")


@dataclass(frozen=True)
class ExecdLimits:
    """What one sandbox may hold at once in the execd service (`ServerConfig` sets them)."""

    #: Commands running, or whose output is still open (a daemon a background command left).
    max_running_commands: int = 64
    max_sessions: int = 32
    max_code_contexts: int = 16
    #: Each command's log on the host keeps its newest this many bytes.
    command_log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    #: Kill a foreground command's process group when its client drops the stream (the reference
    #: keeps it running).
    kill_on_disconnect: bool = True


class Budget:
    """A cap on how many of one kind of thing a sandbox holds, counting those still starting
    (so that a burst of concurrent requests cannot all pass the check before any is counted)."""

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        self._starting = 0

    @contextlib.contextmanager
    def claim(self, held: int) -> Iterator[None]:
        """Within the block one more is starting; 429 `LIMIT_EXCEEDED` when `held` (those the
        caller counts as held now) and those starting already reach the limit."""
        if held + self._starting >= self.limit:
            raise ExecdError(
                429,
                LIMIT_EXCEEDED,
                f"this sandbox already has {self.limit} {self.what}, the most it may have at once; "
                "wait for one to end (or end one) and try again",
            )
        self._starting += 1
        try:
            yield
        finally:
            self._starting -= 1


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
    limits: ExecdLimits = field(default_factory=ExecdLimits)
    commands: OrderedDict[str, Execution] = field(default_factory=OrderedDict)
    sessions: dict[str, Session] = field(default_factory=dict)
    contexts: dict[str, AnyContext] = field(default_factory=dict)
    #: The context `/code` uses for a language when no context id is given.
    default_contexts: dict[str, str] = field(default_factory=dict)
    default_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    command_budget: Budget = field(init=False)
    session_budget: Budget = field(init=False)
    context_budget: Budget = field(init=False)

    def __post_init__(self) -> None:
        self.command_budget = Budget("running commands", self.limits.max_running_commands)
        self.session_budget = Budget("sessions", self.limits.max_sessions)
        self.context_budget = Budget("code contexts", self.limits.max_code_contexts)

    def running_commands(self) -> int:
        """Commands that hold server descriptors now (see `Execution.holds_output`)."""
        return sum(1 for command in self.commands.values() if command.holds_output)

    def add_command(self, execution: Execution) -> None:
        """Remember a command; forget the oldest finished ones beyond the cap."""
        self.commands[execution.id] = execution
        finished = [c for c in self.commands.values() if not c.holds_output]
        for old in finished[: max(0, len(finished) - MAX_FINISHED_COMMANDS)]:
            del self.commands[old.id]
            if old.log is not None:
                old.log.remove()

    def log_path(self, command_id: str) -> Path:
        """Host path of a command's output log."""
        return self.log_dir / f"{command_id}.log"

    def executions(self) -> list[Execution]:
        """Every command and session run that may still be running."""
        runs = list(self.commands.values())
        runs += [s.current for s in self.sessions.values() if s.current is not None]
        return runs

    def find_run(self, run_id: str) -> Execution | None:
        """A command, or the current run of a session or bash context, by the id `OSBOX-COMMAND-ID`
        gave it (what `/command/{id}/stdin`, `/signal` and `DELETE /command?id=` take)."""
        found = self.commands.get(run_id)
        if found is not None:
            return found
        runs = [s.current for s in self.sessions.values()]
        runs += [getattr(c, "run", None) for c in self.contexts.values()]  # bash contexts have one
        return next((run for run in runs if run is not None and run.id == run_id), None)


class StateStore:
    """Sandbox states keyed by sandbox id, with their log files under one private dir.

    Each sandbox's logs are in `<root>/<sandbox id>`, removed when the sandbox is forgotten.
    What an earlier server process left in `root` goes when the store is made: those logs belong
    to commands a new process does not know, so nobody can ask for them any more (this is how a
    re-adopted sandbox's logs, and those of a server killed mid-delete, do not outlive it).
    """

    def __init__(self, root: Path | None = None, limits: ExecdLimits | None = None) -> None:
        self._root = root
        self._owns_root = root is None
        self._limits = limits or ExecdLimits()
        self._states: dict[str, SandboxState] = {}
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def _root_dir(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="osbox-execd-"))
        else:
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._root

    def _log_dir(self, sandbox_id: str) -> Path:
        # Sandbox ids are the server's UUIDs; anything else is made a safe name all the same.
        return self._root_dir() / (re.sub(r"[^A-Za-z0-9_-]", "_", sandbox_id)[:100] or "_")

    def get(self, sandbox_id: str) -> SandboxState:
        """The state of a sandbox, created on first use."""
        state = self._states.get(sandbox_id)
        if state is None:
            log_dir = self._log_dir(sandbox_id)
            log_dir.mkdir(mode=0o700, exist_ok=True)
            state = self._states[sandbox_id] = SandboxState(sandbox_id, log_dir, self._limits)
        return state

    def pop(self, sandbox_id: str) -> SandboxState | None:
        """Drop a sandbox's state (its log files are removed by `discard`)."""
        return self._states.pop(sandbox_id, None)

    def discard(self, sandbox_id: str) -> None:
        """Remove a sandbox's log files."""
        if self._root is not None:
            shutil.rmtree(self._log_dir(sandbox_id), ignore_errors=True)

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
