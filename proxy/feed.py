"""The MQTT status feed: drains the store's outbox to the broker.

Events are written to the outbox in the same transaction as the state change
that caused them; this publisher sends them in order with QoS 1 and deletes
each only after the broker acknowledged it. A broker outage only grows the
outbox (on disk, bounded by `outbox_max`); the backlog drains in order when
the broker returns. The instance's status is a retained message with a last
will that turns it `offline` if the process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable

import aiomqtt

from . import __version__
from .config import FeedConfig
from .events import iso
from .store import OutboxEvent, Store

log = logging.getLogger("bounceback.feed")

PUBLISH_TIMEOUT = 10.0  # a batch the broker does not acknowledge by then: reconnect

# Returns (kind, name, document) triples: kind is "account" or "carrier".
StatsSource = Callable[[], Awaitable[list[tuple[str, str, dict[str, object]]]]]


class FeedPublisher:
    def __init__(
        self, cfg: FeedConfig, store: Store, instance: str, *, lease: float = 30.0
    ) -> None:
        self.lease = lease  # the publisher lease when several instances share the store
        self.cfg = cfg
        self.store = store
        self.instance = instance
        self.started_at = time.time()
        self.wake = asyncio.Event()
        self.connected = False
        self.published = 0
        self.backlog = 0
        self.full = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self.stats_source: StatsSource | None = None

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

    def _client_for(self) -> aiomqtt.Client:
        tls: ssl.SSLContext | None = None
        if self.cfg.tls:
            tls = ssl.create_default_context(cafile=self.cfg.tls_ca or None)
        client = aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username or None,
            password=self.cfg.password or None,
            identifier=self.cfg.client_id or f"bounceback-{self.instance}",
            protocol=aiomqtt.ProtocolVersion.V5
            if self.cfg.protocol == "5"
            else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(self.status_topic, self._status("offline"), qos=1, retain=True),
            keepalive=self.cfg.keepalive,
            tls_context=tls,
            timeout=10,
        )
        # A drained batch is up to 500 QoS 1 publishes in flight on purpose: no warning.
        client.pending_calls_threshold = 1000
        return client

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feed")
        self._watch = asyncio.create_task(self._watch_backlog(), name="feed-backlog")

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
            except aiomqtt.MqttError as exc:
                log.warning("feed: broker unavailable (%s); retrying in %.1f s", exc, delay)
            except Exception:
                log.exception("feed: unexpected error")
            finally:
                _close_abandoned(client)
            self.connected = False
            self._client = None
            if self._stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            # With several instances on one store, one holds the publisher lease.
            batch = await self.store.claim_outbox(self.instance, time.time(), 500, self.lease)
            if not batch:
                if self._stop.is_set():
                    return
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 0.5)
                continue
            await self._publish_batch(client, batch)
            await self.store.outbox_delete([e.seq for e in batch])
            self.published += len(batch)

    async def _publish_batch(self, client: aiomqtt.Client, batch: list[OutboxEvent]) -> None:
        """Hand the whole batch to the MQTT client in order, then wait until the broker
        acknowledged every message (QoS 1: PUBACK; QoS 0: written).

        One call per event to the underlying client and one wait for the batch: a
        coroutine, a task and an event per publish (the client's own `publish`) cost the
        proxy's main loop as much as the message path itself.
        """
        paho = client._client  # the MQTT client that aiomqtt drives on our loop
        infos = []
        for e in batch:
            info = paho.publish(e.topic, e.payload, qos=self.cfg.qos)
            if info.rc != 0:
                raise aiomqtt.MqttCodeError(info.rc, "could not publish")
            infos.append(info)
        deadline = time.monotonic() + PUBLISH_TIMEOUT
        done = 0  # acknowledgements come (nearly always) in order: check from the oldest
        while True:
            while done < len(infos) and infos[done].is_published():
                done += 1
            if done == len(infos):
                return
            gone = getattr(client, "_disconnected", None)
            if gone is not None and gone.done():
                raise aiomqtt.MqttError(f"connection lost with {len(infos) - done} unacknowledged")
            if time.monotonic() > deadline:
                raise aiomqtt.MqttError(
                    f"{len(infos) - done} of {len(infos)} publishes not acknowledged "
                    f"within {PUBLISH_TIMEOUT:.0f} s"
                )
            await asyncio.sleep(0.002)

    async def _stats_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self.cfg.stats_interval)
            if self.stats_source is None:
                continue
            for kind, name, doc in await self.stats_source():
                await client.publish(
                    f"{self.cfg.prefix}/stats/{kind}/{name}",
                    json.dumps(doc, separators=(",", ":")),
                    qos=1,
                    retain=True,
                )


def _close_abandoned(client: aiomqtt.Client) -> None:
    """Close the socket of a connection attempt that never got its CONNACK: aiomqtt
    leaves it open when the wait times out, one socket per attempt."""
    with contextlib.suppress(Exception):
        client._client.disconnect()
