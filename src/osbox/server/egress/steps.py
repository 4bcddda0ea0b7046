"""Set-up steps run at once: a sandbox's network waits for the slowest step, not the sum of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable

__all__ = ["all_of"]


async def all_of(steps: Iterable[Awaitable[object]]) -> None:
    """Run `steps` at once; raise the first failure once all are finished, so that undoing them never
    races one that is still setting something up."""
    for result in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result
