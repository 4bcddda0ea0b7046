"""Waiting for something that happens elsewhere (in a sandbox, a server, the kernel): the tests' one
poll helper, with a sync and an async entry point over the same deadline logic.

    sandbox = wait_until(lambda: find_sandbox(api, sandbox_id), what="the sandbox to appear")
    await wait_until_async(lambda: backend.pooled == 2, timeout=30, what="the pool to refill")
    await wait_until_async(has_logged, what="output in the log")      # an async condition

The condition's first truthy value is returned; after `timeout` seconds the test fails, saying
`what` it waited for. Polling is for what tells nobody when it is done; never for timing.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["wait_until", "wait_until_async"]

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_INTERVAL_S = 0.05


class _Deadline:
    """When to give up, and what to say then."""

    def __init__(self, timeout: float, what: str) -> None:
        self._at = time.monotonic() + timeout
        self._timeout = timeout
        self._what = what

    def check(self) -> None:
        if time.monotonic() > self._at:
            raise AssertionError(f"timed out after {self._timeout:g} s waiting for {self._what}")


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    what: str = "condition",
    interval: float = DEFAULT_INTERVAL_S,
) -> T:
    """Call `condition` until it returns a truthy value, and return that value."""
    deadline = _Deadline(timeout, what)
    while True:
        value = condition()
        if value:
            return value
        deadline.check()
        time.sleep(interval)


@overload
async def wait_until_async(
    condition: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    what: str = ...,
    interval: float = ...,
) -> T: ...


@overload
async def wait_until_async(
    condition: Callable[[], T | None],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    what: str = ...,
    interval: float = ...,
) -> T: ...


async def wait_until_async(
    condition: Callable[[], Any],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109 (how long to poll, not an I/O timeout)
    what: str = "condition",
    interval: float = DEFAULT_INTERVAL_S,
) -> Any:
    """`wait_until` on the event loop: `condition` may be a plain or an async function."""
    deadline = _Deadline(timeout, what)
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        deadline.check()
        await asyncio.sleep(interval)
