"""The scheduler on its own: recovery of messages a crash caught mid-submit, due
messages fired through the path, housekeeping re-reading suppressions and giving up
on early receipts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bounceback.core import engine
from bounceback.core.model import State
from bounceback.gateway.dispatch import Dispatch
from bounceback.gateway.receipts import CarrierReceipts
from bounceback.gateway.scheduler import Scheduler
from bounceback.smpp.carrier import CarrierLink
from bounceback.smpp.server import EsmeSession
from bounceback.store.sqlite import Suppression
from harness import wait_until
from parts import Parts, parts, stored_message
from test_receipts import receipt


def scheduler_of(p: Parts) -> Scheduler:
    links: dict[str, CarrierLink] = {}
    sessions: dict[str, set[EsmeSession]] = {}
    receipts = CarrierReceipts(p.ctx, p.path, links, sessions, asyncio.Event())
    dispatch = Dispatch(p.ctx, p.path, receipts, links)  # the path's actions stay recorded
    return Scheduler(p.ctx, p.path, receipts, dispatch)


@contextlib.asynccontextmanager
async def running(p: Parts, *loops: object) -> AsyncIterator[None]:
    tasks = [p.ctx.spawn(loop) for loop in loops]  # type: ignore[arg-type]
    try:
        yield
    finally:
        p.ctx.stopping.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_recovery_holds_messages_caught_mid_submit(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        msg = await stored_message(p, "447700900031")
        await p.path.process(msg.id, engine.Dispatch(time.time()))
        done = await stored_message(p, "447700900032", state=State.DELIVERED, done_at=1.0)
        before = time.time()
        await scheduler_of(p).recover()
        stored = await p.ctx.store.get(msg.id)
        assert stored is not None and stored.state == State.HELD
        assert stored.next_attempt_at is not None and stored.next_attempt_at >= before
        untouched = await p.ctx.store.get(done.id)
        assert untouched is not None and untouched.state == State.DELIVERED


async def test_a_due_message_is_fired_through_the_path(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        now = time.time()
        due = await stored_message(
            p, "447700900033", state=State.HELD, attempts=1, next_attempt_at=now - 1
        )
        later = await stored_message(
            p, "447700900034", state=State.HELD, attempts=1, next_attempt_at=now + 3600
        )
        sched = scheduler_of(p)
        async with running(p, sched.run()):
            await wait_until(lambda: p.recorded.submits == [(due.id, 2)])
        stored = await p.ctx.store.get(later.id)
        assert stored is not None and stored.state == State.HELD  # not due: not claimed


async def test_housekeeping_rereads_suppressions_and_gives_up_early_receipts(
    tmp_path: Path,
) -> None:
    async with parts(tmp_path) as p:
        sched = scheduler_of(p)
        now = time.time()
        number = "447700900035"
        await p.ctx.store.suppression_add(Suppression(number, "cli", now, now + 600, ""))
        p.ctx.suppressed["447700900036"] = now + 600  # lifted elsewhere meanwhile
        sched.receipts.early[("sim", "77")] = (now - 31.0, receipt("77"))
        async with running(p, sched.housekeeping()):
            await wait_until(lambda: p.ctx.counters.get("receipts_unmatched") == 1)
            await wait_until(lambda: number in p.ctx.suppressed)
        assert "447700900036" not in p.ctx.suppressed
        assert sched.receipts.early == {}
