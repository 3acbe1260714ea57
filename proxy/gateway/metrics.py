"""Prometheus metrics and the health endpoints.

`Metrics` keeps its own `CollectorRegistry` (never the process-wide default), so
several gateways can run in one process. The gateway feeds it through small
hooks: every PDU in and out (`on_pdu`), binds, message transitions, receipts,
store commit and carrier submit latencies. Gauges that describe state (held
messages, feed outbox backlog, current binds) are refreshed from the store and
the gateway when `/metrics` is scraped.

The HTTP side is the admin API's server (``bounceback.admin``), which serves:

* ``/metrics``: the Prometheus text format (`render`, after `refresh`);
* ``/healthz``: 200 ``ok`` while the process runs;
* ``/readyz``: 200 when the store answers and at least one carrier is bound,
  otherwise 503 with the reason (`readiness`).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from bounceback import __version__ as _bb_version
from bounceback.feed.publisher import FeedProcess, FeedPublisher
from bounceback.smpp.carrier import CarrierLink
from bounceback.smpp.server import EsmeSession
from bounceback.store.sqlite import Store
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from smppcodecs.constants import CommandStatus
from smppcodecs.pdu import PDU_CLASSES

log = logging.getLogger("bounceback.metrics")

RECEIPT_RESULTS = (
    "matched",
    "unmatched",
    "early",
    "rematched_notified",
    "rematched_lookup",
    "rematched_polled",
)

# Gateway counter names (Context.count) that become Prometheus series.
_RECEIPT_COUNTERS = {f"receipts_{r}": r for r in RECEIPT_RESULTS}
FAULT_EVENTS = (
    "store_refusals",
    "receipts_deferred",
    "carrier_answers_deferred",
    "carrier_answers_written",
    "carrier_answers_dropped",
    "task_failures",
)

# Store commits wait for a group-commit window and one disk sync: milliseconds.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Carrier round trips: tens of milliseconds up to the submit timeout.
SUBMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

READY_STORE_TIMEOUT = 2.0

HELD_SQL = (
    # Every held message has a timer, so the partial index on next_attempt_at
    # keeps this away from a scan of the whole table.
    "SELECT reason, COUNT(*) FROM messages WHERE next_attempt_at IS NOT NULL"
    " AND state = 'held' GROUP BY reason"
)
SUPPRESSED_SQL = "SELECT COUNT(*) FROM suppression WHERE expires_at > ?"


def command_label(command_id: int) -> str:
    """The PDU's name (``submit_sm``), or its id in hex when unknown."""
    cls = PDU_CLASSES.get(command_id)
    return cls.command_name if cls is not None else f"0x{command_id:08X}"


def status_label(status: int) -> str:
    """The ESME_* name; vendor codes in hex; anything else ``RESERVED`` (a peer must
    not be able to create an unbounded number of series)."""
    try:
        return CommandStatus(status).name
    except ValueError:
        if 0x400 <= status <= 0x4FF:
            return f"VENDOR_0x{status:04X}"
        return "RESERVED"


class Observed(Protocol):
    """What the state gauges and /readyz read of the running gateway."""

    @property
    def store(self) -> Store: ...

    @property
    def sessions(self) -> Mapping[str, Collection[EsmeSession]]: ...

    @property
    def links(self) -> Mapping[str, CarrierLink]: ...

    @property
    def stopping(self) -> asyncio.Event: ...

    @property
    def feed(self) -> FeedPublisher | FeedProcess | None: ...


# Receipt stat words a carrier's receipt is counted under; anything else is "other".
RECEIPT_STATS = frozenset(
    {"DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD", "ENROUTE"}
)
# Sender-side submit_sm → submit_sm_resp: a stored ack in milliseconds, a carrier ack
# in tens of milliseconds, a store or carrier fault up to [server] submit_wait.
SENDER_SUBMIT_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip


class Metrics:
    """Bounceback's metrics, in a registry of their own.

    Labels are only ever names from the configuration (accounts, carriers), retry
    reasons, receipt stat words and protocol names: never a number or a message id,
    so the number of series stays bounded whatever the traffic."""

    def __init__(self, *, refresh_min: float = 1.0, version: str = "") -> None:
        # One series per counter: no `_created` twin (Prometheus does not need it).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)
        self.build_info = Gauge(
            "bounceback_build_info",
            "Always 1; the labels say which Bounceback and Python run.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(version or _bb_version, platform.python_version()).set(1)
        self.pdus = Counter(
            "bounceback_pdus",
            "SMPP PDUs sent (out) and received (in), by side (esme: senders; carrier) and "
            'name (the account, "" before a bind; the carrier).',
            ["side", "name", "direction", "command", "status"],
            registry=r,
        )
        self.binds = Counter(
            "bounceback_binds",
            "Bind attempts: side is esme (senders binding to us) or carrier (our binds).",
            ["side", "name", "result"],
            registry=r,
        )
        self.bound = Gauge(
            "bounceback_binds_current",
            "Sessions bound now, per account (side esme) or carrier (side carrier).",
            ["side", "name"],
            registry=r,
        )
        self.carrier_flaps = Counter(
            "bounceback_carrier_flaps",
            "Short-lived carrier binds: sessions lost within stable_after seconds of binding.",
            ["carrier"],
            registry=r,
        )
        self.carrier_healthy = Gauge(
            "bounceback_carrier_healthy",
            "1 while the carrier link is healthy, 0 while it is flapping (binds in a row "
            "lost soon after binding; routes prefer other carriers, reconnects back off).",
            ["carrier"],
            registry=r,
        )
        self.messages = Counter(
            "bounceback_messages",
            "Message transitions by outcome (the feed's event names), account and carrier "
            '(of the latest attempt; "" before the first).',
            ["outcome", "account", "carrier"],
            registry=r,
        )
        self.held = Gauge(
            "bounceback_held_messages",
            "Messages held for a later resubmission, by the reason of the latest verdict.",
            ["reason"],
            registry=r,
        )
        self.retry_attempts = Counter(
            "bounceback_retry_attempts",
            "Submissions after the first attempt, by carrier and the reason the message "
            "was held for.",
            ["carrier", "reason"],
            registry=r,
        )
        self.suppressed = Gauge(
            "bounceback_suppressed_numbers",
            "Numbers on the suppression list now (submits to them are refused).",
            registry=r,
        )
        self.carrier_receipts = Counter(
            "bounceback_carrier_receipts",
            "Carrier receipts matched to a message, by carrier and stat "
            "(DELIVRD, UNDELIV, ...; other for words outside SMPP 3.4).",
            ["carrier", "stat"],
            registry=r,
        )
        self.sender_submit = Histogram(
            "bounceback_sender_submit_seconds",
            "Sender side: submit_sm (or data_sm) received to its response sent, by account.",
            ["account"],
            buckets=SENDER_SUBMIT_BUCKETS,
            registry=r,
        )
        self.feed_connected = Gauge(
            "bounceback_feed_connected",
            "1 while the feed's publisher is connected to the broker, 0 while not "
            "(events wait in the outbox).",
            registry=r,
        )
        self.suppression_hits = Counter(
            "bounceback_suppression_hits",
            "Submissions refused because the number is on the suppression list.",
            registry=r,
        )
        self.stale_decisions = Counter(
            "bounceback_stale_decisions",
            "Decisions the store refused because another instance or a command changed "
            "the message first; each is taken again on the stored message.",
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "bounceback_outbox_backlog", "Feed events waiting in the outbox.", registry=r
        )
        self.receipts = Counter(
            "bounceback_receipts",
            "Carrier receipts: matched to a message, unmatched, or early (before the "
            "submit_sm_resp that names the id).",
            ["result"],
            registry=r,
        )
        self.receipt_queries = Counter(
            "bounceback_receipt_queries",
            "query_sm sent for overdue receipts, by carrier and what the answer said.",
            ["carrier", "result"],
            registry=r,
        )
        self.store_commit = Histogram(
            "bounceback_store_commit_seconds",
            "Time a decision waits for its store transaction.",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.carrier_submit = Histogram(
            "bounceback_carrier_submit_seconds",
            "Carrier round trip of submit_sm / data_sm (request, including any wait for a "
            "window slot, to response).",
            ["carrier"],
            buckets=SUBMIT_BUCKETS,
            registry=r,
        )
        self.store_writable = Gauge(
            "bounceback_store_writable",
            "1 while the store can write, 0 while it cannot (disk full, locked, I/O "
            "error); new messages are refused with ESME_RMSGQFUL meanwhile.",
            registry=r,
        )
        self.store_write_errors = Counter(
            "bounceback_store_write_errors",
            "Store writes that failed, by kind: full, locked (past [store] write_timeout), "
            "io, readonly.",
            ["kind"],
            registry=r,
        )
        self.faults = Counter(
            "bounceback_fault_events",
            "What the proxy did about faults: store_refusals (submit_sm answered "
            "ESME_RMSGQFUL), receipts_deferred (carrier receipts answered ESME_RX_T_APPN "
            "to be sent again), carrier_answers_deferred / _written / _dropped (carrier "
            "answers kept in memory while the store could not write them), task_failures "
            "(errors that escaped a background task of the message path).",
            ["what"],
            registry=r,
        )
        self._fault_children: dict[str, Counter] = {
            name: self.faults.labels(name) for name in FAULT_EVENTS
        }
        self._store_errors_seen: dict[str, int] = {}
        # Pre-bound children: the hot paths do one dict lookup and one increment.
        self._pdu_children: dict[tuple[str, str, str, int, int], Counter] = {}
        self._messages_children: dict[tuple[str, str, str], Counter] = {}
        self._receipt_children: dict[str, Counter] = {
            name: self.receipts.labels(result) for name, result in _RECEIPT_COUNTERS.items()
        }
        self._submit_children: dict[str, Histogram] = {}
        self._sender_children: dict[str, Histogram] = {}
        self._retry_children: dict[tuple[str, str], Counter] = {}
        self._stat_children: dict[tuple[str, str], Counter] = {}
        self._held_seen: set[str] = set()
        self._carrier_binds_seen: dict[str, tuple[int, int]] = {}
        self._carrier_flaps_seen: dict[str, int] = {}
        self._bound_seen: set[tuple[str, str]] = set()
        self.refresh_min = refresh_min
        self._refreshed_at = -1e18
        self._gateway: Observed | None = None
        self.port = 0  # the HTTP listener's port once started (useful when configured as 0)

    # ------------------------------------------------------------ hooks
    def on_pdu(self, side: str, name: str, direction: str, command_id: int, status: int) -> None:
        """Count one PDU of a session of `side` (esme, carrier) called `name`."""
        key = (side, name, direction, command_id, status)
        child = self._pdu_children.get(key)
        if child is None:
            child = self.pdus.labels(
                side, name, direction, command_label(command_id), status_label(status)
            )
            self._pdu_children[key] = child
        child.inc()

    def pdu_hook(self, side: str, name: str | Callable[[], str]) -> Callable[[str, int, int], None]:
        """The session hook (direction, command_id, status) for one session; `name` may
        be read at each PDU (a sender's account is known only once it has bound)."""
        on_pdu = self.on_pdu
        if isinstance(name, str):
            fixed = name
            return lambda d, c, s: on_pdu(side, fixed, d, c, s)
        named = name
        return lambda d, c, s: on_pdu(side, named(), d, c, s)

    def bind(self, side: str, name: str, result: int | str) -> None:
        """One bind attempt; `result` is a command_status (0 = ok) or a word."""
        if isinstance(result, int):
            result = "ok" if result == 0 else status_label(result)
        self.binds.labels(side, name, result).inc()

    def message(self, outcome: str, account: str, carrier: str) -> None:
        """One message transition (accepted, delivered, hard_bounce, ...)."""
        key = (outcome, account, carrier)
        child = self._messages_children.get(key)
        if child is None:
            child = self._messages_children[key] = self.messages.labels(*key)
        child.inc()

    def retry(self, carrier: str, reason: str) -> None:
        """One submission after a message's first attempt."""
        child = self._retry_children.get((carrier, reason))
        if child is None:
            child = self._retry_children[(carrier, reason)] = self.retry_attempts.labels(
                carrier, reason
            )
        child.inc()

    def carrier_receipt(self, carrier: str, stat: str) -> None:
        """One carrier receipt matched to a message."""
        word = stat if stat in RECEIPT_STATS else "other"
        child = self._stat_children.get((carrier, word))
        if child is None:
            child = self._stat_children[(carrier, word)] = self.carrier_receipts.labels(
                carrier, word
            )
        child.inc()

    def observe_sender_submit(self, account: str, seconds: float) -> None:
        child = self._sender_children.get(account)
        if child is None:
            child = self._sender_children[account] = self.sender_submit.labels(account)
        child.observe(seconds)

    def count(self, name: str, n: int = 1) -> None:
        """The gateway's own counters (`Context.count`) that have a series here."""
        child = self._receipt_children.get(name)
        if child is not None:
            child.inc(n)
        elif name == "suppression_hits":
            self.suppression_hits.inc(n)
        elif name == "stale_decisions":
            self.stale_decisions.inc(n)
        elif name in self._fault_children:
            self._fault_children[name].inc(n)

    def receipt_query(self, carrier: str, result: str) -> None:
        """One query_sm for an overdue receipt: `result` is final, pending, unknown,
        unsupported, failed or skipped."""
        self.receipt_queries.labels(carrier, result).inc()

    def observe_commit(self, seconds: float) -> None:
        self.store_commit.observe(seconds)

    def observe_submit(self, carrier: str, seconds: float) -> None:
        child = self._submit_children.get(carrier)
        if child is None:
            child = self._submit_children[carrier] = self.carrier_submit.labels(carrier)
        child.observe(seconds)

    # ------------------------------------------------------------ state gauges
    async def refresh(self, *, force: bool = False) -> None:
        """Bring the state gauges up to date (store queries at most every refresh_min)."""
        gw = self._gateway
        if gw is None:
            return
        self._refresh_binds(gw)
        self._refresh_store(gw)
        if gw.feed is not None:
            self.feed_connected.set(1 if gw.feed.connected else 0)
        now = time.monotonic()
        if not force and now - self._refreshed_at < self.refresh_min:
            return
        self._refreshed_at = now
        try:
            held = {str(r[0] or ""): int(r[1]) for r in await gw.store.query(HELD_SQL)}
            for reason in self._held_seen - held.keys():
                self.held.labels(reason).set(0)
            for reason, n in held.items():
                self.held.labels(reason).set(n)
            self._held_seen |= held.keys()
            rows = await gw.store.query(SUPPRESSED_SQL, (time.time(),))
            self.suppressed.set(int(rows[0][0] or 0) if rows else 0)
            self.outbox_backlog.set(await gw.store.outbox_count())
        except Exception as exc:  # a scrape must not fail because the store is busy
            log.debug("metrics refresh from the store failed: %s", exc)

    def _refresh_store(self, gw: Observed) -> None:
        self.store_writable.set(0 if gw.store.fault is not None else 1)
        errors: dict[str, int] = getattr(gw.store, "write_errors", {})
        for kind, n in errors.items():
            before = self._store_errors_seen.get(kind, 0)
            if n > before:
                self.store_write_errors.labels(kind).inc(n - before)
                self._store_errors_seen[kind] = n

    def _refresh_binds(self, gw: Observed) -> None:
        seen: set[tuple[str, str]] = set()
        for account, sessions in gw.sessions.items():
            n = sum(1 for s in sessions if not s.closed.is_set())
            self.bound.labels("esme", account).set(n)
            seen.add(("esme", account))
        for name, link in gw.links.items():
            live = {
                id(s)
                for s in (link.tx, link.rx)
                if s is not None and s.bound and not s.closed.is_set()
            }
            self.bound.labels("carrier", name).set(len(live))
            seen.add(("carrier", name))
            ok, failed = link.binds, link.bind_failures
            ok0, failed0 = self._carrier_binds_seen.get(name, (0, 0))
            if ok > ok0:
                self.binds.labels("carrier", name, "ok").inc(ok - ok0)
            if failed > failed0:
                self.binds.labels("carrier", name, "failed").inc(failed - failed0)
            self._carrier_binds_seen[name] = (ok, failed)
            flaps = link.flaps_total
            flaps0 = self._carrier_flaps_seen.get(name)
            if flaps0 is None:  # the series exists from the first scrape, at 0
                self.carrier_flaps.labels(name)
                flaps0 = 0
            if flaps > flaps0:
                self.carrier_flaps.labels(name).inc(flaps - flaps0)
            self._carrier_flaps_seen[name] = flaps
            self.carrier_healthy.labels(name).set(1 if link.healthy else 0)
        for side, name in self._bound_seen - seen:
            self.bound.labels(side, name).set(0)
        self._bound_seen = seen

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    async def readiness(self) -> tuple[bool, str]:
        """(ready, reason): the store answers and at least one carrier is bound."""
        gw = self._gateway
        if gw is None:
            return False, "not started"
        if gw.stopping.is_set():
            return False, "stopping"
        if gw.store.fault is not None:
            return False, f"store cannot write: {gw.store.fault}"
        try:
            await asyncio.wait_for(gw.store.query("SELECT 1"), READY_STORE_TIMEOUT)
        except Exception as exc:
            return False, f"store not available: {type(exc).__name__}: {exc}"
        if not any(link.bound for link in gw.links.values()):
            return False, "no carrier bound"
        return True, "ready"

    # ------------------------------------------------------------ the gateway
    def attach(self, gateway: Observed) -> None:
        """Read state gauges and readiness from `gateway` from now on."""
        self._gateway = gateway

    def detach(self) -> None:
        self._gateway = None
