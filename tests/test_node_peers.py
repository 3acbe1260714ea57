"""The node-smpp peers against each other, with no Bounceback code in between.

These prove that `tests/node/sender.js` and `tests/node/carrier.js` behave as
documented before other tests put the proxy between them.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from peers import OUTCOMES, NodeCarrier, NodeSender, PeerError, is_receipt

pytestmark = pytest.mark.node


async def bound_pair(carrier: NodeCarrier, sender: NodeSender, **kw: Any) -> None:
    reply = await sender.connect(carrier.port, **kw)
    assert reply["op"] == "bound" and reply["status"] == 0, reply


async def test_twenty_messages_get_matching_delivered_receipts() -> None:
    async with NodeCarrier() as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        numbers = [f"4477009{i:05d}" for i in range(20)]
        resps = await asyncio.gather(
            *(sender.submit(n, f"hello {i}", id=f"corr-{i}") for i, n in enumerate(numbers))
        )
        assert [r["op"] for r in resps] == ["submit_resp"] * 20
        assert [r["id"] for r in resps] == [f"corr-{i}" for i in range(20)]
        assert all(r["status"] == 0 for r in resps)
        ids = [r["message_id"] for r in resps]
        assert len(set(ids)) == 20 and all(i.isdigit() and len(i) == 10 for i in ids)

        receipts = await sender.wait_receipts(20)
        by_id = {r["receipted_message_id"]: r for r in receipts}
        assert set(by_id) == set(ids)
        for resp, number in zip(resps, numbers, strict=True):
            receipt = by_id[resp["message_id"]]
            assert receipt["esm_class"] == 0x04
            assert receipt["message_state"] == 2
            assert receipt["source_addr"] == number
            assert receipt["destination_addr"] == "Acme"
            assert receipt["receipt"]["id"] == resp["message_id"]
            assert receipt["receipt"]["stat"] == "DELIVRD"
            assert receipt["receipt"]["err"] == "000"
            assert receipt["receipt"]["dlvrd"] == "001"
            assert len(receipt["receipt"]["submit_date"]) == 10
            assert receipt["resp_status"] == 0

        submits = carrier.submits
        assert len(submits) == 20
        assert {s["system_id"] for s in submits} == {"acme"}
        assert sorted(s["message_id"] for s in submits) == sorted(ids)
        assert await carrier.counts() == dict.fromkeys(numbers, 1)
        acks = await carrier.wait_count("receipt_ack", 20)
        assert {a["status"] for a in acks} == {0}
        bind = carrier.seen("bind")[0]
        assert (bind["system_id"], bind["password"], bind["bind"]) == ("acme", "pw", "transceiver")
        assert bind["interface_version"] == 0x34


async def test_submit_many_keeps_a_window_and_reports_every_id() -> None:
    async with (
        NodeCarrier(receipt_delay_ms=5, resp_delay_ms=20) as carrier,
        NodeSender() as sender,
    ):
        await bound_pair(carrier, sender)
        summary = await sender.submit_many(60, window=7, destination_prefix="4477009")
        assert summary["op"] == "submit_many_done", summary
        assert (summary["sent"], summary["ok"], summary["aborted"]) == (60, 60, False)
        assert summary["statuses"] == {"0": 60}
        ids = summary["message_ids"]
        assert len(set(ids)) == 60 and None not in ids
        assert summary["destinations"][3] == "447700900003"
        assert summary["elapsed"] > 0
        receipts = await sender.wait_receipts(60)
        assert {r["receipted_message_id"] for r in receipts} == set(ids)
        # All on one session (sequence 1 was the bind), never more than the
        # window unanswered, and the window was used (the carrier answers late).
        submits = carrier.submits
        assert sorted(s["sequence_number"] for s in submits) == list(range(2, 62))
        assert max(s["outstanding"] for s in submits) == 7


async def test_scripted_sequence_absent_absent_deliver() -> None:
    number = "447700900002"
    async with NodeCarrier(receipt_delay_ms=5) as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        await carrier.script_outcomes(number, ["absent", "absent", "deliver"])
        stats: list[tuple[str, str, int, object]] = []
        for attempt in range(4):
            resp = await sender.submit(number, f"try {attempt}")
            assert resp["status"] == 0
            receipt = await sender.wait_receipt_for(resp["message_id"])
            rec = receipt["receipt"]
            stats.append(
                (rec["stat"], rec["err"], receipt["message_state"], receipt["network_error_code"])
            )
        assert stats == [
            ("UNDELIV", "006", 5, [3, 6]),
            ("UNDELIV", "006", 5, [3, 6]),
            ("DELIVRD", "000", 2, None),
            ("DELIVRD", "000", 2, None),  # script used up: the default outcome
        ]
        assert (await carrier.counts())[number] == 4
        assert [s["outcome"] for s in carrier.submits] == ["absent", "absent", "deliver", "deliver"]


async def test_every_outcome_word_matches_the_documented_table() -> None:
    words = list(OUTCOMES)
    numbers = {word: f"4479{i:08d}" for i, word in enumerate(words)}
    async with NodeCarrier(receipt_delay_ms=5) as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        reported = await carrier.cmd({"op": "outcomes"})
        assert set(reported["outcomes"]) == set(words)
        for word in words:
            await carrier.script_outcomes(numbers[word], [word])

        answered = [w for w in words if OUTCOMES[w].submit_status is not None]
        resps = dict(
            zip(
                answered,
                await asyncio.gather(*(sender.submit(numbers[w], f"{w} text") for w in answered)),
                strict=True,
            )
        )
        silent = await sender.send(
            {"op": "submit", "destination_addr": numbers["no_response"], "short_message": "x"}
        )
        expect_receipt = [w for w in words if OUTCOMES[w].stat is not None]
        # A final flush message, submitted after everything else, bounds the wait.
        flush = await sender.submit("447000000000", "flush")
        await sender.wait_receipt_for(flush["message_id"])
        receipts = await sender.wait_receipts(len(expect_receipt) + 1)

        by_id = {r["receipted_message_id"]: r for r in receipts}
        for word in answered:
            outcome = OUTCOMES[word]
            resp = resps[word]
            assert resp["status"] == outcome.submit_status, word
            if outcome.submit_status != 0:
                assert resp["message_id"] is None, word
                continue
            receipt = by_id.get(resp["message_id"])
            if outcome.stat is None:
                assert receipt is None, word
                continue
            assert receipt is not None, word
            assert receipt["receipt"]["stat"] == outcome.stat, word
            assert receipt["receipt"]["err"] == outcome.err, word
            assert receipt["message_state"] == outcome.message_state, word
            expected_nec = list(outcome.network_error) if outcome.network_error else None
            assert receipt["network_error_code"] == expected_nec, word
        assert len(sender.receipts) == len(expect_receipt) + 1
        assert sender.seen("submit_resp", lambda line: line.get("req") == silent) == []
        assert sum((await carrier.counts()).values()) == len(words) + 1


async def test_throttle_gives_0x58_and_no_receipt() -> None:
    async with NodeCarrier() as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        await carrier.script_outcomes("447700900009", ["throttle", "submit_fail"])
        throttled = await sender.submit("447700900009", "one")
        failed = await sender.submit("447700900009", "two")
        ok = await sender.submit("447700900010", "three")
        assert (throttled["status"], throttled["message_id"]) == (0x58, None)
        assert (failed["status"], failed["message_id"]) == (0x45, None)
        assert ok["status"] == 0
        await sender.wait_receipt_for(ok["message_id"])
        assert [r["receipted_message_id"] for r in sender.receipts] == [ok["message_id"]]
        assert [s["status"] for s in carrier.submits] == [0x58, 0x45, 0]


async def test_hex_ids_in_resp_and_decimal_in_receipt() -> None:
    async with NodeCarrier(hex_ids=True) as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        resp = await sender.submit("447700900001", "hex please")
        hex_id = resp["message_id"]
        assert hex_id == hex_id.lower() and any(c in "abcdef" for c in hex_id)
        receipt = (await sender.wait_receipts(1))[0]
        decimal = receipt["receipted_message_id"]
        assert decimal.isdigit() and decimal != hex_id
        assert int(hex_id, 16) == int(decimal)
        assert receipt["receipt"]["id"] == decimal
        # The carrier recognises either form in query_sm.
        by_hex = await sender.query(hex_id)
        by_dec = await sender.query(decimal)
        assert by_hex["status"] == by_dec["status"] == 0
        assert by_hex["message_state"] == by_dec["message_state"] == 2


async def test_text_only_receipts_and_raw_fields() -> None:
    async with NodeCarrier(receipt_tlvs=False) as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        resp = await sender.submit(
            "447700900001",
            "Привет, мир",
            data_coding=8,
            validity_period="000001000000000R",
        )
        receipt = (await sender.wait_receipts(1))[0]
        assert receipt["receipted_message_id"] is None
        assert receipt["message_state"] is None
        assert receipt["receipt"]["id"] == resp["message_id"]
        assert receipt["receipt"]["text"] == "??????, ???"
        submit = carrier.submits[0]
        assert submit["data_coding"] == 8
        assert submit["short_message"] == "Привет, мир"
        assert submit["short_message_hex"] == "Привет, мир".encode("utf-16-be").hex()
        assert submit["validity_period"] == "000001000000000R"


async def test_registered_delivery_selects_receipts() -> None:
    async with NodeCarrier(receipt_delay_ms=5) as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        await carrier.script_outcomes("447700900003", ["absent"])
        none = await sender.submit("447700900001", "a", registered_delivery=0)
        ok_fail_only = await sender.submit("447700900002", "b", registered_delivery=2)
        bad_fail_only = await sender.submit("447700900003", "c", registered_delivery=2)
        last = await sender.submit("447700900004", "d", registered_delivery=1)
        await sender.wait_receipt_for(last["message_id"])
        got = {r["receipted_message_id"] for r in sender.receipts}
        assert got == {bad_fail_only["message_id"], last["message_id"]}
        assert none["message_id"] not in got and ok_fail_only["message_id"] not in got
        assert [s["registered_delivery"] for s in carrier.submits] == [0, 2, 2, 1]


async def test_receipt_waits_for_a_receiver_bind() -> None:
    async with (
        NodeCarrier(receipt_delay_ms=5) as carrier,
        NodeSender(name="tx") as tx,
        NodeSender(name="rx") as rx,
    ):
        await bound_pair(carrier, tx, bind="transmitter")
        resp = await tx.submit("447700900001", "later")
        pending = await carrier.wait_for("receipt_pending")
        assert pending["message_id"] == resp["message_id"]
        await bound_pair(carrier, rx, bind="receiver")
        receipt = (await rx.wait_receipts(1))[0]
        assert receipt["receipted_message_id"] == resp["message_id"]
        assert tx.receipts == []
        # A receiver cannot submit.
        refused = await rx.submit("447700900001", "no")
        assert refused["status"] == 0x04


async def test_receipt_is_retried_after_a_temporary_refusal() -> None:
    async with NodeCarrier(receipt_delay_ms=5, retry_ms=20) as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        await sender.set_deliver_status(0x64, count=1)
        resp = await sender.submit("447700900001", "retry me")
        first, second = await sender.wait_receipts(2)
        assert first["receipted_message_id"] == second["receipted_message_id"] == resp["message_id"]
        assert (first["resp_status"], second["resp_status"]) == (0x64, 0)
        acks = await carrier.wait_count("receipt_ack", 2)
        assert [a["status"] for a in acks] == [0x64, 0]


async def test_kick_closes_sessions_and_a_new_bind_works() -> None:
    async with NodeCarrier() as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        kicked = await carrier.kick()
        assert kicked["sessions"] == 1
        await sender.wait_for("closed")
        after = await sender.submit("447700900001", "dropped")
        assert after == {"op": "error", "message": "not connected", "req": after["req"]}
        await bound_pair(carrier, sender)
        resp = await sender.submit("447700900001", "again")
        assert resp["status"] == 0
        assert len(carrier.seen("bind")) == 2


async def test_graceful_kick_sends_unbind() -> None:
    async with NodeCarrier() as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        await carrier.kick(graceful=True)
        await sender.wait_for("unbind")
        await sender.wait_for("closed")


async def test_alert_notification_reaches_the_receiver() -> None:
    async with NodeCarrier() as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        sent = await carrier.alert("447700900005", system_id="acme")
        assert sent["sessions"] == 1
        alert = await sender.wait_for("alert_notification")
        assert alert["source_addr"] == "447700900005"
        assert alert["ms_availability_status"] == 0
        assert (await carrier.alert("447700900005", system_id="other"))["sessions"] == 0


async def test_query_and_cancel_before_the_receipt() -> None:
    async with NodeCarrier(default_outcome="no_receipt") as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        resp = await sender.submit("447700900001", "cancel me")
        mid = resp["message_id"]
        query = await sender.query(mid)
        assert (query["status"], query["message_state"], query["final_date"]) == (0, 1, "")
        wrong = await sender.cancel(mid, destination_addr="447700900999")
        assert wrong["status"] == 0x11
        cancel = await sender.cancel(mid, destination_addr="447700900001")
        assert cancel["status"] == 0
        query = await sender.query(mid)
        assert query["message_state"] == 4 and len(query["final_date"]) == 16
        assert (await sender.cancel(mid))["status"] == 0x11
        assert (await sender.query("999"))["status"] == 0x0C
        assert carrier.seen("receipt") == []


async def test_enquire_link_and_unbind() -> None:
    async with NodeCarrier() as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        assert (await sender.enquire_link())["status"] == 0
        await carrier.wait_for("enquire_link")
        unbind = await sender.unbind()
        assert (unbind["op"], unbind["status"]) == ("unbind_resp", 0)
        await sender.wait_for("closed")
        closed = await carrier.wait_for("session_closed")
        assert closed["system_id"] == "acme"


async def test_bind_refused_with_wrong_password() -> None:
    async with NodeCarrier(password="secret") as carrier, NodeSender() as sender:
        refused = await sender.connect(carrier.port, password="wrong")
        assert (refused["op"], refused["status"]) == ("bound", 0x0E)
        await sender.disconnect()
        accepted = await sender.connect(carrier.port, password="secret")
        assert (accepted["op"], accepted["status"]) == ("bound", 0)


async def test_connection_refused_is_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with NodeSender() as sender:
        reply = await sender.connect(port)
        assert reply["op"] == "error" and "ECONNREFUSED" in reply["message"]
        await sender.wait_for("closed")


async def test_receipts_predicate_and_peer_exit_fails_fast() -> None:
    sender = NodeSender()
    await sender.start()
    try:
        await sender.cmd({"op": "exit"})
        with pytest.raises(PeerError, match="exited"):
            await sender.wait_for("deliver_sm", timeout=30)
    finally:
        await sender.close()
    assert sender.returncode == 0
    assert not is_receipt({"op": "deliver_sm", "esm_class": 0})
    assert is_receipt({"op": "deliver_sm", "esm_class": 0x44})


async def test_missing_node_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(PeerError, match="not on PATH"):
        await NodeSender().start()


async def test_query_sm_finds_a_lost_receipt_and_can_be_refused() -> None:
    async with NodeCarrier(receipt_delay_ms=5) as carrier, NodeSender() as sender:
        await bound_pair(carrier, sender)
        await carrier.script_outcomes("447700900001", ["lost_receipt"])
        mid = (await sender.submit("447700900001", "lost"))["message_id"]
        await carrier.wait_for("receipt_lost", lambda line: line["message_id"] == mid)
        flush = await sender.submit("447700900002", "flush")
        await sender.wait_receipt_for(flush["message_id"])
        query = await sender.query(mid)
        assert (query["status"], query["message_state"], query["error_code"]) == (0, 2, 0)
        assert len(query["final_date"]) == 16
        # Delivered, and no receipt ever sent for it.
        assert [r["receipted_message_id"] for r in sender.receipts] == [flush["message_id"]]

        # The switch for carriers that do not answer query_sm.
        for answer, status in (("generic_nack", 0x03), ("invcmdid", 0x03), ("queryfail", 0x67)):
            assert (await carrier.configure(query_sm=answer))["query_sm"] == answer
            assert (await sender.query(mid))["status"] == status, answer
        queries = carrier.seen("query")
        assert [q["answer"] for q in queries] == ["answer", "generic_nack", "invcmdid", "queryfail"]
        assert all(q["found"] and q["message_id"] == mid for q in queries)
        refused = await carrier.cmd({"op": "config", "query_sm": "sometimes"})
        assert refused["op"] == "error" and "query_sm must be one of" in refused["message"]
