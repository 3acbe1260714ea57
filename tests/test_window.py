"""The session's send window (`bounceback.smpp.session.Window`): a cap, FIFO waiters and
no slot lost or created by a cancelled waiter."""

from __future__ import annotations

import asyncio

from bounceback.smpp.session import Window


async def test_caps_and_serves_waiters_in_order() -> None:
    w = Window(2)
    order: list[int] = []
    await w.acquire()
    await w.acquire()
    assert w.used == 2

    async def take(i: int) -> None:
        await w.acquire()
        order.append(i)

    waiters = [asyncio.create_task(take(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert order == [] and w.used == 2
    w.release()
    await asyncio.sleep(0)
    assert order == [0]
    w.release()
    w.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2] and w.used == 2
    for _ in range(2):
        w.release()
    assert w.used == 0


async def test_a_cancelled_waiter_loses_no_slot() -> None:
    w = Window(1)
    await w.acquire()
    waiter = asyncio.create_task(w.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    w.release()
    assert w.used == 0
    await asyncio.wait_for(w.acquire(), 1)  # the slot is free again
    assert w.used == 1


async def test_a_slot_handed_to_a_cancelled_waiter_goes_to_the_next() -> None:
    w = Window(1)
    await w.acquire()
    first = asyncio.create_task(w.acquire())
    second = asyncio.create_task(w.acquire())
    await asyncio.sleep(0)
    w.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert w.used == 1


async def test_used_as_a_context_manager() -> None:
    w = Window(1)
    async with w:
        assert w.used == 1
    assert w.used == 0
