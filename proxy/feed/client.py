"""The feed's MQTT client: the asyncio shell around `mqtt.Connection`.

It moves bytes and time and nothing else: connect (TCP or TLS) and wait for the
CONNACK, write PUBLISH packets a batch at a time and wait for their PUBACKs, ping
when nothing was sent for half the keep-alive, and fail every wait at once with
`MqttError` when the connection ends (broker gone, protocol error, no PINGRESP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bounceback.feed.mqtt import (
    LEVELS,
    PINGREQ,
    ConnAck,
    Connection,
    Disconnect,
    MqttProtocolError,
    PacketTooLarge,
    PingResp,
    PubAck,
    PubComp,
    PubRec,
    Will,
    disconnect_packet,
)

log = logging.getLogger("bounceback.mqtt")

T = TypeVar("T")

REFUSED_LOG_EVERY = 1000  # log the 1st, 1001st, ... publish the broker refused
TOO_LARGE_LOG_EVERY = 100  # the same for messages too large for the broker


class MqttError(Exception):
    """The broker could not be reached, refused us, went away or did not answer."""


class _Batch:
    __slots__ = ("done", "remaining")

    def __init__(self, done: asyncio.Future[None], remaining: int) -> None:
        self.done = done
        self.remaining = remaining


# Linux's TCP_QUICKACK (absent elsewhere).
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class _Protocol(asyncio.Protocol):
    def __init__(self, client: MqttClient) -> None:
        self.client = client
        # The socket to keep in quick-ack mode (see data_received), None where that
        # is not available.
        self.quickack: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if _QUICKACK is not None and sock is not None and sock.family != socket.AF_UNIX:
            self.quickack = sock

    def data_received(self, data: bytes) -> None:
        self.client._received(data)
        if self.quickack is not None:
            # Acknowledge the broker's segments at once. A broker that leaves Nagle's
            # algorithm on (Mosquitto's default: set_tcp_nodelay false) holds further
            # PUBACKs until its last segment is acknowledged, while a client that
            # waits for those PUBACKs has nothing to send that would carry the ACK:
            # every batch then waited for the delayed-ACK timer (up to 40 ms),
            # about 96 µs per event at 16,000 events/s (bench/README.md). The mode is not
            # sticky, hence once per read.
            try:
                self.quickack.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except (OSError, AttributeError):
                self.quickack = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client._protocol is self:  # not a connection given up on earlier
            self.client._lost(exc)

    def pause_writing(self) -> None:
        self.client._pause()

    def resume_writing(self) -> None:
        self.client._resume()


class MqttClient:
    """One connection to the broker; ``async with`` connects and disconnects."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        protocol: str = "3.1.1",
        keepalive: int = 30,
        username: str = "",
        password: str = "",
        will: Will | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        if protocol not in LEVELS:
            raise ValueError(f"MQTT protocol {protocol!r} (one of {', '.join(LEVELS)})")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.level = LEVELS[protocol]
        self.keepalive = keepalive
        self.username = username
        self.password = password
        self.will = will
        self.tls = tls
        self.timeout = timeout
        self.refused = 0  # publishes the broker acknowledged with an error (MQTT 5)
        self.too_large = 0  # messages not sent: over the broker's Maximum Packet Size
        self.qos2_as_qos1 = 0  # QoS 2 publishes the broker took at QoS 1 (PUBACK)
        self._conn = Connection(self.level)
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None  # the current connection's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owners: dict[int, _Batch] = {}  # packet id -> the batch waiting for it
        self._connack: asyncio.Future[ConnAck] | None = None
        self._closed: asyncio.Future[MqttError] | None = None  # the reason it ended
        self._room: list[asyncio.Future[None]] = []  # callers waiting for Receive Maximum
        self._writable: asyncio.Future[None] | None = None  # set while writing is paused
        self._keeper: asyncio.Task[None] | None = None
        self._last_tx = 0.0
        self._ping_at: float | None = None  # when the unanswered PINGREQ went

    # ------------------------------------------------------------ connecting
    async def __aenter__(self) -> MqttClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    @property
    def connected(self) -> bool:
        return self._closed is not None and not self._closed.done() and self._conn.connected

    async def connect(self) -> ConnAck:
        loop = self._loop = asyncio.get_running_loop()
        self._conn = Connection(self.level)
        self._owners.clear()
        self._room.clear()
        self._writable = None
        self._ping_at = None
        self._connack = loop.create_future()
        self._closed = loop.create_future()
        self._transport = None
        self._protocol = None
        where = f"{self.host}:{self.port}"
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                ),
                self.timeout,
            )
        except TimeoutError:
            raise MqttError(f"{where}: no connection within {self.timeout:.0f} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"{where}: {exc}") from exc
        # No isinstance check here: uvloop's transports implement asyncio.Transport
        # without subclassing it.
        self._transport = transport
        self._protocol = protocol
        try:
            self._write(
                self._conn.connect(
                    self.client_id,
                    keepalive=self.keepalive,
                    username=self.username,
                    password=self.password,
                    will=self.will,
                )
            )
            try:
                ack = await self._wait(
                    self._connack, self.timeout, lambda: f"no CONNACK within {self.timeout:.0f} s"
                )
            except MqttError as exc:
                if self.level == 5 and self._closed.done():
                    # A 3.1.1-only broker (RabbitMQ up to 3.12) closes the connection
                    # on an MQTT 5 CONNECT without a word.
                    raise MqttError(
                        f"{where} closed the connection before its CONNACK ({exc}); "
                        'a broker without MQTT 5 does that: try protocol = "3.1.1"'
                    ) from exc
                raise
            if ack.code != 0:
                raise MqttError(f"{where} refused the connection: {ack.refusal}")
        except BaseException as exc:
            # The connection is over as soon as connect() fails, not once the
            # transport's connection_lost has run (a later turn of the loop: how many
            # turns after this raise that is differs between Python versions).
            self._end(exc if isinstance(exc, MqttError) else MqttError(f"{where}: {exc!r}"))
            transport.abort()  # never leave a half-open connection behind
            raise
        if ack.maximum_qos < 2 or not ack.retain_available:
            log.info(
                "%s accepts QoS %d at most%s: messages are published within that",
                where,
                ack.maximum_qos,
                "" if ack.retain_available else " and no retained messages",
            )
        if ack.server_keep_alive is not None:
            self.keepalive = ack.server_keep_alive  # MQTT 5: the broker's value wins
        if self.keepalive:
            self._keeper = loop.create_task(self._keep_alive())
        return ack

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker then drops the will) and close."""
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(Exception):
            transport.write(disconnect_packet(self.level))
        transport.close()
        if self._closed is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed), 2.0)

    def abort(self, why: str = "closed") -> None:
        """Drop the connection at once (the broker publishes the will)."""
        self._end(MqttError(why))
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------ publishing
    async def publish(
        self, topic: str, payload: str | bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """One message; returns when the broker acknowledged it (QoS 1) or it was
        written (QoS 0)."""
        self.check()
        loop = self._loop
        assert loop is not None
        data = payload.encode() if isinstance(payload, str) else payload
        qos, retain = self._fit(qos, retain)
        deadline = loop.time() + self.timeout
        while not self._conn.room_for(qos):  # another caller may take the room first
            await self._wait_room(deadline)
        try:
            packet, pid = self._conn.publish(topic, data, qos=qos, retain=retain)
        except PacketTooLarge as exc:
            self._skipped(exc)
            return
        except MqttProtocolError as exc:
            raise MqttError(str(exc)) from exc
        if pid:
            batch = self._owners[pid] = _Batch(loop.create_future(), 1)
        self._write(packet)
        if pid:
            await self._wait(
                batch.done,
                self.timeout,
                lambda: f"publish to {topic} not acknowledged within {self.timeout:.0f} s",
            )
        await self._drained(loop.time() + self.timeout)

    async def publish_many(
        self, items: Sequence[tuple[str, bytes]], *, qos: int = 1, timeout: float = 10.0
    ) -> None:
        """Non-retained messages in order, written a window at a time; returns when the
        broker acknowledged every one (QoS 1: PUBACK, QoS 2: PUBCOMP) or all were
        written (QoS 0). MqttError when the connection ends first or `timeout` passes.
        A message larger than the broker's Maximum Packet Size is left out (logged and
        counted in `too_large`): the broker would end the connection over it."""
        self.check()
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + timeout
        total, i = len(items), 0
        if not total:
            return
        qos, _ = self._fit(qos, False)
        conn = self._conn
        owners = self._owners
        batch = _Batch(loop.create_future(), total) if qos else None
        while i < total:
            room = min(conn.room_for(qos), total - i)
            if not room:
                await self._wait_room(deadline)
                continue
            skipped: list[PacketTooLarge] = []
            try:
                data, ids = conn.publish_many(items[i : i + room], qos=qos, too_large=skipped)
            except MqttProtocolError as exc:
                raise MqttError(str(exc)) from exc
            for refused in skipped:
                self._skipped(refused)
            if batch is not None:
                batch.remaining -= len(skipped)
                for pid in ids:
                    owners[pid] = batch
            if data:
                self._write(data)
            i += room
        if batch is not None and batch.remaining:  # none left when all were too large
            await self._wait(
                batch.done,
                deadline - loop.time(),
                lambda: (
                    f"{batch.remaining} of {total} publishes not acknowledged "
                    f"within {timeout:.0f} s"
                ),
            )
        await self._drained(deadline)

    def _fit(self, qos: int, retain: bool) -> tuple[int, bool]:
        """QoS and retain within what the broker said it accepts (MQTT 5 CONNACK)."""
        ack = self._conn.connack
        if ack is None:
            return qos, retain
        return min(qos, ack.maximum_qos), retain and ack.retain_available

    def _skipped(self, exc: PacketTooLarge) -> None:
        self.too_large += 1
        if self.too_large % TOO_LARGE_LOG_EVERY == 1:
            log.error("not published: %s (%d so far)", exc, self.too_large)

    # ------------------------------------------------------------ plumbing
    def check(self) -> None:
        """MqttError when the connection is not (or no longer) up."""
        if self._closed is None or self._transport is None:
            raise MqttError("not connected")
        if self._closed.done():
            raise self._closed.result()

    def _write(self, data: bytes) -> None:
        assert self._transport is not None and self._loop is not None
        self._transport.write(data)
        self._last_tx = self._loop.time()

    async def _wait(self, fut: asyncio.Future[T], timeout: float, what: Callable[[], str]) -> T:
        closed = self._closed
        assert closed is not None
        if not fut.done():
            if closed.done():
                raise closed.result()
            await asyncio.wait(
                (fut, closed), timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED
            )
        if fut.done():
            return fut.result()
        if closed.done():
            raise closed.result()
        raise MqttError(what())

    async def _wait_room(self, deadline: float) -> None:
        """Until a PUBACK makes room under the broker's Receive Maximum."""
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._room.append(fut)
        inflight = len(self._conn.inflight)
        await self._wait(
            fut,
            deadline - self._loop.time(),
            lambda: f"{inflight} publishes in flight, none acknowledged in time",
        )

    async def _drained(self, deadline: float) -> None:
        if self._writable is not None and self._loop is not None:
            await self._wait(
                self._writable, deadline - self._loop.time(), lambda: "the broker reads nothing"
            )

    def _received(self, data: bytes) -> None:
        downgraded = self._conn.qos2_as_qos1
        try:
            events = self._conn.receive(data)
        except MqttProtocolError as exc:
            self.abort(f"protocol error from the broker: {exc}")
            return
        if self._conn.qos2_as_qos1 != downgraded:
            self.qos2_as_qos1 += self._conn.qos2_as_qos1 - downgraded
        if not downgraded and self._conn.qos2_as_qos1:
            log.info(
                "%s:%d acknowledges QoS 2 publishes with PUBACK: it takes them at QoS 1 "
                "(delivery is at least once)",
                self.host,
                self.port,
            )
        freed = False
        for e in events:
            if isinstance(e, PubAck | PubRec | PubComp):
                if isinstance(e, PubRec) and e.code < 0x80:
                    continue  # QoS 2 goes on: the PUBREL is queued, the PUBCOMP ends it
                freed = True
                batch = self._owners.pop(e.packet_id, None)
                if e.code >= 0x80:
                    self.refused += 1
                    if self.refused % REFUSED_LOG_EVERY == 1:
                        log.warning(
                            "broker refused a publish: reason code %#04x (%d so far)",
                            e.code,
                            self.refused,
                        )
                if batch is not None:
                    batch.remaining -= 1
                    if not batch.remaining and not batch.done.done():
                        batch.done.set_result(None)
            elif isinstance(e, ConnAck):
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(e)
            elif isinstance(e, PingResp):
                self._ping_at = None
            elif isinstance(e, Disconnect):
                self.abort(f"the broker disconnected: {e.reason}")
                return
        out = self._conn.data_to_send()
        if out:
            self._write(out)  # PUBRELs
        if self._room and freed:
            waiting, self._room = self._room, []
            for fut in waiting:  # each looks again: the first may take all the room
                if not fut.done():
                    fut.set_result(None)

    def _lost(self, exc: Exception | None) -> None:
        self._end(MqttError(f"connection lost: {exc}" if exc else "connection closed"))

    def _end(self, err: MqttError) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(err)
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None

    def _pause(self) -> None:
        if self._loop is not None and self._writable is None:
            self._writable = self._loop.create_future()

    def _resume(self) -> None:
        w, self._writable = self._writable, None
        if w is not None and not w.done():
            w.set_result(None)

    async def _keep_alive(self) -> None:
        """PINGREQ after half the keep-alive without sending; no PINGRESP within the
        keep-alive means the broker is gone."""
        loop = self._loop
        assert loop is not None
        k = float(self.keepalive)
        while True:
            await asyncio.sleep(k / 4)
            now = loop.time()
            if self._ping_at is not None and now - self._ping_at > k:
                self.abort(f"no PINGRESP within {k:.0f} s")
                return
            if self._ping_at is None and now - self._last_tx >= k / 2:
                self._ping_at = now
                self._write(PINGREQ)
