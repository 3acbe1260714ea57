"""The feed's own MQTT client (`bounceback.feed.mqtt`, `bounceback.feed.client`).

A codec checked only against itself proves nothing, so the bytes here come from
elsewhere. The pure tests feed the decoder packets written out by hand from the
MQTT 3.1.1 and 5 specifications and compare the encoder's output with packets
worked out the same way. The rest runs against a real Mosquitto: the broker parses
our CONNECT and PUBLISH packets and answers with its own CONNACK, PUBACK, PINGRESP
and DISCONNECT, and an independent subscriber (aiomqtt over paho) reports what the
broker delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest
from bounceback.feed.client import MqttClient, MqttError
from bounceback.feed.mqtt import (
    LEVELS,
    MAX_INBOUND,
    PINGREQ,
    QOS2_INFLIGHT_V311,
    ConnAck,
    Connection,
    Disconnect,
    Event,
    MqttProtocolError,
    PacketTooLarge,
    PingResp,
    PubAck,
    PubComp,
    PubRec,
    Reader,
    Will,
    connect_packet,
    disconnect_packet,
    publish_packet,
    varint,
)
from harness import free_port, wait_until
from hypothesis import given
from hypothesis import strategies as st
from mqtt_broker import Collector, MosquittoBroker, Received, mosquitto_binary

HOST = "127.0.0.1"
PROTOCOLS = ["3.1.1", "5"]
BOUND = 10.0  # the longest any wait in this file may take before the test fails

# Packets a broker sends, written out from the specification (not by our encoder).
CONNACK_V3_OK = bytes.fromhex("20020000")  # 3.2: no session present, return code 0
CONNACK_V5_OK = bytes.fromhex("2003000000")  # 3.2 (MQTT 5): reason 0, no properties
PINGRESP_BYTES = bytes.fromhex("d000")  # 3.13


def puback(packet_id: int) -> bytes:
    """PUBACK (3.4): type 4, remaining length 2, the packet identifier."""
    return bytes((0x40, 0x02, packet_id >> 8, packet_id & 0xFF))


def puback_v5(packet_id: int, code: int, *, empty_properties: bool = False) -> bytes:
    """MQTT 5 PUBACK with a reason code, and optionally a zero property length."""
    tail = b"\x00" if empty_properties else b""
    body = bytes((packet_id >> 8, packet_id & 0xFF, code)) + tail
    return bytes((0x40, len(body))) + body


def connack_v5_receive_maximum(n: int) -> bytes:
    """MQTT 5 CONNACK, success, with one property: Receive Maximum (0x21) = n."""
    props = bytes((0x21, n >> 8, n & 0xFF))
    body = b"\x00\x00" + bytes((len(props),)) + props
    return bytes((0x20, len(body))) + body


def connected(level: int = 4) -> Connection:
    conn = Connection(level)
    conn.receive(CONNACK_V3_OK if level == 4 else CONNACK_V5_OK)
    assert conn.connected
    return conn


# ------------------------------------------------------------------ varint
@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
        (268_435_455, "ffffff7f"),
    ],
)
def test_varint_matches_the_spec_table(value: int, encoded: str) -> None:
    """MQTT 3.1.1 table 2.4 / MQTT 5 section 1.5.5."""
    assert varint(value) == bytes.fromhex(encoded)


@pytest.mark.parametrize("value", [-1, 268_435_456])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(MqttProtocolError):
        varint(value)


# ------------------------------------------------------------------ encoder, byte-exact
def test_publish_packet_bytes() -> None:
    """PUBLISH (3.3) of "hi" to "a/b", packet identifier 10, worked out by hand:
    fixed header 0x30 | QoS 1 << 1 | retain = 0x33, remaining length
    2 + 3 (topic) + 2 (identifier) + 2 (payload) = 9; MQTT 5 adds a property
    length 0 after the identifier (remaining length 10)."""
    topic = b"a/b"
    v3 = publish_packet(topic, b"hi", qos=1, retain=True, packet_id=10, level=4)
    assert v3 == bytes.fromhex("33 09 0003 612f62 000a 6869")
    v5 = publish_packet(topic, b"hi", qos=1, retain=True, packet_id=10, level=5)
    assert v5 == bytes.fromhex("33 0a 0003 612f62 000a 00 6869")
    # QoS 0, not retained: no packet identifier.
    q0 = publish_packet(topic, b"hi", qos=0, retain=False, packet_id=0, level=4)
    assert q0 == bytes.fromhex("30 07 0003 612f62 6869")
    q0v5 = publish_packet(topic, b"hi", qos=0, retain=False, packet_id=0, level=5)
    assert q0v5 == bytes.fromhex("30 08 0003 612f62 00 6869")


def test_publish_packet_long_remaining_length() -> None:
    """A 20000-octet payload: remaining length 2 + 1 + 2 + 20000 = 20005, which takes
    three octets (20005 = 37 + 28 * 128 + 1 * 16384 -> A5 9C 01)."""
    packet = publish_packet(b"t", bytes(20_000), qos=1, retain=False, packet_id=1, level=4)
    assert packet[:4] == bytes.fromhex("32 a59c01")
    assert packet[4:9] == bytes.fromhex("0001 74 0001")
    assert len(packet) == 1 + 3 + 20_005


def test_connect_and_small_packets_bytes() -> None:
    """CONNECT (3.1), 3.1.1, clean session, keep alive 60, client identifier "c":
    remaining length 10 (variable header) + 3 (payload) = 13."""
    assert connect_packet("c", level=4, keepalive=60) == bytes.fromhex(
        "10 0d 0004 4d515454 04 02 003c 0001 63"
    )
    # MQTT 5: the same with a property length 0 after the keep alive.
    assert connect_packet("c", level=5, keepalive=60) == bytes.fromhex(
        "10 0e 0004 4d515454 05 02 003c 00 0001 63"
    )
    # Will QoS 1, retained, user name and password: flags 0x80|0x40|0x20|0x08|0x04|0x02.
    packet = connect_packet(
        "c", level=4, keepalive=0, username="u", password="p", will=Will("w", b"x")
    )
    assert packet == bytes.fromhex(
        "10 19 0004 4d515454 04 ee 0000 0001 63 0001 77 0001 78 0001 75 0001 70"
    )
    # MQTT 3.1.1 (3.1.2.9): no password flag without the user name flag; 5 allows it.
    with pytest.raises(MqttProtocolError):
        connect_packet("c", level=4, password="p")
    assert connect_packet("c", level=5, password="p")[9] == 0x42
    assert bytes.fromhex("c000") == PINGREQ
    assert disconnect_packet(4) == disconnect_packet(5) == bytes.fromhex("e000")


# ------------------------------------------------------------------ Reader: framing
V3_STREAM = CONNACK_V3_OK + puback(1) + puback(0xFFFF) + PINGRESP_BYTES + puback(0x0100)
V3_EVENTS: list[Event] = [ConnAck(0), PubAck(1), PubAck(0xFFFF), PingResp(), PubAck(0x0100)]

V5_STREAM = (
    bytes.fromhex("2003010000")  # CONNACK, session present, success, no properties
    + puback(7)
    + puback_v5(8, 0x10)  # no matching subscribers
    + puback_v5(9, 0x87, empty_properties=True)  # not authorized
    + PINGRESP_BYTES
    + bytes.fromhex("e0018e")  # DISCONNECT, session taken over
)
V5_EVENTS: list[Event] = [
    ConnAck(0, session_present=True),
    PubAck(7),
    PubAck(8, 0x10),
    PubAck(9, 0x87),
    PingResp(),
    Disconnect(0x8E, "session taken over"),
]


def feed_chunks(reader: Reader, data: bytes, cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    bounds = [0, *sorted(cuts), len(data)]
    for a, b in itertools.pairwise(bounds):
        events += reader.feed(data[a:b])
    return events


@pytest.mark.parametrize(
    ("level", "stream", "expected"), [(4, V3_STREAM, V3_EVENTS), (5, V5_STREAM, V5_EVENTS)]
)
def test_reader_every_split(level: int, stream: bytes, expected: list[Event]) -> None:
    """The stream decodes to the same events whole, octet by octet, and cut in two or
    three pieces at every possible pair of boundaries."""
    assert Reader(level).feed(stream) == expected
    assert feed_chunks(Reader(level), stream, list(range(1, len(stream)))) == expected
    n = len(stream)
    for i in range(n + 1):
        for j in range(i, n + 1):
            assert feed_chunks(Reader(level), stream, [i, j]) == expected, (i, j)


@st.composite
def ack_streams(draw: st.DrawFn) -> tuple[int, bytes, list[Event], list[int]]:
    """A level, a stream of PUBACKs and PINGRESPs written by hand, the events it
    holds, and where to cut it."""
    level = draw(st.sampled_from([4, 5]))
    data = b""
    events: list[Event] = []
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["ack", "ping", "ack_code", "ack_props"]))
        pid = draw(st.integers(1, 0xFFFF))
        if kind == "ping":
            data += PINGRESP_BYTES
            events.append(PingResp())
        elif kind == "ack" or level == 4:
            data += puback(pid)
            events.append(PubAck(pid))
        else:
            code = draw(st.sampled_from([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x97, 0x99]))
            data += puback_v5(pid, code, empty_properties=kind == "ack_props")
            events.append(PubAck(pid, code))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12))
    return level, data, events, cuts


@given(ack_streams())
def test_reader_random_chunking(case: tuple[int, bytes, list[Event], list[int]]) -> None:
    level, data, events, cuts = case
    assert Reader(level).feed(data) == events
    reader = Reader(level)
    assert feed_chunks(reader, data, cuts) == events
    assert reader.feed(b"") == []  # nothing left over


# ------------------------------------------------------------------ Reader: errors
@pytest.mark.parametrize(
    ("level", "data"),
    [
        pytest.param(4, bytes.fromhex("40 ffffffff 01"), id="five-octet-remaining-length"),
        pytest.param(4, bytes.fromhex("40 ffffffff"), id="four-continuation-octets"),
        pytest.param(4, bytes.fromhex("30 05 0001 74 6869"), id="publish-qos0-v3"),
        pytest.param(5, bytes.fromhex("32 08 0001 74 0001 00 6869"), id="publish-qos1-v5"),
        pytest.param(4, bytes.fromhex("40 03 0001 00"), id="puback-3-octets-v3"),
        pytest.param(4, bytes.fromhex("40 01 00"), id="puback-1-octet-v3"),
        pytest.param(5, bytes.fromhex("40 01 00"), id="puback-1-octet-v5"),
        pytest.param(4, bytes.fromhex("42 02 0001"), id="puback-flags"),
        pytest.param(4, bytes.fromhex("20 02 02 00"), id="connack-reserved-flags-v3"),
        pytest.param(5, bytes.fromhex("20 03 80 00 00"), id="connack-reserved-flags-v5"),
        pytest.param(4, bytes.fromhex("20 03 00 00 00"), id="connack-3-octets-v3"),
        pytest.param(5, bytes.fromhex("20 05 00 00 02 7f 00"), id="connack-unknown-property"),
        pytest.param(5, bytes.fromhex("20 05 00 00 05 21 00"), id="connack-truncated-properties"),
        pytest.param(5, bytes.fromhex("20 05 00 00 02 21 00"), id="connack-truncated-u16"),
        pytest.param(5, bytes.fromhex("20 06 00 00 03 21 0000"), id="connack-receive-maximum-0"),
        pytest.param(4, bytes.fromhex("d0 01 00"), id="pingresp-with-body"),
        pytest.param(4, bytes.fromhex("e0 00"), id="disconnect-in-3.1.1"),
        pytest.param(4, bytes.fromhex("90 03 0001 00"), id="suback-not-subscribed"),
        pytest.param(4, bytes.fromhex("00 00"), id="reserved-type-0"),
        # MAX_INBOUND + 1 = 1048577 = 1 + 0 * 128 + 64 * 16384 -> 81 80 40.
        pytest.param(4, bytes.fromhex("40 818040"), id="larger-than-max-inbound"),
    ],
)
def test_reader_rejects(level: int, data: bytes) -> None:
    with pytest.raises(MqttProtocolError):
        Reader(level).feed(data)


def test_reader_max_inbound_boundary() -> None:
    """A remaining length of exactly MAX_INBOUND (80 80 40) is not refused for its
    size: the reader waits for the body."""
    assert MAX_INBOUND == 1 << 20
    assert Reader(5).feed(bytes.fromhex("d0 808040")) == []


def test_reader_connack_v5_properties() -> None:
    """MQTT 5 CONNACK with Receive Maximum (0x21) 3, Maximum QoS (0x24) 1, a Reason
    String (0x1F) "hello" and a User Property (0x26) k=v."""
    props = bytes.fromhex("21 0003  24 01  1f 0005 68656c6c6f  26 0001 6b 0001 76")
    assert len(props) == 20
    body = bytes.fromhex("01 00 14") + props
    events = Reader(5).feed(bytes((0x20, len(body))) + body)
    assert events == [
        ConnAck(0, session_present=True, receive_maximum=3, maximum_qos=1, reason="hello")
    ]


def test_reader_connack_refusals() -> None:
    # 3.1.1 return code 5, MQTT 5 reason code 0x87 without and with a reason string.
    [v3] = Reader(4).feed(bytes.fromhex("20 02 00 05"))
    assert isinstance(v3, ConnAck) and v3.code == 5 and v3.refusal == "not authorized"
    [v5] = Reader(5).feed(bytes.fromhex("20 03 00 87 00"))
    assert isinstance(v5, ConnAck) and v5.code == 0x87 and v5.refusal == "not authorized"
    [told] = Reader(5).feed(bytes.fromhex("20 07 00 86 04 1f 0001 78"))
    assert isinstance(told, ConnAck) and told.refusal == "x"


# ------------------------------------------------------------------ Connection
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(puback(1), id="puback-before-connack"),
        pytest.param(PINGRESP_BYTES, id="pingresp-before-connack"),
    ],
)
def test_connection_wants_connack_first(data: bytes) -> None:
    with pytest.raises(MqttProtocolError):
        Connection(4).receive(data)


def test_connection_second_connack() -> None:
    conn = connected(4)
    with pytest.raises(MqttProtocolError):
        conn.receive(CONNACK_V3_OK)


def test_connection_puback_not_in_flight() -> None:
    conn = connected(4)
    _, pid = conn.publish("t", b"x", qos=1)
    assert pid == 1
    with pytest.raises(MqttProtocolError):
        conn.receive(puback(2))
    conn2 = connected(4)
    conn2.publish("t", b"x", qos=1)
    conn2.receive(puback(1))
    with pytest.raises(MqttProtocolError):
        conn2.receive(puback(1))  # acknowledged twice


@pytest.mark.parametrize("connack", [b"", bytes.fromhex("20 02 00 05")])
def test_connection_publish_needs_a_successful_connack(connack: bytes) -> None:
    conn = Connection(4)
    conn.receive(connack)
    assert not conn.connected
    for qos in (0, 1):
        with pytest.raises(MqttProtocolError):
            conn.publish("t", b"x", qos=qos)


def test_connection_packet_ids_skip_in_flight_and_wrap() -> None:
    conn = connected(4)
    _, first = conn.publish("t", b"held", qos=1)
    assert first == 1
    _, ids = conn.publish_many([("t", b"")] * 0xFFFE, qos=1)
    assert ids == list(range(2, 0x10000))
    assert conn.room == 0
    conn.receive(b"".join(puback(i) for i in ids))
    assert conn.inflight == {1}
    # After 65535 the next identifier is 1, which is still in flight: 2. Never 0.
    _, pid = conn.publish("t", b"x", qos=1)
    assert pid == 2
    conn.receive(puback(1))
    conn.receive(puback(2))
    seen = []
    for _ in range(0x10000 + 5):
        _, pid = conn.publish("t", b"", qos=1)
        conn.receive(puback(pid))
        seen.append(pid)
    assert 0 not in seen
    assert seen[:3] == [3, 4, 5]
    wrap = seen.index(0xFFFF)
    assert seen[wrap + 1 : wrap + 3] == [1, 2]


def test_connection_receive_maximum_room() -> None:
    conn = Connection(5)
    conn.receive(connack_v5_receive_maximum(3))
    assert conn.room == 3
    ids = []
    for expected_room in (2, 1, 0):
        _, pid = conn.publish("t", b"x", qos=1)
        ids.append(pid)
        assert conn.room == expected_room
    with pytest.raises(MqttProtocolError):
        conn.publish("t", b"x", qos=1)
    # QoS 0 needs no room and takes none.
    packet, pid = conn.publish("t", b"x", qos=0)
    assert pid == 0 and conn.room == 0
    assert packet == bytes.fromhex("30 05 0001 74 00 78")
    conn.receive(puback(ids[1]))
    assert conn.room == 1
    conn.receive(puback_v5(ids[0], 0x10) + puback(ids[2]))
    assert conn.room == 3
    # publish_many at QoS 0: no identifiers, no room taken.
    _, none = conn.publish_many([("t", b"a"), ("t", b"b")], qos=0)
    assert none == [] and conn.room == 3


def ack(kind: int, packet_id: int, code: int | None = None) -> bytes:
    """PUBREC (0x50) or PUBCOMP (0x70) from the specification (3.5, 3.7): the packet
    identifier, and in MQTT 5 an optional reason code."""
    body = bytes((packet_id >> 8, packet_id & 0xFF)) + (b"" if code is None else bytes((code,)))
    return bytes((kind, len(body))) + body


@pytest.mark.parametrize("level", [4, 5])
def test_connection_qos2_exchange(level: int) -> None:
    """QoS 2 (4.3.3): PUBLISH, PUBREC from the broker, our PUBREL (62 02 id), PUBCOMP.
    The identifier stays in flight, taking room, until the PUBCOMP."""
    conn = connected(level)
    packet, pid = conn.publish("t", b"x", qos=2)
    assert packet[0] == 0x34 and pid == 1  # PUBLISH, QoS 2 flag bits
    assert conn.data_to_send() == b""
    assert conn.receive(ack(0x50, pid)) == [PubRec(pid)]
    assert conn.data_to_send() == bytes.fromhex("62 02 0001")  # PUBREL (flags 0010)
    assert conn.data_to_send() == b""  # handed over once
    assert conn.inflight == {pid}
    assert conn.receive(ack(0x70, pid)) == [PubComp(pid)]
    assert conn.inflight == set()
    # Out of order or for the wrong QoS: protocol errors.
    _, two = conn.publish("t", b"x", qos=2)
    with pytest.raises(MqttProtocolError):
        conn.receive(ack(0x70, two))  # PUBCOMP before PUBREC
    conn = connected(level)
    _, two = conn.publish("t", b"x", qos=2)
    conn.receive(ack(0x50, two))
    with pytest.raises(MqttProtocolError):
        conn.receive(puback(two))  # a released QoS 2 publish is not answered by PUBACK
    conn = connected(level)
    _, one = conn.publish("t", b"x", qos=1)
    with pytest.raises(MqttProtocolError):
        conn.receive(ack(0x50, one))  # nor a QoS 1 one by PUBREC


@pytest.mark.parametrize("level", [4, 5])
def test_connection_qos2_answered_with_puback(level: int) -> None:
    """RabbitMQ's MQTT plugin takes QoS 2 publishes at QoS 1 and answers them with
    PUBACK (not PUBREC): that ends the exchange (no PUBREL) and frees the identifier,
    and the downgrade is counted; a second PUBACK for it is an error."""
    conn = connected(level)
    _, two = conn.publish("t", b"x", qos=2)
    assert conn.receive(puback(two)) == [PubAck(two)]
    assert conn.data_to_send() == b"" and conn.inflight == set()
    assert conn.qos2_as_qos1 == 1
    with pytest.raises(MqttProtocolError):
        conn.receive(puback(two))
    # The QoS 2 limit on 3.1.1 counts only exchanges still open.
    conn = connected(4)
    for _ in range(QOS2_INFLIGHT_V311 * 2):
        _, pid = conn.publish("t", b"x", qos=2)
        conn.receive(puback(pid))
    assert conn.room_for(2) == QOS2_INFLIGHT_V311 and conn.qos2_as_qos1 == QOS2_INFLIGHT_V311 * 2


def test_connection_qos2_in_flight_limit_on_311() -> None:
    """MQTT 3.1.1 has no flow control and Mosquitto drops QoS 2 messages beyond its
    in-flight quota (answering PUBREC all the same): at most QOS2_INFLIGHT_V311 QoS 2
    exchanges at once; QoS 1 and MQTT 5 (Receive Maximum) are not limited by it."""
    conn = connected(4)
    ids = [conn.publish("t", b"x", qos=2)[1] for _ in range(QOS2_INFLIGHT_V311)]
    assert conn.room_for(2) == 0 and conn.room_for(1) > 0
    with pytest.raises(MqttProtocolError):
        conn.publish("t", b"x", qos=2)
    conn.publish("t", b"x", qos=1)  # QoS 1 still goes
    conn.receive(ack(0x50, ids[0]))
    assert conn.room_for(2) == 0  # released, not complete: still in flight
    conn.receive(ack(0x70, ids[0]))
    assert conn.room_for(2) == 1
    v5 = connected(5)
    for _ in range(QOS2_INFLIGHT_V311 + 5):
        v5.publish("t", b"x", qos=2)
    assert v5.room_for(2) == v5.room > 0


def test_connection_qos2_refused_at_pubrec() -> None:
    """MQTT 5: a PUBREC with an error reason ends the exchange: no PUBREL, the
    identifier is free."""
    conn = connected(5)
    _, pid = conn.publish("t", b"x", qos=2)
    assert conn.receive(ack(0x50, pid, 0x87)) == [PubRec(pid, 0x87)]
    assert conn.data_to_send() == b"" and conn.inflight == set()


def test_connection_respects_connack_limits() -> None:
    # Maximum QoS 0 (0x24) and Retain Available 0 (0x25).
    conn = Connection(5)
    conn.receive(bytes.fromhex("20 07 00 00 04 24 00 25 00"))
    with pytest.raises(MqttProtocolError):
        conn.publish("t", b"x", qos=1)
    with pytest.raises(MqttProtocolError):
        conn.publish("t", b"x", qos=0, retain=True)
    _, pid = conn.publish("t", b"x", qos=0)
    assert pid == 0


# ------------------------------------------------------------------ against Mosquitto
@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path) as b:
        yield b


def client(
    port: int,
    protocol: str,
    client_id: str,
    *,
    keepalive: int = 30,
    username: str = "",
    password: str = "",
    will: Will | None = None,
    timeout: float = BOUND,
) -> MqttClient:
    return MqttClient(
        HOST,
        port,
        client_id=client_id,
        protocol=protocol,
        keepalive=keepalive,
        username=username,
        password=password,
        will=will,
        timeout=timeout,
    )


def on(col: Collector, topic: str) -> list[Received]:
    return [m for m in col.messages if m.topic == topic]


@pytest.mark.mqtt
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_publishes_reach_an_independent_subscriber(
    broker: MosquittoBroker, protocol: str
) -> None:
    big = bytes(i % 251 for i in range(20_000))  # remaining length takes three octets
    q1 = [("t/q1", f"message {i}".encode()) for i in range(1000)]
    q0 = [f"zero {i}".encode() for i in range(5)]
    q0many = [("t/q0many", f"many {i}".encode()) for i in range(5)]
    q2 = [("t/q2", f"exactly once {i}".encode()) for i in range(50)]
    async with (
        Collector(broker.port, ["t/#"]) as col,
        client(broker.port, protocol, f"pub-{protocol}") as pub,
    ):
        await pub.publish("t/retained", "kept", qos=1, retain=True)
        for start in range(0, len(q1), 100):
            await pub.publish_many(q1[start : start + 100], qos=1)
            # Let the subscriber keep up (Mosquitto queues at most 1000 per client).
            await col.wait(lambda: len(on(col, "t/q1")) >= start + 100, BOUND)  # noqa: B023
        for payload in q0:
            await pub.publish("t/q0", payload, qos=0)
        await pub.publish_many(q0many, qos=0)
        await pub.publish("t/big", big, qos=1)
        # QoS 2: each returns only after Mosquitto's PUBCOMP, which follows our PUBREL.
        await pub.publish_many(q2, qos=2)
        await pub.publish("t/q2one", b"alone", qos=2)
        await col.wait(lambda: len(on(col, "t/q2")) >= len(q2), BOUND, what="QoS 2")
        assert pub.connected and pub.refused == 0

        async with Collector(broker.port, ["t/#"]) as late:
            await pub.publish("t/marker", b"end", qos=1)
            await late.wait(lambda: bool(on(late, "t/marker")), BOUND, what="marker")
            await col.wait(lambda: bool(on(col, "t/marker")), BOUND, what="marker")
        # The late subscriber got the retained message (retain flag set) and nothing
        # else that was published before it subscribed.
        assert [(m.topic, m.payload, m.retain) for m in late.messages] == [
            ("t/retained", b"kept", True),
            ("t/marker", b"end", False),
        ]

    # Everything arrived once, in order per topic, at the QoS it was published with.
    assert col.subscriptions == 1
    assert [(m.payload, m.qos) for m in on(col, "t/retained")] == [(b"kept", 1)]
    assert [m.payload for m in on(col, "t/q1")] == [p for _, p in q1]
    assert {m.qos for m in on(col, "t/q1")} == {1}
    assert [(m.payload, m.qos) for m in on(col, "t/q0")] == [(p, 0) for p in q0]
    assert [(m.payload, m.qos) for m in on(col, "t/q0many")] == [(p, 0) for _, p in q0many]
    assert [(m.payload, m.qos) for m in on(col, "t/big")] == [(big, 1)]
    # The subscriber asked for QoS 1, so QoS 2 messages reach it at 1: once each.
    assert [m.payload for m in on(col, "t/q2")] == [p for _, p in q2]
    assert [m.payload for m in on(col, "t/q2one")] == [b"alone"]
    assert len(col.messages) == 1 + len(q1) + len(q0) + len(q0many) + 1 + len(q2) + 1 + 1


@pytest.mark.mqtt
@pytest.mark.parametrize("kind", ["mosquitto", "rabbitmq"])
async def test_what_each_broker_does_with_qos2_retain_and_mqtt5(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """The client against both broker implementations the feed is tested with, and
    what RabbitMQ's MQTT plugin (3.1.1 only up to 3.12) does differently: it takes
    QoS 2 publishes at QoS 1 (PUBACK, no PUBREC/PUBCOMP; a QoS 2 subscriber gets
    them at QoS 1), sends a retained message only to a subscription to its exact
    topic (no wildcard), and closes an MQTT 5 CONNECT without a CONNACK."""
    with contextlib.ExitStack() as stack:
        if kind == "mosquitto":
            port = stack.enter_context(MosquittoBroker(tmp_path)).port
        else:
            port = request.getfixturevalue("rabbitmq").port
        rabbit = kind == "rabbitmq"
        q2 = [(f"{kind}/q2", f"exactly once {i}".encode()) for i in range(30)]
        async with (
            Collector(port, [f"{kind}/#"], qos=2) as col,
            client(port, "3.1.1", f"interop-{kind}") as pub,
        ):
            await pub.publish_many(q2, qos=2)  # more than QOS2_INFLIGHT_V311 at once
            await pub.publish(f"{kind}/q2one", b"alone", qos=2)
            await pub.publish(f"{kind}/kept/status", b"kept", qos=1, retain=True)
            await col.wait(lambda: len(col.messages) == len(q2) + 2, BOUND, what="all")
            assert pub.connected and pub.refused == 0
            assert pub.qos2_as_qos1 == (len(q2) + 1 if rabbit else 0)
        assert [m.payload for m in on(col, f"{kind}/q2")] == [p for _, p in q2]
        assert {m.qos for m in col.messages if "/q2" in m.topic} == {1 if rabbit else 2}

        exact, wild = [f"{kind}/kept/status"], [f"{kind}/+/status", f"{kind}/#"]
        async with Collector(port, exact) as one, Collector(port, wild) as many:
            await one.wait(lambda: bool(one.messages), BOUND, what="retained")
            assert [(m.payload, m.retain) for m in one.messages] == [(b"kept", True)]
            if not rabbit:
                await many.wait(lambda: len(many.messages) == 2, BOUND, what="retained")
            # A publish after both subscribed: what "many" holds by then is complete.
            async with client(port, "3.1.1", f"marker-{kind}") as pub:
                await pub.publish(f"{kind}/marker", b"end", qos=1)
            await many.wait(lambda: bool(on(many, f"{kind}/marker")), BOUND, what="marker")
            retained = [m for m in many.messages if m.retain]
            assert len(retained) == (0 if rabbit else 2)  # once per matching filter

        v5 = client(port, "5", f"v5-{kind}")
        if rabbit:
            with pytest.raises(MqttError) as info:
                await v5.connect()
            assert str(info.value).endswith('without MQTT 5 does that: try protocol = "3.1.1"')
            assert not v5.connected
        else:
            async with v5:
                await v5.publish(f"{kind}/v5", b"five", qos=2)
                assert v5.qos2_as_qos1 == 0


@pytest.mark.mqtt
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_will_on_abort_not_on_disconnect(broker: MosquittoBroker, protocol: str) -> None:
    will = Will("w/status", b"offline", qos=1, retain=True)
    quiet = Will("q/status", b"should not appear", qos=1, retain=False)
    async with Collector(broker.port, ["w/#", "q/#"]) as col:
        # Dropped without DISCONNECT: the broker publishes the will.
        dropped = client(broker.port, protocol, "dropped", will=will)
        await dropped.connect()
        assert dropped.connected
        assert on(col, "w/status") == []
        dropped.abort("test")
        assert not dropped.connected
        await col.wait(lambda: bool(on(col, "w/status")), BOUND, what="will")
        assert [m.payload for m in on(col, "w/status")] == [b"offline"]

        # A clean DISCONNECT (leaving `async with`): the will is discarded.
        async with client(broker.port, protocol, "clean", will=quiet) as clean:
            await clean.publish("q/status", b"online", qos=1)
        assert not clean.connected
        async with client(broker.port, protocol, "marker") as other:
            await other.publish("q/status", b"marker", qos=1)
        await col.wait(
            lambda: any(m.payload == b"marker" for m in col.messages), BOUND, what="marker"
        )
        assert [m.payload for m in on(col, "q/status")] == [b"online", b"marker"]

    # The will was retained (its CONNECT flag said so), at QoS 1.
    async with Collector(broker.port, ["w/#"]) as late:
        await late.wait(lambda: bool(late.messages), BOUND, what="retained will")
        assert [(m.payload, m.retain, m.qos) for m in late.messages] == [(b"offline", True, 1)]


USER, PASSWORD = "feed", "s3cret"


@dataclass
class LockedBroker:
    port: int
    log: Path


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[LockedBroker]:
    """A second Mosquitto that refuses anonymous clients and knows one user."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise RuntimeError("mosquitto_passwd is not installed (needed by the MQTT tests)")
    passwords = tmp_path / "passwords"
    subprocess.run([tool, "-b", "-c", str(passwords), USER, PASSWORD], check=True)
    port = free_port()
    conf = tmp_path / "locked.conf"
    conf.write_text(
        f"listener {port} {HOST}\nallow_anonymous false\npassword_file {passwords}\n"
        "persistence false\nlog_dest stderr\nlog_type all\n"
        # Run as root, Mosquitto would read the password file as user "mosquitto".
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
    )
    log = tmp_path / "locked.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        end = time.monotonic() + BOUND
        while True:
            with socket.socket() as s:
                if s.connect_ex((HOST, port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(log.read_text(errors="replace"))
            time.sleep(0.02)
        yield LockedBroker(port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.mqtt
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("password", ["", "wrong"])
async def test_refused_connection(
    locked_broker: LockedBroker, protocol: str, password: str
) -> None:
    c = client(
        locked_broker.port,
        protocol,
        "refused",
        username=USER if password else "",
        password=password,
    )
    with pytest.raises(MqttError) as info:
        await asyncio.wait_for(c.connect(), BOUND)
    # Mosquitto 2.0.11 answers "not authorised" to both: 3.1.1 return code 5, MQTT 5
    # reason code 0x87 (not 0x86 for the wrong password).
    assert str(info.value).endswith("refused the connection: not authorized")
    code = 5 if protocol == "3.1.1" else 0x87
    assert f"Sending CONNACK to 127.0.0.1 (0, {code})" in locked_broker.log.read_text()
    assert not c.connected
    with pytest.raises(MqttError):
        c.check()


@pytest.mark.mqtt
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_user_name_and_password_accepted(locked_broker: LockedBroker, protocol: str) -> None:
    """The broker finds the user name and password where our CONNECT put them."""
    async with client(locked_broker.port, protocol, "user", username=USER, password=PASSWORD) as c:
        await c.publish("u/x", b"in", qos=1)
        assert c.connected


@pytest.mark.mqtt
async def test_nothing_listening() -> None:
    c = client(free_port(), "3.1.1", "nobody", timeout=60.0)
    with pytest.raises(MqttError) as info:
        await asyncio.wait_for(c.connect(), BOUND)
    # Refused by the OS, not the connect timeout running out.
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert "no connection within" not in str(info.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_closed_before_connack(protocol: str) -> None:
    """A broker that closes the connection on CONNECT without a CONNACK (a 3.1.1-only
    broker given an MQTT 5 CONNECT): on MQTT 5 the error says what is likely wrong."""

    async def close_on_connect(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.read(1)
        w.close()

    server = await asyncio.start_server(close_on_connect, HOST, 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        c = client(port, protocol, "closed")
        with pytest.raises(MqttError) as info:
            await asyncio.wait_for(c.connect(), BOUND)
    assert "connection closed" in str(info.value)
    hint = 'a broker without MQTT 5 does that: try protocol = "3.1.1"'
    assert str(info.value).endswith(hint) == (protocol == "5")
    assert not c.connected


@pytest.mark.mqtt
async def test_keep_alive_pings(broker: MosquittoBroker) -> None:
    """Clients with a 1 s keep-alive stay connected through a long idle period, while
    a raw connection with the same keep-alive that never pings, opened after them, is
    dropped by the broker for its silence.

    Mosquitto 2.0.11 allows 1.5 times the keep-alive but looks only every few seconds
    (about 6 s here), so the idle period lasts until the silent control connection
    has been dropped (and at least 3.5 s): our clients, silent longer than the control
    but for their pings, would have gone at the same check."""

    async def silent() -> bytes:
        reader, writer = await asyncio.open_connection(HOST, broker.port)
        # CONNECT, 3.1.1, clean, keep alive 1, client identifier "silent".
        writer.write(bytes.fromhex("10 12 0004 4d515454 04 02 0001 0006 73696c656e74"))
        assert await reader.readexactly(4) == CONNACK_V3_OK
        try:
            return await reader.read()  # b"" when the broker closes the connection
        finally:
            writer.close()

    async with (
        Collector(broker.port, ["k/#"]) as col,
        client(broker.port, "3.1.1", "idle-3", keepalive=1) as c3,
        client(broker.port, "5", "idle-5", keepalive=1) as c5,
    ):
        assert c3.keepalive == c5.keepalive == 1  # no Server Keep Alive overrode it
        # The idle period (asyncio.sleep is not asserting any timing here).
        _, dropped = await asyncio.wait_for(asyncio.gather(asyncio.sleep(3.5), silent()), 3 * BOUND)
        assert dropped == b""
        for c in (c3, c5):
            c.check()
            assert c.connected
        await c3.publish("k/3", b"still here", qos=1)
        await c5.publish("k/5", b"still here", qos=1)
        await col.wait(lambda: len(col.messages) == 2, BOUND)
        assert {(m.topic, m.payload) for m in col.messages} == {
            ("k/3", b"still here"),
            ("k/5", b"still here"),
        }
    log = broker.output()
    assert "Client silent has exceeded timeout, disconnecting." in log
    assert not [line for line in log.splitlines() if "idle-" in line and "timeout" in line]


@pytest.mark.mqtt
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_broker_stops_while_idle(broker: MosquittoBroker, protocol: str) -> None:
    async with client(broker.port, protocol, "idle") as c:
        await c.publish("s/x", b"1", qos=1)
        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: not c.connected, BOUND)
        with pytest.raises(MqttError, match=r"connection (lost|closed)|server shutting down"):
            c.check()
        with pytest.raises(MqttError):
            await asyncio.wait_for(c.publish("s/x", b"2", qos=1), BOUND)
        with pytest.raises(MqttError):
            await asyncio.wait_for(c.publish_many([("s/x", b"3")], qos=1), BOUND)


@pytest.mark.mqtt
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_broker_dies_while_publish_many_waits(broker: MosquittoBroker, protocol: str) -> None:
    """The broker is frozen (SIGSTOP) so no PUBACK can come: publish_many waits (in
    3.1.1 for the acknowledgements, in MQTT 5 also for room: Mosquitto's Receive
    Maximum is 20). Killing the broker then ends the wait with MqttError."""
    proc = broker.proc
    assert proc is not None
    async with client(broker.port, protocol, "waiting") as c:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            task = asyncio.create_task(
                c.publish_many([("s/x", b"%d" % i) for i in range(100)], qos=1, timeout=60)
            )
            await asyncio.sleep(0.2)
            assert not task.done()  # nothing can acknowledge: the broker is frozen
            assert c.connected
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            os.kill(proc.pid, signal.SIGCONT)
        with pytest.raises(MqttError, match=r"connection (lost|closed)"):
            await asyncio.wait_for(task, BOUND)
        assert not c.connected
        with pytest.raises(MqttError):
            c.check()


@pytest.mark.mqtt
async def test_session_taken_over(broker: MosquittoBroker) -> None:
    """A second client with the same identifier takes the session over: the first
    connection ends (MQTT 5: the broker may say why with DISCONNECT 0x8E, which
    Mosquitto 2.0.11 does not send; it closes the connection) and its waits fail."""
    first = client(broker.port, "5", "same")
    await first.connect()
    try:
        async with client(broker.port, "5", "same") as second:
            await wait_until(lambda: not first.connected, BOUND)
            with pytest.raises(MqttError, match=r"session taken over|connection (closed|lost)"):
                first.check()
            with pytest.raises(MqttError):
                await first.publish("x/y", b"z", qos=1)
            await second.publish("x/y", b"z", qos=1)
            assert second.connected
    finally:
        await first.disconnect()
    assert "Client same already connected, closing old connection" in broker.output()


class ScriptedBroker:
    """An MQTT 5 server that answers CONNECT with a success CONNACK and, when told,
    writes a DISCONNECT (the bytes given, written by hand)."""

    def __init__(self) -> None:
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._on_client, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self.writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(2)  # CONNECT, remaining length < 128 here
        assert first[0] == 0x10 and first[1] < 128
        await reader.readexactly(first[1])
        writer.write(CONNACK_V5_OK)
        self.writers.append(writer)
        with contextlib.suppress(OSError):
            await reader.read()

    def send(self, data: bytes) -> None:
        for w in self.writers:
            w.write(data)


@pytest.mark.parametrize(
    ("disconnect", "message"),
    [
        (bytes.fromhex("e0 01 8e"), "the broker disconnected: session taken over"),
        (bytes.fromhex("e0 02 8e 00"), "the broker disconnected: session taken over"),
        # Reason string (0x1F) "moved": the broker's words win.
        (bytes.fromhex("e0 0a 8e 08 1f 0005 6d6f766564"), "the broker disconnected: moved"),
    ],
)
async def test_broker_disconnect_v5(disconnect: bytes, message: str) -> None:
    """The MQTT 5 DISCONNECT path Mosquitto does not exercise, from a scripted
    server: the client's waits fail with the reason the broker gave."""
    async with ScriptedBroker() as server:
        c = client(server.port, "5", "same")
        await c.connect()
        await wait_until(lambda: bool(server.writers), BOUND)
        server.send(disconnect)
        await wait_until(lambda: not c.connected, BOUND)
        with pytest.raises(MqttError) as info:
            c.check()
        assert str(info.value) == message


@pytest.mark.mqtt
@pytest.mark.parametrize("qos", [0, 1])
async def test_empty_publish_many(broker: MosquittoBroker, qos: int) -> None:
    """Nothing to publish is done at once, at either QoS."""
    async with client(broker.port, "3.1.1", "empty") as c:
        await c.publish_many([], qos=qos, timeout=0.5)
        assert c.connected


@pytest.mark.mqtt
async def test_concurrent_publishers_share_the_window(broker: MosquittoBroker) -> None:
    """As in the feed (a batch and the stats loop at once): over MQTT 5, where
    Mosquitto's Receive Maximum (20) runs out, publish_many and publish calls
    waiting for room together must all get it as PUBACKs come. (The 3 s timeouts
    only turn a lost wake-up into an error; 205 local publishes take milliseconds.)"""
    async with (
        Collector(broker.port, ["c/#"]) as col,
        client(broker.port, "5", "window", timeout=3.0) as c,
    ):
        batch = [("c/batch", b"%d" % i) for i in range(200)]
        singles = [b"%d" % i for i in range(5)]
        await asyncio.gather(
            c.publish_many(batch, qos=1, timeout=3.0),
            *(c.publish("c/single", p, qos=1) for p in singles),
        )
        await col.wait(lambda: len(col.messages) == 205, BOUND)
    assert [m.payload for m in on(col, "c/batch")] == [p for _, p in batch]
    assert sorted(m.payload for m in on(col, "c/single")) == sorted(singles)


def test_levels() -> None:
    assert LEVELS == {"3.1.1": 4, "5": 5}
    with pytest.raises(ValueError):
        MqttClient(HOST, 1883, client_id="x", protocol="3.1")


# ------------------------------------------------------------------ the broker's limits
def test_connection_refuses_a_packet_over_the_maximum_packet_size() -> None:
    """MQTT 5 Maximum Packet Size (0x27): a PUBLISH over it is refused before it takes
    a packet identifier; the connection goes on."""
    conn = Connection(5)
    conn.receive(bytes.fromhex("20 08 00 00 05 27 00000040"))  # at most 64 octets
    assert conn.connack is not None and conn.connack.maximum_packet_size == 64
    packet, pid = conn.publish("t", b"x" * 40, qos=1)
    assert len(packet) <= 64 and pid == 1
    with pytest.raises(PacketTooLarge):
        conn.publish("t", b"x" * 60, qos=1)
    assert conn.inflight == {1}


class LimitedBroker(ScriptedBroker):
    """Answers CONNECT with an MQTT 5 CONNACK stating Maximum QoS 1, Retain Available
    0 and Maximum Packet Size 100, then records each PUBLISH (parsed here from the
    specification, 3.3) and answers PUBACK to those at QoS 1."""

    CONNACK = bytes.fromhex("20 0c 00 00 09 24 01 25 00 27 00000064")

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, bytes, int, bool]] = []  # topic, payload, qos, retain

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, OSError):
            while True:
                first = (await reader.readexactly(1))[0]
                size, shift = 0, 0
                while True:
                    b = (await reader.readexactly(1))[0]
                    size |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                body = await reader.readexactly(size)
                if first >> 4 == 1:  # CONNECT
                    writer.write(self.CONNACK)
                elif first >> 4 == 3:  # PUBLISH
                    qos, retain = (first >> 1) & 3, bool(first & 1)
                    n = int.from_bytes(body[:2], "big")
                    topic, rest = body[2 : 2 + n].decode(), body[2 + n :]
                    if qos:
                        pid, rest = rest[:2], rest[2:]
                        writer.write(b"\x40\x02" + pid)
                    props = rest[0]  # property length, 0 from this client
                    self.published.append((topic, rest[1 + props :], qos, retain))


async def test_client_keeps_within_the_brokers_limits(caplog: pytest.LogCaptureFixture) -> None:
    """What an MQTT 5 broker states in its CONNACK holds: QoS 2 asked for goes at the
    broker's maximum (1), retained goes unretained when retain is not available, and
    a message over the Maximum Packet Size is left out (logged, counted) instead of
    ending the connection over it."""
    async with LimitedBroker() as broker, client(broker.port, "5", "limits") as c:
        await c.publish("s/status", "online", qos=2, retain=True)
        big = b"y" * 200
        await c.publish_many([("e/1", b"a"), ("e/2", big), ("e/3", b"c")], qos=2)
        await c.publish_many([("e/4", big)], qos=1)  # only too large: nothing to wait for
        await c.publish("e/5", big)
        assert c.connected and c.too_large == 3
    assert broker.published == [
        ("s/status", b"online", 1, False),
        ("e/1", b"a", 1, False),
        ("e/3", b"c", 1, False),
    ]
    assert "exceeds the broker's Maximum Packet Size of 100" in caplog.text


@pytest.mark.mqtt
def test_client_on_uvloop(broker: MosquittoBroker) -> None:
    """`bounceback run` runs on uvloop, and so does the feed's client when the
    publisher is inline: uvloop's transports are not asyncio's classes."""
    import uvloop

    async def main() -> tuple[list[bytes], bool]:
        async with Collector(broker.port, ["uv/#"]) as col:
            async with client(broker.port, "3.1.1", "on-uvloop") as c:
                await c.publish_many([("uv/t", b"%d" % i) for i in range(50)], qos=1)
                await c.publish("uv/t", b"last", qos=1, retain=False)
            await col.wait(lambda: len(col.messages) == 51, BOUND)
            return [m.payload for m in col.messages], "uvloop" in type(
                asyncio.get_running_loop()
            ).__module__

    payloads, on_uvloop = uvloop.run(main())
    assert on_uvloop
    assert payloads == [b"%d" % i for i in range(50)] + [b"last"]


class _RecordingSocket:
    """Stands in for a transport's socket: records setsockopt calls."""

    family = socket.AF_INET

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.fail = fail

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.calls.append((level, option, value))
        if self.fail:
            raise OSError("not supported")


class _Transport(asyncio.Transport):
    def __init__(self, sock: object) -> None:
        super().__init__()
        self.sock = sock

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.sock if name == "socket" else default


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_every_read_acknowledges_at_once() -> None:
    """Each read puts the socket back in quick-ack mode (it is not sticky), so a broker
    with Nagle's algorithm on is not left waiting for our delayed ACK before it sends
    the PUBACKs a batch waits for."""
    from bounceback.feed.client import _Protocol

    c = MqttClient(HOST, 1883, client_id="quickack")
    sock = _RecordingSocket()
    p = _Protocol(c)
    p.connection_made(_Transport(sock))
    quick = (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    c._received = lambda data: None  # type: ignore[method-assign]
    p.data_received(b"\x20")
    p.data_received(b"\x02")
    assert sock.calls == [quick, quick]
    # A socket that refuses the option is left alone after the first refusal.
    refusing = _RecordingSocket(fail=True)
    p = _Protocol(c)
    p.connection_made(_Transport(refusing))
    p.data_received(b"\x20")
    p.data_received(b"\x02")
    assert refusing.calls == [quick]
    assert p.quickack is None


@pytest.mark.mqtt
@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_quickack_on_a_real_connection(broker: MosquittoBroker, loop: str) -> None:
    """On both event loops the transport's socket takes the option: the client keeps
    it, and publishes over it are acknowledged as usual."""
    import uvloop

    async def main() -> None:
        async with client(broker.port, "3.1.1", f"quickack-{loop}") as c:
            assert c._transport is not None
            protocol = c._transport.get_protocol()
            await c.publish_many([("q/t", b"%d" % i) for i in range(500)], qos=1, timeout=BOUND)
            assert getattr(protocol, "quickack", None) is not None  # never refused

    (uvloop.run if loop == "uvloop" else asyncio.run)(main())
