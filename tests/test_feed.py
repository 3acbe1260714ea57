"""The MQTT status feed against real brokers started by the tests.

Every test that needs a broker runs twice: against Mosquitto (a broker of its
own) and against RabbitMQ's MQTT plugin (the session's node), asserting where
RabbitMQ legitimately differs (see docs/events.md, "Delivery guarantees").

smpplib is the sender, the simulator is the carrier, an aiomqtt subscriber
collects what the broker delivers, and every document is checked against the
published JSON Schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import bounceback
import jsonschema
import pytest
from bounceback.core import engine
from bounceback.core.model import Message, State
from bounceback.feed.client import MqttClient
from bounceback.feed.events import EVENT_NAMES, build_event, event_record, iso, render
from bounceback.feed.publisher import FeedProcess, FeedPublisher
from bounceback.gateway.shell import Gateway
from harness import (
    FAST_RETRY,
    ProxyProcess,
    bind_sender,
    free_port,
    gateway,
    simulator,
    wait_until,
    write_config,
)
from hypothesis import given
from hypothesis import strategies as st
from mqtt_broker import Broker, Collector, Gate, MosquittoBroker, RabbitMQBroker, Received
from smppcodecs.errors import SOFT_REASONS
from smpplib_peer import SmpplibSender, receipt_fields

pytestmark = pytest.mark.mqtt

PREFIX = "bbtest/v1"
SIM: dict[str, Any] = {"receipt_delay": 0.02}
SCHEMA_DIR = Path(bounceback.__file__).parent / "schema"


def load_schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return doc


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


EVENT = validator("event")
STATUS = validator("status")
STATS = validator("stats")


def feed(port: int, *, prefix: str = PREFIX, extra: str = "") -> str:
    return f"""
[feed]
host = "127.0.0.1"
port = {port}
prefix = "{prefix}"
stats_interval = 0.2
{extra}
"""


@pytest.fixture(params=["mosquitto", "rabbitmq"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    if request.param == "mosquitto":
        with MosquittoBroker(tmp_path) as b:
            yield b
        return
    node: RabbitMQBroker = request.getfixturevalue("rabbitmq")
    node.start()
    yield node
    node.start()  # running again for the next test, whatever this one did


async def submit(s: SmpplibSender, number: str) -> tuple[int, str]:
    seq = await asyncio.to_thread(s.submit, number, b"hello feed")
    return await asyncio.to_thread(s.wait_resp, seq)


def check_documents(messages: list[Received], prefix: str = PREFIX) -> dict[str, int]:
    """Validate every received document against its schema; count them by kind."""
    counts = {"events": 0, "status": 0, "stats": 0}
    for m in messages:
        doc = m.json()
        parts = m.topic.split("/")
        base = len(prefix.split("/"))
        kind = parts[base]
        if kind == "events":
            EVENT.validate(doc)
            assert parts[base + 1 :] == [doc["account"], doc["message_id"], doc["event"]]
            assert doc["event_id"] == f"{doc['message_id']}:{doc['attempt']}:{doc['event']}"
            counts["events"] += 1
        elif kind == "instances":
            STATUS.validate(doc)
            assert parts[base + 1 :] == [doc["instance"], "status"]
            counts["status"] += 1
        elif kind == "stats":
            STATS.validate(doc)
            assert parts[base + 1] in ("account", "carrier")
            counts["stats"] += 1
        else:
            raise AssertionError(f"unexpected topic {m.topic}")
    return counts


def event_ids(col: Collector) -> list[str]:
    return [e["event_id"] for e in col.events()]


def has_event(col: Collector, event_id: str) -> Callable[[], bool]:
    return lambda: event_id in event_ids(col)


def has_topic(col: Collector, start: str) -> Callable[[], bool]:
    return lambda: any(m.topic.startswith(start) for m in col.messages)


def life(mids: list[str]) -> set[str]:
    """Event ids of messages delivered at the first attempt."""
    return {f"{m}:{tail}" for m in mids for tail in ("0:accepted", "1:submitted", "1:delivered")}


def assert_redeliveries_only(col: Collector) -> None:
    """A repeated event id carries the very same document (a QoS 1 redelivery)."""
    first: dict[str, bytes] = {}
    for m in col.matching("events"):
        key = m.json()["event_id"]
        assert first.setdefault(key, m.payload) == m.payload


# ---------------------------------------------------------------- schemas, no broker


def sample_message(state: State = State.HELD, **kw: Any) -> Message:
    base = Message(
        id="01A2B3C4D5E6F708",
        account="acme",
        source_addr="Acme",
        destination_addr="447700900123",
        pdu=b"",
        registered_delivery=1,
        created_at=1_750_000_000.0,
        deadline=1_750_100_000.0,
        deadline_is_validity=False,
        submit_date=1_750_000_000.0,
        state=state,
        attempts=1,
        carrier="sim",
        carrier_message_id="1F",
    )
    return attrs.evolve(base, **kw)


def sample(event: str, fields: dict[str, object], state: State = State.HELD) -> dict[str, Any]:
    msg = sample_message(state)
    topic, payload = build_event(
        msg,
        event,
        fields,
        now=1_750_000_001.5,
        instance="bb-1",
        prefix=PREFIX,
        mask=True,
        mask_keep=4,
    )
    assert topic == f"{PREFIX}/events/acme/01A2B3C4D5E6F708/{event}"
    doc: dict[str, Any] = json.loads(payload)
    return doc


SOFT_FIELDS: dict[str, object] = {
    "classification": "soft",
    "reason": "absent_subscriber",
    "description": "absent subscriber",
    "code": "network_error_code:3/6",
    "rule": "map-error 6",
    "rule_source": "default",
    "attempt": 1,
    "next_attempt_at": 1_750_000_060.0,
    "err": "006",
}


def test_schemas_match_the_code() -> None:
    schema = load_schema("event")
    assert schema["properties"]["event"]["enum"] == list(EVENT_NAMES)
    assert schema["properties"]["state"]["enum"] == [s.value for s in State]
    assert schema["$defs"]["soft_reason"]["enum"] == sorted(SOFT_REASONS)


@given(
    now=st.floats(1.0e9, 4.0e9),
    fields=st.dictionaries(
        st.sampled_from(["reason", "code", "attempt", "next_attempt_at", "recovered"]),
        st.none() | st.booleans() | st.integers(-5, 10**9) | st.floats(1.0e9, 4.0e9) | st.text(),
    ),
)
def test_a_stored_record_renders_the_document_it_was_built_from(
    now: float, fields: dict[str, object]
) -> None:
    """The outbox keeps compact records; what the publisher renders from one is the
    document built directly from the message (timestamps to the millisecond)."""
    msg = sample_message(attempts=2, carrier_message_id="")
    kw: dict[str, Any] = dict(now=now, instance="bb-1", prefix=PREFIX, mask=True, mask_keep=4)
    topic, record = event_record(msg, "soft_bounce", fields, **kw)
    assert record.startswith("[") and topic == build_event(msg, "soft_bounce", fields, **kw)[0]
    doc = json.loads(render(record))
    assert doc["at"] == iso(now) and doc["event_id"] == "01A2B3C4D5E6F708:2:soft_bounce"
    assert doc["destination"] == "********0123" and doc["carrier_message_id"] is None
    for key, value in fields.items():
        want = iso(value) if key == "next_attempt_at" and isinstance(value, float) else value
        assert doc[key] == want
    # A document (as earlier versions stored) is published as it is.
    assert render('{"schema":"x"}') == '{"schema":"x"}'
    with pytest.raises(ValueError):
        render("[99]")


def test_event_schema_rejects_what_it_should() -> None:
    good = sample("soft_bounce", SOFT_FIELDS)
    EVENT.validate(good)
    assert good["destination"] == "********0123"
    assert good["next_attempt_at"] == "2025-06-15T15:07:40.000Z"

    def bad(doc: dict[str, Any]) -> None:
        with pytest.raises(jsonschema.ValidationError):
            EVENT.validate(doc)

    bad({k: v for k, v in good.items() if k != "next_attempt_at"})
    bad({k: v for k, v in good.items() if k != "event_id"})
    bad(good | {"event": "bounced"})
    bad(good | {"surprise": 1})
    bad(good | {"reason": "unknown_subscriber"})
    bad(good | {"at": "2025-06-15 15:07:40"})
    bad(good | {"state": "submitted"})
    bad(good | {"schema": "bounceback.event/2"})
    # The same fields under another event name are not a valid delivered event.
    bad(good | {"event": "delivered"})
    accepted = sample("accepted", {"ack": "carrier"}, State.ACCEPTED)
    bad(accepted | {"attempt": 1})
    bad({k: v for k, v in accepted.items() if k != "ack"})


def test_status_and_stats_schemas_reject_what_they_should() -> None:
    status: dict[str, object] = {
        "schema": "bounceback.status/1",
        "instance": "bb-1",
        "state": "online",
        "version": "0.1.0",
        "started_at": "2025-06-15T15:07:40.000Z",
        "at": "2025-06-15T15:07:41.250Z",
    }
    STATUS.validate(status)
    for broken in (status | {"state": "gone"}, {k: v for k, v in status.items() if k != "at"}):
        with pytest.raises(jsonschema.ValidationError):
            STATUS.validate(broken)
    stats: dict[str, object] = {
        "schema": "bounceback.stats/1",
        "window_seconds": 86400,
        "at": "2025-06-15T15:07:41.250Z",
        "sent": 3,
        "delivered": 2,
        "soft": 1,
        "hard": 0,
        "held_now": 1,
        "recovered_by_retry": 0,
    }
    STATS.validate(stats)
    for broken in (stats | {"sent": -1}, {k: v for k, v in stats.items() if k != "held_now"}):
        with pytest.raises(jsonschema.ValidationError):
            STATS.validate(broken)


# ---------------------------------------------------------------- against the brokers


@pytest.mark.parametrize("client", ["builtin", "aiomqtt"])
async def test_two_soft_bounces_then_delivered_in_order(
    tmp_path: Path, broker: Broker, client: str
) -> None:
    number = "447700900001"
    scenario = SIM | {"rules": [{"number": number, "outcomes": ["absent", "absent", "deliver"]}]}
    extra = feed(broker.port, extra=f'client = "{client}"')
    async with (
        simulator(scenario) as sim,
        Collector(broker.port, [f"{PREFIX}/#"]) as col,
        gateway(write_config(tmp_path, sim.port or 0, extra=extra)) as gw,
    ):
        s = await bind_sender(gw.port, SmpplibSender)
        status, mid = await submit(s, number)
        assert status == 0
        await col.wait(lambda: f"{mid}:3:delivered" in event_ids(col), what="delivered")
        got = [e for e in col.events() if e["message_id"] == mid]
        assert [e["event"] for e in got] == [
            "accepted",
            "submitted",
            "soft_bounce",
            "resubmitted",
            "soft_bounce",
            "resubmitted",
            "delivered",
        ]
        assert [e["attempt"] for e in got] == [0, 1, 1, 2, 2, 3, 3]
        for bounce in (got[2], got[4]):
            assert bounce["reason"] == "absent_subscriber"
            assert bounce["classification"] == "soft"
            assert bounce["next_attempt_at"] > bounce["at"]
        assert got[-1]["recovered"] is True and got[-1]["attempts"] == 3
        assert sim.count_for(number) == 3
        receipts = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
        assert receipt_fields(receipts[0])["stat"] == "DELIVRD"
        counts = check_documents(col.messages)
        assert counts["events"] == 7
        await asyncio.to_thread(s.close)


async def test_every_event_kind_validates(tmp_path: Path, broker: Broker) -> None:
    deliver, absent, unknown, refused, held = (f"44770090010{i}" for i in range(5))
    scenario = SIM | {
        "rules": [
            {"number": absent, "outcomes": ["absent"]},
            {"number": unknown, "outcomes": ["unknown"]},
            {"number": refused, "outcomes": ["submit_fail"]},
            {"number": held, "outcomes": ["memory_full"]},
        ]
    }
    retry = FAST_RETRY.replace("max_attempts = 5", "max_attempts = 2\nflag_threshold = 2")
    # The memory-full number stays held (long schedule) until the test cancels it.
    retry = retry.replace(
        "[retry.schedules.memory_full]\ninitial = 0.3\nfactor = 1.0\nmax = 0.3",
        "[retry.schedules.memory_full]\ninitial = 600.0\nfactor = 1.0\nmax = 600.0",
    )
    assert "initial = 600.0" in retry
    async with simulator(scenario) as sim, Collector(broker.port, [f"{PREFIX}/#"]) as col:
        cfg = write_config(tmp_path, sim.port or 0, retry=retry, extra=feed(broker.port))
        async with gateway(cfg) as gw:
            s = await bind_sender(gw.port, SmpplibSender)
            mids = {n: (await submit(s, n))[1] for n in (deliver, absent, unknown, refused, held)}
            assert all(mids[n] for n in (deliver, absent, unknown, held))
            assert mids[refused] == ""  # the carrier's permanent refusal went back to the sender

            def names() -> set[str]:
                return {e["event"] for e in col.events()}

            await col.wait(
                lambda: (
                    {"delivered", "expired", "hard_bounce", "carrier_rejected"} <= names()
                    and f"{mids[held]}:1:soft_bounce" in event_ids(col)
                ),
                what="every outcome",
            )
            # The hard-bounced number is suppressed now: a new message to it is refused.
            status, mid = await submit(s, unknown)
            assert status == 0x0B and mid == ""
            await col.wait(lambda: "suppressed" in names(), what="suppressed")
            # One message is held for a while: cancel it.
            await gw.process(mids[held], engine.Cancel(time.time()))
            await col.wait(lambda: "cancelled" in names(), what="cancelled")
            await col.wait(
                lambda: any(
                    m.topic == f"{PREFIX}/stats/account/acme" and m.json()["sent"] == 6
                    for m in col.messages
                ),
                what="account stats",
            )
            await col.wait(
                lambda: any(m.topic == f"{PREFIX}/stats/carrier/sim" for m in col.messages),
                what="carrier stats",
            )
            await asyncio.to_thread(s.close)
        # A clean stop publishes the retained offline status.
        await col.wait(
            lambda: any(m.json().get("state") == "offline" for m in col.matching("instances")),
            what="offline status",
        )
    await check_retained(broker, next(m.topic for m in col.matching("instances")))
    assert names() == set(EVENT_NAMES)
    suppressed = next(e for e in col.events() if e["event"] == "suppressed")
    assert suppressed["state"] == "rejected" and suppressed["destination"] != unknown
    counts = check_documents(col.messages)
    assert counts["status"] >= 2 and counts["stats"] >= 2
    expired = next(e for e in col.events() if e["event"] == "expired")
    assert expired["why"] == "attempts" and expired["reason"] == "absent_subscriber"
    flagged = next(e for e in col.events() if e["event"] == "number_flagged")
    assert flagged["soft_bounces"] == 2 and flagged["message_id"] == mids[absent]
    rejected = next(e for e in col.events() if e["event"] == "carrier_rejected")
    assert rejected["status"] == 0x45 and rejected["state"] == "rejected"
    assert_redeliveries_only(col)


async def check_retained(broker: Broker, status_topic: str) -> None:
    """After the proxy stopped, the offline status and the latest stats wait, retained,
    for a new subscriber to their topics. Mosquitto sends them to wildcard filters as
    well; RabbitMQ's MQTT plugin only to a subscription to the exact topic."""
    exact = [status_topic, f"{PREFIX}/stats/account/acme", f"{PREFIX}/stats/carrier/sim"]
    marker = f"{PREFIX}/marker"
    async with (
        Collector(broker.port, exact) as fresh,
        Collector(broker.port, [f"{PREFIX}/#"]) as wild,
    ):
        await fresh.wait(lambda: {m.topic for m in fresh.messages} == set(exact), what="retained")
        assert all(m.retain for m in fresh.messages) and len(fresh.messages) == 3
        check_documents(fresh.messages)
        by_topic = {m.topic: m.json() for m in fresh.messages}
        assert by_topic[status_topic]["state"] == "offline"
        assert by_topic[f"{PREFIX}/stats/account/acme"]["sent"] == 6
        # Published after both subscribed: once it is in, `wild` holds all it will get.
        async with MqttClient("127.0.0.1", broker.port, client_id="bbtest-marker") as pub:
            await pub.publish(marker, b"end", qos=1)
        await wild.wait(lambda: any(m.topic == marker for m in wild.messages), what="marker")
        retained = {m.topic for m in wild.messages if m.retain}
        assert retained == (set() if isinstance(broker, RabbitMQBroker) else set(exact))


@pytest.mark.parametrize("client", ["builtin", "aiomqtt"])
async def test_broker_outage_during_traffic_loses_nothing(
    tmp_path: Path, broker: Broker, client: str
) -> None:
    async with (
        simulator(SIM) as sim,
        Gate(broker.port) as gate,
        Collector(broker.port, [f"{PREFIX}/events/#"]) as col,
        gateway(
            write_config(
                tmp_path, sim.port or 0, extra=feed(gate.port, extra=f'client = "{client}"')
            )
        ) as gw,
    ):
        assert gw.feed is not None
        s = await bind_sender(gw.port, SmpplibSender)
        mids: list[str] = []
        done = asyncio.Event()

        async def traffic() -> None:
            i = 0
            while not done.is_set():
                status, mid = await submit(s, f"44770090{i:04d}")
                assert status == 0
                mids.append(mid)
                i += 1
                await asyncio.sleep(0.01)

        sender = asyncio.create_task(traffic())
        await col.wait(lambda: len(life(mids[:5]) & set(event_ids(col))) == 15, what="flow")
        # The outage, as the proxy sees it: its connection is cut and connecting is
        # refused until the collector has subscribed again to the restarted broker
        # (which forgot every subscription).
        gate.hold()
        at_stop = len(mids)
        await handed_over(gw, col, mids)
        broker.stop()
        await wait_until(lambda: len(mids) >= at_stop + 10, timeout=20)
        # At least the accepted event of every message taken after the proxy lost the
        # broker (all but the one that may have been in flight) waits in the outbox.
        taken = len(mids) - at_stop - 1
        assert await gw.store.outbox_count() >= taken >= 9
        subscribed = col.subscriptions
        broker.start()
        await col.wait_subscribed(subscribed)
        await gate.release()
        await wait_until(lambda: len(mids) >= at_stop + 20, timeout=20)
        done.set()
        await sender
        expected = life(mids)
        await col.wait(lambda: expected <= set(event_ids(col)), timeout=30, what="every event")
        assert set(event_ids(col)) == expected
        assert_redeliveries_only(col)
        # Each message's events arrived in the order they happened.
        for mid in mids:
            seen = [e["event"] for e in col.events() if e["message_id"] == mid]
            assert list(dict.fromkeys(seen)) == ["accepted", "submitted", "delivered"]
        await outbox_drained(gw)
        check_documents(col.messages)
        await asyncio.to_thread(s.close)


async def handed_over(gw: Gateway, col: Collector, mids: list[str], timeout: float = 15.0) -> None:
    """With the proxy cut off from the broker, wait until the collector has every event
    the broker acknowledged: each event of the messages taken so far is either received
    or still in the outbox (the feed deletes an event only at its PUBACK).

    A broker without persistence loses, when it stops, the messages it acknowledged
    but has not delivered yet: Mosquitto holds those beyond a subscriber's in-flight
    window (20) until the subscriber acknowledges earlier ones, and the collector lags
    under load (it shares the test's event loop, which `broker.stop()` blocks). That
    loss is the broker's, past the PUBACK; the proxy's, which this test is about, is
    anything else missing."""
    feed = gw.feed
    assert feed is not None
    await wait_until(lambda: not feed.connected, timeout=timeout)  # no PUBACK after this
    # A message submitted before that may not be in `mids` yet: the sender has one
    # submission in flight at most, so the next one in `mids` covers it.
    taken = len(mids) + 1
    await wait_until(lambda: len(mids) >= taken, timeout=timeout)
    wanted = life(mids[:taken])
    end = time.monotonic() + timeout
    while True:
        rows = await gw.store.query("SELECT payload FROM outbox")
        if not wanted - set(event_ids(col)) - {json.loads(render(p))["event_id"] for (p,) in rows}:
            return
        if time.monotonic() > end:
            raise AssertionError("events gone from the outbox never reached the collector")
        await asyncio.sleep(0.02)


async def outbox_drained(gw: Gateway, timeout: float = 10.0) -> None:
    """Wait until the feed has deleted every published event from the outbox."""
    end = time.monotonic() + timeout
    while (left := await gw.store.outbox_count()) > 0:
        if time.monotonic() > end:
            raise AssertionError(f"{left} events still in the outbox")
        await asyncio.sleep(0.05)


def pending_receipts(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM sender_receipts").fetchone()
    return int(n)


def outbox_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
    return int(n)


def outbox_topics(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [str(r[0]) for r in conn.execute("SELECT topic FROM outbox ORDER BY seq")]


@pytest.mark.parametrize(
    ("publisher", "client"), [("process", "builtin"), ("inline", "builtin"), ("process", "aiomqtt")]
)
async def test_kill9_leaves_offline_status_and_backlog_is_published(
    tmp_path: Path, broker: Broker, publisher: str, client: str
) -> None:
    """With the publisher in its own process or in the proxy's event loop (uvloop,
    in a `bounceback run` process), and on either MQTT client."""
    port = free_port()
    async with simulator(SIM) as sim, Collector(broker.port, [f"{PREFIX}/#"]) as col:
        extra = feed(broker.port, extra=f'publisher = "{publisher}"\nclient = "{client}"')
        cfg = write_config(tmp_path, sim.port or 0, port=port, extra=extra)
        proxy = ProxyProcess(cfg)

        def statuses() -> list[Received]:
            return [m for m in col.messages if m.topic.startswith(f"{PREFIX}/instances/")]

        def states() -> list[str]:
            return [m.json()["state"] for m in statuses()]

        await asyncio.to_thread(proxy.start)
        try:
            await col.wait(lambda: states() == ["online"], what="online")
            status_topic = statuses()[0].topic
            assert status_topic.endswith("/status")
            s = await bind_sender(port, SmpplibSender)
            first = [(await submit(s, f"4477009007{i:02d}"))[1] for i in range(3)]
            await col.wait(lambda: life(first) <= set(event_ids(col)), what="first events")
            # Their receipts delivered (and so deleted) before the kill: else one still
            # pending comes to the next bind instead of one of its own.
            assert len(await asyncio.to_thread(s.wait_delivered, 3, 15.0)) == 3
            await wait_until(lambda: pending_receipts(tmp_path / "proxy.db") == 0)
            await asyncio.to_thread(s.close)

            await asyncio.to_thread(proxy.kill9)
            # The broker publishes the last will: offline, retained.
            await col.wait(lambda: states() == ["online", "offline"], what="last will")
            async with Collector(broker.port, [status_topic]) as fresh:
                await fresh.wait(lambda: bool(fresh.messages), what="retained status")
                retained = fresh.messages[0]
                assert retained.retain and retained.json()["state"] == "offline"

            # Restart, lose the broker, keep sending, then kill -9 with the backlog unsent.
            await asyncio.to_thread(proxy.start)
            await col.wait(lambda: states()[-1:] == ["online"], what="online again")
            broker.stop()
            s = await bind_sender(port, SmpplibSender)
            second = [(await submit(s, f"4477009008{i:02d}"))[1] for i in range(5)]
            assert all(second)

            # This bind may also get the receipts of the first messages that had no
            # receiver when the proxy was killed: wait for those of the second ones.
            def receipted() -> set[str]:
                return {receipt_fields(p)["id"] for p in s.delivered}

            await wait_until(lambda: set(second) <= receipted(), timeout=15)
            await asyncio.to_thread(s.close)
            assert outbox_rows(tmp_path / "proxy.db") >= 15, outbox_topics(tmp_path / "proxy.db")
            await asyncio.to_thread(proxy.kill9)

            subscribed = col.subscriptions
            broker.start()
            await col.wait_subscribed(subscribed)
            await asyncio.to_thread(proxy.start)
            expected = life(first) | life(second)
            await col.wait(lambda: expected <= set(event_ids(col)), timeout=20, what="backlog")
            assert set(event_ids(col)) == expected
            assert_redeliveries_only(col)
            await wait_until(lambda: outbox_rows(tmp_path / "proxy.db") == 0)
            check_documents(col.messages)
            # One instance throughout: the same status topic, the same name in every event.
            assert {m.topic for m in statuses()} == {status_topic}
            assert {e["instance"] for e in col.events()} == {statuses()[0].json()["instance"]}
        finally:
            if proxy.proc is not None and proxy.proc.poll() is None:
                await asyncio.to_thread(proxy.terminate)


async def test_without_feed_the_proxy_works_the_same(tmp_path: Path, broker: Broker) -> None:
    number = "447700900301"
    scenario = SIM | {"rules": [{"number": number, "outcomes": ["absent", "deliver"]}]}

    async def one_life(where: Path, extra: str) -> tuple[str, list[str], list[Any]]:
        async with simulator(scenario) as sim:
            cfg = write_config(where, sim.port or 0, extra=extra)
            async with gateway(cfg) as gw:
                s = await bind_sender(gw.port, SmpplibSender)
                status, mid = await submit(s, number)
                assert status == 0
                receipts = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
                stats = [receipt_fields(p)["stat"] for p in receipts]
                msg = await gw.store.get(mid)
                assert msg is not None
                await asyncio.to_thread(s.close)
                assert sim.count_for(number) == 2
                assert (gw.feed is None) == (extra == "")
                # AUTOINCREMENT remembers whether the outbox ever held a row.
                ever = await gw.store.query("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
                return f"{msg.state.value}/{msg.attempts}", stats, ever

    for name in ("with", "without"):
        (tmp_path / name).mkdir()
    async with Collector(broker.port, [f"{PREFIX}/#"]) as col:
        with_feed = await one_life(tmp_path / "with", feed(broker.port))
        await col.wait(lambda: len(col.events()) >= 5, what="events")
    without = await one_life(tmp_path / "without", "")
    assert with_feed[:2] == without[:2] == ("delivered/2", ["DELIVRD"])
    assert with_feed[2] == [(5,)]
    assert without[2] == []


async def test_mask_destinations(tmp_path: Path, broker: Broker) -> None:
    number = "447400123987"  # a valid UK mobile range, so country and operator are known
    scenario = SIM | {"rules": [{"number": number, "outcomes": ["absent", "deliver"]}]}
    # (name and topic prefix, [feed] keys, [[accounts]] keys)
    runs = (
        ("feedmask", "mask_destinations = true\nmask_keep = 3", ""),
        ("acctmask", "mask_destinations = false\nmask_keep = 3", "mask_destinations = true"),
        ("plain", "mask_destinations = false", ""),
    )
    for name, _, _ in runs:
        (tmp_path / name).mkdir()
    async with Collector(broker.port, ["#"]) as col:
        for name, feed_keys, account_keys in runs:
            async with simulator(scenario) as sim:
                cfg = write_config(
                    tmp_path / name,
                    sim.port or 0,
                    account=account_keys,
                    extra=feed(broker.port, prefix=name, extra=feed_keys),
                )
                async with gateway(cfg) as gw:
                    s = await bind_sender(gw.port, SmpplibSender)
                    status, mid = await submit(s, number)
                    assert status == 0
                    await col.wait(has_event(col, f"{mid}:2:delivered"), what="delivered")
                    await col.wait(has_topic(col, f"{name}/stats/"), what="stats")
                    await asyncio.to_thread(s.close)

    def run(name: str) -> tuple[list[Received], list[dict[str, Any]]]:
        docs = [m for m in col.messages if m.topic.startswith(name + "/")]
        check_documents(docs, name)
        events = [m.json() for m in docs if m.topic.startswith(name + "/events/")]
        assert len(events) == 5
        return docs, events

    for name in ("feedmask", "acctmask"):
        docs, events = run(name)
        for m in docs:
            assert number.encode() not in m.payload and number not in m.topic
            assert number[3:].encode() not in m.payload  # not even the national part
        assert {e["destination"] for e in events} == {"*********987"}
        assert {(e["country"], e["operator"]) for e in events} == {("GB", "Three")}
    # The same feed without masking does carry the number: the check above can fail.
    _, plain = run("plain")
    assert {e["destination"] for e in plain} == {number}


# ---------------------------------------------------------------- the publisher process


def children_of(pid: int, marker: str) -> list[int]:
    """Live processes whose parent is `pid` and whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[1]) == pid and marker in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_publisher_runs_in_its_own_process_and_is_restarted(
    tmp_path: Path, broker: Broker
) -> None:
    """By default the MQTT work runs in a child process; kill -9 of that child loses
    nothing: the proxy starts another, which publishes what was committed meanwhile."""
    async with (
        simulator(SIM) as sim,
        Collector(broker.port, [f"{PREFIX}/#"]) as col,
        gateway(write_config(tmp_path, sim.port or 0, extra=feed(broker.port))) as gw,
    ):
        assert isinstance(gw.feed, FeedProcess)
        await wait_until(lambda: gw.feed is not None and gw.feed.connected, timeout=15)
        child = gw.feed.pid
        assert child is not None and child in children_of(os.getpid(), "feed-publisher")
        s = await bind_sender(gw.port, SmpplibSender)
        first = [(await submit(s, f"4477009010{i:02d}"))[1] for i in range(3)]
        await col.wait(lambda: life(first) <= set(event_ids(col)), what="first events")
        await wait_until(lambda: gw.feed is not None and gw.feed.published >= 9, timeout=10)

        os.kill(child, signal.SIGKILL)
        await wait_until(lambda: gw.feed is not None and not gw.feed.connected, timeout=10)
        second = [(await submit(s, f"4477009011{i:02d}"))[1] for i in range(4)]
        assert all(second)
        await asyncio.to_thread(s.wait_delivered, 7, 15.0)
        await col.wait(lambda: life(second) <= set(event_ids(col)), timeout=20, what="after")
        assert gw.feed.starts == 2 and gw.feed.pid != child
        assert_redeliveries_only(col)
        await wait_until(lambda: outbox_rows(tmp_path / "proxy.db") == 0)
        await asyncio.to_thread(s.close)
    assert not alive(child)


async def test_publisher_process_stops_with_the_proxy_even_after_kill9(
    tmp_path: Path, broker: Broker
) -> None:
    """The child notices its proxy is gone (its stdin closes), publishes offline and
    exits: no orphan publisher outlives a killed proxy."""
    port = free_port()
    async with simulator(SIM) as sim, Collector(broker.port, [f"{PREFIX}/instances/#"]) as col:
        cfg = write_config(tmp_path, sim.port or 0, port=port, extra=feed(broker.port))
        proxy = ProxyProcess(cfg)
        await asyncio.to_thread(proxy.start)
        try:
            assert proxy.proc is not None
            await col.wait(lambda: bool(col.messages), what="online")
            kids = children_of(proxy.proc.pid, "feed-publisher")
            assert len(kids) == 1
            await asyncio.to_thread(proxy.kill9)
            await wait_until(lambda: not alive(kids[0]), timeout=15)
            await col.wait(lambda: col.messages[-1].json()["state"] == "offline", what="offline")
        finally:
            if proxy.proc is not None and proxy.proc.poll() is None:
                await asyncio.to_thread(proxy.terminate)


async def test_inline_publisher_still_available(tmp_path: Path, broker: Broker) -> None:
    async with (
        simulator(SIM) as sim,
        Collector(broker.port, [f"{PREFIX}/#"]) as col,
        gateway(
            write_config(
                tmp_path, sim.port or 0, extra=feed(broker.port, extra='publisher = "inline"')
            )
        ) as gw,
    ):
        assert isinstance(gw.feed, FeedPublisher)
        assert children_of(os.getpid(), "feed-publisher") == []
        s = await bind_sender(gw.port, SmpplibSender)
        mids = [(await submit(s, f"4477009012{i:02d}"))[1] for i in range(3)]
        await col.wait(lambda: life(mids) <= set(event_ids(col)), what="events")
        check_documents(col.messages)
        await asyncio.to_thread(s.close)


@pytest.mark.parametrize("publisher", ["inline", "process"])
async def test_qos0_events_are_published_and_leave_the_outbox(
    tmp_path: Path, broker: Broker, publisher: str
) -> None:
    """QoS 0: a publish counts as done once written (no PUBACK to wait for)."""
    extra = f'qos = 0\npublisher = "{publisher}"'
    async with (
        simulator(SIM) as sim,
        Collector(broker.port, [f"{PREFIX}/events/#"]) as col,
        gateway(write_config(tmp_path, sim.port or 0, extra=feed(broker.port, extra=extra))) as gw,
    ):
        s = await bind_sender(gw.port, SmpplibSender)
        mids = [(await submit(s, f"4477009013{i:02d}"))[1] for i in range(5)]
        await col.wait(lambda: life(mids) <= set(event_ids(col)), what="events")
        assert {m.qos for m in col.matching("events")} == {0}
        for _ in range(200):  # rows leave the outbox once written to the broker
            if await gw.store.outbox_count() == 0:
                break
            await asyncio.sleep(0.05)
        assert await gw.store.outbox_count() == 0
        await asyncio.to_thread(s.close)


@pytest.mark.parametrize("client", ["builtin", "aiomqtt"])
async def test_qos2_events_are_acknowledged_and_leave_the_outbox(
    tmp_path: Path, broker: Broker, client: str, caplog: pytest.LogCaptureFixture
) -> None:
    """QoS 2: a publish is done at the broker's PUBCOMP. RabbitMQ's MQTT plugin takes
    QoS 2 publishes at QoS 1 and answers with PUBACK: that completes them too (at
    least once, as at QoS 1), and a QoS 2 subscriber gets them at QoS 1."""
    rabbit = isinstance(broker, RabbitMQBroker)
    caplog.set_level(logging.INFO, logger="bounceback.mqtt")
    extra = f'qos = 2\npublisher = "inline"\nclient = "{client}"'
    async with (
        simulator(SIM) as sim,
        Collector(broker.port, [f"{PREFIX}/events/#"], qos=2) as col,
        gateway(write_config(tmp_path, sim.port or 0, extra=feed(broker.port, extra=extra))) as gw,
    ):
        s = await bind_sender(gw.port, SmpplibSender)
        mids = [(await submit(s, f"4477009015{i:02d}"))[1] for i in range(5)]
        await col.wait(lambda: life(mids) <= set(event_ids(col)), what="events")
        await outbox_drained(gw)
        assert {m.qos for m in col.matching("events")} == {1 if rabbit else 2}
        assert set(event_ids(col)) == life(mids)
        assert_redeliveries_only(col)
        await asyncio.to_thread(s.close)
    if client == "builtin":
        said = any("it takes them at QoS 1" in r.getMessage() for r in caplog.records)
        assert said == rabbit


async def test_mqtt5_where_the_broker_speaks_only_311(
    tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """`protocol = "5"`: Mosquitto takes it; RabbitMQ's MQTT plugin (3.1.1 only) closes
    the connection before its CONNACK. The feed then says why in its log and keeps
    every event in the outbox; the proxy works the same."""
    rabbit = isinstance(broker, RabbitMQBroker)
    caplog.set_level(logging.INFO, logger="bounceback.feed")
    extra = feed(broker.port, extra='protocol = "5"\npublisher = "inline"')
    async with (
        simulator(SIM) as sim,
        Collector(broker.port, [f"{PREFIX}/events/#"]) as col,
        gateway(write_config(tmp_path, sim.port or 0, extra=extra)) as gw,
    ):
        s = await bind_sender(gw.port, SmpplibSender)
        mids = [(await submit(s, f"4477009016{i:02d}"))[1] for i in range(3)]
        assert all(mids)
        assert len(await asyncio.to_thread(s.wait_delivered, 3, 15.0)) == 3
        if rabbit:
            hint = 'a broker without MQTT 5 does that: try protocol = "3.1.1"'
            await wait_until(lambda: any(hint in r.getMessage() for r in caplog.records))
            assert gw.feed is not None and not gw.feed.connected
            assert await gw.store.outbox_count() == 9 and col.messages == []
        else:
            await col.wait(lambda: life(mids) <= set(event_ids(col)), what="events")
            await outbox_drained(gw)
        await asyncio.to_thread(s.close)


async def test_a_stalled_publisher_process_is_replaced(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that still counts as connected but publishes nothing while events wait
    (here: frozen with SIGSTOP) is killed and replaced; its events all arrive."""
    monkeypatch.setattr(FeedProcess, "stall_limit", 1.0)
    async with (
        simulator(SIM) as sim,
        Collector(broker.port, [f"{PREFIX}/events/#"]) as col,
        gateway(write_config(tmp_path, sim.port or 0, extra=feed(broker.port))) as gw,
    ):
        assert isinstance(gw.feed, FeedProcess)
        await wait_until(lambda: gw.feed is not None and gw.feed.connected, timeout=15)
        s = await bind_sender(gw.port, SmpplibSender)
        first = [(await submit(s, f"4477009013{i:02d}"))[1] for i in range(2)]
        await col.wait(lambda: life(first) <= set(event_ids(col)), what="first events")
        # Frozen while idle: not inside one of its (short) outbox-delete transactions,
        # which would hold the store's write lock.
        await wait_until(lambda: outbox_rows(tmp_path / "proxy.db") == 0)
        frozen = gw.feed.pid
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        try:
            second = [(await submit(s, f"4477009014{i:02d}"))[1] for i in range(3)]
            await wait_until(
                lambda: isinstance(gw.feed, FeedProcess) and gw.feed.stalls == 1, timeout=20
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGCONT)
        await col.wait(lambda: life(second) <= set(event_ids(col)), timeout=20, what="after")
        assert gw.feed.starts == 2 and gw.feed.pid != frozen
        assert_redeliveries_only(col)
        await asyncio.to_thread(s.close)
