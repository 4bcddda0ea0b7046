"""A warm pool: sandboxes started ahead of time, each handed out once, refilled in the background.

Starting a sandbox is mostly waiting (bwrap's mounts, the agent's interpreter start-up); a create
that takes a pre-started one only has to give it its owner's settings. The pool knows nothing
about sandboxes: the backend gives it a `launch` and a `discard` coroutine.

    pool = WarmPool(2, launch=start_blank_sandbox, discard=destroy_blank_sandbox)
    pool.start()              # inside the running loop: fills up in a background task
    handle = pool.take()      # a ready one, or None (the caller then starts one itself)
    handle = await pool.take_or_wait()  # or the one being started for the pool, once it is ready
    pool.refill()             # once the caller's own start-up is done
    await pool.close()        # stops filling and discards what was not taken
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["WarmPool"]

_log = logging.getLogger("osbox.server.pool")
H = TypeVar("H")
#: After a failed launch, wait this long (doubling up to the maximum) before trying again.
_RETRY_S = 0.5
_RETRY_MAX_S = 30.0


class WarmPool(Generic[H]):
    """Up to `size` ready handles; `take` never waits, the filler tops up after every take."""

    def __init__(
        self,
        size: int,
        *,
        launch: Callable[[], Awaitable[H]],
        discard: Callable[[H], Awaitable[None]],
        usable: Callable[[H], bool] = lambda _handle: True,
    ) -> None:
        self.size = size
        self._launch = launch
        self._discard = discard
        self._usable = usable
        self._ready: collections.deque[H] = collections.deque()
        self._wanted = asyncio.Event()
        self._filler: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()  # discards running in the background
        self._closed = False
        self._launching = False  # the filler is starting one now
        self._waiters: collections.deque[asyncio.Future[H | None]] = collections.deque()

    def __len__(self) -> int:
        """How many ready handles the pool holds now."""
        return len(self._ready)

    def start(self) -> None:
        """Start filling (call from inside the running event loop); a no-op for size 0."""
        if self.size > 0 and self._filler is None and not self._closed:
            self._filler = asyncio.get_running_loop().create_task(self._fill(), name="osbox-warm-pool")

    def take(self) -> H | None:
        """A ready handle (now the caller's), or None when the pool is empty.

        The pool is not refilled until `refill()`: the caller says when its own start-up is done,
        so that the replacement does not compete with it for the CPU.
        """
        while self._ready:
            candidate = self._ready.popleft()
            if self._usable(candidate):
                return candidate
            self._discard_soon(candidate)  # died while waiting: replace it
        return None

    async def take_or_wait(self) -> H | None:
        """`take`; when the pool is empty but the filler is starting one, that one once it is ready:
        the rest of a start already under way comes sooner than a start of the caller's own, and two
        starts do not compete for the CPU. None when nothing is under way (or it failed)."""
        handle = self.take()
        if handle is not None or not self._launching or self._closed:
            return handle
        waiter: asyncio.Future[H | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handle = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and (given := waiter.result()) is not None:
                self._ready.append(given)  # handed over as the caller gave up: the pool keeps it
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        if handle is not None and not self._usable(handle):
            self._discard_soon(handle)  # started for what the pool held before (another image)
            return None
        return handle

    def _hand_over(self, handle: H | None) -> bool:
        """Give a just-started `handle` (None: the start failed) to the first caller waiting for it;
        whether one took it (with None: every waiter is told, and starts its own)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            waiter.set_result(handle)
            if handle is not None:
                return True
        return False

    def refill(self) -> None:
        """Top the pool up again in the background."""
        self._wanted.set()

    def flush(self) -> None:
        """Discard every ready handle (in the background) and fill up anew: what `launch` starts
        has changed (another image, say)."""
        while self._ready:
            self._discard_soon(self._ready.popleft())
        self._wanted.set()

    async def _fill(self) -> None:
        failures = 0
        while not self._closed:
            if len(self._ready) >= self.size:
                self._wanted.clear()
                await self._wanted.wait()
                continue
            self._launching = True
            try:
                handle = await self._launch()
            except Exception as exc:
                self._launching = False
                self._hand_over(None)
                failures += 1
                delay = min(_RETRY_MAX_S, _RETRY_S * 2 ** (failures - 1))
                _log.warning("warm pool: starting a sandbox failed (retrying in %.1fs): %s", delay, exc)
                await asyncio.sleep(delay)  # back off: the cause (disk, limits) may persist
                continue
            finally:
                self._launching = False
            failures = 0
            if self._closed:  # closed while it started (a cancellation can be lost in wait_for)
                self._hand_over(None)
                await self._discard(handle)
                return
            if not self._hand_over(handle):
                self._ready.append(handle)

    def _discard_soon(self, handle: H) -> None:
        async def discard() -> None:
            try:
                await self._discard(handle)
            except Exception:
                _log.exception("warm pool: discarding a sandbox failed")

        task = asyncio.get_running_loop().create_task(discard())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Stop filling and discard every handle that was not taken."""
        self._closed = True
        self._hand_over(None)
        if self._filler is not None:
            self._filler.cancel()
            self._wanted.set()  # should the cancellation be lost, the filler sees `_closed` and ends
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
            self._filler = None
        while self._ready:
            handle = self._ready.popleft()
            try:
                await self._discard(handle)
            except Exception:
                _log.exception("warm pool: discarding a sandbox failed")
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
