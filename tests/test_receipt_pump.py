"""Receipts to senders as a pipeline (`bounceback.pump`): one receipt the sender does
not answer holds one window slot until its response timeout, never the account's
other receipts, and goes again after that timeout; with two receivers, new receipts
go to the one that answers.

node-smpp senders (`tests/node/sender.js`) told to leave deliver_sm unanswered; the
simulator as the carrier. What is checked is the order of events, not their timing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bounceback.gateway.shell import Gateway
from harness import gateway, simulator, wait_until, write_config
from peers import Line, NodeSender

pytestmark = pytest.mark.node

SIM = {"receipt_delay": 0.02, "id_format": "hex", "receipt_id_format": "dec"}
RESPONSE_TIMEOUT = 3.0  # the proxy's wait for a deliver_sm_resp
WAIT = 30.0  # how long a test waits for something that must happen (a hang guard)


def config(tmp: Path, carrier_port: int) -> Path:
    path = write_config(tmp, carrier_port)
    text = path.read_text().replace(
        "response_timeout = 5.0", f"response_timeout = {RESPONSE_TIMEOUT}"
    )
    path.write_text(text)
    return path


async def connect(sender: NodeSender, gw: Gateway, bind: str = "transceiver") -> None:
    reply = await sender.connect(gw.port, system_id="acme", password="acme-pw", bind=bind)
    assert reply["op"] == "bound" and reply["status"] == 0, reply


def receipt_of(mid: str) -> object:
    return lambda line: line.get("receipted_message_id") == mid


def position(sender: NodeSender, line: Line) -> int:
    return next(i for i, seen in enumerate(sender.lines) if seen is line)


async def test_one_unanswered_receipt_does_not_hold_back_the_others(tmp_path: Path) -> None:
    async with (
        simulator(SIM) as sim,
        gateway(config(tmp_path, sim.port or 0)) as gw,
        NodeSender() as sender,
    ):
        await connect(sender, gw)
        await sender.drop_deliver(count=1)
        first = await sender.submit("447700950000", "first")
        assert first["status"] == 0
        mid = first["message_id"]
        dropped = await sender.wait_for("deliver_sm", receipt_of(mid), WAIT)  # type: ignore[arg-type]
        assert dropped["dropped"] is True

        # More receipts for the account arrive while the first waits for its answer.
        others = await asyncio.gather(
            *(sender.submit(f"44770095000{i}", f"other {i}") for i in range(1, 6))
        )
        ids = [r["message_id"] for r in others]
        got = [await sender.wait_receipt_for(i, WAIT) for i in ids]
        assert all(r["resp_status"] == 0 for r in got)

        # After its timeout the first goes again, once, and is answered.
        first_two = await sender.wait_count("deliver_sm", 2, receipt_of(mid), WAIT)  # type: ignore[arg-type]
        again = first_two[1]
        assert again["dropped"] is False and again["resp_status"] == 0
        # The others were delivered while the first was still unanswered.
        assert all(position(sender, r) < position(sender, again) for r in got)

        await wait_until(lambda: gw.counters.get("receipts_to_senders", 0) == 6, WAIT)
        await sender.enquire_link()  # anything sent before this has arrived
        assert len(sender.seen("deliver_sm", receipt_of(mid))) == 2  # type: ignore[arg-type]
        assert len(sender.seen("deliver_sm")) == 7
        assert gw.counters.get("receipts_to_senders_unanswered") == 1


async def test_new_receipts_go_to_the_receiver_that_answers(tmp_path: Path) -> None:
    async with (
        simulator(SIM) as sim,
        gateway(config(tmp_path, sim.port or 0)) as gw,
        NodeSender(name="answering") as good,
        NodeSender(name="silent") as bad,
    ):
        await connect(good, gw)
        await connect(bad, gw, bind="receiver")
        await bad.set_silent()
        # Messages a few at a time until a receipt has gone to the silent receiver.
        ids: list[str] = []
        for burst in range(10):
            resps = await asyncio.gather(
                *(good.submit(f"447700960{burst}{i:02d}", f"message {i}") for i in range(4))
            )
            mids = [r["message_id"] for r in resps]
            ids += mids
            await wait_until(
                lambda mids=mids: all(  # type: ignore[misc]
                    good.seen("deliver_sm", receipt_of(m))  # type: ignore[arg-type]
                    or bad.seen("deliver_sm", receipt_of(m))  # type: ignore[arg-type]
                    for m in mids
                ),
                WAIT,
            )
            if bad.seen("deliver_sm"):
                break
        assert bad.seen("deliver_sm"), "no receipt went to the second receiver"
        # Its receipt goes unanswered until the response timeout.
        await wait_until(lambda: any(s.timeouts for s in gw.sessions["acme"]), WAIT)
        at_bad = len(bad.seen("deliver_sm"))

        for i in range(10):
            resp = await good.submit(f"4477009610{i:02d}", f"later {i}")
            ids.append(resp["message_id"])
        # Every receipt reaches the answering receiver, the unanswered ones included...
        for mid in ids:
            line = await good.wait_receipt_for(mid, WAIT)
            assert line["resp_status"] == 0
        await wait_until(lambda: gw.counters.get("receipts_to_senders", 0) == len(ids), WAIT)
        # ...and none went to the silent one after its first went unanswered.
        assert len(bad.seen("deliver_sm")) == at_bad
        assert bad.seen("enquire_link")  # it was asked whether it is still there
