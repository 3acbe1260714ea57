"""Carrier receipts on their own: matched by carrier id to the message and attempt,
run through the path; early ones held back and replayed; ones whose carrier answer
waits for the store refused for now; MO without a route dropped."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from bounceback.core import engine
from bounceback.core.model import Message, State
from bounceback.gateway.receipts import CarrierReceipts
from bounceback.smpp.carrier import CarrierLink
from bounceback.smpp.server import EsmeSession
from bounceback.store.sqlite import Change
from harness import wait_until
from parts import Parts, parts, reaches, stored_message
from smppcodecs.constants import CommandStatus as S
from smppcodecs.msgid import id_keys
from smppcodecs.pdu import DeliverSm
from smppcodecs.receipt import build_receipt_pdu

CMID = "1A2B3C"


def receipt(message_id: str, stat: str = "DELIVRD") -> DeliverSm:
    now = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    return build_receipt_pdu(
        sequence_number=1,
        source_addr="447700900021",
        destination_addr="Acme",
        message_id=message_id,
        stat=stat,
        submit_date=now,
        done_date=now,
    )


def receipts_of(p: Parts) -> CarrierReceipts:
    links: dict[str, CarrierLink] = {}
    sessions: dict[str, set[EsmeSession]] = {}
    return CarrierReceipts(p.ctx, p.path, links, sessions, asyncio.Event())


async def submitted(p: Parts, number: str, *, remember: CarrierReceipts | None) -> Message:
    """A message submitted to carrier sim as CMID; its carrier ids committed, and kept
    in `remember`'s memory too when given."""
    msg = await stored_message(p, number)
    await p.path.process(msg.id, engine.Dispatch(time.time()))
    extra = Change()
    for k in id_keys(CMID, "auto"):
        extra.carrier_keys.append(("sim", k, msg.id, 1))
        if remember is not None:
            remember.keys.put(("sim", k), (msg.id, 1))
    await p.path.process(
        msg.id, engine.SubmitResult(time.time(), "sim", 0, CMID, None), extra=extra
    )
    return msg


async def test_a_receipt_ends_its_message_and_wakes_the_pump(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        rc = receipts_of(p)
        msg = await submitted(p, "447700900021", remember=None)  # found in the store
        assert await rc.on_carrier_deliver("sim", receipt(CMID)) == 0
        stored = await p.ctx.store.get(msg.id)
        assert stored is not None and stored.state == State.DELIVERED
        assert p.ctx.counters.get("receipts_matched") == 1
        assert p.recorded.woken == ["acme"]  # a receipt for the sender is stored
        pending = await p.ctx.store.pending_receipts("acme", 10)
        assert [(r.row.message_id, r.row.stat) for r in pending] == [(msg.id, "DELIVRD")]


async def test_an_early_receipt_is_replayed_once_its_carrier_id_is_known(
    tmp_path: Path,
) -> None:
    async with parts(tmp_path) as p:
        rc = receipts_of(p)
        assert await rc.on_carrier_deliver("sim", receipt(CMID)) == 0
        assert p.ctx.counters.get("receipts_early") == 1
        assert rc.early  # held back: it may have beaten its submit_sm_resp
        msg = await submitted(p, "447700900022", remember=rc)
        rc.replay_early("sim", id_keys(CMID, "auto"))
        assert rc.early == {}  # replayed once, its sibling keys dropped

        await reaches(p, msg.id, State.DELIVERED)
        assert p.ctx.counters.get("receipts_matched") == 1


async def test_a_receipt_waits_while_its_carrier_answer_is_unwritten(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        rc = receipts_of(p)
        msg = await submitted(p, "447700900023", remember=rc)
        p.path.unwritten[msg.id] = (engine.Cancel(time.time()), Change())
        assert await rc.on_carrier_deliver("sim", receipt(CMID)) == S.ESME_RX_T_APPN
        assert p.ctx.counters.get("receipts_deferred") == 1
        stored = await p.ctx.store.get(msg.id)
        assert stored is not None and stored.state == State.SUBMITTED  # untouched
        del p.path.unwritten[msg.id]
        assert await rc.on_carrier_deliver("sim", receipt(CMID)) == 0
        await wait_until(lambda: p.ctx.counters.get("receipts_matched") == 1)


async def test_an_mo_with_no_account_is_dropped(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        rc = receipts_of(p)
        mo = DeliverSm(
            sequence_number=1,
            source_addr="447700900024",
            destination_addr="Acme",
            short_message=b"STOP",
        )
        assert await rc.on_carrier_deliver("sim", mo) == 0
        assert p.ctx.counters.get("mo_unrouted") == 1
        assert p.ctx.counters.get("receipts_unmatched") is None  # not taken for a receipt
