"""The carrier simulator, driven by independent ESMEs.

The main paths are driven with smpplib (a blocking client run in a worker thread
while the simulator runs in the test's event loop). The PDUs smpplib cannot send
(submit_multi, data_sm, cancel_sm, replace_sm, a submit on a receiver bind) go through
a small client built on the project's own session class.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
import smpplib.exceptions
from bounceback.smpp.session import SmppSession
from bounceback.smpp.simulator import (
    OUTCOMES,
    CarrierSimulator,
    Rule,
    Scenario,
    ScenarioError,
    load_scenario,
)
from smppcodecs.constants import CommandStatus, MessageState, Tag
from smppcodecs.pdu import (
    AlertNotification,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CancelSm,
    DataSm,
    DataSmResp,
    DeliverSm,
    DistributionList,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    SmeAddress,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
)
from smppcodecs.receipt import parse_receipt_text

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "scenarios"
HANG_GUARD = 10.0  # seconds; only stops a broken test from hanging, never asserted


@asynccontextmanager
async def running(scenario: Scenario, **kwargs: Any) -> AsyncIterator[CarrierSimulator]:
    sim = CarrierSimulator(scenario, **kwargs)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def fast(**fields: Any) -> Scenario:
    return Scenario(receipt_delay=0.01, **fields)


# --------------------------------------------------------------------------- smpplib ESME


class Esme:
    """An smpplib client; every method blocks, so tests call them via to_thread."""

    def __init__(self, port: int) -> None:
        self.client = smpplib.client.Client(
            "127.0.0.1", port, timeout=2, allow_unknown_opt_params=True
        )
        self.events: list[tuple[str, Any]] = []
        self.client.set_message_sent_handler(self._sent)
        self.client.set_message_received_handler(self._received)
        self.client.set_error_pdu_handler(lambda pdu: None)

    def _sent(self, pdu: Any, **_: Any) -> None:
        self.events.append(("resp", pdu))

    def _received(self, pdu: Any, **_: Any) -> None:
        self.events.append((pdu.command, pdu))

    def bind(self, mode: str = "transceiver", system_id: str = "acme", password: str = "pw") -> Any:
        self.client.connect()
        binder: Callable[..., Any] = getattr(self.client, f"bind_{mode}")
        return binder(system_id=system_id, password=password)

    def submit(
        self, number: str, text: bytes = b"hello world", registered_delivery: int = 1
    ) -> None:
        self.client.send_message(
            source_addr_ton=5,
            source_addr="Acme",
            dest_addr_ton=1,
            destination_addr=number,
            short_message=text,
            registered_delivery=registered_delivery,
        )

    def collect(self, resps: int = 0, receipts: int = 0, alerts: int = 0) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline and (
            len(self.of("resp")) < resps
            or len(self.of("deliver_sm")) < receipts
            or len(self.of("alert_notification")) < alerts
        ):
            self.client.read_once()
        return self.events

    def of(self, kind: str) -> list[Any]:
        return [pdu for k, pdu in self.events if k == kind]

    def close(self) -> None:
        self.client.disconnect()


async def smpplib_run(port: int, script: Callable[[Esme], Any]) -> Any:
    def body() -> Any:
        esme = Esme(port)
        try:
            return script(esme)
        finally:
            esme.close()

    return await asyncio.to_thread(body)


def receipt_fields(pdu: Any) -> tuple[str, str, str | None]:
    """(receipted_message_id TLV, text id, text stat) of an smpplib deliver_sm."""
    parsed = parse_receipt_text(pdu.short_message.decode("ascii"))
    return pdu.receipted_message_id.decode("ascii"), parsed.text_id or "", parsed.stat


# --------------------------------------------------------------------------- codec ESME


class CodecEsme(SmppSession):
    """A client on the project's session class: records what the SMSC sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer, name="test-esme")
        self.inbox: asyncio.Queue[Pdu] = asyncio.Queue()
        self.answer = True

    def handle_request(self, pdu: Pdu) -> None:
        if isinstance(pdu, DeliverSm) and self.answer:
            self.send(pdu.response())
        self.inbox.put_nowait(pdu)

    async def next(self) -> Pdu:
        return await asyncio.wait_for(self.inbox.get(), HANG_GUARD)


@asynccontextmanager
async def codec_esme(port: int, bind: Pdu | None = None) -> AsyncIterator[CodecEsme]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    esme = CodecEsme(reader, writer)
    task = asyncio.create_task(esme.run())
    try:
        if bind is not None:
            resp = await esme.request(bind)
            assert resp.command_status == 0
        yield esme
    finally:
        await esme.close()
        await asyncio.wait_for(task, HANG_GUARD)


def msg_id(resp: Pdu) -> str:
    assert isinstance(resp, SubmitSmResp | DataSmResp | SubmitMultiResp), resp
    assert resp.command_status == 0, resp
    return resp.message_id


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a condition the simulator reaches on its own (polled)."""
    for _ in range(int(HANG_GUARD / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never became true")


def trx(system_id: str = "raw") -> BindTransceiver:
    return BindTransceiver(sequence_number=0, system_id=system_id, password="pw")


def submit(number: str, registered_delivery: int = 1, text: bytes = b"hi") -> SubmitSm:
    return SubmitSm(
        sequence_number=0,
        source_addr="Acme",
        destination_addr=number,
        short_message=text,
        registered_delivery=registered_delivery,
    )


# --------------------------------------------------------------------------- binds


async def test_binds_in_every_mode() -> None:
    async with running(fast()) as sim:
        for mode in ("transmitter", "receiver", "transceiver"):
            resp = await smpplib_run(sim.port or 0, functools.partial(Esme.bind, mode=mode))
            assert resp.status == 0
            assert resp.system_id == b"SIMSMSC"
        assert len(sim.sessions) <= 3


async def test_credentials_are_checked() -> None:
    async with running(fast(credentials={"acme": "secret"})) as sim:
        port = sim.port or 0

        def attempt(system_id: str, password: str) -> Callable[[Esme], int]:
            def script(esme: Esme) -> int:
                try:
                    return int(esme.bind("transceiver", system_id, password).status)
                except smpplib.exceptions.PDUError as exc:
                    return int(exc.args[1])

            return script

        assert await smpplib_run(port, attempt("acme", "secret")) == 0
        wrong = await smpplib_run(port, attempt("acme", "wrong"))
        assert wrong == CommandStatus.ESME_RINVPASWD
        unknown = await smpplib_run(port, attempt("nobody", "secret"))
        assert unknown == CommandStatus.ESME_RINVSYSID


async def test_bind_state_is_enforced() -> None:
    async with running(fast()) as sim:
        port = sim.port or 0
        rx = BindReceiver(sequence_number=0, system_id="raw", password="pw")
        async with codec_esme(port, rx) as esme:
            resp = await esme.request(submit("1"))
            assert resp.command_status == CommandStatus.ESME_RINVBNDSTS
            again = await esme.request(trx())
            assert again.command_status == CommandStatus.ESME_RALYBND
        async with codec_esme(port) as esme:  # not bound at all
            resp = await esme.request(submit("1"))
            assert resp.command_status == CommandStatus.ESME_RINVBNDSTS
        assert sim.submissions == []


# --------------------------------------------------------------------------- receipts


async def test_deliver_gives_a_delivrd_receipt_with_the_response_id() -> None:
    async with running(fast()) as sim:

        def script(esme: Esme) -> list[tuple[str, Any]]:
            esme.bind()
            esme.submit("447700900001")
            return esme.collect(resps=1, receipts=1)

        events = await smpplib_run(sim.port or 0, script)
        (resp,) = [pdu for kind, pdu in events if kind == "resp"]
        (receipt,) = [pdu for kind, pdu in events if kind == "deliver_sm"]
        message_id = resp.message_id.decode("ascii")
        assert resp.status == 0
        assert receipt.esm_class == 0x04
        assert receipt.message_state == MessageState.DELIVERED
        assert receipt_fields(receipt) == (message_id, message_id, "DELIVRD")
        parsed = parse_receipt_text(receipt.short_message.decode("ascii"))
        assert parsed.err == "000"
        assert parsed.text == "hello world"
        # A receipt travels back: from the handset to the sender.
        assert receipt.source_addr == b"447700900001"
        assert receipt.destination_addr == b"Acme"
        assert sim.count_for("447700900001") == 1
        (record,) = sim.submissions
        assert (record.system_id, record.destination, record.message_id) == (
            "acme",
            "447700900001",
            message_id,
        )
        assert (record.attempt, record.outcome) == (1, "deliver")


async def test_absent_absent_deliver_over_three_submissions() -> None:
    number = "447700900002"
    scenario = fast(rules=[Rule(number=number, outcomes=["absent", "absent", "deliver"])])
    async with running(scenario) as sim:

        def script(esme: Esme) -> list[tuple[str, Any]]:
            esme.bind()
            for _ in range(3):
                esme.submit(number)
            return esme.collect(resps=3, receipts=3)

        events = await smpplib_run(sim.port or 0, script)
        resp_ids = [pdu.message_id.decode() for kind, pdu in events if kind == "resp"]
        receipts = [pdu for kind, pdu in events if kind == "deliver_sm"]
        assert len(set(resp_ids)) == 3
        by_id = {receipt_fields(r)[0]: r for r in receipts}
        stats = [receipt_fields(by_id[mid])[2] for mid in resp_ids]
        assert stats == ["UNDELIV", "UNDELIV", "DELIVRD"]
        first = by_id[resp_ids[0]]
        assert first.network_error_code == b"\x03\x00\x06"
        assert first.message_state == MessageState.UNDELIVERABLE
        assert parse_receipt_text(first.short_message.decode()).err == "006"
        assert sim.count_for(number) == 3
        assert [r.attempt for r in sim.submissions] == [1, 2, 3]
        assert [r.outcome for r in sim.submissions] == ["absent", "absent", "deliver"]


async def test_last_outcome_repeats_and_prefix_rules_match() -> None:
    scenario = fast(
        default=["unknown"],
        rules=[
            Rule(prefix="4477", outcomes=["busy", "barred"]),
            Rule(prefix="447799", outcomes=["system_failure"]),
        ],
    )
    async with running(scenario) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            for number in ("447700", "447700", "447700", "447799", "33"):
                resp = await esme.request(submit(number))
                assert resp.command_status == 0
        assert [r.outcome for r in sim.submissions] == [
            "busy",
            "barred",
            "barred",
            "system_failure",  # the longer prefix wins
            "unknown",
        ]


async def test_throttle_answers_0x58_and_sends_no_receipt() -> None:
    scenario = fast(rules=[Rule(number="1", outcomes=["throttle"])])
    async with running(scenario) as sim:

        def script(esme: Esme) -> list[tuple[str, Any]]:
            esme.bind()
            esme.submit("1")
            esme.submit("2")  # delivered: its receipt comes after any for "1" would
            return esme.collect(resps=2, receipts=1)

        events = await smpplib_run(sim.port or 0, script)
        resps = [pdu for kind, pdu in events if kind == "resp"]
        assert [int(r.status) for r in resps] == [0x58, 0]
        (receipt,) = [pdu for kind, pdu in events if kind == "deliver_sm"]
        assert receipt_fields(receipt)[0] == resps[1].message_id.decode()
        assert sim.submissions[0].message_id is None
        assert sim.count_for("1") == 1


@pytest.mark.parametrize("word", ["queue_full", "submit_fail", "invalid_dest"])
async def test_submit_errors(word: str) -> None:
    async with running(fast(default=[word])) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            resp = await esme.request(submit("1"))
        assert resp.command_status == OUTCOMES[word].status
        assert resp.command_status != 0


@pytest.mark.parametrize(
    ("id_format", "receipt_id_format", "resp_base", "receipt_base"),
    [("hex", "dec", 16, 10), ("dec", "hex", 10, 16), ("hex", "same", 16, 16)],
)
async def test_receipt_id_formats(
    id_format: str, receipt_id_format: str, resp_base: int, receipt_base: int
) -> None:
    scenario = fast(id_format=id_format, receipt_id_format=receipt_id_format)
    async with running(scenario) as sim:

        def script(esme: Esme) -> list[tuple[str, Any]]:
            esme.bind()
            esme.submit("1")
            return esme.collect(resps=1, receipts=1)

        events = await smpplib_run(sim.port or 0, script)
        resp_id = next(pdu for kind, pdu in events if kind == "resp").message_id.decode()
        receipt = next(pdu for kind, pdu in events if kind == "deliver_sm")
        tlv_id, text_id, _stat = receipt_fields(receipt)
        assert tlv_id == text_id
        assert int(resp_id, resp_base) == int(tlv_id, receipt_base)
        if resp_base != receipt_base:
            assert resp_id != tlv_id
        if id_format == "hex":
            assert not resp_id.isdigit()  # hex ids carry a letter: never mistaken for decimal


async def test_receipt_first_sends_the_receipt_before_the_response() -> None:
    async with running(fast(default=["receipt_first"])) as sim:

        def script(esme: Esme) -> list[tuple[str, Any]]:
            esme.bind()
            esme.submit("1")
            return esme.collect(resps=1, receipts=1)

        events = await smpplib_run(sim.port or 0, script)
        kinds = [kind for kind, _pdu in events]
        assert kinds == ["deliver_sm", "resp"]
        assert receipt_fields(events[0][1])[0] == events[1][1].message_id.decode()


async def test_enroute_sends_an_intermediate_receipt_then_delivrd() -> None:
    async with running(fast(default=["enroute"])) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            resp = await esme.request(submit("1"))
            first, second = await esme.next(), await esme.next()
        assert isinstance(first, DeliverSm) and isinstance(second, DeliverSm)
        assert (first.esm_class, first.tlvs[Tag.message_state]) == (0x20, MessageState.ENROUTE)
        assert (second.esm_class, second.tlvs[Tag.message_state]) == (0x04, MessageState.DELIVERED)
        assert first.tlvs[Tag.receipted_message_id] == msg_id(resp)


@pytest.mark.parametrize(
    ("style", "has_text", "has_tlvs"), [("text", True, False), ("tlv", False, True)]
)
async def test_receipt_styles(style: str, has_text: bool, has_tlvs: bool) -> None:
    async with running(fast(receipt_style=style, default=["absent"])) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            await esme.request(submit("1"))
            receipt = await esme.next()
        assert isinstance(receipt, DeliverSm)
        assert bool(receipt.short_message) is has_text
        assert (Tag.receipted_message_id in receipt.tlvs) is has_tlvs
        assert (Tag.network_error_code in receipt.tlvs) is has_tlvs


async def test_registered_delivery_is_honoured() -> None:
    scenario = fast(rules=[Rule(prefix="9", outcomes=["absent"])])
    async with running(scenario) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            await esme.request(submit("1", registered_delivery=0))  # none
            await esme.request(submit("2", registered_delivery=2))  # failures only: none
            await esme.request(submit("91", registered_delivery=2))  # failure: yes
            last = await esme.request(submit("3", registered_delivery=1))
            receipts = [await esme.next(), await esme.next()]
        ids = [r.tlvs[Tag.receipted_message_id] for r in receipts if isinstance(r, DeliverSm)]
        assert ids[1] == msg_id(last)
        assert [r.tlvs[Tag.message_state] for r in receipts if isinstance(r, DeliverSm)] == [
            MessageState.UNDELIVERABLE,
            MessageState.DELIVERED,
        ]
        assert sim.receipts_sent == 2


async def test_receipts_go_to_a_receiver_of_the_same_system_id() -> None:
    async with running(fast()) as sim:
        port = sim.port or 0
        tx = BindTransmitter(sequence_number=0, system_id="acme", password="pw")
        rx = BindReceiver(sequence_number=0, system_id="acme", password="pw")
        other = BindReceiver(sequence_number=0, system_id="other", password="pw")
        async with (
            codec_esme(port, tx) as sender,
            codec_esme(port, rx) as receiver,
            codec_esme(port, other) as stranger,
        ):
            resp = await sender.request(submit("1"))
            receipt = await receiver.next()
            assert stranger.inbox.empty()
        assert isinstance(receipt, DeliverSm)
        assert receipt.tlvs[Tag.receipted_message_id] == msg_id(resp)


async def test_receipts_wait_for_a_receiver_and_survive_a_restart() -> None:
    async with running(fast()) as sim:
        port = sim.port or 0
        tx = BindTransmitter(sequence_number=0, system_id="acme", password="pw")
        async with codec_esme(port, tx) as sender:
            resp = await sender.request(submit("1"))
        # No receiver yet: the receipt waits.
        await until(lambda: sim.backlog("acme") == 1)
        rx = BindTransceiver(sequence_number=0, system_id="acme", password="pw")
        async with codec_esme(port) as silent:
            silent.answer = False  # takes the receipt but never answers it
            await silent.request(rx)
            lost = await silent.next()
            await sim.disconnect_all()  # carrier restart while the receipt is unanswered
            await asyncio.wait_for(silent.closed.wait(), HANG_GUARD)
        await until(lambda: sim.backlog("acme") == 1)
        async with codec_esme(port, rx) as receiver:
            again = await receiver.next()
        assert isinstance(lost, DeliverSm) and isinstance(again, DeliverSm)
        expected = msg_id(resp)
        assert lost.tlvs[Tag.receipted_message_id] == expected
        assert again.tlvs[Tag.receipted_message_id] == expected
        assert sim.receipts_sent == 2


async def test_an_unanswered_receipt_is_sent_again_on_the_same_bind() -> None:
    async with running(fast()) as sim:
        port = sim.port or 0
        trx = BindTransceiver(sequence_number=0, system_id="acme", password="pw")
        async with codec_esme(port) as silent:
            silent.answer = False  # takes the receipt but never answers it
            await silent.request(trx)
            for session in sim._sessions:
                session.response_timeout = 0.1  # gives up on the deliver_sm soon
            resp = await silent.request(submit("1"))
            first = await silent.next()
            again = await silent.next()  # after its timeout and the retry delay
            assert sim.receipts_sent == 2
            (session,) = sim._sessions
            assert session.timeouts >= 1
            assert not silent.closed.is_set()
        assert isinstance(first, DeliverSm) and isinstance(again, DeliverSm)
        assert first.tlvs[Tag.receipted_message_id] == msg_id(resp)
        assert again.tlvs[Tag.receipted_message_id] == msg_id(resp)
        assert again.sequence_number != first.sequence_number


# --------------------------------------------------------------------------- other outcomes


async def test_no_response_leaves_the_submission_unanswered() -> None:
    scenario = fast(rules=[Rule(number="1", outcomes=["no_response"])])
    async with running(scenario) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            silent = asyncio.create_task(esme.request(submit("1")))
            answered = await esme.request(submit("2"))
            assert answered.command_status == 0
            assert not silent.done()  # the later submission was answered first
            silent.cancel()
        assert sim.count_for("1") == 1


async def test_no_receipt_is_accepted_and_stays_enroute() -> None:
    scenario = fast(rules=[Rule(number="1", outcomes=["no_receipt"])])
    async with running(scenario) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            silent = await esme.request(submit("1"))
            delivered = await esme.request(submit("2"))
            # Receipts leave in order, so the second message's receipt coming first
            # proves none was sent for the first.
            receipt = await esme.next()
            query = await esme.request(QuerySm(sequence_number=0, message_id=msg_id(silent)))
        assert isinstance(receipt, DeliverSm)
        assert receipt.tlvs[Tag.receipted_message_id] == msg_id(delivered)
        assert isinstance(query, QuerySmResp)
        assert query.message_state == MessageState.ENROUTE
        assert sim.receipts_sent == 1


async def test_lost_receipt_is_delivered_but_only_query_sm_says_so() -> None:
    scenario = fast(rules=[Rule(number="1", outcomes=["lost_receipt"])])
    async with running(scenario) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            lost = await esme.request(submit("1"))
            delivered = await esme.request(submit("2"))
            # Receipts leave in order: the second message's receipt coming first proves
            # none was sent for the first, which by then has reached its final state.
            receipt = await esme.next()
            query = await esme.request(QuerySm(sequence_number=0, message_id=msg_id(lost)))
        assert isinstance(receipt, DeliverSm)
        assert receipt.tlvs[Tag.receipted_message_id] == msg_id(delivered)
        assert isinstance(query, QuerySmResp)
        assert (query.message_state, query.error_code) == (MessageState.DELIVERED, 0)
        assert len(query.final_date) == 16
        assert sim.receipts_sent == 1


async def test_alert_after_an_absent_receipt() -> None:
    number = "447700900003"
    scenario = fast(rules=[Rule(number=number, outcomes=["absent"], alert_after=0.01)])
    async with running(scenario) as sim:

        def script(esme: Esme) -> list[tuple[str, Any]]:
            esme.bind()
            esme.submit(number)
            return esme.collect(resps=1, receipts=1, alerts=1)

        events = await smpplib_run(sim.port or 0, script)
        kinds = [kind for kind, _ in events]
        assert kinds == ["resp", "deliver_sm", "alert_notification"]
        alert = events[2][1]
        assert alert.source_addr == number.encode()
        assert alert.esme_addr == b"Acme"
        assert alert.ms_availability_status == 0
        assert sim.alerts_sent == 1


async def test_send_alert_on_demand() -> None:
    async with running(fast()) as sim:
        async with codec_esme(sim.port or 0, trx("acme")) as esme:
            await esme.request(submit("5"))
            await esme.next()  # the receipt
            assert await sim.send_alert("5") == 1
            alert = await esme.next()
        assert isinstance(alert, AlertNotification)
        assert (alert.source_addr, alert.esme_addr) == ("5", "Acme")
        assert alert.tlvs[Tag.ms_availability_status] == 0


async def test_throughput_limit_answers_throttled() -> None:
    async with running(fast(throughput=0.001)) as sim:  # one token, the next in 1000 s
        async with codec_esme(sim.port or 0, trx()) as esme:
            first = await esme.request(submit("1"))
            second = await esme.request(submit("1"))
        assert first.command_status == 0
        assert second.command_status == CommandStatus.ESME_RTHROTTLED
        assert sim.rate_limited == 1
        assert sim.count_for("1") == 1  # the refused one consumed no outcome


# --------------------------------------------------------------------------- other PDUs


async def test_query_cancel_and_replace() -> None:
    async with (
        running(Scenario(receipt_delay=600.0)) as sim,  # receipts stay pending
        codec_esme(sim.port or 0, trx()) as esme,
    ):
        mid = msg_id(await esme.request(submit("1")))
        query = await esme.request(QuerySm(sequence_number=0, message_id=mid))
        assert isinstance(query, QuerySmResp)
        assert (query.message_state, query.final_date) == (MessageState.ENROUTE, "")
        replace = await esme.request(
            ReplaceSm(sequence_number=0, message_id=mid, short_message=b"new")
        )
        assert replace.command_status == 0
        cancel = await esme.request(CancelSm(sequence_number=0, message_id=mid))
        assert cancel.command_status == 0
        query = await esme.request(QuerySm(sequence_number=0, message_id=mid.lower()))
        assert isinstance(query, QuerySmResp)
        assert query.message_state == MessageState.DELETED
        assert len(query.final_date) == 16
        again = await esme.request(CancelSm(sequence_number=0, message_id=mid))
        assert again.command_status == CommandStatus.ESME_RCANCELFAIL
        replace = await esme.request(
            ReplaceSm(sequence_number=0, message_id=mid, short_message=b"late")
        )
        assert replace.command_status == CommandStatus.ESME_RREPLACEFAIL
        unknown = await esme.request(QuerySm(sequence_number=0, message_id="nope"))
        assert unknown.command_status == CommandStatus.ESME_RINVMSGID


async def test_query_after_the_final_receipt() -> None:
    async with running(fast(default=["barred"])) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            resp = await esme.request(submit("1"))
            await esme.next()
            query = await esme.request(QuerySm(sequence_number=0, message_id=msg_id(resp)))
        assert isinstance(query, QuerySmResp)
        assert (query.message_state, query.error_code) == (MessageState.UNDELIVERABLE, 13)


async def test_data_sm_gets_an_id_and_a_receipt() -> None:
    async with running(fast()) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            resp = await esme.request(
                DataSm(
                    sequence_number=0,
                    source_addr="Acme",
                    destination_addr="447700900004",
                    registered_delivery=1,
                    tlvs={Tag.message_payload: b"payload text"},
                )
            )
            receipt = await esme.next()
        assert resp.command_status == 0
        assert isinstance(receipt, DeliverSm)
        assert receipt.tlvs[Tag.receipted_message_id] == msg_id(resp)
        assert b"text:payload text" in receipt.short_message
        assert sim.submissions[0].command == "data_sm"


async def test_submit_multi_scripts_each_destination() -> None:
    scenario = fast(rules=[Rule(number="2", outcomes=["invalid_dest"])])
    async with running(scenario) as sim:
        async with codec_esme(sim.port or 0, trx()) as esme:
            resp = await esme.request(
                SubmitMulti(
                    sequence_number=0,
                    source_addr="Acme",
                    dest_addresses=[
                        SmeAddress(destination_addr="1"),
                        SmeAddress(destination_addr="2"),
                        DistributionList(dl_name="friends"),
                    ],
                    registered_delivery=1,
                    short_message=b"to many",
                )
            )
            receipt = await esme.next()
        assert isinstance(resp, SubmitMultiResp)
        assert [(u.destination_addr, u.error_status_code) for u in resp.unsuccess_smes] == [
            ("2", CommandStatus.ESME_RINVDSTADR),
            ("friends", CommandStatus.ESME_RCNTSUBDL),
        ]
        assert isinstance(receipt, DeliverSm)
        assert (receipt.source_addr, receipt.tlvs[Tag.receipted_message_id]) == (
            "1",
            resp.message_id,
        )
        assert [r.destination for r in sim.submissions] == ["1", "2"]


# --------------------------------------------------------------------------- logging


async def test_one_log_line_and_one_json_line_per_submission(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_path = tmp_path / "submissions.jsonl"
    caplog.set_level(logging.INFO, logger="bounceback.simulator")
    scenario = fast(rules=[Rule(number="2", outcomes=["throttle"])])
    async with (
        running(scenario, log_path=log_path) as sim,
        codec_esme(sim.port or 0, trx()) as esme,
    ):
        for number in ("1", "2", "1"):
            await esme.request(submit(number))
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(e["destination"], e["attempt"], e["outcome"]) for e in lines] == [
        ("1", 1, "deliver"),
        ("2", 1, "throttle"),
        ("1", 2, "deliver"),
    ]
    submitted = [r for r in caplog.records if r.getMessage().startswith("submit_sm from raw")]
    assert len(submitted) == 3


# --------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"id_format": "octal"}, "id_format"),
        ({"receipt_id_format": "base64"}, "receipt_id_format"),
        ({"receipt_style": "xml"}, "receipt_style"),
        ({"receipt_delay": "soon"}, "receipt_delay"),
        ({"receipt_delay": -1}, "receipt_delay"),
        ({"throughput": True}, "throughput"),
        ({"window": 0}, "window"),
        ({"default": []}, "default"),
        ({"default": ["deliver", "vanish"]}, "default[1]"),
        ({"credentials": {"acme": 5}}, "credentials.acme"),
        ({"colour": "blue"}, "colour"),
        ({"rules": {"number": "1"}}, "rules"),
        ({"rules": [{"outcomes": ["deliver"]}]}, "rules[0]"),
        ({"rules": [{"number": "1", "prefix": "2", "outcomes": ["deliver"]}]}, "rules[0]"),
        ({"rules": [{"number": 447700, "outcomes": ["deliver"]}]}, "rules[0].number"),
        ({"rules": [{"number": "1"}]}, "rules[0].outcomes"),
        (
            {
                "rules": [
                    {"number": "1", "outcomes": ["deliver"]},
                    {"prefix": "2", "outcomes": ["x"]},
                ]
            },
            "rules[1].outcomes[0]",
        ),
        (
            {"rules": [{"number": "1", "outcomes": ["absent"], "alert_after": "later"}]},
            "rules[0].alert_after",
        ),
        ({"rules": [{"number": "1", "outcomes": ["absent"], "when": 1}]}, "rules[0].when"),
    ],
)
def test_scenario_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_mapping(data)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_scenario_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text('[[rules]]\nnumber = "1"\noutcomes = ["absent", "teleport"]\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(bad_key)
    assert str(info.value).startswith(f"{bad_key}: rules[0].outcomes[1]: ")
    assert info.value.key == "rules[0].outcomes[1]"
    bad_toml = tmp_path / "broken.toml"
    bad_toml.write_text("default = [\n")
    with pytest.raises(ScenarioError, match=r"broken\.toml: invalid TOML"):
        load_scenario(bad_toml)
    with pytest.raises(ScenarioError, match=r"missing\.toml: cannot read"):
        load_scenario(tmp_path / "missing.toml")


def test_a_full_scenario_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "full.toml"
    path.write_text(
        """
id_format = "dec"
receipt_id_format = "hex"
receipt_delay = 0.2
receipt_style = "tlv"
default = ["deliver"]
throughput = 50
window = 4
system_id = "CARRIER"
max_records = 10

[credentials]
acme = "pw"

[[rules]]
prefix = "4477"
outcomes = ["busy", "deliver"]

[[rules]]
number = "447700900001"
outcomes = "absent"
alert_after = 1.5
"""
    )
    scenario = load_scenario(path)
    assert (scenario.id_format, scenario.receipt_id_format) == ("dec", "hex")
    assert (scenario.receipt_delay, scenario.receipt_style) == (0.2, "tlv")
    assert (scenario.throughput, scenario.window, scenario.system_id) == (50.0, 4, "CARRIER")
    assert scenario.credentials == {"acme": "pw"}
    assert scenario.rules == (
        Rule(prefix="4477", outcomes=("busy", "deliver")),
        Rule(number="447700900001", outcomes=("absent",), alert_after=1.5),
    )


@pytest.mark.parametrize("name", ["demo.toml", "example.toml"])
def test_shipped_scenarios_load(name: str) -> None:
    scenario = load_scenario(CONFIGS / name)
    words = {w for rule in scenario.rules for w in rule.outcomes} | set(scenario.default)
    assert words <= set(OUTCOMES)
    assert scenario.rules


def test_example_scenario_uses_every_outcome() -> None:
    scenario = load_scenario(CONFIGS / "example.toml")
    words = {w for rule in scenario.rules for w in rule.outcomes} | set(scenario.default)
    assert words == set(OUTCOMES)


def test_rules_validate_when_built_directly() -> None:
    with pytest.raises(ScenarioError):
        Rule(outcomes=["deliver"])
    with pytest.raises(ScenarioError):
        Rule(number="1", outcomes=["nope"])
