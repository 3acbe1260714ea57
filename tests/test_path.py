"""The message path on its own: load, decide, commit, then act; stale decisions taken
again on the stored message; timers skip a message an event is running for."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bounceback.core import engine
from bounceback.core.model import State, evolve
from bounceback.store.sqlite import Change
from parts import parts, stored_message


async def test_a_dispatch_is_committed_before_the_submit_goes(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        msg = await stored_message(p, "447700900001")
        new = await p.path.process(msg.id, engine.Dispatch(time.time()))
        assert new is not None and new.state == State.SUBMITTING
        stored = await p.ctx.store.get(msg.id)
        assert stored is not None
        assert (stored.state, stored.version) == (State.SUBMITTING, msg.version + 1)
        assert p.recorded.submits == [(msg.id, 1)]
        assert p.path.cache.get(msg.id) == new  # kept in memory while on its way


async def test_the_carrier_answer_reaches_the_waiting_sender(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        msg = await stored_message(p, "447700900002")
        await p.path.process(msg.id, engine.Dispatch(time.time()))
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        p.path.waiting[msg.id] = fut
        result = engine.SubmitResult(time.time(), "sim", 0, "abc123", None)
        new = await p.path.process(msg.id, result)
        assert new is not None and new.state == State.SUBMITTED
        assert fut.done() and fut.result() == 0
        stored = await p.ctx.store.get(msg.id)
        assert stored is not None and stored.carrier_message_id == "abc123"


async def test_a_decision_on_a_stale_copy_is_taken_again(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        msg = await stored_message(p, "447700900003")
        await p.path.process(msg.id, engine.Dispatch(time.time()))
        # Changed behind the path's back (another instance, a command): the copy in
        # memory is one version behind.
        stored = await p.ctx.store.get(msg.id)
        assert stored is not None
        await p.ctx.store.commit(
            Change(message=evolve(stored, text_head="changed", version=stored.version + 1))
        )
        new = await p.path.process(msg.id, engine.Cancel(time.time()))
        assert new is not None and new.state == State.CANCELLED
        assert p.ctx.counters.get("stale_decisions") == 1
        final = await p.ctx.store.get(msg.id)
        assert final is not None
        assert final.state == State.CANCELLED
        assert final.text_head == "changed"  # decided on the stored copy, not over it
        assert final.version == stored.version + 2


async def test_a_timer_skips_a_message_with_an_event_running(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        now = time.time()
        msg = await stored_message(
            p, "447700900004", state=State.HELD, attempts=1, next_attempt_at=now - 1
        )
        p.path.in_progress.add(msg.id)
        await p.path.fire(msg.id, engine.Due(now))
        assert p.recorded.submits == []
        stored = await p.ctx.store.get(msg.id)
        assert stored is not None and stored.state == State.HELD
        p.path.in_progress.discard(msg.id)
        await p.path.fire(msg.id, engine.Due(now))
        assert p.recorded.submits == [(msg.id, 2)]
        assert msg.id not in p.path.in_progress
