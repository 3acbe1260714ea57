"""The gateway's per-message locks: exclusion, order, cancellation, no leftovers."""

from __future__ import annotations

import asyncio

import pytest
from bounceback.gateway.locks import MessageLocks


async def test_one_holder_per_key_in_arrival_order() -> None:
    locks = MessageLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    order: list[tuple[str, int]] = []

    async def work(key: str, n: int) -> None:
        await locks.acquire(key)
        try:
            inside[key] += 1
            assert inside[key] == 1  # never two holders of one key
            order.append((key, n))
            await asyncio.sleep(0.001)
        finally:
            inside[key] -= 1
            locks.release(key)

    await asyncio.gather(*(work(k, n) for n in range(5) for k in ("a", "b")))
    assert [n for k, n in order if k == "a"] == [0, 1, 2, 3, 4]
    assert [n for k, n in order if k == "b"] == [0, 1, 2, 3, 4]
    # Keys do not wait for each other: b's first ran before a's second.
    assert order.index(("b", 0)) < order.index(("a", 1))
    assert len(locks) == 0


async def test_try_acquire_and_hold() -> None:
    locks = MessageLocks()
    assert locks.try_acquire("m")
    assert not locks.try_acquire("m")
    assert "m" in locks
    locks.release("m")
    assert "m" not in locks
    async with locks.hold("m"):
        assert "m" in locks
        assert not locks.try_acquire("m")
    assert len(locks) == 0
    with pytest.raises(RuntimeError):
        async with locks.hold("m"):
            raise RuntimeError("released on the way out")
    assert len(locks) == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    locks = MessageLocks()
    await locks.acquire("m")
    waiter = asyncio.create_task(locks.acquire("m"))
    later = asyncio.create_task(locks.acquire("m"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    locks.release("m")  # skips the cancelled waiter
    await asyncio.wait_for(later, 5.0)
    assert waiter.cancelled()
    assert "m" in locks
    locks.release("m")
    assert len(locks) == 0


async def test_a_waiter_cancelled_after_the_handover_passes_the_lock_on() -> None:
    locks = MessageLocks()
    await locks.acquire("m")
    first = asyncio.create_task(locks.acquire("m"))
    second = asyncio.create_task(locks.acquire("m"))
    await asyncio.sleep(0)
    locks.release("m")  # handed to `first`, which has not run yet...
    first.cancel()  # ...and is cancelled before it does
    await asyncio.wait_for(second, 5.0)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert "m" in locks  # held by `second` now
    locks.release("m")
    assert len(locks) == 0
