"""The asyncio shell around the message engine.

`Gateway` owns the listener for senders, the carrier links, the store and the
timers. It turns PDUs into engine events, runs `engine.decide`, writes the
result (state, feed events, sender receipts) in one transaction, and only then
carries out the actions that talk to the outside (answer the sender, submit
upstream, cancel upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import socket
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bounceback import logs
from bounceback.config.settings import Account, Config
from bounceback.core import engine
from bounceback.core.access import Access
from bounceback.core.engine import (
    Action,
    AnswerSender,
    CancelUpstream,
    Policy,
    Publish,
    QueryUpstream,
    SenderReceipt,
    Submit,
    SuppressNumber,
)
from bounceback.core.ids import IdGenerator
from bounceback.core.localtime import Zones
from bounceback.core.model import Message, State, Verdict, evolve, set_version
from bounceback.core.ratelimit import TokenBucket
from bounceback.feed.events import event_record, mask_number
from bounceback.feed.publisher import FeedProcess, FeedPublisher
from bounceback.gateway.metrics import Metrics
from bounceback.gateway.pump import ReceiptPump
from bounceback.smpp.carrier import CarrierLink, NotBound
from bounceback.smpp.server import EsmeSession, listener_port, open_listeners
from bounceback.smpp.session import SessionClosed
from bounceback.store.postgres import (
    CARRIER_CHANNEL,
    RECEIPT_CHANNEL,
    SUPPRESSION_CHANNEL,
    store_from_config,
)
from bounceback.store.sqlite import (
    Change,
    ReceiptRow,
    SqliteStore,
    StaleMessage,
    Store,
    StoreUnavailable,
    Suppression,
    fault_kind,
)
from smppcodecs.classify import Outcome, Rules, classify_receipt, classify_submit_status
from smppcodecs.constants import STATE_STAT_WORDS, MessageState
from smppcodecs.constants import CommandStatus as S
from smppcodecs.exceptions import PduError
from smppcodecs.msgid import id_keys
from smppcodecs.pdu import (
    AlertNotification,
    CancelSm,
    DataSm,
    DataSmResp,
    DeliverSm,
    GenericNack,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    SmeAddress,
    SubmitMulti,
    SubmitSm,
    UnsuccessSme,
    decode,
)
from smppcodecs.receipt import Receipt, build_receipt_pdu, parse_receipt
from smppcodecs.smpptime import format_absolute, to_utc
from smppcodecs.text import decode_text

if TYPE_CHECKING:
    from bounceback.admin.server import AdminServer

log = logging.getLogger("bounceback.gateway")

STATE_TO_SMPP = {
    State.ACCEPTED: MessageState.ENROUTE,
    State.SUBMITTING: MessageState.ENROUTE,
    State.SUBMITTED: MessageState.ENROUTE,
    State.HELD: MessageState.ENROUTE,
    State.DELIVERED: MessageState.DELIVERED,
    State.EXPIRED: MessageState.EXPIRED,
    State.CANCELLED: MessageState.DELETED,
    State.FAILED: MessageState.UNDELIVERABLE,
    State.REJECTED: MessageState.REJECTED,
}

STUCK_AFTER = 60.0  # an unfinished message untouched this long lost its instance
EARLY_RECEIPT_TTL = 30.0  # how long a receipt that beat its submit_sm_resp is kept
UNMATCHED_LOG_EVERY = 100  # log the 1st, 101st, ... receipt for an unknown id
STALE_RETRIES = 5  # decisions refused as stale before an event gives up (and is logged)
# Another instance may have handled the submit_sm_resp and still be committing it:
# without notifications (the listening connection is down), look again a few times.
SHARED_LOOKUP_DELAYS = (0.01, 0.02, 0.05, 0.1, 0.2)
# A shared store: how often the listening connection is checked (and opened again),
# and how often the accounts with receivers here look for receipts even unnotified.
LISTEN_CHECK = 1.0
RECEIPT_FALLBACK = 5.0
CACHE_MAX = 200_000
KEYS_MAX = 50_000
# Carrier answers that could not be written (the store was failing) are kept in memory
# up to this many and written when the store is back.
UNWRITTEN_MAX = 100_000
LOG_EVERY = 100  # a repeated failure is logged the 1st, 101st, ... time


def verdict_of(o: Outcome) -> Verdict:
    return Verdict(
        kind=o.kind.name.lower(),
        reason=o.reason,
        description=o.description,
        code=o.code,
        rule=o.rule,
        source=o.source,
        max_retries=o.max_retries,
    )


def soft(reason: str, description: str) -> Verdict:
    return Verdict("soft", reason, description, "link", reason, "default")


def policy_from_config(cfg: Config) -> Policy:
    r = cfg.retry
    schedules = {**engine.DEFAULT_SCHEDULES, **r.schedules}

    quiet = r.quiet_hours()
    return Policy(
        max_attempts=r.max_attempts,
        jitter=r.jitter,
        schedules=schedules,
        quiet_start=quiet[0] if quiet else None,
        quiet_end=quiet[1] if quiet else None,
        flag_stops_retries=r.flag_stops_retries,
        receipt_query_after={c.name: c.receipt_query_after for c in cfg.carriers},
    )


def _answer(fut: asyncio.Future[int], status: int) -> None:
    if not fut.done():
        fut.set_result(status)


# query_sm for overdue receipts (see `_query_upstream`).
FINAL_MESSAGE_STATES = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.EXPIRED,
        MessageState.DELETED,
        MessageState.UNDELIVERABLE,
        MessageState.REJECTED,
    }
)
QUERY_CONCURRENCY = 2  # query_sm in flight per carrier: the window is the submits'
QUERY_BACKLOG = 1000  # queries waiting per carrier beyond which a check is skipped
QUERYFAIL_LIMIT = 3  # ESME_RQUERYFAIL answers, and never a success, mean "not supported"


class LRU(OrderedDict[Any, Any]):
    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


class MessageLocks:
    """One lock per message id, held while an event for that message is decided and
    committed. asyncio.Lock per message cost an object, two coroutines and a dict
    entry per event; here the uncontended case (nearly every event) is a dict insert
    and delete, and waiters queue in order."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        # key -> waiters (None while held by one with nobody waiting)
        self._held: dict[str, deque[asyncio.Future[None]] | None] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._held

    def __len__(self) -> int:
        return len(self._held)

    def try_acquire(self, key: str) -> bool:
        if key in self._held:
            return False
        self._held[key] = None
        return True

    async def acquire(self, key: str) -> None:
        if key not in self._held:
            self._held[key] = None
            return
        waiters = self._held[key]
        if waiters is None:
            waiters = self._held[key] = deque()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut  # release() hands the lock over
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(key)  # it came with the cancellation: pass it on
            else:
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
            raise

    def release(self, key: str) -> None:
        waiters = self._held.get(key)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        del self._held[key]

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)


class _Recheck(Exception):
    """Decide again on the stored message (`Gateway.process`)."""


_Mark = tuple[Message | None, int, int, int, int]


def _mark(c: Change) -> _Mark:
    """What a decision adds to `c` (it only sets the message and appends)..."""
    return c.message, len(c.events), len(c.receipts), len(c.suppress), len(c.soft_bounce)


def _rewind(c: Change, mark: _Mark) -> None:
    """... and taking it back, for a decision taken again."""
    c.message = mark[0]
    del c.events[mark[1] :], c.receipts[mark[2] :], c.suppress[mark[3] :]
    del c.soft_bounce[mark[4] :]


class Gateway:
    """Bounceback's running proxy."""

    def __init__(self, config: Config, *, store: Store | None = None) -> None:
        self.cfg = config
        self.policy = policy_from_config(config)
        self.store: Store = store or store_from_config(config.store)
        # Only one process uses a SQLite file; PostgreSQL may be shared by several
        # instances, so nothing read from it is cached and work is claimed with leases.
        self.shared = not isinstance(self.store, SqliteStore)
        self.lease = config.store.lease_seconds
        self.system_id = "bounceback"
        self.instance = config.server.instance_id or (
            f"{socket.gethostname()}:{config.server.port or os.getpid()}"
        )
        self.instance_no = 0
        self.ids = IdGenerator(0)
        self.links: dict[str, CarrierLink] = {}
        self.sessions: dict[str, set[EsmeSession]] = {}
        self._connections: set[EsmeSession] = set()
        self._buckets: dict[str, TokenBucket] = {}
        self._locks = MessageLocks()
        self._cache: LRU = LRU(CACHE_MAX)  # message id -> Message (write-through)
        # (carrier, key) -> (message id, attempt): only receipts that come soon after
        # their submission need it; older ones are found in the store.
        self._keys: LRU = LRU(KEYS_MAX)
        self._early: dict[tuple[str, str], tuple[float, DeliverSm | DataSm]] = {}
        # Notifications from the other instances (a shared store), handled by `_notices`:
        # carriers whose ids were written (a parked receipt may match now), numbers whose
        # suppression changed ("*": all), and how many carrier-id notices came so far.
        self._notice = asyncio.Event()
        self._notice_carriers: set[str] = set()
        self._notice_numbers: set[str] = set()
        self._carrier_notices = 0
        self._waiting: dict[str, asyncio.Future[int]] = {}
        # The sender's PDU, already decoded, for a first attempt that is about to go.
        self._first_pdu: dict[str, SubmitSm | DataSm] = {}
        self._in_progress: set[str] = set()
        # message id -> (the carrier's answer, its carrier ids) not yet written: the
        # store was failing when it came (see `_defer`).
        self._unwritten: OrderedDict[str, tuple[engine.Event, Change]] = OrderedDict()
        self.feed: FeedPublisher | FeedProcess | None = None
        # Accounts that asked for their numbers to be masked on the feed (checked per event).
        self._masked_accounts = frozenset(
            a.system_id for a in config.accounts if a.mask_destinations
        )
        self._rules: dict[str, Rules] = {}
        self._suppressed: dict[str, float] = {}  # number -> expires_at
        self._receipt_pumps: dict[str, ReceiptPump] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._starting = ""  # the step of `start` under way (named when it fails)
        self.port = 0
        self.counters: dict[str, int] = {}
        self.access = Access.from_config(config.server)  # connection limits, failed binds
        self._tls_server: asyncio.Server | None = None
        self.tls_port = 0
        self.metrics: Metrics | None = Metrics() if config.metrics is not None else None
        self.http: AdminServer | None = None  # /metrics, /healthz, /readyz and the admin API
        self.admin_port = 0
        for c in config.carriers:
            self._rules[c.name] = Rules.from_mapping(config.classify.for_carrier(c.name))
        self._default_rules = Rules.from_mapping(config.classify.for_carrier(""))
        # The destination's time zone, for quiet hours ([retry.time_zones] first).
        self.zones = Zones(config.retry.time_zones)
        # Overdue receipts: carriers that do not answer query_sm, carriers that did
        # answer one, ESME_RQUERYFAIL answers in a row, and the queries per carrier.
        self._no_query: set[str] = set()
        self._query_ok: set[str] = set()
        self._queryfail: dict[str, int] = {}
        self._query_slots: dict[str, asyncio.Semaphore] = {}
        self._queries: dict[str, int] = {}

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the store, start the feed, the carrier links, the listeners and the
        metrics server. When any of it fails, what was started is stopped again and
        `StartError` names the step that failed: no half-started proxy stays up."""
        self._starting = "the store"
        try:
            await self._start()
        except BaseException as exc:
            step = self._starting
            await self._abandon_start()
            if isinstance(exc, Exception):
                raise StartError(f"{step}: {_describe(exc)}") from exc
            raise

    async def _abandon_start(self) -> None:
        """Stop whatever `_start` started before it failed (each step on its own)."""
        self._stopping.set()
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        for link in self.links.values():
            with contextlib.suppress(Exception):
                await link.stop()
        await self._cancel_tasks()
        if self.feed is not None:
            with contextlib.suppress(Exception):
                await self.feed.stop()
        if self.http is not None:
            with contextlib.suppress(Exception):
                await self.http.stop()
            self.http = None
        if self._starting != "the store":  # it opened
            with contextlib.suppress(Exception):
                await self.store.unregister_instance(self.instance_no)
            with contextlib.suppress(Exception):
                await self.store.close()

    async def _start(self) -> None:
        await self.store.open()
        self._starting = "the store (instance registration)"
        now = time.time()
        self.instance_no = await self.store.register_instance(self.instance, now, self.lease)
        floor = await self.store.meta_get(self._floor_key)
        self.ids = IdGenerator(self.instance_no, int(floor, 16) if floor else 0)
        for s in await self.store.suppression_list(time.time()):
            self._suppressed[s.number] = s.expires_at
        if not self.shared:
            await self._recover()
        else:
            self.store.subscribe(self._on_notice)
        self._starting = "the feed"
        if self.cfg.feed is not None:
            if self.cfg.feed.publisher == "process" and _is_file(self.cfg.source):
                self.feed = FeedProcess(self.cfg.feed, self.store, self.instance, self.cfg.source)
            else:  # inline, or a config that is not a file the child could read
                self.feed = FeedPublisher(
                    self.cfg.feed, self.store, self.instance, lease=self.lease
                )
            self.feed.start()
        self._starting = "the carrier links"
        for c in self.cfg.carriers:
            link = CarrierLink(
                c,
                on_deliver=self.on_carrier_deliver,
                on_alert=self.on_alert,
                on_bound=self._on_carrier_bound,
                on_pdu=self.metrics.on_pdu if self.metrics is not None else None,
                max_pdu_size=self.cfg.server.max_pdu_size,
                response_timeout=self.cfg.server.response_timeout,
            )
            self.links[c.name] = link
            if self.metrics is not None:
                link.submit_observer = self.metrics.observe_submit
            link.start()
        self._starting = "the listeners"
        self._server, self._tls_server = await open_listeners(self)  # plain and/or TLS
        self.port = listener_port(self._server)
        self.tls_port = listener_port(self._tls_server)
        self._spawn(self._scheduler())
        self._spawn(self._housekeeping())
        if self.shared:
            self._spawn(self._notices())
        if self.metrics is not None and self.cfg.metrics is not None:
            m = self.cfg.metrics
            self._starting = f"the HTTP listener on {m.host}:{m.port}"
            # aiohttp is imported only when an HTTP listener is configured.
            from bounceback.admin.server import AdminServer
            from bounceback.gateway.control import GatewayControl

            self.metrics.attach(self)
            self.http = AdminServer(GatewayControl(self), self.metrics, self.cfg.admin)
            await self.http.start(m.host, m.port)
            self.metrics.port = self.admin_port = self.http.port
            log.info(
                "metrics on http://%s:%d/metrics%s",
                m.host,
                self.http.port,
                ", admin API under /v1" if self.cfg.admin is not None else "",
            )
        log.info("listening on %s:%d", self.cfg.server.host, self.port)

    async def stop(self) -> None:
        """Graceful: stop taking binds, unbind senders and carriers, flush the store."""
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        if self._tls_server is not None:
            self._tls_server.close()
        for sessions in list(self.sessions.values()):
            for s in list(sessions):
                await s.unbind(timeout=2.0)
        for s in list(self._connections):
            await s.close()
        for link in self.links.values():
            await link.stop()
        await self._cancel_tasks()
        await self.store.meta_set(self._floor_key, f"{self.ids.last:016X}")
        if self.feed is not None:
            await self.feed.stop()
        with contextlib.suppress(Exception):
            await self.store.unregister_instance(self.instance_no)
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.metrics is not None:
            self.metrics.detach()
        await self.store.close()

    async def _cancel_tasks(self) -> None:
        """Cancel the message path's tasks and the receipt pumps, and wait for them."""
        tasks = list(self._tasks) + list(self._pumps.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        # create_task, not ensure_future: a coroutine needs none of its type checks.
        t: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task[Any]) -> None:
        """The supervisor of the message path's tasks: what escapes one is counted and
        logged (never left as an unretrieved exception)."""
        self._tasks.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is None:
            return
        self.count("task_failures")
        n = self.counters["task_failures"]
        if n % LOG_EVERY != 1:
            return
        name = getattr(t.get_coro(), "__qualname__", t.get_name())
        if fault_kind(exc) is not None:  # the store logs its faults itself
            log.warning("%s: %s (%d background failures so far)", name, exc, n)
        else:
            log.error("%s failed (%d background failures so far)", name, n, exc_info=exc)

    def _rare(self, counter: str) -> bool:
        """Count one `counter` event; whether this one should be logged."""
        self.count(counter)
        return self.counters[counter] % LOG_EVERY == 1

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n
        if self.metrics is not None:
            self.metrics.count(name, n)

    @property
    def _floor_key(self) -> str:
        return f"id_floor:{self.instance_no}"

    def shown(self, number: str) -> str:
        """A phone number as the logs show it ([logging] mask_destinations)."""
        return mask_number(number, 4) if self.cfg.logging.mask_destinations else number

    async def _recover(self, older_than: float | None = None) -> None:
        """Messages caught mid-submit by a crash are resubmitted (at least once).

        At start (one process per SQLite file) that is every unfinished message; with a
        shared store, housekeeping hands over only those untouched for a while (their
        instance died), and the due-claim leases decide who resubmits them.
        """
        now = time.time()
        after = ""
        while True:
            batch = await self.store.unfinished(500, after)
            if not batch:
                break
            stale = [
                m
                for m in batch
                if older_than is None or (m.updated_at < older_than and m.id not in self._locks)
            ]
            held = [
                evolve(m, state=State.HELD, next_attempt_at=now, version=m.version + 1)
                for m in stale
            ]
            # One commit each (they share transactions): a message that another
            # instance changed meanwhile is not stuck, and is refused alone.
            results = await asyncio.gather(
                *(self.store.commit(Change(message=m)) for m in held), return_exceptions=True
            )
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, StaleMessage):
                    raise r
            after = batch[-1].id
            log.info("recovered %d unfinished messages", len(batch))

    # ------------------------------------------------------------ senders
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        srv = self.cfg.server
        s = EsmeSession(
            self,
            reader,
            writer,
            name="esme:unbound",
            max_pdu_size=srv.max_pdu_size,
            window=10,
            response_timeout=srv.response_timeout,
            enquire_link_interval=srv.enquire_link_interval,
            inactivity_timeout=srv.inactivity_timeout,
            on_pdu=self.metrics.on_pdu if self.metrics is not None else None,
        )
        s.name = f"esme:unbound:{s.peer}"
        logs.bind(session=s.name)  # this connection's lines (and its tasks') name it
        self._connections.add(s)
        self._spawn(self._bind_deadline(s))
        try:
            await s.run()
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(s)

    async def _bind_deadline(self, s: EsmeSession) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(s.closed.wait(), self.cfg.server.bind_timeout)
            return
        if s.account is None:
            log.info("%s: no bind within %.0f s; closing", s.name, self.cfg.server.bind_timeout)
            await s.close()

    def authenticate(
        self, s: EsmeSession, system_id: str, password: str, bind_type: str
    ) -> tuple[int, Account | None]:
        status, acct = self._authenticate(s, system_id, password, bind_type)
        if self.metrics is not None:  # unknown system_ids share one series
            known = self.cfg.account(system_id) is not None
            self.metrics.bind("esme", system_id if known else "", status)
        return status, acct

    def _authenticate(
        self, s: EsmeSession, system_id: str, password: str, bind_type: str
    ) -> tuple[int, Account | None]:
        import hmac

        if self._stopping.is_set():
            return S.ESME_RBINDFAIL, None
        acct = self.cfg.account(system_id)
        if acct is None:
            return S.ESME_RINVSYSID, None
        if not acct.allows_ip(s.peer_ip):  # outside allowed_ips the account does not exist
            log.warning("%s: %r may not bind from this address (allowed_ips)", s.name, system_id)
            return S.ESME_RINVSYSID, None
        if not hmac.compare_digest(password.encode(), acct.password.encode()):
            return S.ESME_RINVPASWD, None
        if bind_type not in acct.bind_types:
            return S.ESME_RBINDFAIL, None
        if len(self.sessions.get(system_id, ())) >= acct.max_binds:
            return S.ESME_RBINDFAIL, None
        return 0, acct

    def register(self, s: EsmeSession) -> None:
        assert s.account is not None
        name = s.account.system_id
        self.sessions.setdefault(name, set()).add(s)
        if s.can_receive:
            self.wake_pump(name)

    def unregister(self, s: EsmeSession) -> None:
        if s.account is not None:
            self.sessions.get(s.account.system_id, set()).discard(s)

    def take_token(self, acct: Account) -> bool:
        b = self._buckets.get(acct.system_id)
        if b is None:
            b = self._buckets[acct.system_id] = TokenBucket(acct.throughput, now=time.monotonic())
        return b.try_take(time.monotonic())

    # ------------------------------------------------------------ accept
    def _new_message(
        self, acct: Account, pdu: SubmitSm | DataSm, now: float, raw: bytes | None = None
    ) -> Message:
        mid = self.ids.next(int(now * 1000))
        r = self.cfg.retry
        validity = getattr(pdu, "validity_period", "")
        deadline = now + r.default_validity
        if validity:
            try:
                v = to_utc(validity, dt.datetime.fromtimestamp(now, dt.UTC))
            except ValueError:
                v = None
            if v is not None:
                deadline = v.timestamp()
        max_deadline = now + r.max_age
        text = ""
        sm = getattr(pdu, "short_message", b"")
        if sm:
            with contextlib.suppress(Exception):
                text = decode_text(sm[:40], pdu.data_coding)[:20]
        return Message(
            id=mid,
            account=acct.system_id,
            source_addr=pdu.source_addr,
            destination_addr=pdu.destination_addr,
            pdu=raw if raw is not None else pdu.encode(),
            registered_delivery=pdu.registered_delivery,
            created_at=now,
            deadline=min(deadline, max_deadline),
            deadline_is_validity=deadline <= max_deadline,
            submit_date=now,
            text_head=text,
            updated_at=now,
        )

    async def accept(
        self, acct: Account, pdu: SubmitSm | DataSm, raw: bytes | None = None
    ) -> tuple[int, str]:
        """Take one message from a sender: returns (command_status, our message id).
        `raw`: the PDU as received, kept as the message's PDU (else `pdu` is encoded).

        The answer comes within `[server] submit_wait` whatever the store does: a
        store that cannot write (or does not within that time) gets the sender
        ESME_RMSGQFUL, a temporary error it retries, and nothing is kept of the
        message (see `GroupCommit`)."""
        loop = asyncio.get_running_loop()
        answer_by = loop.time() + self.cfg.server.submit_wait
        if self.store.fault is not None:
            if self._rare("store_refusals"):
                log.warning(
                    "refusing new messages with ESME_RMSGQFUL: the store cannot write (%s)",
                    self.store.fault,
                )
            return S.ESME_RMSGQFUL, ""
        now = time.time()
        dest = pdu.destination_addr
        exp = self._suppressed.get(dest)
        if exp is not None and exp > now and acct.suppression == "reject":
            self.count("suppression_hits")
            # Recorded (stats, audit, the feed) but never sent: the number hard-bounced.
            refused = evolve(
                self._new_message(acct, pdu, now, raw),
                state=State.REJECTED,
                final_stat="REJECTD",
                final_err=f"{S.ESME_RINVDSTADR:03X}",
                done_at=now,
            )
            change = Change(message=refused, insert=True)
            self._event(change, refused, "suppressed", {"reason": "suppressed"}, now)
            with contextlib.suppress(Exception):
                await self.store.commit(change, timeout=max(answer_by - loop.time(), 0.0))
            return S.ESME_RINVDSTADR, ""
        if exp is not None and exp <= now:
            self._suppressed.pop(dest, None)
        msg = self._new_message(acct, pdu, now, raw)
        change = Change(message=msg, insert=True)
        self._event(change, msg, "accepted", {"ack": acct.ack}, now)
        # The first attempt starts in the same transaction (one commit, not two).
        first, actions = engine.decide(msg, engine.Dispatch(now), self.policy)
        dispatched = first.state == State.SUBMITTING and actions == [Submit(1)]
        if dispatched:
            change.message = msg = first
        try:
            started = time.perf_counter()
            await self.store.commit(change, timeout=max(answer_by - loop.time(), 0.0))
            if self.metrics is not None:
                self.metrics.observe_commit(time.perf_counter() - started)
        except (StoreUnavailable, TimeoutError) as exc:
            if self._rare("store_refusals"):
                log.warning("refusing a new message with ESME_RMSGQFUL: store: %s", exc or "slow")
            return S.ESME_RMSGQFUL, ""
        except Exception:
            log.exception("store refused a new message")
            return S.ESME_RSYSERR, ""
        if self.feed is not None:
            self.feed.wake.set()
        self._cache.put(msg.id, msg)
        self.count("accepted")
        fut: asyncio.Future[int] | None = None
        if acct.ack != "stored":
            fut = self._waiting[msg.id] = loop.create_future()
        if dispatched:
            self._first_pdu[msg.id] = pdu
            self._act(msg, Submit(1))
        else:
            self._spawn(self.process(msg.id, engine.Dispatch(now)))
        if fut is None:
            return 0, msg.id
        # Bounded wait for the carrier; then the sender gets our id: stored and on its way.
        expiry = loop.call_later(max(answer_by - loop.time(), 0.0), _answer, fut, 0)
        try:
            status = await fut
        finally:
            expiry.cancel()
            self._waiting.pop(msg.id, None)
        return status, (msg.id if status == 0 else "")

    async def on_submit(
        self, s: EsmeSession, pdu: SubmitSm | DataSm, raw: bytes | None = None
    ) -> None:
        assert s.account is not None
        status, mid = await self.accept(s.account, pdu, raw)
        if isinstance(pdu, DataSm):
            s.send(
                DataSmResp(
                    sequence_number=pdu.sequence_number, command_status=status, message_id=mid
                )
            )
        else:
            s.send(pdu.response(command_status=status, message_id=mid))

    async def on_submit_multi(self, s: EsmeSession, pdu: SubmitMulti) -> None:
        assert s.account is not None
        results: list[tuple[SmeAddress | Any, int, str]] = []

        async def one(dest: Any) -> None:
            if not isinstance(dest, SmeAddress):
                results.append((dest, S.ESME_RINVDLNAME, ""))
                return
            single = SubmitSm(
                sequence_number=0,
                service_type=pdu.service_type,
                source_addr_ton=pdu.source_addr_ton,
                source_addr_npi=pdu.source_addr_npi,
                source_addr=pdu.source_addr,
                dest_addr_ton=dest.dest_addr_ton,
                dest_addr_npi=dest.dest_addr_npi,
                destination_addr=dest.destination_addr,
                esm_class=pdu.esm_class,
                protocol_id=pdu.protocol_id,
                priority_flag=pdu.priority_flag,
                schedule_delivery_time=pdu.schedule_delivery_time,
                validity_period=pdu.validity_period,
                registered_delivery=pdu.registered_delivery,
                replace_if_present_flag=pdu.replace_if_present_flag,
                data_coding=pdu.data_coding,
                sm_default_msg_id=pdu.sm_default_msg_id,
                short_message=pdu.short_message,
                tlvs=dict(pdu.tlvs),
            )
            assert s.account is not None
            st, mid = await self.accept(s.account, single)
            results.append((dest, st, mid))

        await asyncio.gather(*(one(d) for d in pdu.dest_addresses))
        ok = [mid for _, st, mid in results if st == 0]
        failed = [
            UnsuccessSme(
                dest_addr_ton=getattr(d, "dest_addr_ton", 0),
                dest_addr_npi=getattr(d, "dest_addr_npi", 0),
                destination_addr=getattr(d, "destination_addr", getattr(d, "dl_name", "")),
                error_status_code=st,
            )
            for d, st, _ in results
            if st != 0
        ]
        status = 0 if ok else (failed[0].error_status_code if failed else S.ESME_RINVNUMDESTS)
        s.send(
            pdu.response(
                command_status=status,
                message_id=ok[0] if ok else "",
                unsuccess_smes=failed,
            )
        )

    # ------------------------------------------------------------ the engine loop
    async def _load(self, mid: str, *, fresh: bool = False) -> Message | None:
        """The message from memory, else (or when `fresh`) from the store.

        With a shared store another instance may have changed a message held in memory;
        a decision taken on such a copy is refused by the store's version check and
        taken again on a fresh read (see `process`)."""
        msg: Message | None = None if fresh else self._cache.get(mid)
        if msg is None:
            msg = await self.store.get(mid)
        return msg

    def _event(
        self, change: Change, msg: Message, name: str, fields: dict[str, object], now: float
    ) -> None:
        if self.metrics is not None:
            self.metrics.message(name)
        feed = self.cfg.feed
        if feed is None:
            return
        if self.feed is not None and self.feed.full:
            self.count("feed_events_dropped")
            if self.counters["feed_events_dropped"] % 1000 == 1:
                log.error("feed outbox full (%d events): dropping new events", self.feed.backlog)
            return
        change.events.append(
            event_record(
                msg,
                name,
                fields,
                now=now,
                instance=self.instance,
                prefix=feed.prefix,
                mask=feed.mask_destinations or msg.account in self._masked_accounts,
                mask_keep=feed.mask_keep,
            )
        )

    async def process(
        self, mid: str, event: engine.Event, *, extra: Change | None = None
    ) -> Message | None:
        """Run one event through the engine, persist, then act.

        The decision is written only over the version of the message it was taken on:
        when another instance (or a command) changed the message meanwhile, the store
        refuses it (`StaleMessage`) and the event is decided again on the stored one.
        """
        change = extra if extra is not None else Change()
        mark = _mark(change)
        locks = self._locks
        if not locks.try_acquire(mid):
            await locks.acquire(mid)
        try:
            fresh = False
            for attempt in range(1, STALE_RETRIES + 1):
                try:
                    done = await self._decide(mid, event, change, fresh=fresh)
                    break
                except (StaleMessage, _Recheck) as exc:
                    if isinstance(exc, StaleMessage):
                        self._cache.pop(mid, None)
                        self.count("stale_decisions")
                        if attempt == STALE_RETRIES:
                            raise
                    fresh = True
                    _rewind(change, mark)
        finally:
            locks.release(mid)
        if done is None:
            return None
        new, after = done
        for a in after:
            self._act(new, a)
        return new

    async def _decide(
        self, mid: str, event: engine.Event, change: Change, *, fresh: bool
    ) -> tuple[Message, list[Action]] | None:
        """Load, decide and commit one event (under the message's lock), adding to
        `change` (see `_mark`)."""
        msg = await self._load(mid, fresh=fresh)
        if msg is None:
            log.warning("event for unknown message %s", mid)
            return None
        if isinstance(event, engine.SubmitResult):
            fut = self._waiting.get(mid)
            event = evolve(event, sender_waiting=fut is not None and not fut.done())
        new, actions = engine.decide(msg, event, self.policy)
        if new is msg and self.shared and not fresh:
            # Nothing to write (a receipt for an older attempt, an intermediate one, a
            # retry that is not due on this copy): with no version check to say whether
            # the copy in memory is current, decide again on the stored message.
            raise _Recheck
        if new is not msg:
            set_version(new, msg.version + 1)  # `new` is the engine's fresh copy
            change.message = new
        now = getattr(event, "now", time.time())
        after: list[Action] = []
        for a in actions:
            if isinstance(a, Publish):
                self._event(change, new, a.event, dict(a.fields), now)
            elif isinstance(a, SenderReceipt):
                change.receipts.append(
                    ReceiptRow.for_message(new, a.stat, a.err, a.done_at, a.intermediate)
                )
                after.append(a)
            elif isinstance(a, SuppressNumber):
                ttl = self.cfg.retry.suppression_ttl
                change.suppress.append((a.number, a.reason, now, now + ttl, new.account))
                self._suppressed[a.number] = now + ttl
            else:
                after.append(a)
        if new.state == State.HELD and new.verdict is not None and new is not msg:
            change.soft_bounce.append((new.destination_addr, now, new.verdict.reason))
        if (
            change.message is not None
            or change.events
            or change.receipts
            or change.carrier_keys
            or change.suppress
        ):
            started = time.perf_counter()
            await self.store.commit(change)
            if self.metrics is not None:
                self.metrics.observe_commit(time.perf_counter() - started)
            if change.events and self.feed is not None:
                self.feed.wake.set()
        if new.state.final or new.state == State.HELD:
            # Held messages live in the store, not in memory: they are read again by
            # primary key when due (a million held must not grow the proxy).
            self._cache.pop(mid, None)
        else:
            self._cache.put(mid, new)
        return new, after

    def _act(self, msg: Message, a: Action) -> None:
        if isinstance(a, Submit):
            self._spawn(self._send_upstream(msg.id, a.attempt))
        elif isinstance(a, AnswerSender):
            fut = self._waiting.get(msg.id)
            if fut is not None and not fut.done():
                fut.set_result(a.status)
        elif isinstance(a, SenderReceipt):
            self.wake_pump(msg.account)
        elif isinstance(a, CancelUpstream):
            link = self.links.get(a.carrier)
            if link is not None:
                self._spawn(self._cancel_upstream(link, msg, a.carrier_message_id))
        elif isinstance(a, QueryUpstream):
            self._spawn(self._query_upstream(msg, a))

    async def _cancel_upstream(self, link: CarrierLink, msg: Message, cmid: str) -> None:
        try:
            status = await link.cancel(cmid, msg.source_addr, msg.destination_addr)
            log.info(
                "cancel of %s at %s: status 0x%02X",
                msg.id,
                link.name,
                status,
                extra=logs.context(message_id=msg.id, carrier=link.name, account=msg.account),
            )
        except Exception as exc:
            log.info(
                "cancel of %s at %s failed: %s",
                msg.id,
                link.name,
                exc,
                extra=logs.context(message_id=msg.id, carrier=link.name, account=msg.account),
            )

    # ------------------------------------------------------------ upstream
    def route(self, msg: Message) -> list[CarrierLink]:
        names = [c.name for c in self.cfg.carriers_for(msg.account, msg.destination_addr)]
        if (
            self.cfg.retry.alternate_carrier
            and msg.carrier in names
            and msg.verdict is not None
            and msg.verdict.reason in ("routing", "network", "system_failure", "congestion")
        ):
            i = names.index(msg.carrier)
            names = names[i + 1 :] + names[: i + 1]
        links = [self.links[n] for n in names if n in self.links]
        # Bound and healthy carriers first (a flapping one would likely drop the
        # submit); the route's fallback order is kept within each group.
        return sorted(links, key=lambda link: not (link.bound and link.healthy))

    def upstream_pdu(self, msg: Message, attempt: int, original: Pdu | None = None) -> Pdu:
        """What goes to the carrier: the sender's PDU (`original`, or decoded from the
        store), with a receipt always requested."""
        pdu = original if original is not None else decode(msg.pdu)
        rd = (msg.registered_delivery & ~0x03) | 0x01  # always ask the carrier for a receipt
        changes: dict[str, Any] = {"sequence_number": 0, "registered_delivery": rd}
        if attempt > 1 and isinstance(pdu, SubmitSm):
            # Keep the original deadline, not a fresh relative validity.
            changes["validity_period"] = format_absolute(
                dt.datetime.fromtimestamp(msg.deadline, dt.UTC)
            )
            changes["schedule_delivery_time"] = ""
        return pdu.copy(**changes)

    async def _send_upstream(self, mid: str, attempt: int) -> None:
        original = self._first_pdu.pop(mid, None)
        msg = await self._load(mid)
        if msg is None:
            return
        links = [link for link in self.route(msg) if link.bound]
        now = time.time()
        if not links:
            await self._process_or_defer(
                mid,
                engine.SubmitResult(
                    now=now,
                    carrier="",
                    status=-1,
                    carrier_message_id="",
                    verdict=soft("not_bound", "no carrier bound"),
                    rand=random.random(),
                ),
                Change(),
            )
            return
        link = links[0]
        if attempt > 1 and self.metrics is not None:
            self.metrics.retry_attempts.inc()
        pdu = self.upstream_pdu(msg, attempt, original)  # only a first attempt has one
        verdict: Verdict | None = None
        cmid = ""
        status = -1
        try:
            resp = await link.submit(pdu)
            status = resp.command_status
            cmid = getattr(resp, "message_id", "") or ""
            if status != 0:
                verdict = verdict_of(classify_submit_status(status, self._rules.get(link.name)))
        except (TimeoutError, SessionClosed):
            verdict = soft("timeout", "no submit_sm_resp from the carrier")
        except NotBound:
            verdict = soft("not_bound", "no carrier bound")
        except PduError as exc:
            verdict = soft("timeout", f"carrier answered an unreadable PDU: {exc}")
        extra = Change()
        keys = id_keys(cmid, link.cfg.id_format) if status == 0 else []
        for k in keys:
            self._keys.put((link.name, k), (mid, attempt))
            extra.carrier_keys.append((link.name, k, mid, attempt))
        written = await self._process_or_defer(
            mid,
            engine.SubmitResult(
                now=time.time(),
                carrier=link.name,
                status=status if status >= 0 else 0x08,
                carrier_message_id=cmid,
                verdict=verdict,
                rand=random.random(),
                tz=self.zones(msg.destination_addr),
            ),
            extra,
        )
        if keys and written:
            self._replay_early(link.name, keys)

    async def _process_or_defer(self, mid: str, event: engine.Event, extra: Change) -> bool:
        """`process` a carrier's answer; when the store cannot write it, `_defer` it.
        Whether it was written."""
        mark = _mark(extra)
        try:
            await self.process(mid, event, extra=extra)
        except Exception as exc:
            if fault_kind(exc) is None:
                raise
            _rewind(extra, mark)
            self._defer(mid, event, extra)
            return False
        return True

    def _defer(self, mid: str, event: engine.Event, extra: Change) -> None:
        """Keep a carrier answer the store could not write, to write it once the store
        is back (`_write_deferred`). The message is stored and the carrier has it: a
        sender still waiting is told ESME_ROK (its final receipt tells the rest). Past
        UNWRITTEN_MAX the oldest is dropped: its message stays `submitting` and is sent
        again after a restart (as after a crash)."""
        self._unwritten[mid] = (event, extra)
        self._unwritten.move_to_end(mid)
        if self._rare("carrier_answers_deferred"):
            log.warning(
                "%d carrier answers kept in memory until the store can write (%d so far)",
                len(self._unwritten),
                self.counters["carrier_answers_deferred"],
            )
        while len(self._unwritten) > UNWRITTEN_MAX:
            lost, _ = self._unwritten.popitem(last=False)
            if self._rare("carrier_answers_dropped"):
                log.error(
                    "more than %d carrier answers waiting for the store: %s and older ones "
                    "will be sent again after a restart",
                    UNWRITTEN_MAX,
                    lost,
                )
        fut = self._waiting.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(0)

    async def _write_deferred(self) -> None:
        """Write the carrier answers kept while the store could not (oldest first)."""
        while self._unwritten and self.store.fault is None:
            mid, (event, extra) = next(iter(self._unwritten.items()))
            mark = _mark(extra)
            try:
                new = await self.process(mid, event, extra=extra)
            except Exception as exc:
                if fault_kind(exc) is None:
                    self._unwritten.pop(mid, None)  # not a store fault: never retried
                    raise
                _rewind(extra, mark)
                return
            self._unwritten.pop(mid, None)
            self.count("carrier_answers_written")
            if new is not None and isinstance(event, engine.SubmitResult) and event.carrier:
                self._replay_early(event.carrier, [k for c, k, _, _ in extra.carrier_keys])

    def _replay_early(self, carrier: str, keys: Iterable[str]) -> None:
        for k in keys:
            hit = self._early.pop((carrier, k), None)
            if hit is not None:
                # Replay once, and drop the sibling keys (hex and decimal) of that receipt.
                for other in [key for key, v in self._early.items() if v[1] is hit[1]]:
                    del self._early[other]
                self._spawn(self.on_carrier_deliver(carrier, hit[1]))

    def _on_carrier_bound(self, name: str) -> None:
        # Messages held only because no carrier was bound go (see _release_not_bound).
        self._spawn(self._release_not_bound(name))

    async def _release_not_bound(self, name: str) -> None:
        """Messages held only because no carrier was bound go when one of their
        carriers binds, ahead of their schedules (like an alert), but not all at once
        on every bind: a carrier that drops the session right after binding, or on the
        first submit_sm, would cost each of them a retry on each bind. One goes at once
        as a probe; the others follow once this bind has proven itself (answered a
        submit, or stayed bound `stable_after` seconds). If the bind is lost first,
        they keep their own schedules."""
        link = self.links.get(name)
        if link is None:
            return
        waiting = await self._claim_not_bound(link)
        if not waiting:
            return
        await self.store.release([m.id for m in waiting[1:]])
        await self._fire(waiting[0].id, engine.Alert(time.time()))
        if not await link.proven():
            return
        now = time.time()
        for m in await self._claim_not_bound(link):
            await self._fire(m.id, engine.Alert(now))

    async def _claim_not_bound(self, link: CarrierLink) -> list[Message]:
        """Claim the messages held because no carrier was bound that `link` can carry
        (the others are released at once), the earliest due first."""
        claimed = await self.store.claim_due(self.instance, time.time() + 3600, 2000, self.lease)
        waiting = [
            m
            for m in claimed
            if m.state == State.HELD
            and m.verdict is not None
            and m.verdict.reason == "not_bound"
            and link in self.route(m)
        ]
        keep = {m.id for m in waiting}
        await self.store.release([m.id for m in claimed if m.id not in keep])
        return waiting

    # ------------------------------------------------------------ from carriers
    async def on_carrier_deliver(self, carrier: str, pdu: Pdu) -> int:
        assert isinstance(pdu, (DeliverSm, DataSm))
        receipt = parse_receipt(pdu)
        if receipt is None:
            return await self._route_mo(carrier, pdu)
        link = self.links.get(carrier)
        fmt = link.cfg.receipt_id_format if link is not None else "auto"
        rid = receipt.message_id or ""
        keys = id_keys(rid, fmt) if rid else []
        hit: tuple[str, int] | None = None
        for k in keys:
            hit = self._keys.get((carrier, k))
            if hit is not None:
                break
        # With several instances the response may be handled by the other one and its
        # commit may still be on its way. Its commit notifies the carrier ids written: a
        # notice heard from here on re-matches the receipt once parked. Without the
        # notifications, look again a few times, briefly.
        notices = self._carrier_notices
        retries = SHARED_LOOKUP_DELAYS if self.shared and not self.store.listening else ()
        for delay in (0.0, *retries):
            if hit is not None or not keys:
                break
            if delay:
                await asyncio.sleep(delay)
            try:
                hit = await self.store.find_carrier_key(carrier, keys)
            except Exception:
                return S.ESME_RX_T_APPN
            # The submit_sm_resp may have been handled while the store was read; no await
            # between this check and parking, so its replay cannot be missed.
            for k in keys:
                hit = hit or self._keys.get((carrier, k))
        if hit is None:
            now = time.time()
            if keys and not any((carrier, k) in self._early for k in keys):
                self._early[(carrier, keys[0])] = (now, pdu)
                for k in keys[1:]:
                    self._early[(carrier, k)] = (now, pdu)
                self.count("receipts_early")
                if self.shared and self._carrier_notices != notices:
                    # Carrier ids were committed while the store was read: look again.
                    self._notice_carriers.add(carrier)
                    self._notice.set()
                return 0
            self._unmatched(carrier, rid)
            await self.store.unmatched_receipt(carrier, rid, repr(pdu), now)
            return 0
        mid, attempt = hit
        if mid in self._unwritten:  # its carrier answer waits for the store: later
            self.count("receipts_deferred")
            return S.ESME_RX_T_APPN
        outcome = classify_receipt(receipt, self._rules.get(carrier, self._default_rules))
        verdict = verdict_of(outcome)
        msg = await self._load(mid)
        try:
            await self._decide_receipt(
                mid, msg, attempt, verdict, receipt.stat or "", receipt.err or "000"
            )
        except Exception as exc:
            if fault_kind(exc) is None:
                log.exception("receipt for %s not recorded; asking the carrier to retry", mid)
            elif self._rare("receipts_deferred"):
                log.warning(
                    "receipts answered ESME_RX_T_APPN (the carrier sends them again): store: "
                    "%s (%d so far)",
                    exc,
                    self.counters["receipts_deferred"],
                )
            return S.ESME_RX_T_APPN
        self.count("receipts_matched")
        return 0

    async def _decide_receipt(
        self,
        mid: str,
        msg: Message | None,
        attempt: int,
        verdict: Verdict,
        stat: str,
        err: str,
        *,
        queried: bool = False,
    ) -> None:
        """Run a final or intermediate outcome of attempt `attempt` of message `mid`
        through the engine: a carrier receipt, or the answer to a query_sm
        (`queried`). A soft one counts towards the number's flag."""
        now = time.time()
        extra = Change()
        flagged = False
        if msg is not None and verdict.kind == "soft":
            flagged = await self._soft_count(msg, now, extra)
        await self.process(
            mid,
            engine.ReceiptIn(
                now=now,
                attempt=attempt,
                verdict=verdict,
                stat=stat,
                err=err,
                rand=random.random(),
                tz=self.zones(msg.destination_addr) if msg is not None else None,
                flagged=flagged,
                queried=queried,
            ),
            extra=extra,
        )

    def _unmatched(self, carrier: str, rid: str, *, early: bool = False) -> None:
        """Count a receipt no message matches; log the 1st, 101st, ... of them."""
        self.count("receipts_unmatched")
        n = self.counters["receipts_unmatched"]
        if n % UNMATCHED_LOG_EVERY == 1:
            log.warning(
                "%s: receipt for unknown id %r%s (%d unmatched so far)",
                carrier,
                rid,
                f", unmatched after {EARLY_RECEIPT_TTL:.0f} s" if early else "",
                n,
            )

    async def _soft_count(self, msg: Message, now: float, extra: Change) -> bool:
        r = self.cfg.retry
        n = await self.store.soft_bounce_count(msg.destination_addr, now - r.flag_window) + 1
        if n == r.flag_threshold:
            self._event(
                extra,
                msg,
                "number_flagged",
                {"soft_bounces": n, "window_seconds": r.flag_window},
                now,
            )
        return n >= r.flag_threshold

    async def _route_mo(self, carrier: str, pdu: DeliverSm | DataSm) -> int:
        link = self.links.get(carrier)
        account = ""
        if link is not None:
            account = link.cfg.mo_routes.get(pdu.destination_addr, link.cfg.mo_account)
        if not account:
            self.count("mo_unrouted")
            log.info(
                "%s: MO to %s has no account; dropped", carrier, self.shown(pdu.destination_addr)
            )
            return 0
        for s in list(self.sessions.get(account, ())):
            if s.can_receive:
                try:
                    resp = await s.request(pdu.copy(sequence_number=0))
                    self.count("mo_delivered")
                    return resp.command_status
                except Exception:
                    continue
        return S.ESME_RX_T_APPN  # account not bound now: the carrier retries later

    async def on_alert(self, carrier: str, pdu: AlertNotification) -> None:
        status = pdu.tlvs.get(0x0422, 0)
        if status not in (0, None):
            return
        now = time.time()
        held = await self.store.held_for_number(pdu.source_addr)
        log.info(
            "%s: alert for %s: %d held messages", carrier, self.shown(pdu.source_addr), len(held)
        )
        for m in held:
            await self._fire(m.id, engine.Alert(now))

    # ------------------------------------------------------------ timers
    async def _fire(self, mid: str, event: engine.Event) -> None:
        if mid in self._in_progress:
            return
        self._in_progress.add(mid)
        try:
            await self.process(mid, event)
        except Exception as exc:
            if fault_kind(exc) is None:
                raise
            # Due again as soon as the store writes: the scheduler claims it again.
            with contextlib.suppress(Exception):
                await self.store.release([mid])
        finally:
            self._in_progress.discard(mid)

    async def _scheduler(self) -> None:
        while not self._stopping.is_set():
            now = time.time()
            if self.store.fault is not None:  # nothing could be written: wait for it
                await asyncio.sleep(0.25)
                continue
            try:
                due = await self.store.claim_due(self.instance, now, 1000, self.lease)
            except Exception:
                log.exception("due query failed")
                due = []
            no_query = frozenset(self._no_query)
            for m in due:
                if m.id not in self._in_progress:
                    self._spawn(self._fire(m.id, engine.Due(now, no_query)))
            await asyncio.sleep(0.05 if len(due) >= 1000 else 0.25)

    async def _housekeeping(self) -> None:
        retention = self.cfg.store.retention_days * 86400.0
        expire_every = min(3600.0, max(1.0, retention / 4))  # [store] retention_days
        next_expiry = 0.0
        next_sweep = 0.0
        while not self._stopping.is_set():
            await asyncio.sleep(1.0)
            if self._unwritten:
                try:
                    await self._write_deferred()
                except Exception:
                    log.exception("writing the carrier answers kept in memory failed")
            if self.store.fault is not None:
                continue  # the store reports and retries its fault itself
            try:
                now = time.monotonic()
                wall = time.time()
                if now >= next_expiry:
                    next_expiry = now + expire_every
                    gone = await self.store.expire_finished(wall - retention)
                    if gone:
                        self.count("messages_expired_retention", gone)
                        log.info("retention: removed %d finished messages", gone)
                    # Number flagging counts soft bounces over flag_window: keep those.
                    kept = max(retention, self.cfg.retry.flag_window)
                    records = await self.store.expire_records(wall - kept)
                    if any(records.values()):
                        self.count("records_expired_retention", sum(records.values()))
                        log.info(
                            "retention: removed %s",
                            ", ".join(f"{n} {t} rows" for t, n in records.items() if n),
                        )
                if self.shared:
                    await self._rematch_early(None, notified=False)
                for key, (at, pdu) in list(self._early.items()):
                    if wall - at > EARLY_RECEIPT_TTL:
                        self._early.pop(key, None)
                        if not any(v[1] is pdu for v in self._early.values()):
                            parsed = parse_receipt(pdu)
                            rid = parsed.message_id if parsed is not None else None
                            self._unmatched(key[0], rid or key[1], early=True)
                            await self.store.unmatched_receipt(key[0], key[1], repr(pdu), wall)
                await self.store.meta_set(self._floor_key, f"{self.ids.last:016X}")
                if not await self.store.renew_instance(self.instance_no, wall, self.lease):
                    log.error("instance number %d was taken over; re-registering", self.instance_no)
                    self.instance_no = await self.store.register_instance(
                        self.instance, wall, self.lease
                    )
                    self.ids = IdGenerator(self.instance_no, self.ids.last)
                if now >= next_sweep:
                    next_sweep = now + 10.0
                    # Suppression changes made by the CLI or another instance.
                    self._suppressed = {
                        x.number: x.expires_at for x in await self.store.suppression_list(wall)
                    }
                    if self.shared:
                        await self._recover(older_than=wall - STUCK_AFTER)
            except Exception as exc:  # a locked or full store: try again next round
                log.warning("housekeeping: %s", exc)

    async def _rematch_early(self, carriers: set[str] | None, *, notified: bool) -> None:
        """With several instances, a receipt may beat the other instance's commit of the
        carrier id: look the held-back receipts (of `carriers`, None: all) up in the
        store again, one query per carrier. `notified`: a notification of new carrier
        ids asked for it (counted ``receipts_rematched_notified``), else the
        housekeeping fallback (``receipts_rematched_polled``)."""
        keys: dict[str, dict[str, DeliverSm | DataSm]] = {}  # carrier -> key -> receipt
        for (carrier, key), (_at, pdu) in self._early.items():
            if carriers is None or carrier in carriers:
                keys.setdefault(carrier, {})[key] = pdu
        for carrier, held in keys.items():
            found = await self.store.find_carrier_keys(carrier, list(held))
            if not found:
                continue
            siblings: dict[int, list[str]] = {}  # a receipt's keys (hex and decimal)
            for k, p in held.items():
                siblings.setdefault(id(p), []).append(k)
            done: set[int] = set()
            for key in found:
                pdu = held[key]
                if id(pdu) in done:
                    continue  # one of its other keys matched first
                done.add(id(pdu))
                # Unless the other path matched it meanwhile (its keys are gone then).
                gone = [self._early.pop((carrier, k), None) for k in siblings[id(pdu)]]
                if any(g is not None and g[1] is pdu for g in gone):
                    self.count(
                        "receipts_rematched_notified" if notified else "receipts_rematched_polled"
                    )
                    self._spawn(self.on_carrier_deliver(carrier, pdu))

    # ------------------------------------------------------------ notifications
    def _receivers_here(self) -> list[str]:
        """The accounts with a receiver bound to this instance."""
        return [a for a, ss in self.sessions.items() if any(s.can_receive for s in ss)]

    def _on_notice(self, channel: str, payload: str) -> None:
        """A notification from the shared store (any instance's commit, ours too)."""
        if channel == RECEIPT_CHANNEL:
            # Receipts for an account: its pump here claims them (the leases make one
            # instance deliver each) when a receiver of it is bound here.
            if any(s.can_receive for s in self.sessions.get(payload, ())):
                self.count("receipt_notices")
                self.wake_pump(payload)
        elif channel == CARRIER_CHANNEL:
            self._carrier_notices += 1
            if self._early:
                self._notice_carriers.update(payload.split())
                self._notice.set()
        elif channel == SUPPRESSION_CHANNEL:
            self._notice_numbers.update(payload.split() or ["*"])
            self._notice.set()

    async def _notices(self) -> None:
        """Act on the notifications that need the store; keep the listening connection
        open; every `RECEIPT_FALLBACK` s wake the pumps of the accounts with receivers
        here (a notification may be lost with its connection)."""
        loop = asyncio.get_running_loop()
        next_fallback = loop.time() + RECEIPT_FALLBACK
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notice.wait(), LISTEN_CHECK)
            self._notice.clear()
            try:
                if self._notice_carriers:
                    carriers, self._notice_carriers = self._notice_carriers, set()
                    await self._rematch_early(None if "*" in carriers else carriers, notified=True)
                if self._notice_numbers:
                    numbers, self._notice_numbers = self._notice_numbers, set()
                    await self._refresh_suppressed(numbers)
                if await self.store.ensure_listening() and self.store.listening:
                    # Listening again: the notifications sent meanwhile were lost, so
                    # look for everything (until then, the periodic looks stand in).
                    log.warning("the store's notifications were interrupted; catching up")
                    self.count("notify_reconnects")
                    next_fallback = 0.0
                    await self._rematch_early(None, notified=False)
                    await self._refresh_suppressed({"*"})
                if loop.time() >= next_fallback:
                    next_fallback = loop.time() + RECEIPT_FALLBACK
                    for account in self._receivers_here():
                        self.wake_pump(account)
            except Exception as exc:  # the store is failing: the next round tries again
                if self._rare("notice_failures"):
                    log.warning(
                        "acting on store notifications: %s (%d so far)",
                        exc,
                        self.counters["notice_failures"],
                    )

    async def _refresh_suppressed(self, numbers: set[str]) -> None:
        """Read the suppression of `numbers` ("*": the whole list) from the store."""
        wall = time.time()
        if "*" in numbers:
            self._suppressed = {
                x.number: x.expires_at for x in await self.store.suppression_list(wall)
            }
            self.count("suppression_notified")
            return
        for number in numbers:
            s = await self.store.suppressed(number, wall)
            if s is None:
                self._suppressed.pop(number, None)
            else:
                self._suppressed[number] = s.expires_at
        self.count("suppression_notified", len(numbers))

    # ------------------------------------------------------------ receipts to senders
    def wake_pump(self, account: str) -> None:
        """New receipts for `account` are stored, or one of its receivers bound."""
        pump = self._receipt_pumps.get(account)
        if pump is None:
            pump = self._receipt_pumps[account] = ReceiptPump(self, account)
        pump.wake()
        t = self._pumps.get(account)
        if t is None or t.done():
            self._pumps[account] = asyncio.get_running_loop().create_task(pump.run())

    @staticmethod
    def _receipt_pdu(row: ReceiptRow) -> Pdu:
        return build_receipt_pdu(
            sequence_number=0,
            source_addr=row.source_addr,
            destination_addr=row.destination_addr,
            message_id=row.message_id,
            stat=row.stat,
            err=row.err,
            submit_date=receipt_date(row.submit_date),
            done_date=receipt_date(row.done_at),
            text=row.text,
            intermediate=row.intermediate,
        )

    # ------------------------------------------------------------ query / cancel / replace
    async def _own(self, s: EsmeSession, mid: str) -> Message | None:
        msg = await self._load(mid, fresh=self.shared)
        if msg is None or s.account is None or msg.account != s.account.system_id:
            return None
        return msg

    async def on_query(self, s: EsmeSession, pdu: QuerySm) -> None:
        msg = await self._own(s, pdu.message_id)
        if msg is None:
            s.send(pdu.response(command_status=S.ESME_RQUERYFAIL))
            return
        final_date = ""
        if msg.done_at is not None:
            final_date = format_absolute(dt.datetime.fromtimestamp(msg.done_at, dt.UTC))
        err = 0
        with contextlib.suppress(ValueError):
            err = int(msg.final_err or "0", 16) & 0xFF
        s.send(
            pdu.response(
                message_id=msg.id,
                final_date=final_date,
                message_state=int(STATE_TO_SMPP[msg.state]),
                error_code=err,
            )
        )

    async def on_cancel(self, s: EsmeSession, pdu: CancelSm) -> None:
        msg = await self._own(s, pdu.message_id)
        if msg is None:
            s.send(pdu.response(command_status=S.ESME_RINVMSGID))
            return
        if msg.state.final:
            s.send(pdu.response(command_status=S.ESME_RCANCELFAIL))
            return
        try:
            await self.process(msg.id, engine.Cancel(time.time()))
        except Exception as exc:
            if fault_kind(exc) is None:
                raise
            s.send(pdu.response(command_status=S.ESME_RCANCELFAIL))  # store failing
            return
        s.send(pdu.response())

    async def on_replace(self, s: EsmeSession, pdu: ReplaceSm) -> None:
        msg = await self._own(s, pdu.message_id)
        if msg is None:
            s.send(pdu.response(command_status=S.ESME_RINVMSGID))
            return
        async with self._locks.hold(msg.id):
            msg = await self._load(msg.id, fresh=self.shared)
            if msg is None or msg.state.final:
                s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                return
            orig = decode(msg.pdu)
            if not isinstance(orig, SubmitSm):
                s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                return
            if msg.state in (State.SUBMITTED, State.SUBMITTING):
                link = self.links.get(msg.carrier)
                if msg.state == State.SUBMITTING or link is None:
                    s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                    return
                try:
                    st = await link.replace(
                        pdu.copy(sequence_number=0, message_id=msg.carrier_message_id)
                    )
                except Exception:
                    st = S.ESME_RREPLACEFAIL
                if st != 0:
                    s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                    return
            changes: dict[str, Any] = {
                "short_message": pdu.short_message,
                "sm_default_msg_id": pdu.sm_default_msg_id,
            }
            if pdu.validity_period:
                changes["validity_period"] = pdu.validity_period
            if pdu.schedule_delivery_time:
                changes["schedule_delivery_time"] = pdu.schedule_delivery_time
            if pdu.registered_delivery:
                changes["registered_delivery"] = pdu.registered_delivery
            new_pdu = orig.copy(**changes)
            new = evolve(
                msg,
                pdu=new_pdu.encode(),
                registered_delivery=new_pdu.registered_delivery,
                updated_at=time.time(),
                version=msg.version + 1,
            )
            try:
                await self.store.commit(Change(message=new))
            except StaleMessage:  # changed by another instance meanwhile: ask again
                self._cache.pop(new.id, None)
                s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                return
            except StoreUnavailable:
                s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                return
            self._cache.put(new.id, new)
        s.send(pdu.response())

    # ------------------------------------------------------------ overdue receipts
    def _query_counted(self, carrier: str, result: str) -> None:
        self.count(f"receipt_queries_{result}")
        if self.metrics is not None:
            self.metrics.receipt_query(carrier, result)

    async def _query_upstream(self, msg: Message, q: QueryUpstream) -> None:
        """Ask the carrier about a message whose receipt is overdue (the engine's
        QueryUpstream). A final message_state ends the message as a receipt would; any
        other answer, or none, leaves it waiting for the next check, which the engine
        has already scheduled."""
        if q.carrier in self._no_query:  # learnt since the check was decided: not sent
            return
        link = self.links.get(q.carrier)
        if link is None:  # no longer configured
            self._query_counted(q.carrier, "failed")
            return
        waiting = self._queries.get(q.carrier, 0)
        if waiting >= QUERY_BACKLOG:
            self._query_counted(q.carrier, "skipped")
            return
        slots = self._query_slots.get(q.carrier)
        if slots is None:
            slots = self._query_slots[q.carrier] = asyncio.Semaphore(QUERY_CONCURRENCY)
        self._queries[q.carrier] = waiting + 1
        try:
            async with slots:
                if q.carrier in self._no_query:  # learnt while this one waited
                    return
                resp = await link.query(self._query_pdu(msg, q.carrier_message_id))
        except (NotBound, TimeoutError, SessionClosed, PduError) as exc:
            log.debug("%s: query_sm for %s failed: %r", q.carrier, msg.id, exc)
            self._query_counted(q.carrier, "failed")
            return
        finally:
            self._queries[q.carrier] -= 1
        result = self._query_result(q.carrier, resp)
        if result != "final":
            self._query_counted(q.carrier, result)
            return
        assert isinstance(resp, QuerySmResp)
        state = MessageState(resp.message_state)
        stat = STATE_STAT_WORDS[state]
        err = f"{resp.error_code:03d}"
        receipt = Receipt(
            message_id=q.carrier_message_id,
            stat=stat,
            raw_stat=stat,
            err=err,
            message_state=int(state),
        )
        verdict = verdict_of(
            classify_receipt(receipt, self._rules.get(q.carrier, self._default_rules))
        )
        if verdict.kind == "pending":  # an override calls this state pending: wait
            self._query_counted(q.carrier, "pending")
            return
        self._query_counted(q.carrier, "final")
        log.info(
            "%s: receipt of %s overdue; query_sm says %s (err %s)",
            q.carrier,
            msg.id,
            stat,
            err,
            extra=logs.context(message_id=msg.id, carrier=q.carrier, account=msg.account),
        )
        await self._decide_receipt(msg.id, msg, q.attempt, verdict, stat, err, queried=True)

    @staticmethod
    def _query_pdu(msg: Message, carrier_message_id: str) -> QuerySm:
        """query_sm names the message by the carrier's id and its source address, as
        it was submitted (type of number and numbering plan included)."""
        ton = npi = 0
        with contextlib.suppress(Exception):
            original = decode(msg.pdu)
            ton = getattr(original, "source_addr_ton", 0)
            npi = getattr(original, "source_addr_npi", 0)
        return QuerySm(
            sequence_number=0,
            message_id=carrier_message_id,
            source_addr_ton=ton,
            source_addr_npi=npi,
            source_addr=msg.source_addr,
        )

    def _query_result(self, carrier: str, resp: Pdu) -> str:
        """What a carrier's answer to query_sm says: `final`, `pending` (the message is
        still on its way), `unknown` (the carrier does not know this message),
        `unsupported` (it does not answer query_sm: remembered, logged once) or `failed`.

        ESME_RINVCMDID and generic_nack mean the command is not supported.
        ESME_RQUERYFAIL means either "no such message" or "query_sm not supported":
        from a carrier that has answered a query_sm before it is the former; from one
        that never has, QUERYFAIL_LIMIT of them in a row mean the latter."""
        status = resp.command_status
        unsupported = ""
        if isinstance(resp, GenericNack):
            unsupported = f"generic_nack 0x{status:08X}"
        elif status == S.ESME_RINVCMDID:
            unsupported = "ESME_RINVCMDID"
        elif status in (S.ESME_RQUERYFAIL, S.ESME_RINVMSGID):
            if status == S.ESME_RQUERYFAIL and carrier not in self._query_ok:
                n = self._queryfail[carrier] = self._queryfail.get(carrier, 0) + 1
                if n >= QUERYFAIL_LIMIT:
                    unsupported = f"ESME_RQUERYFAIL {n} times and never an answer"
            if not unsupported:
                return "unknown"
        elif status != 0 or not isinstance(resp, QuerySmResp):
            return "failed"
        if unsupported:
            if carrier not in self._no_query:
                self._no_query.add(carrier)
                log.warning(
                    "%s: the carrier does not answer query_sm (%s); overdue receipts now "
                    "wait for the receipt grace",
                    carrier,
                    unsupported,
                )
            return "unsupported"
        assert isinstance(resp, QuerySmResp)
        self._query_ok.add(carrier)
        self._queryfail.pop(carrier, None)
        try:
            state = MessageState(resp.message_state)
        except ValueError:
            return "pending"  # a state 3.4 does not define: look again later
        return "final" if state in FINAL_MESSAGE_STATES else "pending"

    # ------------------------------------------------------------ admin
    async def suppress(
        self, number: str, reason: str, account: str = "", *, ttl: float | None = None
    ) -> Suppression:
        """Refuse submits to `number` from now on (for `ttl` seconds, default
        ``[retry] suppression_ttl``), here at once and on other instances when notified."""
        now = time.time()
        life = ttl if ttl is not None else self.cfg.retry.suppression_ttl
        s = Suppression(number, reason, now, now + life, account)
        await self.store.suppression_add(s)
        self._suppressed[number] = s.expires_at
        return s

    async def unsuppress(self, number: str) -> bool:
        """Take `number` off the suppression list (False: it was not on it)."""
        removed = await self.store.suppression_remove(number)
        self._suppressed.pop(number, None)
        return removed


class StartError(Exception):
    """`Gateway.start` failed; what it had started is stopped again."""


def _describe(exc: BaseException) -> str:
    """An exception as one line for an operator."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.errno is not None:
        text = text.replace(f"[Errno {exc.errno}] ", "")
    return " ".join(text.split())


def _is_file(path: str) -> bool:
    """Whether the config came from a file (a child process can read it again)."""
    return Path(path).is_file()


_RECEIPT_DATES: dict[int, dt.datetime] = {}  # minute since the epoch -> its datetime


def receipt_date(ts: float) -> dt.datetime:
    """A receipt's date for `ts`: UTC without a zone, to the minute, which is all a
    receipt's date shows (YYMMDDhhmm). Receipts come in bursts within a few minutes
    of one another: one datetime per minute serves them all."""
    minute = int(ts // 60)
    d = _RECEIPT_DATES.get(minute)
    if d is None:
        if len(_RECEIPT_DATES) >= 4096:
            _RECEIPT_DATES.clear()
        d = dt.datetime.fromtimestamp(minute * 60, dt.UTC).replace(tzinfo=None)
        _RECEIPT_DATES[minute] = d
    return d
