"""Expiry enforcement: one asyncio task that sleeps until the next deadline, never polls.

The owner tells the reaper when deadlines change (`poke`); the reaper asks for the earliest
deadline, sleeps until then (or until poked), and asks the owner to expire what is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from .records import utcnow

__all__ = ["Reaper"]

_log = logging.getLogger("osbox.server.reaper")


class Reaper:
    """Calls `expire_due(now)` whenever the earliest of `next_deadline()` has passed."""

    def __init__(
        self,
        next_deadline: Callable[[], datetime | None],
        expire_due: Callable[[datetime], Awaitable[None]],
    ) -> None:
        self._next_deadline = next_deadline
        self._expire_due = expire_due
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="osbox-reaper")

    def poke(self) -> None:
        """Deadlines changed: recompute the next wake-up."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the task and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            deadline = self._next_deadline()
            delay = None if deadline is None else max(0.0, (deadline - utcnow()).total_seconds())
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            try:
                await self._expire_due(utcnow())
            except Exception:  # keep enforcing other deadlines whatever one expiry did
                _log.exception("expiring sandboxes failed")
