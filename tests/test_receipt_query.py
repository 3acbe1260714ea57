"""Overdue receipts end to end: a submitted message whose receipt never comes is
looked up at its carrier with query_sm (`[[carriers]] receipt_query_after`).

Against the built-in simulator (a receipt lost on the way, a message the carrier
still holds) and against the node-smpp carrier (one that answers query_sm, and one
that does not)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from bounceback.core import engine
from bounceback.core.model import State, Verdict
from bounceback.feed.events import render
from bounceback.gateway.shell import Gateway
from harness import free_port, gateway, simulator, wait_until, write_config
from peers import NodeCarrier, NodeSender
from smpplib_peer import SmpplibSender, receipt_fields

pytest_plugins = ["pg_fixture"]

SCHEMA = Path(__file__).resolve().parent.parent / "proxy" / "schema" / "event.schema.json"


def config(tmp: Path, carrier_port: int, query_after: float = 0.3) -> Path:
    """The proxy in front of carrier `sim`, asking about receipts overdue by
    `query_after` seconds; feed events stay in the outbox (no broker listens)."""
    feed = (
        f'\n[feed]\nhost = "127.0.0.1"\nport = {free_port()}\npublisher = "inline"\n'
        "mask_destinations = false\n"
    )
    return write_config(
        tmp,
        carrier_port,
        carrier=f"receipt_query_after = {query_after}",
        account='ack = "stored"',
        extra=feed,
    )


async def bound(gw: Gateway) -> SmpplibSender:
    s = SmpplibSender("127.0.0.1", gw.port)
    assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
    s.listen()
    return s


async def send(s: SmpplibSender, number: str) -> str:
    seq = await asyncio.to_thread(s.submit, number, b"where is my receipt")
    status, mid = await asyncio.to_thread(s.wait_resp, seq)
    assert status == 0
    return str(mid)


async def events_of(gw: Gateway, mid: str) -> list[dict[str, Any]]:
    docs = [json.loads(render(e.payload)) for e in await gw.store.outbox(10_000)]
    return [d for d in docs if d["message_id"] == mid]


def queries(gw: Gateway) -> dict[str, int]:
    prefix = "receipt_queries_"
    return {k[len(prefix) :]: v for k, v in gw.counters.items() if k.startswith(prefix)}


async def settled(
    seen: Callable[[], int], counted: Callable[[], dict[str, int]], quiet: float = 1.0
) -> int:
    """The queries the carrier saw, once each of them is counted by the proxy and
    neither has changed for `quiet` seconds (a query and its answer on their way
    would change one or the other)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15.0
    last: tuple[int, dict[str, int]] | None = None
    since = 0.0
    while (t := loop.time()) < deadline:
        now = (seen(), counted())
        if now != last:
            last, since = now, t
        elif now[0] == sum(now[1].values()) and t - since >= quiet:
            return now[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"queries never settled: {last}")


async def test_a_lost_receipt_is_found_with_query_sm(tmp_path: Path) -> None:
    n = "447700940001"
    data = {"receipt_delay": 0.02, "rules": [{"number": n, "outcomes": ["lost_receipt"]}]}
    async with simulator(data) as sim, gateway(config(tmp_path, sim.port or 0)) as gw:
        s = await bound(gw)
        mid = await send(s, n)
        got = await asyncio.to_thread(s.wait_delivered, 1, 15.0)
        f = receipt_fields(got[0])
        assert (f["stat"], f["err"], f["id"]) == ("DELIVRD", "000", mid)
        msg = await gw.store.get(mid)
        assert msg is not None and msg.state == State.DELIVERED
        assert (msg.final_stat, msg.attempts, msg.next_attempt_at) == ("DELIVRD", 1, None)
        assert msg.verdict is not None and msg.verdict.kind == "delivered"
        assert queries(gw) == {"final": 1}
        # Twice the time of the next check: no more queries, still one receipt.
        await asyncio.sleep(1.0)
        assert queries(gw) == {"final": 1}
        assert len(s.delivered) == 1
        assert sim.receipts_sent == 0
        events = await events_of(gw, mid)
        assert [e["event"] for e in events] == ["accepted", "submitted", "delivered"]
        delivered = events[-1]
        assert delivered["source"] == "query_sm"
        assert (delivered["classification"], delivered["code"]) == (
            "delivered",
            "stat:DELIVRD err:000",
        )
        assert "source" not in events[1]
        validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
        for e in events:
            validator.validate(e)
        s.close()


async def test_a_message_the_carrier_still_holds_keeps_waiting(tmp_path: Path) -> None:
    n = "447700940002"
    data = {"receipt_delay": 0.02, "rules": [{"number": n, "outcomes": ["no_receipt"]}]}
    async with simulator(data) as sim, gateway(config(tmp_path, sim.port or 0, 0.2)) as gw:
        s = await bound(gw)
        mid = await send(s, n)
        # Checks after 0.2, 0.4, 0.8 s: the carrier says ENROUTE each time.
        await wait_until(lambda: queries(gw).get("pending", 0) >= 3, timeout=15.0)
        msg = await gw.store.get(mid)
        assert msg is not None and msg.state == State.SUBMITTED and msg.attempts == 1
        assert msg.next_attempt_at is not None
        assert msg.next_attempt_at < msg.deadline + gw.policy.receipt_grace
        # The waits double: the next check is at least 1.6 s after the submission.
        assert msg.next_attempt_at - msg.updated_at >= 1.6
        assert set(queries(gw)) == {"pending"}
        assert s.delivered == []
        assert [e["event"] for e in await events_of(gw, mid)] == ["accepted", "submitted"]
        assert sim.count_for(n) == 1  # asking is not resubmitting
        s.close()


async def test_receipt_query_after_0_never_asks(tmp_path: Path) -> None:
    n = "447700940003"
    data = {"receipt_delay": 0.02, "rules": [{"number": n, "outcomes": ["lost_receipt"]}]}
    async with simulator(data) as sim, gateway(config(tmp_path, sim.port or 0, 0)) as gw:
        s = await bound(gw)
        mid = await send(s, n)
        await asyncio.sleep(1.0)
        msg = await gw.store.get(mid)
        # As before the check existed: submitted until the deadline and the grace.
        assert msg is not None and msg.state == State.SUBMITTED
        assert msg.next_attempt_at == msg.deadline + gw.policy.receipt_grace
        assert queries(gw) == {} and s.delivered == []
        s.close()


def shared_config(tmp: Path, name: str, carrier_port: int, url: str) -> Path:
    d = tmp / name
    d.mkdir()
    cfg = config(d, carrier_port)
    text = cfg.read_text().replace(
        '[store]\npath = "proxy.db"', f'[store]\nurl = "{url}"\nlease_seconds = 2.0'
    )
    cfg.write_text(text.replace("[server]\n", f'[server]\ninstance_id = "{name}"\n', 1))
    return cfg


async def test_two_instances_on_one_store_finish_each_message_once(
    tmp_path: Path, pg_url: str
) -> None:
    numbers = [f"44770094005{i}" for i in range(4)]
    held = "447700940059"
    data = {
        "receipt_delay": 0.02,
        "rules": [{"number": n, "outcomes": ["lost_receipt"]} for n in numbers]
        + [{"number": held, "outcomes": ["no_receipt"]}],
    }
    async with (
        simulator(data) as sim,
        gateway(shared_config(tmp_path, "a", sim.port or 0, pg_url)) as a,
        gateway(shared_config(tmp_path, "b", sim.port or 0, pg_url)) as b,
    ):
        # The sender binds to both: each instance delivers the receipts it decided.
        s, s2 = await bound(a), await bound(b)
        mids = [await send(s, n) for n in numbers]

        def delivered() -> list[dict[str, str]]:
            return [receipt_fields(r) for r in [*s.delivered, *s2.delivered]]

        await wait_until(lambda: len(delivered()) >= len(numbers), timeout=20.0)
        assert {f["id"] for f in delivered()} == set(mids)
        assert {f["stat"] for f in delivered()} == {"DELIVRD"}
        # Both instances run the checks; each check is claimed by one of them.
        finals = queries(a).get("final", 0) + queries(b).get("final", 0)
        assert finals >= len(numbers)
        # Two instances taking the same final answer at once: the store's version check
        # lets one decision through, the other is taken again on the delivered message.
        other = await send(s, held)
        await wait_until(lambda: a.path.cache.get(other) is not None, timeout=10.0)
        answer = engine.ReceiptIn(
            now=time.time(),
            attempt=1,
            verdict=Verdict("delivered", "delivered", "delivered", "x", "x", "default"),
            stat="DELIVRD",
            err="000",
            queried=True,
        )
        await asyncio.gather(a.process(other, answer), b.process(other, answer))
        await wait_until(lambda: len(delivered()) >= len(numbers) + 1, timeout=10.0)
        await asyncio.sleep(1.0)  # a second final receipt would be on its way by now
        assert sorted(f["id"] for f in delivered()) == sorted([*mids, other])
        for mid in [*mids, other]:
            msg = await a.store.get(mid)
            assert msg is not None and msg.state == State.DELIVERED, mid
            names = [e["event"] for e in await events_of(a, mid)]
            assert names.count("delivered") == 1, (mid, names)
        rows = await a.store.query(
            "SELECT message_id, COUNT(*) FROM sender_receipts GROUP BY message_id"
        )
        assert all(n == 1 for _, n in rows)  # not yet acknowledged ones, at most one each
        assert sim.receipts_sent == 0
        s.close()
        s2.close()


# ---------------------------------------------------------------- the node-smpp carrier


@pytest.mark.node
async def test_node_carrier_answers_query_sm(tmp_path: Path) -> None:
    n = "447700940004"
    async with NodeCarrier(receipt_delay_ms=20) as carrier:
        await carrier.script_outcomes(n, ["lost_receipt"])
        async with (
            gateway(config(tmp_path, carrier.port)) as gw,
            NodeSender() as sender,
        ):
            reply = await sender.connect(gw.port, system_id="acme", password="acme-pw")
            assert reply["status"] == 0, reply
            resp = await sender.submit(
                n, "lost on the way", source_addr="Acme", source_addr_ton=5, source_addr_npi=0
            )
            mid = resp["message_id"]
            receipt = await sender.wait_receipt_for(mid, timeout=15.0)
            assert receipt["receipt"]["stat"] == "DELIVRD"
            msg = await gw.store.get(mid)
            assert msg is not None and msg.state == State.DELIVERED
            (query,) = carrier.seen("query")
            # The carrier's id and the source address as submitted (SMPP 3.4, 4.8.1).
            assert query["message_id"] == msg.carrier_message_id
            assert query["found"] is True
            assert (query["source_addr"], query["source_addr_ton"], query["source_addr_npi"]) == (
                "Acme",
                5,
                0,
            )
            await asyncio.sleep(0.6)
            assert len(carrier.seen("query")) == 1
            assert len(sender.receipts) == 1
            assert queries(gw) == {"final": 1}


@pytest.mark.node
@pytest.mark.parametrize("answer", ["generic_nack", "invcmdid"])
async def test_node_carrier_without_query_sm_falls_back_to_waiting(
    tmp_path: Path, answer: str, caplog: pytest.LogCaptureFixture
) -> None:
    numbers = [f"44770094001{i}" for i in range(3)]
    async with NodeCarrier(receipt_delay_ms=20, default_outcome="lost_receipt") as carrier:
        await carrier.configure(query_sm=answer)
        caplog.set_level(logging.WARNING, logger="bounceback.gateway")
        async with (
            gateway(config(tmp_path, carrier.port, 0.2)) as gw,
            NodeSender() as sender,
        ):
            reply = await sender.connect(gw.port, system_id="acme", password="acme-pw")
            assert reply["status"] == 0, reply
            mids = [(await sender.submit(n, "no answer"))["message_id"] for n in numbers]
            await wait_until(lambda: "unsupported" in queries(gw), timeout=15.0)
            # Long enough for several rounds of checks had the carrier answered.
            await asyncio.sleep(1.5)
            asked = carrier.seen("query")
            # Remembered at the first refusal: no query to that carrier after it
            # (those already on their way when it came may still arrive).
            assert 1 <= len(asked) <= len(numbers)
            assert queries(gw).get("unsupported", 0) == len(asked)
            assert set(queries(gw)) == {"unsupported"}
            for mid in mids:
                msg = await gw.store.get(mid)
                assert msg is not None and msg.state == State.SUBMITTED
            # Every message now waits for the receipt grace, as without the check.
            for mid in mids:
                await wait_until_waiting(gw, mid)
            assert sender.receipts == []
            warnings = [r for r in caplog.records if "does not answer query_sm" in r.getMessage()]
            assert len(warnings) == 1
            assert warnings[0].getMessage().startswith("sim: the carrier does not answer query_sm")
            assert len(carrier.seen("query")) == len(asked)


async def wait_until_waiting(gw: Gateway, mid: str) -> None:
    """Until the stored message waits for the receipt grace (its next check, already
    scheduled when the carrier refused, falls back to that)."""
    for _ in range(500):
        msg = await gw.store.get(mid)
        assert msg is not None and msg.state == State.SUBMITTED
        if msg.next_attempt_at == msg.deadline + gw.policy.receipt_grace:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{mid} still has a check scheduled")


@pytest.mark.node
async def test_rqueryfail_means_unknown_message_once_the_carrier_has_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = "447700940020"
    async with NodeCarrier(receipt_delay_ms=20, default_outcome="no_receipt") as carrier:
        caplog.set_level(logging.WARNING, logger="bounceback.gateway")
        async with (
            gateway(config(tmp_path, carrier.port, 0.2)) as gw,
            NodeSender() as sender,
        ):
            reply = await sender.connect(gw.port, system_id="acme", password="acme-pw")
            assert reply["status"] == 0, reply
            mid = (await sender.submit(n, "still on its way"))["message_id"]
            await wait_until(lambda: queries(gw).get("pending", 0) >= 1, timeout=15.0)
            # The carrier has answered a query_sm: from now on ESME_RQUERYFAIL is about
            # the message (the carrier lost it), not about the command.
            await carrier.configure(query_sm="queryfail")
            await wait_until(lambda: queries(gw).get("unknown", 0) >= 3, timeout=15.0)
            assert "unsupported" not in queries(gw)
            assert not [r for r in caplog.records if "does not answer" in r.getMessage()]
            msg = await gw.store.get(mid)
            assert msg is not None and msg.state == State.SUBMITTED
            assert msg.next_attempt_at is not None
            assert msg.next_attempt_at < msg.deadline + gw.policy.receipt_grace


@pytest.mark.node
async def test_rqueryfail_from_a_carrier_that_never_answered_means_unsupported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    numbers = [f"44770094003{i}" for i in range(4)]
    async with NodeCarrier(receipt_delay_ms=20, default_outcome="lost_receipt") as carrier:
        await carrier.configure(query_sm="queryfail")
        caplog.set_level(logging.WARNING, logger="bounceback.gateway")
        async with (
            gateway(config(tmp_path, carrier.port, 0.2)) as gw,
            NodeSender() as sender,
        ):
            reply = await sender.connect(gw.port, system_id="acme", password="acme-pw")
            assert reply["status"] == 0, reply
            mids = [(await sender.submit(n, "no answer"))["message_id"] for n in numbers]
            await wait_until(lambda: "unsupported" in queries(gw), timeout=15.0)
            # A query sent beside the one whose answer made the carrier "unsupported"
            # may still be on its way (to the carrier, or its answer back): wait until
            # every query the carrier saw is counted and has stayed so for a while.
            asked = await settled(lambda: len(carrier.seen("query")), lambda: queries(gw))
            await asyncio.sleep(1.0)  # several rounds of checks, had it answered
            # Two answers (two at a time go out) are read as "that message is unknown",
            # the third as "query_sm is not supported" (and so is any answer to a query
            # already on its way); nothing is asked after that.
            assert len(carrier.seen("query")) == asked
            counted = queries(gw)
            assert counted["unknown"] == 2 and set(counted) == {"unknown", "unsupported"}
            assert 3 <= asked == counted["unknown"] + counted["unsupported"] <= len(numbers)
            for mid in mids:
                await wait_until_waiting(gw, mid)
            warnings = [r for r in caplog.records if "does not answer query_sm" in r.getMessage()]
            assert [w.getMessage().split("; ")[0] for w in warnings] == [
                "sim: the carrier does not answer query_sm "
                "(ESME_RQUERYFAIL 3 times and never an answer)"
            ]
            assert sender.receipts == []
