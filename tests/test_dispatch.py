"""The dispatch on its own: engine actions carried out on real carrier links (the
built-in simulator), their answers run back through the path."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bounceback.core import engine
from bounceback.core.model import State
from bounceback.gateway.dispatch import Dispatch
from bounceback.gateway.receipts import CarrierReceipts
from bounceback.smpp.carrier import CarrierLink
from bounceback.smpp.server import EsmeSession
from harness import simulator, wait_until
from parts import Parts, parts, reaches, stored_message, submit_sm
from smppcodecs.constants import CommandStatus as S
from smppcodecs.pdu import GenericNack, QuerySmResp, SubmitSm, decode
from smppcodecs.smpptime import format_absolute


async def _deliver(carrier: str, pdu: object) -> int:
    return 0


async def _alert(carrier: str, pdu: object) -> None:
    pass


@contextlib.asynccontextmanager
async def dispatching(p: Parts, *, start: bool) -> AsyncIterator[Dispatch]:
    """A Dispatch on the config's carrier link (started and bound when `start`)."""
    links: dict[str, CarrierLink] = {}
    sessions: dict[str, set[EsmeSession]] = {}
    receipts = CarrierReceipts(p.ctx, p.path, links, sessions, asyncio.Event())
    dispatch = Dispatch(p.ctx, p.path, receipts, links)
    p.path.upstream = dispatch
    for c in p.ctx.cfg.carriers:
        links[c.name] = CarrierLink(c, on_deliver=_deliver, on_alert=_alert)
    try:
        if start:
            for link in links.values():
                link.start()
            await wait_until(lambda: all(link.bound for link in links.values()))
        yield dispatch
    finally:
        for link in links.values():
            await link.stop()


async def test_with_no_carrier_bound_the_message_is_held(tmp_path: Path) -> None:
    async with parts(tmp_path) as p, dispatching(p, start=False):
        msg = await stored_message(p, "447700900011")
        await p.path.process(msg.id, engine.Dispatch(time.time()))
        stored = await reaches(p, msg.id, State.HELD)
        assert stored.verdict is not None and stored.verdict.reason == "not_bound"


async def test_a_submit_records_the_carrier_id_for_its_receipt(tmp_path: Path) -> None:
    async with (
        simulator() as sim,
        parts(tmp_path, sim.port or 0) as p,
        dispatching(p, start=True) as dispatch,
    ):
        msg = await stored_message(p, "447700900012")
        await p.path.process(msg.id, engine.Dispatch(time.time()))
        stored = await reaches(p, msg.id, State.SUBMITTED)
        assert (stored.state, stored.carrier) == (State.SUBMITTED, "sim")
        assert stored.carrier_message_id
        (carrier, key), (mid, attempt) = next(iter(dispatch.receipts.keys.items()))
        assert (carrier, mid, attempt) == ("sim", msg.id, 1)
        assert await p.ctx.store.find_carrier_key("sim", [key]) == (msg.id, 1)


async def test_the_upstream_pdu_always_asks_for_a_receipt(tmp_path: Path) -> None:
    async with parts(tmp_path) as p, dispatching(p, start=False) as dispatch:
        msg = await stored_message(p, "447700900013")
        first = dispatch.upstream_pdu(msg, 1, submit_sm("447700900013", validity_period=""))
        assert isinstance(first, SubmitSm)
        assert first.registered_delivery & 0x03 == 1
        original = decode(msg.pdu)
        assert isinstance(original, SubmitSm)
        again = dispatch.upstream_pdu(msg, 2)
        assert isinstance(again, SubmitSm)
        # A retry keeps the original deadline, not a fresh relative validity.
        deadline = format_absolute(dt.datetime.fromtimestamp(msg.deadline, dt.UTC))
        assert again.validity_period == deadline
        assert again.schedule_delivery_time == ""
        assert again.short_message == original.short_message


async def test_a_carrier_that_does_not_answer_query_sm_is_remembered(tmp_path: Path) -> None:
    async with parts(tmp_path) as p, dispatching(p, start=False) as dispatch:
        answer = QuerySmResp(sequence_number=1, command_status=S.ESME_RQUERYFAIL)
        # ESME_RQUERYFAIL from a carrier that never answered one: "unknown" twice...
        assert dispatch._query_result("sim", answer) == "unknown"
        assert dispatch._query_result("sim", answer) == "unknown"
        # ... and the third time means the carrier does not support query_sm.
        assert dispatch._query_result("sim", answer) == "unsupported"
        assert "sim" in dispatch.no_query
        nack = GenericNack(sequence_number=1, command_status=S.ESME_RINVCMDID)
        assert dispatch._query_result("other", nack) == "unsupported"
        assert dispatch.no_query == {"sim", "other"}
