"""The MQTT client protocol the feed speaks (3.1.1 and 5), sans I/O.

The feed only publishes: it connects (with a last will), sends PUBLISH packets at
QoS 0, 1 or 2, reads the acknowledgements, pings when idle and disconnects. This
module is that much of MQTT as pure code: `Connection` turns those intentions into bytes and the
broker's bytes into events, and keeps the protocol's state (packet identifiers in
flight, the broker's Receive Maximum). It reads no socket and no clock; the asyncio
shell is `client.MqttClient`.

Why the feed has a client of its own (the default; ``[feed] client = "aiomqtt"``
uses aiomqtt, see `aiomqtt_client`): the feed publishes every message's life, several
events per message, and a general client (paho under aiomqtt) builds a message
object, a lock, a condition and, for every acknowledgement, reason-code and
property objects, whatever the protocol version. Here a publish is one packet built
from bytes and an acknowledgement is four octets read (see ``bench/bench_feed.py``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import attrs

# The protocol levels a CONNECT names.
LEVELS = {"3.1.1": 4, "5": 5}

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
PINGREQ_TYPE, PINGRESP, DISCONNECT = 12, 13, 14

PINGREQ = bytes((PINGREQ_TYPE << 4, 0))
MAX_REMAINING = 268_435_455  # what four octets of remaining length can say
MAX_PACKET_ID = 0xFFFF
# QoS 2 publishes in flight at once on MQTT 3.1.1, which has no flow control:
# Mosquitto (max_inflight_messages, default 20) answers QoS 2 messages beyond its
# quota with a PUBREC and drops them, and a 3.1.1 PUBREC cannot say so. paho's
# default in-flight limit is the same 20. (MQTT 5 brokers state their Receive
# Maximum; QoS 1 messages are not held by the broker, so they are not limited.)
QOS2_INFLIGHT_V311 = 20
MAX_INBOUND = 1 << 20  # the largest packet accepted from a broker (a publisher gets small ones)

# MQTT 3.1.1 CONNACK return codes (3.2.2.3).
CONNACK_V3 = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

# MQTT 5 reason codes a publisher meets (2.4), for messages.
REASONS_V5 = {
    0x00: "success",
    0x04: "disconnect with will message",
    0x10: "no matching subscribers",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x90: "topic name invalid",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9F: "connection rate exceeded",
}

# MQTT 5 properties (2.2.2.2): identifier -> how its value is encoded.
_BYTE, _U16, _U32, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTIES = {
    0x01: _BYTE,  # payload format indicator
    0x02: _U32,  # message expiry interval
    0x03: _UTF8,  # content type
    0x08: _UTF8,  # response topic
    0x09: _BINARY,  # correlation data
    0x0B: _VARINT,  # subscription identifier
    0x11: _U32,  # session expiry interval
    0x12: _UTF8,  # assigned client identifier
    0x13: _U16,  # server keep alive
    0x15: _UTF8,  # authentication method
    0x16: _BINARY,  # authentication data
    0x17: _BYTE,  # request problem information
    0x18: _U32,  # will delay interval
    0x19: _BYTE,  # request response information
    0x1A: _UTF8,  # response information
    0x1C: _UTF8,  # server reference
    0x1F: _UTF8,  # reason string
    0x21: _U16,  # receive maximum
    0x22: _U16,  # topic alias maximum
    0x23: _U16,  # topic alias
    0x24: _BYTE,  # maximum QoS
    0x25: _BYTE,  # retain available
    0x26: _PAIR,  # user property
    0x27: _U32,  # maximum packet size
    0x28: _BYTE,  # wildcard subscription available
    0x29: _BYTE,  # subscription identifier available
    0x2A: _BYTE,  # shared subscription available
}
RECEIVE_MAXIMUM, MAXIMUM_QOS, RETAIN_AVAILABLE, MAXIMUM_PACKET_SIZE = 0x21, 0x24, 0x25, 0x27
SERVER_KEEP_ALIVE, REASON_STRING = 0x13, 0x1F


class MqttProtocolError(Exception):
    """The broker sent what MQTT does not allow here (or we were asked to)."""


class PacketTooLarge(MqttProtocolError):
    """A PUBLISH larger than the broker's Maximum Packet Size (MQTT 5): sending it
    would end the connection, so it is refused here and the connection goes on."""


@attrs.frozen
class Will:
    """The last will: published by the broker when the connection ends without a
    DISCONNECT (the process died, the network went)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@attrs.frozen
class ConnAck:
    """The broker's answer to CONNECT. `code` 0 is success; `refusal` says why not.
    The limits come from MQTT 5 CONNACK properties (3.1.1 brokers state none)."""

    code: int
    session_present: bool = False
    receive_maximum: int = MAX_PACKET_ID
    maximum_qos: int = 2
    retain_available: bool = True
    maximum_packet_size: int = 0  # 0: no limit stated
    server_keep_alive: int | None = None
    reason: str = ""

    @property
    def refusal(self) -> str:
        return self.reason or f"code {self.code}"


@attrs.frozen
class PubAck:
    packet_id: int
    code: int = 0  # MQTT 5 reason code; >= 0x80 means the broker refused the message


@attrs.frozen
class PubRec:
    """QoS 2, first answer: the broker has the message (we then send PUBREL)."""

    packet_id: int
    code: int = 0  # >= 0x80: refused, and the exchange ends here


@attrs.frozen
class PubComp:
    """QoS 2, last answer: the exchange is complete."""

    packet_id: int
    code: int = 0


@attrs.frozen
class PingResp:
    pass


@attrs.frozen
class Disconnect:
    """The broker ends the connection (MQTT 5 only sends this)."""

    code: int = 0
    reason: str = ""


Event = ConnAck | PubAck | PubRec | PubComp | PingResp | Disconnect


# ------------------------------------------------------------------ encoding
def varint(n: int) -> bytes:
    """A Variable Byte Integer (remaining length, property lengths)."""
    if not 0 <= n <= MAX_REMAINING:
        raise MqttProtocolError(f"length {n} out of range")
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def utf8(s: str) -> bytes:
    """A UTF-8 Encoded String: two octets of length, then the text."""
    data = s.encode()
    return binary(data)


def binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise MqttProtocolError(f"string of {len(data)} octets (at most 65535)")
    return struct.pack(">H", len(data)) + data


def connect_packet(
    client_id: str,
    *,
    level: int = 4,
    keepalive: int = 60,
    username: str = "",
    password: str = "",
    will: Will | None = None,
    clean: bool = True,
) -> bytes:
    """CONNECT (3.1): with a will, user name and password when given."""
    if level not in (4, 5):
        raise MqttProtocolError(f"protocol level {level} (4 or 5)")
    if not 0 <= keepalive <= 0xFFFF:
        raise MqttProtocolError(f"keep alive {keepalive} out of range")
    flags = 0x02 if clean else 0
    payload = [utf8(client_id)]
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise MqttProtocolError(f"will QoS {will.qos}")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        if level == 5:
            payload.append(b"\x00")  # no will properties
        payload += [utf8(will.topic), binary(will.payload)]
    if username:
        flags |= 0x80
        payload.append(utf8(username))
    if password:
        if level == 4 and not username:
            raise MqttProtocolError("MQTT 3.1.1 sends a password only with a user name")
        flags |= 0x40
        payload.append(binary(password.encode()))
    head = b"\x00\x04MQTT" + bytes((level, flags)) + struct.pack(">H", keepalive)
    if level == 5:
        head += b"\x00"  # no properties
    body = head + b"".join(payload)
    return bytes((CONNECT << 4,)) + varint(len(body)) + body


def publish_remaining(topic: bytes, payload: bytes, *, qos: int, level: int) -> int:
    """The remaining length of a PUBLISH: topic, packet identifier (QoS 1 and 2),
    property length (MQTT 5) and payload."""
    return 2 + len(topic) + (2 if qos else 0) + (1 if level == 5 else 0) + len(payload)


def publish_packet(
    topic: bytes, payload: bytes, *, qos: int, retain: bool, packet_id: int, level: int
) -> bytes:
    """PUBLISH (3.3) of an already encoded topic name."""
    first = (PUBLISH << 4) | (qos << 1) | (1 if retain else 0)
    mid = struct.pack(">H", packet_id) if qos else b""
    props = b"\x00" if level == 5 else b""
    if len(topic) > 0xFFFF:
        raise MqttProtocolError(f"topic of {len(topic)} octets (at most 65535)")
    return b"".join(
        (
            bytes((first,)),
            varint(publish_remaining(topic, payload, qos=qos, level=level)),
            struct.pack(">H", len(topic)),
            topic,
            mid,
            props,
            payload,
        )
    )


def pubrel_packet(packet_id: int) -> bytes:
    """PUBREL (3.6), success (in MQTT 5 a remaining length of 2 means reason 0x00)."""
    return struct.pack(">BBH", (PUBREL << 4) | 0x02, 2, packet_id)


def disconnect_packet(level: int) -> bytes:
    """DISCONNECT, normal (the broker discards the will)."""
    return b"\xe0\x00"  # in MQTT 5 a remaining length of 0 means reason 0x00


# ------------------------------------------------------------------ decoding
class Reader:
    """Splits the broker's byte stream into packets and decodes the ones a publisher
    gets. A packet a client must never receive, or one that does not parse, raises
    MqttProtocolError (the connection is then closed: MQTT has no error reply)."""

    def __init__(self, level: int) -> None:
        self.level = level
        self._buf = b""

    def feed(self, data: bytes) -> list[Event]:
        buf = self._buf + data if self._buf else data
        events: list[Event] = []
        i, n = 0, len(buf)
        while i < n:
            first = buf[i]
            # Fast path: a 3.1.1 PUBACK, or a 5 one without reason code, is 4 octets.
            if first == 0x40 and i + 1 < n and buf[i + 1] == 2:
                if i + 4 > n:
                    break
                events.append(PubAck((buf[i + 2] << 8) | buf[i + 3]))
                i += 4
                continue
            size = 0
            shift = 0
            j = i + 1
            while True:
                if j >= n:
                    self._buf = buf[i:]
                    return events
                b = buf[j]
                size |= (b & 0x7F) << shift
                j += 1
                if not b & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise MqttProtocolError("remaining length longer than four octets")
            if size > MAX_INBOUND:
                raise MqttProtocolError(f"a packet of {size} octets from the broker")
            if j + size > n:
                break
            events.append(self._decode(first, buf[j : j + size]))
            i = j + size
        self._buf = buf[i:]
        return events

    def _decode(self, first: int, body: bytes) -> Event:
        kind, flags = first >> 4, first & 0x0F
        if kind in (PUBACK, PUBREC, PUBCOMP) and flags == 0:
            packet_id, code = self._ack(kind, body)
            if kind == PUBACK:
                return PubAck(packet_id, code)
            return PubRec(packet_id, code) if kind == PUBREC else PubComp(packet_id, code)
        if kind == CONNACK and flags == 0:
            return self._connack(body)
        if kind == PINGRESP and flags == 0 and not body:
            return PingResp()
        if kind == DISCONNECT and flags == 0 and self.level == 5:
            code = body[0] if body else 0
            props = _properties(body, 1) if len(body) > 1 else {}
            return Disconnect(code, str(props.get(REASON_STRING, "")) or _reason(code))
        raise MqttProtocolError(
            f"unexpected packet type {kind} flags {flags:#x} ({len(body)} octets)"
        )

    def _ack(self, kind: int, body: bytes) -> tuple[int, int]:
        """(packet id, reason code) of a PUBACK, PUBREC or PUBCOMP."""
        if len(body) < 2 or (self.level == 4 and len(body) != 2):
            raise MqttProtocolError(f"{_ACK_NAMES[kind]} of {len(body)} octets")
        code = body[2] if len(body) > 2 else 0
        if len(body) > 3:
            _properties(body, 3)  # validated, not used
        return (body[0] << 8) | body[1], code

    def _connack(self, body: bytes) -> ConnAck:
        if len(body) < 2 or (self.level == 4 and len(body) != 2) or body[0] & 0xFE:
            raise MqttProtocolError(f"malformed CONNACK ({body.hex()})")
        present, code = bool(body[0] & 1), body[1]
        if self.level == 4:
            return ConnAck(code, present, reason=CONNACK_V3.get(code, ""))
        props = _properties(body, 2) if len(body) > 2 else {}
        if props.get(RECEIVE_MAXIMUM) == 0:
            raise MqttProtocolError("CONNACK with a Receive Maximum of 0")
        keep = props.get(SERVER_KEEP_ALIVE)
        limit = props.get(MAXIMUM_PACKET_SIZE, 0)
        return ConnAck(
            code,
            present,
            receive_maximum=int(props.get(RECEIVE_MAXIMUM, MAX_PACKET_ID)),
            maximum_qos=int(props.get(MAXIMUM_QOS, 2)),
            retain_available=bool(props.get(RETAIN_AVAILABLE, 1)),
            maximum_packet_size=int(limit) if isinstance(limit, int) else 0,
            server_keep_alive=int(keep) if isinstance(keep, int) else None,
            reason=str(props.get(REASON_STRING, "")) or (_reason(code) if code else ""),
        )


_ACK_NAMES = {PUBACK: "PUBACK", PUBREC: "PUBREC", PUBCOMP: "PUBCOMP"}


def _reason(code: int) -> str:
    return REASONS_V5.get(code, f"reason code {code:#04x}")


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise MqttProtocolError("truncated variable byte integer")
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise MqttProtocolError("variable byte integer longer than four octets")


def _properties(data: bytes, i: int) -> dict[int, int | str | bytes]:
    """The property list at `data[i:]` (its length first), to the end of `data`."""
    size, i = _read_varint(data, i)
    end = i + size
    if end != len(data):
        raise MqttProtocolError(f"properties of {size} octets in {len(data) - i}")
    props: dict[int, int | str | bytes] = {}
    try:
        while i < end:
            pid, i = _read_varint(data, i)
            kind = _PROPERTIES.get(pid)
            value: int | str | bytes
            if kind is None:
                raise MqttProtocolError(f"unknown property {pid:#04x}")
            if kind == _BYTE:
                value, i = data[i], i + 1
            elif kind == _U16:
                (value,), i = struct.unpack_from(">H", data, i), i + 2
            elif kind == _U32:
                (value,), i = struct.unpack_from(">I", data, i), i + 4
            elif kind == _VARINT:
                value, i = _read_varint(data, i)
            else:
                (length,) = struct.unpack_from(">H", data, i)
                raw = data[i + 2 : i + 2 + length]
                if len(raw) != length:
                    raise MqttProtocolError("truncated property")
                i += 2 + length
                value = raw if kind == _BINARY else raw.decode()
                if kind == _PAIR:
                    (length,) = struct.unpack_from(">H", data, i)
                    i += 2 + length
            if i > end:
                raise MqttProtocolError("truncated property")
            props[pid] = value
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise MqttProtocolError(f"malformed properties: {exc}") from exc
    return props


# ------------------------------------------------------------------ the connection
class Connection:
    """One client connection's protocol state.

    `connect()` gives the CONNECT to send; `receive(data)` decodes what the broker
    sent (checking that CONNACK comes first and once, and that every acknowledgement
    answers a publish in flight at its stage); `publish()` gives a PUBLISH and the
    packet identifier its acknowledgement will carry. A QoS 1 publish is complete at
    its PUBACK; a QoS 2 one at its PUBCOMP, after the PUBREL that `receive` queues in
    `data_to_send()` when the PUBREC comes (or at a PUBREC with an error code, or at a
    PUBACK from a broker that downgrades QoS 2 to QoS 1 without saying so). At
    most `room` publishes may be in flight (the broker's Receive Maximum, MQTT 5;
    65535 otherwise, every identifier)."""

    def __init__(self, level: int = 4) -> None:
        if level not in (4, 5):
            raise MqttProtocolError(f"protocol level {level} (4 or 5)")
        self.level = level
        self.connack: ConnAck | None = None
        self.inflight: set[int] = set()
        self.receive_maximum = MAX_PACKET_ID
        self._reader = Reader(level)
        self._next_id = 0
        self._qos2: dict[int, bool] = {}  # QoS 2 in flight: released (PUBREL sent)?
        self.qos2_as_qos1 = 0  # QoS 2 publishes the broker acknowledged with PUBACK
        self._out: list[bytes] = []

    def data_to_send(self) -> bytes:
        """What the protocol itself must send now (PUBRELs), and forget it."""
        out, self._out = b"".join(self._out), []
        return out

    @property
    def connected(self) -> bool:
        return self.connack is not None and self.connack.code == 0

    @property
    def room(self) -> int:
        """How many more QoS 1 publishes may go now."""
        return max(self.receive_maximum - len(self.inflight), 0)

    def room_for(self, qos: int) -> int:
        """How many more publishes at `qos` may go now (QoS 0: any number)."""
        if qos == 0:
            return MAX_PACKET_ID
        if qos == 2 and self.level == 4:
            return min(self.room, max(QOS2_INFLIGHT_V311 - len(self._qos2), 0))
        return self.room

    def connect(
        self,
        client_id: str,
        *,
        keepalive: int = 60,
        username: str = "",
        password: str = "",
        will: Will | None = None,
        clean: bool = True,
    ) -> bytes:
        """The CONNECT to send first."""
        return connect_packet(
            client_id,
            level=self.level,
            keepalive=keepalive,
            username=username,
            password=password,
            will=will,
            clean=clean,
        )

    def receive(self, data: bytes) -> list[Event]:
        events = self._reader.feed(data)
        for e in events:
            if isinstance(e, PubAck):
                pid = e.packet_id
                if pid not in self.inflight or self._qos2.get(pid, False):
                    raise MqttProtocolError(f"PUBACK for packet {pid}, not a publish in flight")
                if pid in self._qos2:
                    # A QoS 2 publish answered with PUBACK instead of PUBREC: the broker
                    # took it at QoS 1 (RabbitMQ's MQTT plugin does). It has the
                    # message, so the exchange ends here: delivery is at least once.
                    del self._qos2[pid]
                    self.qos2_as_qos1 += 1
                self.inflight.remove(pid)
            elif isinstance(e, PubRec):
                pid = e.packet_id
                if self._qos2.get(pid, True):
                    raise MqttProtocolError(f"PUBREC for packet {pid}, not awaiting one")
                if e.code >= 0x80:
                    del self._qos2[pid]
                    self.inflight.remove(pid)
                else:
                    self._qos2[pid] = True
                    self._out.append(pubrel_packet(pid))
            elif isinstance(e, PubComp):
                pid = e.packet_id
                if not self._qos2.get(pid, False):
                    raise MqttProtocolError(f"PUBCOMP for packet {pid}, not released")
                del self._qos2[pid]
                self.inflight.remove(pid)
            elif isinstance(e, ConnAck):
                if self.connack is not None:
                    raise MqttProtocolError("a second CONNACK")
                self.connack = e
                self.receive_maximum = max(e.receive_maximum, 1)
            elif self.connack is None and isinstance(e, PingResp):
                raise MqttProtocolError("PINGRESP before CONNACK")
        return events

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> tuple[bytes, int]:
        """A PUBLISH and its packet identifier (0 at QoS 0: nothing will answer it)."""
        if not self.connected:
            raise MqttProtocolError("publish before a successful CONNACK")
        if qos not in (0, 1, 2):
            raise MqttProtocolError(f"QoS {qos} (0, 1 or 2)")
        ack = self.connack
        assert ack is not None
        if qos > ack.maximum_qos:
            raise MqttProtocolError(f"the broker accepts QoS {ack.maximum_qos} at most")
        if retain and not ack.retain_available:
            raise MqttProtocolError("the broker does not accept retained messages")
        name = topic.encode()
        limit = ack.maximum_packet_size
        if limit:
            remaining = publish_remaining(name, payload, qos=qos, level=self.level)
            size = 1 + len(varint(remaining)) + remaining
            if size > limit:
                raise PacketTooLarge(
                    f"a PUBLISH of {size} octets to {topic} exceeds the broker's "
                    f"Maximum Packet Size of {limit}"
                )
        pid = 0
        if qos:
            if not self.room_for(qos):
                raise MqttProtocolError(f"{len(self.inflight)} publishes in flight: no room")
            pid = self._take_id()
            if qos == 2:
                self._qos2[pid] = False
        return (
            publish_packet(name, payload, qos=qos, retain=retain, packet_id=pid, level=self.level),
            pid,
        )

    def publish_many(
        self,
        items: Iterable[tuple[str, bytes]],
        *,
        qos: int = 1,
        too_large: list[PacketTooLarge] | None = None,
    ) -> tuple[bytes, list[int]]:
        """Several non-retained PUBLISHes in one buffer, and their packet identifiers
        (none at QoS 0). The caller keeps within `room_for(qos)`. With `too_large`, a
        message over the broker's Maximum Packet Size is left out and its error added
        there; without, it raises."""
        parts: list[bytes] = []
        ids: list[int] = []
        for topic, payload in items:
            try:
                packet, pid = self.publish(topic, payload, qos=qos)
            except PacketTooLarge as exc:
                if too_large is None:
                    raise
                too_large.append(exc)
                continue
            parts.append(packet)
            if pid:
                ids.append(pid)
        return b"".join(parts), ids

    def _take_id(self) -> int:
        pid = self._next_id
        while True:
            pid = pid + 1 if pid < MAX_PACKET_ID else 1
            if pid not in self.inflight:
                break
        self._next_id = pid
        self.inflight.add(pid)
        return pid
