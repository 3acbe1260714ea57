"""The MQTT status feed: drains the store's outbox to the broker.

Events are written to the outbox in the same transaction as the state change
that caused them; this publisher sends them in order with QoS 1 and deletes
each only after the broker acknowledged it. A broker outage only grows the
outbox (on disk, bounded by `outbox_max`); the backlog drains in order when
the broker returns. The instance's status is a retained message with a last
will that turns it `offline` if the process dies.

By default (`[feed] publisher = "process"`) the publisher runs in a child
process of `bounceback run` (`FeedProcess`): building and writing an event stays
in the proxy's transaction, but the MQTT work (and reading and deleting the
outbox) moves to a second core, so the feed neither slows the message path nor
falls behind it. The child reads the same store, reports its state on a pipe,
is restarted if it dies and stops (publishing `offline`) when the proxy's end
of its stdin closes, however the proxy ended. `publisher = "inline"` keeps it
in the proxy's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bounceback import __version__
from bounceback.config.settings import FeedConfig
from bounceback.feed.client import MqttClient, MqttError
from bounceback.feed.events import iso, render
from bounceback.feed.mqtt import Will
from bounceback.store.sqlite import OutboxEvent, Store

if TYPE_CHECKING:
    from bounceback.config.settings import Config
    from bounceback.feed.aiomqtt_client import AiomqttClient

log = logging.getLogger("bounceback.feed")

PUBLISH_TIMEOUT = 10.0  # a batch the broker does not acknowledge by then: reconnect

# Returns (kind, name, document) triples: kind is "account" or "carrier".
StatsSource = Callable[[], Awaitable[list[tuple[str, str, dict[str, object]]]]]

# How often the publisher process looks for new outbox rows when it found none (it
# cannot be woken by the proxy's commits; under load every look finds a batch).
PROCESS_IDLE_POLL = 0.02


async def stats_documents(store: Store) -> list[tuple[str, str, dict[str, object]]]:
    """Rolling 24-hour counts per account and per carrier for the retained feed stats."""
    since = time.time() - 86400
    out: list[tuple[str, str, dict[str, object]]] = []
    for kind, col in (("account", "account"), ("carrier", "carrier")):
        rows = await store.query(
            f"SELECT {col}, COUNT(*),"
            " SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN attempts > 1 OR state IN ('held', 'expired') THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN state IN ('failed', 'rejected') THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN state = 'held' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN state = 'delivered' AND attempts > 1 THEN 1 ELSE 0 END)"
            f" FROM messages WHERE created_at >= ? AND {col} != '' GROUP BY {col}",
            (since,),
        )
        for name, sent, delivered, soft_, hard, held, recovered in rows:
            out.append(
                (
                    kind,
                    str(name),
                    {
                        "schema": "bounceback.stats/1",
                        "window_seconds": 86400,
                        "at": iso(time.time()),
                        "sent": int(sent or 0),
                        "delivered": int(delivered or 0),
                        "soft": int(soft_ or 0),
                        "hard": int(hard or 0),
                        "held_now": int(held or 0),
                        "recovered_by_retry": int(recovered or 0),
                    },
                )
            )
    return out


class _Backlog:
    """What the proxy knows of its feed wherever the publisher runs: the outbox size
    and whether it is full (new events are then dropped, with a log and a metric)."""

    cfg: FeedConfig
    store: Store
    backlog: int
    full: bool
    _stop: asyncio.Event

    async def _watch_backlog(self) -> None:
        """Keep `backlog` and `full` current, connected or not: the outbox grows while
        the broker is away, and that is when `outbox_max` must hold."""
        while not self._stop.is_set():
            try:
                self.backlog = await self.store.outbox_count()
                self.full = self.backlog >= self.cfg.outbox_max
            except Exception as exc:
                log.debug("feed: outbox count failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.cfg.stats_interval)


class FeedPublisher(_Backlog):
    def __init__(
        self,
        cfg: FeedConfig,
        store: Store,
        instance: str,
        *,
        lease: float = 30.0,
        idle_poll: float = 0.5,
        watch_backlog: bool = True,
    ) -> None:
        self.lease = lease  # the publisher lease when several instances share the store
        self.cfg = cfg
        self.store = store
        self.instance = instance
        self.idle_poll = idle_poll  # a wait for `wake` when the outbox was empty
        self.watch_backlog = watch_backlog
        self.started_at = time.time()
        self.wake = asyncio.Event()
        self.connected = False
        self.published = 0
        self.backlog = 0
        self.full = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._client: MqttClient | AiomqttClient | None = None
        self.stats_source: StatsSource = functools.partial(stats_documents, store)

    @property
    def status_topic(self) -> str:
        return f"{self.cfg.prefix}/instances/{self.instance}/status"

    def _status(self, state: str) -> str:
        return json.dumps(
            {
                "schema": "bounceback.status/1",
                "instance": self.instance,
                "state": state,
                "version": __version__,
                "started_at": iso(self.started_at),
                "at": iso(time.time()),
            },
            separators=(",", ":"),
        )

    def _client_for(self) -> MqttClient | AiomqttClient:
        tls: ssl.SSLContext | None = None
        if self.cfg.tls:
            tls = ssl.create_default_context(cafile=self.cfg.tls_ca or None)
        client: Callable[..., MqttClient | AiomqttClient] = MqttClient
        if self.cfg.client == "aiomqtt":
            from bounceback.feed.aiomqtt_client import AiomqttClient  # the [aiomqtt] extra

            client = functools.partial(AiomqttClient, qos=self.cfg.qos)
        return client(
            self.cfg.host,
            self.cfg.port,
            client_id=self.cfg.client_id or f"bounceback-{self.instance}",
            protocol=self.cfg.protocol,
            keepalive=self.cfg.keepalive,
            username=self.cfg.username,
            password=self.cfg.password,
            will=Will(self.status_topic, self._status("offline").encode(), qos=1, retain=True),
            tls=tls,
            timeout=10,
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feed")
        if self.watch_backlog:
            self._watch = asyncio.create_task(self._watch_backlog(), name="feed-backlog")

    async def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch

    async def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            client = self._client_for()
            try:
                async with client:
                    self._client = client
                    self.connected = True
                    delay = 0.5
                    log.info("feed: connected to %s:%d", self.cfg.host, self.cfg.port)
                    await client.publish(
                        self.status_topic, self._status("online"), qos=1, retain=True
                    )
                    stats = asyncio.create_task(self._stats_loop(client))
                    try:
                        await self._drain(client)
                    finally:
                        stats.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await stats
                    if self._stop.is_set():
                        await client.publish(
                            self.status_topic, self._status("offline"), qos=1, retain=True
                        )
            except MqttError as exc:
                log.warning("feed: broker unavailable (%s); retrying in %.1f s", exc, delay)
            except Exception:
                log.exception("feed: unexpected error")
            self.connected = False
            self._client = None
            if self._stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)

    async def _drain(self, client: MqttClient | AiomqttClient) -> None:
        waiting = await self.store.outbox_count()
        if waiting:
            log.info("feed: %d events waiting in the outbox", waiting)
        while True:
            # With several instances on one store, one holds the publisher lease.
            batch = await self.store.claim_outbox(self.instance, time.time(), 500, self.lease)
            if not batch:
                if self._stop.is_set():
                    return
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.idle_poll)
                client.check()  # a connection lost while idle: reconnect now, not later
                continue
            await self._publish_batch(client, batch)
            await self.store.outbox_delete([e.seq for e in batch])
            self.published += len(batch)

    async def _publish_batch(
        self, client: MqttClient | AiomqttClient, batch: list[OutboxEvent]
    ) -> None:
        """Write the whole batch in order, then wait until the broker acknowledged every
        message (QoS 1: PUBACK; QoS 2: PUBCOMP; QoS 0: written)."""
        await client.publish_many(
            [(e.topic, _document(e).encode()) for e in batch],
            qos=self.cfg.qos,
            timeout=PUBLISH_TIMEOUT,
        )

    async def _stats_loop(self, client: MqttClient | AiomqttClient) -> None:
        while True:
            await asyncio.sleep(self.cfg.stats_interval)
            for kind, name, doc in await self.stats_source():
                await client.publish(
                    f"{self.cfg.prefix}/stats/{kind}/{name}",
                    json.dumps(doc, separators=(",", ":")),
                    qos=1,
                    retain=True,
                )


def _document(e: OutboxEvent) -> str:
    """The event's JSON document; a record that cannot be rendered goes out as it is
    stored (with an error in the log) rather than stopping the feed."""
    try:
        return render(e.payload)
    except (ValueError, TypeError) as exc:
        log.error("feed: outbox event %d cannot be rendered (%s); published as stored", e.seq, exc)
        return e.payload


class FeedProcess(_Backlog):
    """The proxy's side of a publisher running in a child process
    (``bounceback feed-publisher``): starts it, restarts it with backoff if it dies,
    follows its state from the status lines it writes, and stops it by closing its
    stdin (it then drains what is committed, publishes `offline` and exits).

    A watchdog restarts a child that says it is connected but has published nothing
    for `stall_limit` seconds while events wait in the outbox: whatever stalled it,
    a new one starts from the outbox (at least once, so nothing is lost)."""

    stall_limit = 30.0  # seconds without progress, connected, with a backlog

    def __init__(self, cfg: FeedConfig, store: Store, instance: str, config_path: str) -> None:
        self.cfg = cfg
        self.store = store
        self.instance = instance
        self.config_path = config_path
        self.wake = asyncio.Event()  # the child polls the outbox; kept for the same interface
        self.connected = False
        self.published = 0
        self.backlog = 0
        self.full = False
        self.starts = 0  # child processes started so far (tests and logs)
        self.pid: int | None = None
        self._published_before = 0  # by children that have exited
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.stalls = 0  # children restarted by the watchdog (tests and logs)

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bounceback",
            "feed-publisher",
            "--config",
            self.config_path,
            "--instance",
            self.instance,
        ]

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="feed-process")
        self._watch = asyncio.create_task(self._watch_backlog(), name="feed-backlog")
        self._watchdog = asyncio.create_task(self._stall_watch(), name="feed-watchdog")

    async def _stall_watch(self) -> None:
        step = min(1.0, self.stall_limit / 4)
        last, since = self.published, time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), step)
            now = time.monotonic()
            proc = self._proc
            if self.published != last or not self.connected or self.backlog == 0:
                last, since = self.published, now
                continue
            if now - since < self.stall_limit or proc is None or proc.returncode is not None:
                continue
            self.stalls += 1
            log.warning(
                "feed: publisher process %d published nothing for %.0f s with %d events "
                "waiting; restarting it",
                proc.pid,
                now - since,
                self.backlog,
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            last, since = self.published, now

    async def _supervise(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.argv(),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                log.error("feed: cannot start the publisher process: %s", exc)
            else:
                self._proc, self.pid = proc, proc.pid
                self.starts += 1
                log.info("feed: publisher process %d started", proc.pid)
                await self._follow(proc)
                code = await proc.wait()
                self._published_before = self.published
                self.connected = False
                if self._stop.is_set():
                    return
                log.warning("feed: publisher process %d exited with %s", proc.pid, code)
            if time.monotonic() - started > 60:
                delay = 0.5  # it ran for a while: not a crash loop
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, 30.0)

    async def _follow(self, proc: asyncio.subprocess.Process) -> None:
        """Read the child's status lines (JSON: connected, published) until it exits."""
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            try:
                doc = json.loads(line)
                self.connected = bool(doc["connected"])
                self.published = self._published_before + int(doc["published"])
            except (ValueError, KeyError, TypeError):
                log.debug("feed: unreadable status line %r", line[:80])

    async def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()  # EOF: drain, publish offline, exit
            try:
                await asyncio.wait_for(proc.wait(), 15.0)
            except TimeoutError:
                log.warning("feed: publisher process %d did not stop; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in (self._task, self._watch, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def run_publisher_process(cfg: Config, instance: str) -> None:
    """The child: publish the store's outbox for `instance` until stdin closes (the
    proxy stopped it or is gone) or a signal arrives."""
    from bounceback.store.postgres import store_from_config

    assert cfg.feed is not None
    store = store_from_config(cfg.store)
    await store.open()
    pub = FeedPublisher(
        cfg.feed,
        store,
        instance,
        lease=cfg.store.lease_seconds,
        idle_poll=PROCESS_IDLE_POLL,
        watch_backlog=False,  # the proxy watches the backlog
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def until_eof() -> None:
        while await reader.read(4096):
            pass
        stop.set()

    async def report() -> None:
        last: tuple[bool, int] | None = None
        while True:
            now = (pub.connected, pub.published)
            if now != last:
                try:
                    sys.stdout.write(json.dumps({"connected": now[0], "published": now[1]}) + "\n")
                    sys.stdout.flush()
                except (BrokenPipeError, ValueError):  # the proxy is gone: EOF stops us
                    return
                last = now
            await asyncio.sleep(0.2)

    pub.start()
    watchers = [asyncio.create_task(until_eof()), asyncio.create_task(report())]
    try:
        await stop.wait()
    finally:
        await pub.stop()
        for t in watchers:
            t.cancel()
        await store.close()
