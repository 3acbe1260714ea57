"""Sender intake on its own: a new message stored with its first attempt decided in
the same commit, the sender answered as its account asks (once stored, or once the
carrier answered), suppressed numbers refused; and through real SMPP sessions, binds
authenticated and sessions registered by account."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bounceback.core import engine
from bounceback.core.model import State
from bounceback.gateway.intake import SenderIntake
from bounceback.smpp.carrier import CarrierLink
from bounceback.smpp.server import EsmeSession
from harness import gateway, simulator, wait_until, write_config
from parts import Parts, parts, submit_sm
from smppcodecs.constants import CommandStatus as S
from smpplib_peer import SmpplibSender


def intake_of(p: Parts) -> SenderIntake:
    links: dict[str, CarrierLink] = {}
    sessions: dict[str, set[EsmeSession]] = {}
    return SenderIntake(p.ctx, p.path, links, sessions, p.recorded.wake)


async def test_a_stored_ack_answers_once_the_first_attempt_is_committed(
    tmp_path: Path,
) -> None:
    async with parts(tmp_path, account='ack = "stored"') as p:
        intake = intake_of(p)
        acct = p.ctx.cfg.account("acme")
        assert acct is not None
        pdu = submit_sm("447700900041")
        status, mid = await intake.accept(acct, pdu)
        assert (status, bool(mid)) == (0, True)
        stored = await p.ctx.store.get(mid)
        assert stored is not None
        assert (stored.state, stored.destination_addr) == (State.SUBMITTING, "447700900041")
        assert p.recorded.submits == [(mid, 1)]  # the first attempt goes at once
        assert p.path.first_pdu[mid] is pdu  # not decoded again from the store
        assert p.ctx.counters.get("accepted") == 1


async def test_a_carrier_ack_waits_for_the_carriers_answer(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        intake = intake_of(p)
        acct = p.ctx.cfg.account("acme")
        assert acct is not None
        task = asyncio.create_task(intake.accept(acct, submit_sm("447700900042")))
        await wait_until(lambda: len(p.recorded.submits) == 1)
        mid = p.recorded.submits[0][0]
        await asyncio.sleep(0.05)
        assert not task.done()  # the sender waits for the carrier
        await p.path.process(mid, engine.SubmitResult(time.time(), "sim", 0, "c1", None))
        assert await task == (0, mid)
        assert mid not in p.path.waiting


async def test_a_suppressed_number_is_refused_and_recorded(tmp_path: Path) -> None:
    async with parts(tmp_path) as p:
        intake = intake_of(p)
        acct = p.ctx.cfg.account("acme")
        assert acct is not None
        p.ctx.suppressed["447700900043"] = time.time() + 600
        assert await intake.accept(acct, submit_sm("447700900043")) == (S.ESME_RINVDSTADR, "")
        assert p.ctx.counters.get("suppression_hits") == 1
        assert p.recorded.submits == []  # never sent
        rows = await p.ctx.store.query("SELECT state, destination_addr FROM messages")
        assert [tuple(r) for r in rows] == [("rejected", "447700900043")]


async def test_binds_and_commands_through_real_sessions(tmp_path: Path) -> None:
    async with simulator() as sim, gateway(write_config(tmp_path, sim.port or 0)) as gw:
        wrong = SmpplibSender("127.0.0.1", gw.port)
        assert await asyncio.to_thread(wrong.bind, "transceiver", "acme", "nope") == (
            S.ESME_RINVPASWD
        )
        await asyncio.to_thread(wrong.close)
        s = SmpplibSender("127.0.0.1", gw.port)
        assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
        s.listen()
        try:
            await wait_until(lambda: len(gw.intake.sessions.get("acme", ())) == 1)
            seq = await asyncio.to_thread(s.submit, "447700900044")
            status, mid = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0 and mid
            stored = await gw.store.get(mid)
            assert stored is not None and stored.account == "acme"
        finally:
            await asyncio.to_thread(s.close)
        await wait_until(lambda: not gw.intake.sessions.get("acme"))
