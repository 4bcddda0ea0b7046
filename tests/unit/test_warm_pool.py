"""The warm pool's hand-over: a take that finds it empty while a start is under way gets that start."""

from __future__ import annotations

import asyncio
import itertools

from osbox.server._backend.bwrap.pool import WarmPool
from tests.polling import wait_until_async


class Starts:
    """Launches that finish when the test says so (`finish`), numbered; discards recorded."""

    def __init__(self) -> None:
        self.numbers = itertools.count(1)
        self.gates: asyncio.Queue[asyncio.Future[bool]] = asyncio.Queue()
        self.discarded: list[int] = []

    async def launch(self) -> int:
        number = next(self.numbers)
        gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self.gates.put(gate)
        if not await gate:
            raise RuntimeError(f"start {number} failed")
        return number

    async def discard(self, handle: int) -> None:
        self.discarded.append(handle)

    async def finish(self, ok: bool = True) -> None:
        (await self.gates.get()).set_result(ok)


async def test_an_empty_pool_hands_the_start_under_way_to_the_waiting_take() -> None:
    starts = Starts()
    pool: WarmPool[int] = WarmPool(1, launch=starts.launch, discard=starts.discard)
    pool.start()
    try:
        taking = asyncio.create_task(pool.take_or_wait())
        await starts.finish()  # start 1 was under way: the waiting take gets it, not the pool
        assert await taking == 1
        assert len(pool) == 0
        pool.refill()
        await starts.finish()
        await wait_until_async(lambda: len(pool) or None, timeout=10, what="the pool refilled")
        assert pool.take() == 2  # the next one fills the pool as before
    finally:
        await pool.close()


async def test_a_failed_start_or_a_closing_pool_tells_the_waiting_take_to_start_its_own() -> None:
    starts = Starts()
    pool: WarmPool[int] = WarmPool(1, launch=starts.launch, discard=starts.discard)
    pool.start()
    try:
        taking = asyncio.create_task(pool.take_or_wait())
        await starts.finish(ok=False)
        assert await taking is None
        # After the back-off the filler starts again; a take waiting then is released by close.
        gate = await starts.gates.get()
        waiting = asyncio.create_task(pool.take_or_wait())
        await asyncio.sleep(0)
        await pool.close()
        assert await waiting is None
        assert gate.cancelled()  # the start under way was stopped with the pool
    finally:
        await pool.close()


async def test_without_a_start_under_way_a_take_does_not_wait() -> None:
    starts = Starts()
    pool: WarmPool[int] = WarmPool(0, launch=starts.launch, discard=starts.discard)
    pool.start()  # size 0: never starts anything
    assert await pool.take_or_wait() is None
    await pool.close()
