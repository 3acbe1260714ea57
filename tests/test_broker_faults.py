"""A broker that accepts connections but never acknowledges.

Two fake brokers: one reads everything and never answers CONNECT (no CONNACK), the
other answers CONNECT with a CONNACK for the protocol level the client asked for and
then never sends a PUBACK. A `bounceback run` process is pointed at each (the two runs
go side by side, as each has to sit out the client's 10 s timeout). The proxy must
keep answering submits and delivering receipts, keep every event in the outbox on
disk, say in its log that the broker is unavailable, not pile up connections, and
stop cleanly. Restarted on the same store against a real Mosquitto, it publishes
every event it kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import ProxyProcess, free_port, gateway, simulator, wait_until, write_config
from mqtt_broker import Collector, MosquittoBroker
from smpplib_peer import SmpplibSender, receipt_fields

pytestmark = pytest.mark.mqtt

PREFIX = "bbfault"
CONNECT, CONNACK, PUBLISH = 1, 2, 3
MQTT_LEVELS = {"3.1.1": 4, "5": 5}
BATCH = 500  # the most events the feed publishes before it waits for their PUBACKs


@dataclass(slots=True)
class Conn:
    """What one client connection sent."""

    levels: list[int] = field(default_factory=list)  # protocol level of each CONNECT
    topics: list[str] = field(default_factory=list)  # topic of each PUBLISH
    open: bool = True


class SilentBroker:
    """An MQTT server on 127.0.0.1 that reads every packet and acknowledges nothing
    but, when `connack` is set, the CONNECT."""

    def __init__(self, *, connack: bool) -> None:
        self.connack = connack
        self.port = 0
        self.conns: list[Conn] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self.conns if c.open)

    async def __aenter__(self) -> SilentBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()  # the reader sees the end of the stream and the task returns
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn = Conn()
        self.conns.append(conn)
        try:
            async for kind, body in packets(reader):
                if kind == CONNECT:
                    level = body[6]  # after the protocol name "MQTT" and its length
                    conn.levels.append(level)
                    if self.connack:
                        # Session present 0, return/reason code 0; MQTT 5 adds an empty
                        # property list.
                        writer.write(b"\x20\x03\x00\x00\x00" if level == 5 else b"\x20\x02\x00\x00")
                        await writer.drain()
                elif kind == PUBLISH:
                    n = int.from_bytes(body[:2], "big")
                    conn.topics.append(body[2 : 2 + n].decode())
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            conn.open = False
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)


async def packets(reader: asyncio.StreamReader) -> AsyncIterator[tuple[int, bytes]]:
    """(packet type, variable header and payload) of each MQTT control packet."""
    while True:
        first = await reader.read(1)
        if not first:
            return
        length, shift = 0, 0
        while True:
            (b,) = await reader.readexactly(1)
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        yield first[0] >> 4, await reader.readexactly(length)


def feed(port: int, prefix: str, protocol: str) -> str:
    return f"""
[feed]
host = "127.0.0.1"
port = {port}
prefix = "{prefix}"
protocol = "{protocol}"
stats_interval = 0.5
"""


def outbox_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
    return int(n)


def pending_receipts(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM sender_receipts").fetchone()
    return int(n)


def life(mids: list[str]) -> set[str]:
    """Event ids of messages delivered at the first attempt."""
    return {f"{m}:{tail}" for m in mids for tail in ("0:accepted", "1:submitted", "1:delivered")}


@dataclass(slots=True)
class Run:
    """One proxy pointed at a broker that does not acknowledge."""

    name: str
    protocol: str
    connack: bool
    folder: Path
    numbers: str  # the destinations are this prefix and two digits
    sim_port: int = 0
    port: int = field(default_factory=free_port)
    mids: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"{PREFIX}/{self.name}"


async def send(port: int, db: Path, numbers: list[str], mids: list[str]) -> None:
    """Bind, submit, and wait for a DELIVRD receipt of every message."""
    s = SmpplibSender("127.0.0.1", port)
    try:
        assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
        s.listen()
        got: list[str] = []
        for n in numbers:
            seq = await asyncio.to_thread(s.submit, n)
            status, mid = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0 and mid
            got.append(mid)
        receipts = await asyncio.to_thread(s.wait_delivered, len(numbers), 10.0)
        fields = [receipt_fields(p) for p in receipts]
        assert sorted(f["id"] for f in fields) == sorted(got)
        assert {f["stat"] for f in fields} == {"DELIVRD"}
        mids.extend(got)
        # smpplib answers a deliver_sm after handing it over: unbind only once the proxy
        # has its answers (else it rightly delivers those receipts again).
        await wait_until(lambda: pending_receipts(db) == 0)
    finally:
        s.close()


def config(run: Run, broker_port: int, name: str) -> Path:
    return write_config(
        run.folder,
        run.sim_port,
        port=run.port,
        extra=feed(broker_port, run.prefix, run.protocol),
        name=name,
    )


async def stuck(run: Run) -> None:
    """The proxy against a silent broker: traffic goes on, events stay on disk."""
    db = run.folder / "proxy.db"
    base = run.numbers
    async with SilentBroker(connack=run.connack) as broker:
        proxy = ProxyProcess(config(run, broker.port, "proxy-silent.toml"))
        await asyncio.to_thread(proxy.start)
        try:
            await send(run.port, db, [f"{base}{i:02d}" for i in range(5)], run.mids)
            # The client gives up on the acknowledgement after 10 s: the log says so.
            await wait_until(lambda: "feed: broker unavailable" in proxy.output(), timeout=20)
            # ... and the proxy goes on taking and finishing messages.
            await send(run.port, db, [f"{base}{i:02d}" for i in range(5, 10)], run.mids)
            assert len(set(run.mids)) == 10
            # Every event (accepted, submitted, delivered) waits in the outbox on disk.
            await wait_until(lambda: outbox_rows(db) >= 30)
            assert outbox_rows(db) == 30

            # The client tries again; the abandoned connection was closed, so
            # connections do not pile up while the broker stays silent.
            await wait_until(lambda: len(broker.conns) >= 2, timeout=5)
            await wait_until(lambda: broker.open_connections <= 1, timeout=3)
            # One CONNECT per connection at the configured protocol level (the newest
            # connection may not have sent it yet).
            level = MQTT_LEVELS[run.protocol]
            assert broker.conns[0].levels == [level]
            assert all(c.levels in ([], [level]) for c in broker.conns)
            status = f"{run.prefix}/instances/{instance(run)}/status"
            if not run.connack:
                assert all(c.topics == [] for c in broker.conns)  # nothing before a CONNACK
            else:
                # The retained status comes first; at most one batch waits for PUBACKs.
                assert broker.conns[0].topics[:1] == [status]
                assert all(c.topics[:1] in ([], [status]) for c in broker.conns)
                assert all(len(c.topics) <= 1 + BATCH for c in broker.conns)
            log = proxy.output()
            warnings = [line for line in log.splitlines() if "feed: broker unavailable" in line]
            assert all(" WARNING bounceback.feed: " in line for line in warnings)
            # ... naming what the broker did not answer.
            silence = "no CONNACK within 10 s" if not run.connack else "not acknowledged within"
            assert any(silence in line for line in warnings), warnings
            assert "Traceback" not in log and "unexpected error" not in log, log
        finally:
            rc = await asyncio.to_thread(proxy.terminate)
        assert rc == 0, proxy.output()
        assert "shutting down" in proxy.output()
        assert outbox_rows(db) == 30  # a stop without the broker keeps the backlog


def instance(run: Run) -> str:
    """The instance name a proxy derives when none is configured: host:port."""
    return f"{socket.gethostname()}:{run.port}"


async def recovered(run: Run, broker: MosquittoBroker, col: Collector) -> None:
    """The same store, a broker that works: every kept event is published."""
    proxy = ProxyProcess(config(run, broker.port, "proxy-mosquitto.toml"))
    await asyncio.to_thread(proxy.start)
    try:
        expected = life(run.mids)

        def got() -> set[str]:
            return {
                e["event_id"]
                for e in col.events()
                if e["message_id"] in run.mids and e["instance"] == instance(run)
            }

        await col.wait(lambda: expected <= got(), timeout=15, what=f"{run.name} backlog")
        assert got() == expected
        await wait_until(lambda: outbox_rows(run.folder / "proxy.db") == 0)
    finally:
        rc = await asyncio.to_thread(proxy.terminate)
    assert rc == 0, proxy.output()
    # Draining the backlog is normal work, not a reason for a warning per event.
    running = proxy.output().split("shutting down")[0]
    assert " WARNING " not in running, running


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path) as b:
        yield b


async def test_silent_brokers_hold_events_and_lose_none(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    runs = [
        Run("noconnack", "5", connack=False, folder=tmp_path / "a", numbers="4477009400"),
        Run("nopuback", "3.1.1", connack=True, folder=tmp_path / "b", numbers="4477009500"),
        Run("nopuback5", "5", connack=True, folder=tmp_path / "c", numbers="4477009600"),
    ]
    async with contextlib.AsyncExitStack() as stack:
        for r in runs:
            r.folder.mkdir()
            # A carrier each: a simulator sends receipts to any bind of the system_id.
            sim = await stack.enter_async_context(simulator({"receipt_delay": 0.02}))
            r.sim_port = sim.port or 0
        # The runs go side by side: each sits out the client's 10 s timeouts.
        async with asyncio.TaskGroup() as tg:
            for r in runs:
                tg.create_task(stuck(r))
        col = await stack.enter_async_context(Collector(broker.port, [f"{PREFIX}/#"]))
        async with asyncio.TaskGroup() as tg:
            for r in runs:
                tg.create_task(recovered(r, broker, col))


async def test_outbox_max_holds_while_the_broker_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`[feed] outbox_max` bounds the outbox on disk during an outage, which is when it
    grows: beyond it new events are dropped (counted and logged), and messages flow on."""
    away = free_port()  # nothing listens there: every connection is refused
    extra = f"""
[feed]
host = "127.0.0.1"
port = {away}
prefix = "{PREFIX}/away"
stats_interval = 0.1
outbox_max = 6
"""
    db = tmp_path / "proxy.db"
    async with (
        simulator({"receipt_delay": 0.02}) as sim,
        gateway(write_config(tmp_path, sim.port or 0, extra=extra)) as gw,
    ):
        assert gw.feed is not None
        first: list[str] = []
        await send(gw.port, db, [f"44770097000{i}" for i in range(3)], first)
        # Accepted, submitted, delivered for each: 9 events, unless the publisher
        # already saw the outbox reach 6 and started dropping.
        held = await gw.store.outbox_count()
        dropped_first = gw.counters.get("feed_events_dropped", 0)
        assert 6 <= held <= 9 and held + dropped_first == 9
        # The publisher notices the outbox is full although it never connected.
        await wait_until(lambda: gw.feed is not None and gw.feed.full, timeout=5)
        assert not gw.feed.connected
        later: list[str] = []
        await send(gw.port, db, [f"44770097001{i}" for i in range(5)], later)
        assert len(later) == 5  # accepted and delivered all the same
        assert await gw.store.outbox_count() == held  # nothing more on disk
        assert gw.counters.get("feed_events_dropped") == dropped_first + 15
    full = [r for r in caplog.records if "feed outbox full" in r.getMessage()]
    assert full and full[0].levelname == "ERROR"
