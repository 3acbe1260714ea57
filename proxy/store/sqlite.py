"""Durable state behind one small interface: messages, carrier-id map, sender
receipts waiting for delivery, the feed outbox, the suppression list and the
soft-bounce log.

`SqliteStore` is the embedded default (WAL, group commit: the `commit()` calls
queued while the writer is busy share its next transaction, so a light load is
written at once and a heavy one in large transactions; see `GroupCommit`). Its
transactions run on the event loop's thread: with `synchronous=NORMAL` a WAL
commit is a write to the OS, not a disk sync, and handing it to a thread cost
more (futures, wake-ups, the GIL passed back and forth) than the write itself.
The disk syncs happen in checkpoints, which a background thread runs on its own
connection. Reads for reports and recovery run on a reader thread.
`bounceback.store.postgres.PgStore` keeps the same state in PostgreSQL for several
instances sharing one database.

Work that must not be done twice at once by two instances is *claimed* with a
lease: due messages (`claim_due`), sender receipts (`claim_receipts`) and the
feed outbox (`claim_outbox`, one publisher at a time). A lease names the
instance and runs until a time; once it has run out (the instance died) another
instance may claim the work. Committing a message clears its lease. Instance
numbers (embedded in message ids) are leased the same way (`register_instance`).
SQLite serves one instance per file, so it keeps its leases in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import attrs
import orjson
from bounceback.core.ids import MAX_INSTANCE
from bounceback.core.model import Message, State, Step, Verdict
from bounceback.core.recovery import BINS, Curve, Key, curve_from

log = logging.getLogger("bounceback.store")


@attrs.frozen
class ReceiptRow:
    """A receipt for a sender, with what is needed to build its deliver_sm."""

    account: str
    message_id: str
    stat: str
    err: str
    done_at: float
    intermediate: bool
    source_addr: str  # the original destination (the receipt comes from it)
    destination_addr: str  # the original sender address
    submit_date: float
    text: str

    @classmethod
    def for_message(
        cls, msg: Message, stat: str, err: str, done_at: float, intermediate: bool
    ) -> ReceiptRow:
        """The receipt for `msg`: it travels back, from the destination to the sender."""
        return cls(
            account=msg.account,
            message_id=msg.id,
            stat=stat,
            err=err,
            done_at=done_at,
            intermediate=intermediate,
            source_addr=msg.destination_addr,
            destination_addr=msg.source_addr,
            submit_date=msg.submit_date,
            text=msg.text_head,
        )


@attrs.frozen
class PendingReceipt:
    """A receipt waiting to be delivered to a sender (oldest first)."""

    seq: int
    row: ReceiptRow


@attrs.frozen
class OutboxEvent:
    seq: int
    topic: str
    payload: str


@attrs.frozen
class Suppression:
    number: str
    reason: str
    created_at: float
    expires_at: float
    account: str


@attrs.define
class Change:
    """Everything one decision writes, committed in one transaction."""

    message: Message | None = None
    events: list[tuple[str, str]] = attrs.field(factory=list)  # (topic, json payload)
    receipts: list[ReceiptRow] = attrs.field(factory=list)
    delete_receipts: list[int] = attrs.field(factory=list)
    carrier_keys: list[tuple[str, str, str, int]] = attrs.field(factory=list)
    suppress: list[tuple[str, str, float, float, str]] = attrs.field(factory=list)
    soft_bounce: list[tuple[str, float, str]] = attrs.field(factory=list)  # number, at, reason
    insert: bool = False


class Store(Protocol):
    # Why the store cannot write now (None while it can): new messages are refused
    # meanwhile, /readyz fails with it.
    fault: str | None

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def commit(self, change: Change, timeout: float | None = None) -> None:
        """Write `change` in one transaction (shared with others: group commit). With a
        `timeout`, a change of new messages only that is not written by then raises
        TimeoutError and is never written."""
        ...

    async def commit_many(self, changes: Sequence[Change]) -> None: ...
    async def get(self, message_id: str) -> Message | None: ...
    async def get_many(self, message_ids: Sequence[str]) -> dict[str, Message]:
        """The stored messages among `message_ids`, by id (in one query)."""
        ...

    async def find_carrier_key(
        self, carrier: str, keys: Sequence[str]
    ) -> tuple[str, int] | None: ...
    async def find_carrier_keys(
        self, carrier: str, keys: Sequence[str]
    ) -> dict[str, tuple[str, int]]:
        """Every one of `keys` the carrier's ids hold: key -> (message id, attempt), in
        one query."""
        ...

    async def due(self, now: float, limit: int) -> list[Message]: ...
    async def held_for_number(self, number: str) -> list[Message]: ...
    async def unfinished(self, limit: int, after: str = "") -> list[Message]: ...
    async def pending_receipts(self, account: str, limit: int) -> list[PendingReceipt]: ...
    async def delete_receipt(self, seq: int) -> None: ...
    async def outbox(self, limit: int) -> list[OutboxEvent]: ...
    async def outbox_delete(self, seqs: Sequence[int]) -> None: ...
    async def outbox_count(self) -> int: ...
    async def suppressed(self, number: str, now: float) -> Suppression | None: ...
    async def suppression_list(self, now: float) -> list[Suppression]: ...
    async def suppression_add(self, s: Suppression) -> None: ...
    async def suppression_remove(self, number: str) -> bool: ...
    async def soft_bounce_count(self, number: str, since: float) -> int: ...
    async def soft_bounces_clear(self, number: str) -> int:
        """Forget the soft bounces of `number` (it is no longer flagged): how many."""
        ...

    async def recovery_add(self, deltas: Sequence[tuple[Key, Curve]], max_keys: int) -> None:
        """Add these counts to the stored recovery estimates (one transaction), then
        drop the least recently updated keys beyond `max_keys`."""
        ...

    async def recovery_load(self) -> list[tuple[Key, Curve]]:
        """The stored recovery estimates, every instance's counts together."""
        ...

    async def recovery_reset(self) -> int:
        """Forget every recovery estimate: how many keys there were."""
        ...

    async def announce_reload(self, instance: str) -> None:
        """Tell the other instances on this store that `instance` reloaded its
        configuration (they reload theirs); nothing to tell on a store of one."""
        ...

    async def announce_carrier(self, action: str, carrier: str) -> None:
        """Tell every instance on this store to `pause` or `resume` `carrier`."""
        ...

    async def unmatched_receipt(
        self, carrier: str, message_id: str, text: str, at: float
    ) -> None: ...
    async def meta_get(self, key: str) -> str | None: ...
    async def meta_set(self, key: str, value: str) -> None: ...
    async def expire_finished(self, before: float) -> int: ...
    async def expire_records(self, before: float) -> dict[str, int]: ...
    async def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...

    # ---- several instances on one store
    async def register_instance(self, name: str, now: float, lease: float) -> int:
        """An instance number 0..1023 no live instance holds, leased until now + lease."""
        ...

    async def renew_instance(self, number: int, now: float, lease: float) -> bool:
        """Extend the lease on our instance number; False when it was lost (taken over)."""
        ...

    async def unregister_instance(self, number: int) -> None:
        """Give our instance number back (clean shutdown)."""
        ...

    async def claim_due(self, instance: str, now: float, limit: int, lease: float) -> list[Message]:
        """Due messages (next_attempt_at <= now, earliest first) not leased by another live
        instance, now leased to `instance` until now + lease. Messages `instance` already
        holds come again (their lease renewed), so an instance restarted under the same
        name resumes its work at once."""
        ...

    async def release(self, message_ids: Sequence[str]) -> None:
        """Drop the leases on these messages (committing a message also does)."""
        ...

    async def claim_receipts(
        self, account: str, instance: str, now: float, limit: int, lease: float
    ) -> list[PendingReceipt]:
        """The account's receipts (oldest first) not leased by another live instance, now
        leased to `instance` (its own included, as in `claim_due`). They stay stored until
        deleted."""
        ...

    async def release_receipts(self, seqs: Sequence[int]) -> None:
        """Drop the leases on these receipts (not delivered after all)."""
        ...

    async def claim_outbox(
        self, instance: str, now: float, limit: int, lease: float
    ) -> list[OutboxEvent]:
        """The oldest outbox events when `instance` holds (or now takes) the publisher lease,
        else nothing: one instance publishes at a time, in seq order."""
        ...

    async def wait_receipts(self, timeout: float) -> None:
        """Return when a new sender receipt may be waiting, or after `timeout` seconds."""
        ...

    @property
    def listening(self) -> bool:
        """Whether notifications from other instances are being heard."""
        ...

    def subscribe(self, callback: Callable[[str, str], None]) -> None:
        """Have `callback(channel, payload)` called for each change another instance
        notifies (a store shared by several instances); a no-op otherwise."""
        ...

    async def ensure_listening(self) -> bool:
        """Listen for notifications again if the connection for them was lost; True
        when it had to (notifications may have been missed). Always False for a store
        no other instance shares."""
        ...


# Recovery-time estimates ([retry] mode = "learned", core/recovery.py): per key its
# counts, per key and bin the recoveries and seconds at risk, both added to.
RECOVERY_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS recovery_keys (
        country TEXT NOT NULL, operator TEXT NOT NULL, reason TEXT NOT NULL,
        recovered BIGINT NOT NULL, failed BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        messages BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (country, operator, reason))""",
    """CREATE TABLE IF NOT EXISTS recovery_bins (
        country TEXT NOT NULL, operator TEXT NOT NULL, reason TEXT NOT NULL,
        bin INTEGER NOT NULL, events DOUBLE PRECISION NOT NULL,
        exposure DOUBLE PRECISION NOT NULL, PRIMARY KEY (country, operator, reason, bin))""",
]
# Add a delta (the same statements on PostgreSQL, with $n placeholders).
RECOVERY_ADD_KEY = (
    "INSERT INTO recovery_keys (country, operator, reason, recovered, failed, updated_at,"
    " messages) VALUES (?,?,?,?,?,?,?) ON CONFLICT (country, operator, reason) DO UPDATE SET"
    " recovered = recovery_keys.recovered + excluded.recovered,"
    " failed = recovery_keys.failed + excluded.failed,"
    " messages = recovery_keys.messages + excluded.messages,"
    " updated_at = MAX(recovery_keys.updated_at, excluded.updated_at)"
)
RECOVERY_ADD_BIN = (
    "INSERT INTO recovery_bins (country, operator, reason, bin, events, exposure)"
    " VALUES (?,?,?,?,?,?) ON CONFLICT (country, operator, reason, bin) DO UPDATE SET"
    " events = recovery_bins.events + excluded.events,"
    " exposure = recovery_bins.exposure + excluded.exposure"
)
# Keys beyond the bound go, least recently updated first (reason keys last).
RECOVERY_EVICT = (
    "SELECT country, operator, reason FROM recovery_keys"
    " ORDER BY (country = '' AND operator = '') , updated_at LIMIT ?"
)
RECOVERY_LOAD_KEYS = (
    "SELECT country, operator, reason, recovered, failed, updated_at, messages FROM recovery_keys"
)
RECOVERY_LOAD_BINS = "SELECT country, operator, reason, bin, events, exposure FROM recovery_bins"


def recovery_rows(
    deltas: Iterable[tuple[Key, Curve]],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(key rows, bin rows) of the deltas to add: the bins that changed only."""
    keys: list[tuple[Any, ...]] = []
    bins: list[tuple[Any, ...]] = []
    for (country, operator_, reason), c in deltas:
        keys.append((country, operator_, reason, c.recovered, c.failed, c.updated_at, c.messages))
        for i, (ev, ex) in enumerate(zip(c.events, c.exposure, strict=True)):
            if ev or ex:
                bins.append((country, operator_, reason, i, ev, ex))
    return keys, bins


def recovery_from_rows(
    keys: Iterable[Sequence[Any]], bins: Iterable[Sequence[Any]]
) -> list[tuple[Key, Curve]]:
    curves: dict[Key, Curve] = {}
    for r in keys:
        curves[(r[0], r[1], r[2])] = curve_from(
            [],
            [],
            {"recovered": r[3], "failed": r[4], "updated_at": r[5], "messages": r[6]},
        )
    for r in bins:
        c = curves.get((r[0], r[1], r[2]))
        if c is not None and 0 <= int(r[3]) < BINS:
            c.events[int(r[3])] = float(r[4])
            c.exposure[int(r[3])] = float(r[5])
    return sorted(curves.items())


SCHEMA = [
    """CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        source_addr TEXT NOT NULL,
        destination_addr TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        carrier TEXT NOT NULL,
        carrier_message_id TEXT NOT NULL,
        next_attempt_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        done_at REAL,
        reason TEXT NOT NULL DEFAULT '',
        pdu BLOB NOT NULL,
        data TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS messages_due ON messages(next_attempt_at)"
    " WHERE next_attempt_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS messages_dest ON messages(destination_addr)",
    "CREATE INDEX IF NOT EXISTS messages_done ON messages(done_at) WHERE done_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS messages_unfinished ON messages(id)"
    " WHERE state IN ('accepted', 'submitting')",
    "CREATE INDEX IF NOT EXISTS messages_created ON messages(created_at)",
    """CREATE TABLE IF NOT EXISTS carrier_ids (
        carrier TEXT NOT NULL, key TEXT NOT NULL, message_id TEXT NOT NULL,
        attempt INTEGER NOT NULL, PRIMARY KEY (carrier, key)) WITHOUT ROWID""",
    # Retention removes a message's carrier ids with it.
    "CREATE INDEX IF NOT EXISTS carrier_ids_message ON carrier_ids(message_id)",
    """CREATE TABLE IF NOT EXISTS sender_receipts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL,
        message_id TEXT NOT NULL, stat TEXT NOT NULL, err TEXT NOT NULL,
        done_at REAL NOT NULL, intermediate INTEGER NOT NULL, source_addr TEXT NOT NULL,
        destination_addr TEXT NOT NULL, submit_date REAL NOT NULL, text TEXT NOT NULL,
        created_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sender_receipts_account ON sender_receipts(account, seq)",
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS suppression (
        number TEXT PRIMARY KEY, reason TEXT NOT NULL, created_at REAL NOT NULL,
        expires_at REAL NOT NULL, account TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS soft_bounces (
        number TEXT NOT NULL, at REAL NOT NULL, reason TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS soft_bounces_number ON soft_bounces(number, at)",
    """CREATE TABLE IF NOT EXISTS unmatched_receipts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, carrier TEXT NOT NULL,
        message_id TEXT NOT NULL, text TEXT NOT NULL, at REAL NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    *RECOVERY_SCHEMA,
]

EXPIRE_SLICE = 2000  # rows deleted per transaction by retention
# History that retention removes once it is older than the cut-off: (table, time column).
EXPIRING = (("soft_bounces", "at"), ("unmatched_receipts", "at"), ("suppression", "expires_at"))
MAX_INSTANCES = MAX_INSTANCE + 1  # instance numbers 0..1023 (10 bits of every message id)

_COLS = (
    "id, account, source_addr, destination_addr, state, attempts, carrier, "
    "carrier_message_id, next_attempt_at, created_at, updated_at, done_at, reason, pdu, data, "
    "version"
)
MESSAGE_COLS = _COLS  # the columns of message_row() / message_from_row(), in order

# Insert a new message or update the columns a message's life changes: an update
# touches only the indexes on those columns (INSERT OR REPLACE rewrote every index).
_UPSERT_MESSAGE = (
    f"INSERT INTO messages ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT(id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,"
    " carrier = excluded.carrier, carrier_message_id = excluded.carrier_message_id,"
    " next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at,"
    " done_at = excluded.done_at, reason = excluded.reason, pdu = excluded.pdu,"
    " data = excluded.data, version = excluded.version"
)
# An update of a known message applies only over the version it was decided on.
_UPDATE_MESSAGE = _UPSERT_MESSAGE + " WHERE messages.version = excluded.version - 1"


def _encode(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()  # several times faster than json.dumps per row


# Field getters (one C call each) for the rows written per message: attrs.asdict and
# attrs.astuple look up the class's fields and recurse on every call.
_VERDICT_NAMES = tuple(f.name for f in attrs.fields(Verdict))
_verdict_values = operator.attrgetter(*_VERDICT_NAMES)
_receipt_values = operator.attrgetter(*(f.name for f in attrs.fields(ReceiptRow)))


def verdict_doc(v: Verdict) -> dict[str, Any]:
    """`attrs.asdict(v)`, faster."""
    return dict(zip(_VERDICT_NAMES, _verdict_values(v), strict=True))


def message_row(m: Message) -> tuple[Any, ...]:
    data = {
        "registered_delivery": m.registered_delivery,
        "deadline": m.deadline,
        "deadline_is_validity": m.deadline_is_validity,
        "submit_date": m.submit_date,
        "retries": [list(x) for x in m.retries_by_reason],
        "verdict": verdict_doc(m.verdict) if m.verdict is not None else None,
        "final_stat": m.final_stat,
        "final_err": m.final_err,
        "text_head": m.text_head,
        "parts_ref": m.parts_ref,
        "failed_at": m.failed_at,
        "history": [[s.at, s.event, s.fields] for s in m.history],
    }
    return (
        m.id,
        m.account,
        m.source_addr,
        m.destination_addr,
        m.state.value,
        m.attempts,
        m.carrier,
        m.carrier_message_id,
        m.next_attempt_at,
        m.created_at,
        m.updated_at,
        m.done_at,
        m.verdict.reason if m.verdict is not None else "",
        m.pdu,
        _encode(data),
        m.version,
    )


RECEIPT_COLS = (
    "seq, account, message_id, stat, err, done_at, intermediate, source_addr,"
    " destination_addr, submit_date, text"
)


def receipt_from_row(r: Sequence[Any]) -> PendingReceipt:
    """A stored receipt from a row of `RECEIPT_COLS`."""
    return PendingReceipt(
        int(r[0]),
        ReceiptRow(r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8], r[9], r[10]),
    )


@attrs.define
class Batch:
    """The rows a group of Changes writes, merged (the last state of a message wins)."""

    messages: list[tuple[Any, ...]]  # message_row() values of new messages, ordered by id
    # ... of updates, by id then version: each applies only over the version before it
    updates: list[tuple[Any, ...]]
    events: list[tuple[str, str]]
    receipts: list[tuple[Any, ...]]  # ReceiptRow fields + created_at
    deletes: list[int]
    carrier_keys: list[tuple[str, str, str, int]]
    suppress: list[tuple[str, str, float, float, str]]
    soft_bounces: list[tuple[str, float, str]]
    accounts: set[str]  # accounts that get new receipts
    receipt_rows: list[ReceiptRow] = attrs.field(factory=list)  # `receipts`, as objects


def collect(changes: Iterable[Change], now: float) -> Batch:
    msgs: dict[str, tuple[Any, ...]] = {}
    b = Batch([], [], [], [], [], [], [], [], set())
    for c in changes:
        if c.message is not None:
            if c.insert:
                msgs[c.message.id] = message_row(c.message)
            else:
                b.updates.append(message_row(c.message))
        b.events.extend(c.events)
        for r in c.receipts:
            b.receipts.append((*_receipt_values(r), now))
            b.receipt_rows.append(r)
            b.accounts.add(r.account)
        b.deletes.extend(c.delete_receipts)
        b.carrier_keys.extend(c.carrier_keys)
        b.suppress.extend(c.suppress)
        b.soft_bounces.extend(c.soft_bounce)
    b.messages = [msgs[k] for k in sorted(msgs)]
    b.updates.sort(key=_id_version)
    return b


def _id_version(row: tuple[Any, ...]) -> tuple[str, int]:
    return row[0], row[15]


class _Partial(Exception):
    """Some message updates did not apply: the transaction is rolled back."""


class StoreUnavailable(Exception):
    """The store cannot write now: the disk is full, another process holds the
    database locked past the write bound, an I/O error. Temporary by nature: the
    store keeps trying (`SqliteStore.fault` says why meanwhile) and writes again
    once the cause is gone."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "full", "locked", "io", "readonly"
        self.reason = reason


# SQLite's primary result codes (the low byte of the extended code) that mean "not
# now" rather than "this write is wrong".
_FAULT_KINDS = {5: "locked", 6: "locked", 13: "full", 10: "io", 8: "readonly", 14: "io"}


def fault_kind(exc: BaseException) -> str | None:
    """The kind of store fault `exc` is ("full", "locked", ...), None for other errors."""
    if isinstance(exc, StoreUnavailable):
        return exc.kind
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return _FAULT_KINDS.get(code & 0xFF)
        text = str(exc)
        if "locked" in text or "busy" in text:
            return "locked"
        if "full" in text:
            return "full"
    return None


class StaleMessage(Exception):
    """A write decided on an older version of a message than the store holds."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"message {message_id} changed since it was read")
        self.message_id = message_id


class Conflicts(Exception):
    """Raised by a store's write (which then wrote nothing): some message updates were
    decided on versions the store no longer holds. `stored`: the stored version of
    each updated message that exists."""

    def __init__(self, stored: dict[str, int]) -> None:
        super().__init__("stale message updates")
        self.stored = stored


def split_stale(
    batch: Sequence[Sequence[Change]], stored: dict[str, int]
) -> tuple[list[int], list[int]]:
    """(good, stale) indexes of `batch` (the submissions of one transaction, in order):
    a submission is good when each of its message updates follows the version stored
    or written by a good submission before it."""
    current = dict(stored)
    good: list[int] = []
    stale: list[int] = []
    for i, changes in enumerate(batch):
        ups = sorted(
            (c.message for c in changes if c.message is not None and not c.insert),
            key=lambda m: m.version,
        )
        trial: dict[str, int] = {}
        ok = True
        for m in ups:
            have = trial[m.id] if m.id in trial else current.get(m.id)
            if have is not None and m.version != have + 1:
                ok = False
                break
            trial[m.id] = m.version
        if ok:
            current.update(trial)
            good.append(i)
        else:
            stale.append(i)
    return good, stale


# A write refused because another process holds the database locked is tried again
# after LOCK_RETRY_FIRST, then twice as long each time up to LOCK_RETRY_MAX: fine
# enough that a checkpoint's short hold costs little more than itself.
LOCK_RETRY_FIRST = 0.001
LOCK_RETRY_MAX = 0.005


class GroupCommit:
    """Group commit that fits the load: the writer writes as soon as it is free,
    taking everything queued meanwhile (up to `batch_max` submissions). A lone
    submission to an idle store is written at once (in the event loop's next pass),
    so a light load pays no batching delay; while writes are queuing (the writer
    finds more than one waiting) it waits a pass of the event loop more for as long
    as each pass brings more, but never longer than `batch_delay` in all, so a
    heavy load gets large transactions. Each `submit()` returns once its
    transaction committed, or raises what the transaction raised.

    A transaction refused because another process holds the database locked
    (StoreUnavailable of kind "locked") is tried again, asynchronously, for up to
    `retry_for()` seconds. A submission of new messages only (`Change.insert`) whose
    waiter gave up (was cancelled) before its transaction was written is left out of
    it: its sender has been told it was not taken."""

    def __init__(
        self,
        write: Callable[[list[Change]], Awaitable[None]],
        *,
        batch_max: int,
        batch_delay: float,
        retry_for: Callable[[], float] | None = None,
    ) -> None:
        self.write = write
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        self.retry_for = retry_for
        self._queue: list[tuple[list[Change], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, changes: Sequence[Change], timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append((list(changes), fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flusher())
        if timeout is None:
            await fut
            return
        expiry = loop.call_later(timeout, _time_out, fut)
        try:
            await fut
        finally:
            expiry.cancel()

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        if self._task is not None:
            await self._task

    @staticmethod
    def _wanted(entry: tuple[list[Change], asyncio.Future[None]]) -> bool:
        changes, fut = entry  # a pending entry's future is done: cancelled or timed out
        return not (fut.done() and all(c.insert for c in changes))

    async def _flusher(self) -> None:
        # This task runs after the tasks of the pass that started it: every submission
        # made in that pass is queued by now.
        while self._queue:
            if len(self._queue) > 1 and self.batch_delay > 0:
                await self._gather()
            batch, self._queue = self._queue[: self.batch_max], self._queue[self.batch_max :]
            await self._write_batch(batch)

    async def _gather(self) -> None:
        """Writes are queuing: let the event loop run a pass at a time while each pass
        queues more submissions, up to `batch_max` of them and `batch_delay` seconds."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.batch_delay
        seen = len(self._queue)
        while seen < self.batch_max:
            await asyncio.sleep(0)
            now = len(self._queue)
            if now == seen or loop.time() >= until:
                return
            seen = now

    async def _write_batch(self, batch: list[tuple[list[Change], asyncio.Future[None]]]) -> None:
        deadline: float | None = None
        delay = LOCK_RETRY_FIRST
        while True:
            batch = [e for e in batch if self._wanted(e)]
            if not batch:
                return
            try:
                await self.write([c for cs, _ in batch for c in cs])
            except Conflicts as exc:
                # Refuse the submissions with a stale update; the rest go again at once.
                good, stale = split_stale([cs for cs, _ in batch], exc.stored)
                for i in stale if stale else range(len(batch)):
                    cs, fut = batch[i]
                    if not fut.done():
                        mid = next((c.message.id for c in cs if c.message is not None), "")
                        fut.set_exception(StaleMessage(mid) if stale else exc)
                if stale:
                    self._queue = [batch[i] for i in good] + self._queue
                return
            except StoreUnavailable as exc:
                if exc.kind == "locked" and self.retry_for is not None:
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self.retry_for()
                    if now + delay <= deadline:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, LOCK_RETRY_MAX)
                        continue
                self._fail(batch, exc)
                return
            except BaseException as exc:  # every waiter learns the transaction failed
                self._fail(batch, exc)
                if not isinstance(exc, Exception):
                    raise
                return
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            return

    @staticmethod
    def _fail(batch: list[tuple[list[Change], asyncio.Future[None]]], exc: BaseException) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)


def _time_out(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("the store did not write in time"))


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error.

    SQLite may have rolled the transaction back itself already (a COMMIT that failed
    with SQLITE_FULL, say): then there is nothing to roll back, and the error that
    propagates is the one that failed the transaction, never the ROLLBACK's own."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _log_checkpoint(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("store checkpoint failed: %s", fut.exception())


T = TypeVar("T")


def message_from_row(r: Sequence[Any]) -> Message:
    data = orjson.loads(r[14])
    v = data.get("verdict")
    return Message(
        id=r[0],
        account=r[1],
        source_addr=r[2],
        destination_addr=r[3],
        pdu=bytes(r[13]),
        registered_delivery=data["registered_delivery"],
        created_at=r[9],
        deadline=data["deadline"],
        deadline_is_validity=data["deadline_is_validity"],
        submit_date=data["submit_date"],
        state=State(r[4]),
        attempts=r[5],
        carrier=r[6],
        carrier_message_id=r[7],
        next_attempt_at=r[8],
        retries_by_reason=tuple((str(a), int(b)) for a, b in data["retries"]),
        verdict=Verdict(**v) if v else None,
        final_stat=data["final_stat"],
        final_err=data["final_err"],
        done_at=r[11],
        text_head=data["text_head"],
        parts_ref=data["parts_ref"],
        updated_at=r[10],
        failed_at=float(data.get("failed_at", 0.0)),
        version=int(r[15]),
        history=tuple(Step(float(at), str(ev), f) for at, ev, f in data.get("history", ())),
    )


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode."""

    # Pending sender receipts of an account are served from memory while they number
    # at most this many (all of them, in seq order); beyond it, from the table.
    RECEIPTS_IN_MEMORY = 20000
    # A checkpoint (on its own thread) after this many WAL pages were written, and
    # at least every CHECKPOINT_INTERVAL seconds while anything was written.
    CHECKPOINT_PAGES = 1000
    CHECKPOINT_INTERVAL = 1.0
    # A passive checkpoint cannot catch up with a writer that never pauses (the WAL
    # starts over only once a checkpoint has copied all of it): past this many frames
    # the next checkpoint is a RESTART, which holds our writer back (it retries,
    # without blocking the event loop) until the WAL has been copied, so the next
    # write starts it over. With journal_size_limit the file then shrinks too.
    WAL_LIMIT_FRAMES = 1024
    JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024  # bytes the WAL file keeps after a restart
    PROBE_INTERVAL = 0.5  # while the store cannot write: how often it tries again
    FAULT_LOG_EVERY = 60.0  # while the store cannot write: a summary line this often
    # A fault ends (and is logged as over) once writes have gone through this long: a
    # disk that is nearly full lets some writes through and refuses others.
    STABLE_AFTER = 5.0

    def __init__(
        self,
        path: str | Path,
        *,
        batch_max: int = 512,
        batch_delay: float = 0.002,
        write_timeout: float = 2.0,
    ):
        self.path = str(path)
        # How long a write waits for a database another process holds locked. The
        # writer never blocks the event loop on a lock: it tries again, asynchronously.
        self.write_timeout = write_timeout
        # While the store cannot write: why ("database or disk is full", ...) and since
        # when; None when it writes. New messages are refused meanwhile.
        self.fault: str | None = None
        self.fault_kind = ""
        self.fault_since = 0.0
        self.fault_errors = 0  # failed writes during the current fault episode
        self.write_errors: dict[str, int] = {}  # kind -> failed writes since start
        self._episode_since: float | None = None  # the first failure of this episode
        self._cleared_at = 0.0
        self._fault_logged = 0.0
        self._maintainer: asyncio.Task[None] | None = None
        self._last_checkpoint = 0.0  # monotonic time the last checkpoint started
        self.wal_frames = 0  # frames in the WAL at the last checkpoint
        self.checkpoints: dict[str, int] = {}  # mode -> checkpoints run (tests, bench)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-r")
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-ckpt")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._cconn: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Future[Any] | None = None
        self._wal_pages = 0  # written since the last checkpoint started
        self._receipt_seq = 0  # the last sender_receipts.seq we know of (see _number_receipts)
        # account -> {seq: row}: every pending receipt of the account, oldest first.
        self._receipts: dict[str, dict[int, ReceiptRow]] = {}
        self._group = GroupCommit(
            self._write_async,
            batch_max=batch_max,
            batch_delay=batch_delay,
            retry_for=self._lock_wait,
        )
        self.commits = 0  # transactions committed (for metrics and tests)
        # One instance per file: leases live in memory (owner, until).
        self._msg_leases: dict[str, tuple[str, float]] = {}
        self._receipt_leases: dict[int, tuple[str, float]] = {}
        self._outbox_leader: tuple[str, float] | None = None
        self._slots: dict[int, tuple[str, float, str]] = {}  # number -> (name, until, token)
        self._slot_tokens: dict[int, str] = {}  # the numbers this object registered
        self._receipt_signal = asyncio.Event()

    @property
    def batch_max(self) -> int:
        return self._group.batch_max

    @batch_max.setter
    def batch_max(self, value: int) -> None:
        self._group.batch_max = value

    @property
    def batch_delay(self) -> float:
        return self._group.batch_delay

    @batch_delay.setter
    def batch_delay(self, value: float) -> None:
        self._group.batch_delay = value

    # ------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._open_writer()
        await loop.run_in_executor(self._reader, self._open_reader)
        await loop.run_in_executor(self._checkpointer, self._open_checkpointer)
        self._last_checkpoint = time.monotonic()
        self._maintainer = loop.create_task(self._maintain())

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _open_writer(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints (the disk syncs) run on their own thread, not inside a commit.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={self.JOURNAL_SIZE_LIMIT}")
        for stmt in SCHEMA:
            conn.execute(stmt)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)").fetchall()}
        if "version" not in columns:  # a file from before message versions
            conn.execute("ALTER TABLE messages ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(recovery_keys)").fetchall()}
        if "messages" not in columns:  # a file from before the message counts
            conn.execute("ALTER TABLE recovery_keys ADD COLUMN messages BIGINT NOT NULL DEFAULT 0")
        # From here on the writer, which runs on the event loop's thread, never waits
        # inside SQLite for a lock: `_retrying` waits asynchronously instead.
        conn.execute("PRAGMA busy_timeout=0")
        self._wconn = conn

    def _open_reader(self) -> None:
        self._rconn = self._connect()

    def _open_checkpointer(self) -> None:
        self._cconn = self._connect()

    def _run_checkpoint(self, mode: str) -> None:
        conn = self._cconn
        assert conn is not None
        if mode == "RESTART":
            # A RESTART holds our writer back while it copies: copy what is there
            # without holding anyone first, so that it has only the rest to copy.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        # Read the result: a statement left unfinished keeps the connection's snapshot.
        row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        if row is not None and row[1] >= 0:
            # (busy, frames in the WAL, frames checkpointed); after a RESTART or
            # TRUNCATE that copied everything the WAL starts over.
            self.wal_frames = 0 if mode != "PASSIVE" and not row[0] else int(row[1])
        self.checkpoints[mode] = self.checkpoints.get(mode, 0) + 1

    def _maybe_checkpoint(self, pages: int) -> None:
        self._wal_pages += pages
        if self._wal_pages < self.CHECKPOINT_PAGES:
            return
        self._start_checkpoint()

    def _start_checkpoint(self, mode: str = "") -> asyncio.Future[Any] | None:
        """A checkpoint on its own thread, unless one is running. `mode`: PASSIVE, or
        RESTART once the WAL has outgrown WAL_LIMIT_FRAMES; TRUNCATE to give the WAL's
        disk space back (after the disk was full)."""
        if self._checkpoint is not None and not self._checkpoint.done():
            return None
        if not mode:
            mode = "RESTART" if self.wal_frames > self.WAL_LIMIT_FRAMES else "PASSIVE"
        self._wal_pages = 0
        self._last_checkpoint = time.monotonic()
        loop = asyncio.get_running_loop()
        self._checkpoint = loop.run_in_executor(self._checkpointer, self._run_checkpoint, mode)
        self._checkpoint.add_done_callback(_log_checkpoint)
        return self._checkpoint

    def wal_size(self) -> int:
        """Bytes in the WAL file now (0 when there is none)."""
        try:
            return Path(self.path + "-wal").stat().st_size
        except OSError:
            return 0

    # ------------------------------------------------------------ faults
    def _set_fault(self, kind: str, exc: BaseException) -> None:
        """A write failed: the store is failing from now until a write goes through.
        One episode (logged once at its start, summarised every FAULT_LOG_EVERY and
        at its end) lasts until writes have gone through for STABLE_AFTER seconds."""
        self.write_errors[kind] = self.write_errors.get(kind, 0) + 1
        self.fault_errors += 1
        now = time.monotonic()
        if self.fault is None:
            self.fault = str(exc) or kind
            self.fault_kind = kind
            self.fault_since = now
        if self._episode_since is None:
            self._episode_since = self._fault_logged = now
            log.error(
                "store cannot write (%s): %s; new messages are refused until it can",
                kind,
                self.fault,
            )

    def _clear_fault(self) -> None:
        self.fault = None
        self.fault_kind = ""
        self._cleared_at = time.monotonic()

    def _lock_wait(self) -> float:
        """How long a write waits for a locked database: `write_timeout`, nothing
        while the store is already failing (nothing should queue behind a fault)."""
        return 0.0 if self.fault is not None else self.write_timeout

    def _attempt(self, write: Callable[[], T]) -> T:
        """Run `write` once. A SQLite error that means "not now" (locked, full, I/O)
        becomes StoreUnavailable; a full disk or an I/O error marks the store as
        failing at once, a lock only when the writer gives up waiting for it."""
        try:
            result = write()
        except sqlite3.Error as exc:
            kind = fault_kind(exc)
            if kind is None:
                raise
            if kind != "locked":
                self._set_fault(kind, exc)
            raise StoreUnavailable(kind, str(exc)) from exc
        if self.fault is not None:
            self._clear_fault()
        return result

    async def _retrying(self, write: Callable[[], T]) -> T:
        """Run `write` (a transaction on the writer connection) on this thread. A
        database another process holds locked is tried again, asynchronously, for up
        to `write_timeout` seconds (once only while the store is already failing, so
        that nothing queues behind a fault); a full disk or an I/O error fails at
        once. Either raises StoreUnavailable and marks the store as failing."""
        deadline = time.monotonic() + self._lock_wait()
        delay = LOCK_RETRY_FIRST
        while True:
            try:
                return self._attempt(write)
            except StoreUnavailable as exc:
                if exc.kind == "locked" and time.monotonic() + delay <= deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, LOCK_RETRY_MAX)
                    continue
                if exc.kind == "locked":
                    self._set_fault(exc.kind, exc)
                raise

    def _probe(self) -> None:
        """Whether the store can write again: room for new pages (a row of a few
        pages, rolled back, so that it leaves nothing behind to reuse), then a small
        committed write (which reaches the WAL on disk)."""
        conn = self._wconn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('store_probe:room', ?)", ("x" * 16384,)
            )
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        with _immediate(conn):
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('store_probe', ?)",
                (repr(time.time()),),
            )

    async def _maintain(self) -> None:
        """Checkpoints on a timer, not only after commits; while the store cannot
        write, a checkpoint that gives the WAL's space back and a small write to learn
        when it can again (the first write that succeeds ends the fault)."""
        while True:
            await asyncio.sleep(self.PROBE_INTERVAL if self.fault is not None else 0.25)
            try:
                await self._maintain_once()
            except Exception as exc:  # never ends: the store's health depends on it
                log.warning("store maintenance: %s", exc)

    async def _maintain_once(self) -> None:
        now = time.monotonic()
        episode = self._episode_since
        if episode is not None and now - self._fault_logged >= self.FAULT_LOG_EVERY:
            self._fault_logged = now
            log.error(
                "store still cannot write reliably after %.0f s (%d failed writes): %s",
                now - episode,
                self.fault_errors,
                self.fault or "writes go through again for now",
            )
        if self.fault is None:
            if episode is not None and now - self._cleared_at >= self.STABLE_AFTER:
                log.warning(
                    "store writes again after %.1f s (%d failed writes)",
                    self._cleared_at - episode,
                    self.fault_errors,
                )
                self._episode_since = None
                self.fault_errors = 0
            if self._wal_pages and now - self._last_checkpoint >= self.CHECKPOINT_INTERVAL:
                self._start_checkpoint()
            return
        ckpt = self._start_checkpoint("TRUNCATE")
        if ckpt is not None:
            with contextlib.suppress(Exception):
                await ckpt
        with contextlib.suppress(StoreUnavailable):
            await self._retrying(self._probe)

    async def close(self) -> None:
        await self._group.drain()
        loop = asyncio.get_running_loop()
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        if self._cconn is not None:
            cconn = self._cconn
            await loop.run_in_executor(self._checkpointer, cconn.close)
        if self._rconn is not None:
            rconn = self._rconn
            await loop.run_in_executor(self._reader, rconn.close)
        if self._wconn is not None:
            # The last connection to close checkpoints the WAL into the database.
            self._wconn.close()
        self._checkpointer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    # ------------------------------------------------------------ writes
    async def commit(self, change: Change, timeout: float | None = None) -> None:
        await self.commit_many([change], timeout)

    async def commit_many(self, changes: Sequence[Change], timeout: float | None = None) -> None:
        try:
            await self._group.submit(changes, timeout)
        except StoreUnavailable as exc:
            if exc.kind == "locked":  # the group commit waited write_timeout for it
                self._set_fault(exc.kind, exc)
            raise
        for c in changes:
            if c.message is not None:
                self._msg_leases.pop(c.message.id, None)
            for seq in c.delete_receipts:
                self._receipt_leases.pop(seq, None)
            if c.receipts:
                self._receipt_signal.set()

    async def _write_async(self, changes: list[Change]) -> None:
        self._attempt(lambda: self._write(changes))  # GroupCommit waits out a lock

    def _write(self, changes: list[Change]) -> None:
        conn = self._wconn
        assert conn is not None
        b = collect(changes, time.time())
        msgs, events = b.messages, b.events
        deletes = [(seq,) for seq in b.deletes]
        keys, supp, soft = b.carrier_keys, b.suppress, b.soft_bounces
        receipts: list[tuple[Any, ...]] = []
        try:
            with _immediate(conn):
                if b.receipts:
                    receipts = self._number_receipts(conn, b.receipts)
                if msgs:
                    conn.executemany(_UPSERT_MESSAGE, msgs)
                if b.updates:
                    # Each row applies only over the version before it (rowcount tells).
                    applied = conn.executemany(_UPDATE_MESSAGE, b.updates).rowcount
                    if applied != len(b.updates):
                        raise _Partial
                if events:
                    conn.executemany("INSERT INTO outbox (topic, payload) VALUES (?, ?)", events)
                if receipts:
                    conn.executemany(
                        "INSERT INTO sender_receipts (seq, account, message_id, stat, err, done_at,"
                        " intermediate, source_addr, destination_addr, submit_date, text,"
                        " created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        receipts,
                    )
                if deletes:
                    conn.executemany("DELETE FROM sender_receipts WHERE seq = ?", deletes)
                if keys:
                    conn.executemany(
                        "INSERT OR REPLACE INTO carrier_ids (carrier, key, message_id, attempt)"
                        " VALUES (?,?,?,?)",
                        keys,
                    )
                if supp:
                    conn.executemany(
                        "INSERT OR REPLACE INTO suppression (number, reason, created_at,"
                        " expires_at, account) VALUES (?,?,?,?,?)",
                        supp,
                    )
                if soft:
                    conn.executemany(
                        "INSERT INTO soft_bounces (number, at, reason) VALUES (?,?,?)", soft
                    )
        except _Partial:
            ids = sorted({r[0] for r in b.updates})
            stored = dict(
                conn.execute(
                    f"SELECT id, version FROM messages WHERE id IN ({','.join('?' * len(ids))})",
                    ids,
                ).fetchall()
            )
            raise Conflicts(stored) from None
        self.commits += 1
        if receipts:
            self._receipt_seq = receipts[-1][0]
            for r, row in zip(receipts, b.receipt_rows, strict=True):
                pending = self._receipts.get(row.account)
                if pending is None:
                    continue  # not served from memory: read from the table when claimed
                if len(pending) >= self.RECEIPTS_IN_MEMORY:
                    del self._receipts[row.account]
                    continue
                pending[r[0]] = row
        if b.deletes:
            for pending in self._receipts.values():
                for seq in b.deletes:
                    pending.pop(seq, None)
        # A rough page count: what matters is that checkpoints keep pace with writes.
        rows = len(msgs) + len(b.updates) + len(events) + len(receipts) + len(keys)
        self._maybe_checkpoint(1 + rows // 8)

    def _number_receipts(
        self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Seqs for new sender receipts, inside the write transaction. Another process
        (a `bounceback held cancel`, say) may have added receipts since our last write:
        then the pending receipts kept in memory are no longer all of them, and are
        read again from the table when next claimed."""
        row = conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'sender_receipts'"
        ).fetchone()
        top = int(row[0]) if row else 0
        if top != self._receipt_seq:
            self._receipts.clear()
            self._receipt_seq = max(top, self._receipt_seq)
        first = self._receipt_seq + 1
        return [(first + i, *r) for i, r in enumerate(rows)]

    async def _exec_write(self, sql: str, params: Sequence[Any]) -> int:
        conn = self._wconn
        assert conn is not None
        rowcount = await self._retrying(lambda: conn.execute(sql, params).rowcount)
        self._maybe_checkpoint(1)
        return rowcount

    # ------------------------------------------------------------ reads
    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            conn = self._rconn
            assert conn is not None
            # Every row read and the cursor closed: an open cursor would hold this
            # connection's snapshot and hide later commits (other processes' too).
            cur = conn.execute(sql, params)
            try:
                return list(cur.fetchall())
            finally:
                cur.close()

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    async def get(self, message_id: str) -> Message | None:
        rows = await self._read(f"SELECT {_COLS} FROM messages WHERE id = ?", (message_id,))
        return message_from_row(rows[0]) if rows else None

    async def get_many(self, message_ids: Sequence[str]) -> dict[str, Message]:
        out: dict[str, Message] = {}
        ids = list(dict.fromkeys(message_ids))
        for i in range(0, len(ids), 500):  # SQLite's bound on parameters per statement
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = await self._read(f"SELECT {_COLS} FROM messages WHERE id IN ({marks})", part)
            for row in rows:
                m = message_from_row(row)
                out[m.id] = m
        return out

    async def find_carrier_key(self, carrier: str, keys: Sequence[str]) -> tuple[str, int] | None:
        for key in keys:
            rows = await self._read(
                "SELECT message_id, attempt FROM carrier_ids WHERE carrier = ? AND key = ?",
                (carrier, key),
            )
            if rows:
                return str(rows[0][0]), int(rows[0][1])
        return None

    async def find_carrier_keys(
        self, carrier: str, keys: Sequence[str]
    ) -> dict[str, tuple[str, int]]:
        found: dict[str, tuple[str, int]] = {}
        for i in range(0, len(keys), 500):  # within SQLite's limit on variables
            part = list(keys[i : i + 500])
            rows = await self._read(
                "SELECT key, message_id, attempt FROM carrier_ids WHERE carrier = ?"
                f" AND key IN ({','.join('?' * len(part))})",
                (carrier, *part),
            )
            found.update((str(r[0]), (str(r[1]), int(r[2]))) for r in rows)
        return found

    async def due(self, now: float, limit: int) -> list[Message]:
        rows = await self._read(
            f"SELECT {_COLS} FROM messages WHERE next_attempt_at IS NOT NULL"
            " AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now, limit),
        )
        return [message_from_row(r) for r in rows]

    async def held_for_number(self, number: str) -> list[Message]:
        rows = await self._read(
            f"SELECT {_COLS} FROM messages WHERE destination_addr = ? AND state = ?",
            (number, State.HELD.value),
        )
        return [message_from_row(r) for r in rows]

    async def unfinished(self, limit: int, after: str = "") -> list[Message]:
        rows = await self._read(
            f"SELECT {_COLS} FROM messages WHERE state IN ('accepted','submitting')"
            " AND id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [message_from_row(r) for r in rows]

    async def pending_receipts(self, account: str, limit: int) -> list[PendingReceipt]:
        rows = await self._read(
            f"SELECT {RECEIPT_COLS} FROM sender_receipts WHERE account = ? ORDER BY seq LIMIT ?",
            (account, limit),
        )
        return [receipt_from_row(r) for r in rows]

    async def delete_receipt(self, seq: int) -> None:
        await self.commit(Change(delete_receipts=[seq]))

    async def outbox(self, limit: int) -> list[OutboxEvent]:
        rows = await self._read(
            "SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)
        )
        return [OutboxEvent(r[0], r[1], r[2]) for r in rows]

    async def outbox_delete(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        conn = self._wconn
        assert conn is not None

        def delete() -> None:
            with _immediate(conn):  # one transaction, not one per row
                conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

        await self._retrying(delete)
        self._maybe_checkpoint(1 + len(seqs) // 32)

    async def outbox_count(self) -> int:
        rows = await self._read("SELECT COUNT(*) FROM outbox", ())
        return int(rows[0][0])

    async def suppressed(self, number: str, now: float) -> Suppression | None:
        rows = await self._read(
            "SELECT number, reason, created_at, expires_at, account FROM suppression"
            " WHERE number = ? AND expires_at > ?",
            (number, now),
        )
        return Suppression(*rows[0]) if rows else None

    async def suppression_list(self, now: float) -> list[Suppression]:
        rows = await self._read(
            "SELECT number, reason, created_at, expires_at, account FROM suppression"
            " WHERE expires_at > ? ORDER BY created_at",
            (now,),
        )
        return [Suppression(*r) for r in rows]

    async def suppression_add(self, s: Suppression) -> None:
        await self.commit(Change(suppress=[attrs.astuple(s)]))

    async def suppression_remove(self, number: str) -> bool:
        return await self._exec_write("DELETE FROM suppression WHERE number = ?", (number,)) > 0

    async def announce_reload(self, instance: str) -> None:
        return None  # one instance per SQLite store

    async def announce_carrier(self, action: str, carrier: str) -> None:
        return None

    async def soft_bounces_clear(self, number: str) -> int:
        return await self._exec_write("DELETE FROM soft_bounces WHERE number = ?", (number,))

    async def recovery_add(self, deltas: Sequence[tuple[Key, Curve]], max_keys: int) -> None:
        keys, bins = recovery_rows(deltas)
        conn = self._wconn
        assert conn is not None

        def write() -> None:
            with _immediate(conn):
                conn.executemany(RECOVERY_ADD_KEY, keys)
                conn.executemany(RECOVERY_ADD_BIN, bins)
                (count,) = conn.execute("SELECT COUNT(*) FROM recovery_keys").fetchone()
                if count > max_keys:
                    gone = conn.execute(RECOVERY_EVICT, (count - max_keys,)).fetchall()
                    conn.executemany(
                        "DELETE FROM recovery_keys WHERE country = ? AND operator = ?"
                        " AND reason = ?",
                        gone,
                    )
                    conn.executemany(
                        "DELETE FROM recovery_bins WHERE country = ? AND operator = ?"
                        " AND reason = ?",
                        gone,
                    )

        if keys:
            await self._retrying(write)
            self._maybe_checkpoint(1)

    async def recovery_load(self) -> list[tuple[Key, Curve]]:
        return recovery_from_rows(
            await self._read(RECOVERY_LOAD_KEYS, ()), await self._read(RECOVERY_LOAD_BINS, ())
        )

    async def recovery_reset(self) -> int:
        conn = self._wconn
        assert conn is not None

        def write() -> int:
            with _immediate(conn):
                n = conn.execute("DELETE FROM recovery_keys").rowcount
                conn.execute("DELETE FROM recovery_bins")
            return int(n)

        n = await self._retrying(write)
        self._maybe_checkpoint(1)
        return n

    async def soft_bounce_count(self, number: str, since: float) -> int:
        rows = await self._read(
            "SELECT COUNT(*) FROM soft_bounces WHERE number = ? AND at >= ?", (number, since)
        )
        return int(rows[0][0])

    async def unmatched_receipt(self, carrier: str, message_id: str, text: str, at: float) -> None:
        await self._exec_write(
            "INSERT INTO unmatched_receipts (carrier, message_id, text, at) VALUES (?,?,?,?)",
            (carrier, message_id, text, at),
        )

    async def meta_get(self, key: str) -> str | None:
        rows = await self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def meta_set(self, key: str, value: str) -> None:
        await self._exec_write(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
        )

    async def expire_finished(self, before: float) -> int:
        """Delete finished messages older than `before` and their carrier ids, a slice
        at a time: the writes run on the event loop's thread, which must not stop for a
        large backlog."""
        conn = self._wconn
        assert conn is not None
        total = 0

        def expire_slice() -> list[Any]:
            with _immediate(conn):
                ids = conn.execute(
                    "SELECT id FROM messages WHERE done_at IS NOT NULL AND done_at < ?"
                    " ORDER BY done_at LIMIT ?",
                    (before, EXPIRE_SLICE),
                ).fetchall()
                conn.executemany("DELETE FROM carrier_ids WHERE message_id = ?", ids)
                conn.executemany("DELETE FROM messages WHERE id = ?", ids)
            return ids

        while True:
            ids = await self._retrying(expire_slice)
            self._maybe_checkpoint(1 + len(ids) // 8)
            total += len(ids)
            if len(ids) < EXPIRE_SLICE:
                return total
            await asyncio.sleep(0)

    async def expire_records(self, before: float) -> dict[str, int]:
        """Delete history older than `before`, by slices: soft bounces, unmatched
        receipts, and suppression entries that stopped applying by then."""
        removed: dict[str, int] = {}
        for table, column in EXPIRING:
            total = 0
            while True:
                n = await self._exec_write(
                    f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"
                    f" WHERE {column} < ? LIMIT ?)",
                    (before, EXPIRE_SLICE),
                )
                total += n
                if n < EXPIRE_SLICE:
                    break
                await asyncio.sleep(0)
            removed[table] = total
        return removed

    async def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only SQL for reports (`bounceback stats`)."""
        return await self._read(sql, tuple(params))

    # ------------------------------------------------------------ leases (in memory)
    async def register_instance(self, name: str, now: float, lease: float) -> int:
        free = [n for n in range(MAX_INSTANCES) if n not in self._slots or self._slots[n][1] <= now]
        if not free:
            raise RuntimeError(f"all {MAX_INSTANCES} instance numbers are held")
        mine = [n for n in free if n in self._slots and self._slots[n][0] == name]
        number = (mine or free)[0]
        token = secrets.token_hex(8)
        self._slots[number] = (name, now + lease, token)
        self._slot_tokens[number] = token
        return number

    async def renew_instance(self, number: int, now: float, lease: float) -> bool:
        held = self._slots.get(number)
        token = self._slot_tokens.get(number)
        if held is None or token is None or held[2] != token:
            return False
        self._slots[number] = (held[0], now + lease, token)
        return True

    async def unregister_instance(self, number: int) -> None:
        token = self._slot_tokens.pop(number, None)
        held = self._slots.get(number)
        if held is not None and held[2] == token:
            del self._slots[number]

    @staticmethod
    def _taken(leases: dict[Any, tuple[str, float]], key: Any, instance: str, now: float) -> bool:
        held = leases.get(key)
        return held is not None and held[0] != instance and held[1] > now

    async def claim_due(self, instance: str, now: float, limit: int, lease: float) -> list[Message]:
        others = sum(1 for o, t in self._msg_leases.values() if o != instance and t > now)
        got = [
            m
            for m in await self.due(now, limit + others)
            if not self._taken(self._msg_leases, m.id, instance, now)
        ][:limit]
        for m in got:
            self._msg_leases[m.id] = (instance, now + lease)
        return got

    async def release(self, message_ids: Sequence[str]) -> None:
        for mid in message_ids:
            self._msg_leases.pop(mid, None)

    def _pending_in_memory(self, account: str, limit: int) -> list[PendingReceipt]:
        """The account's oldest pending receipts; all of them are kept in memory while
        they are few (read once from the table, then kept in step by every commit)."""
        pending = self._receipts.get(account)
        if pending is None:
            conn = self._wconn
            assert conn is not None
            rows = conn.execute(
                f"SELECT {RECEIPT_COLS} FROM sender_receipts WHERE account = ?"
                " ORDER BY seq LIMIT ?",
                (account, self.RECEIPTS_IN_MEMORY + 1),
            ).fetchall()
            got = [receipt_from_row(r) for r in rows]
            if len(got) > self.RECEIPTS_IN_MEMORY:
                return got[:limit]  # too many to keep: the table answers each time
            pending = self._receipts[account] = {p.seq: p.row for p in got}
        return [PendingReceipt(seq, row) for seq, row in itertools.islice(pending.items(), limit)]

    async def claim_receipts(
        self, account: str, instance: str, now: float, limit: int, lease: float
    ) -> list[PendingReceipt]:
        others = sum(1 for o, t in self._receipt_leases.values() if o != instance and t > now)
        got = [
            p
            for p in self._pending_in_memory(account, limit + others)
            if not self._taken(self._receipt_leases, p.seq, instance, now)
        ][:limit]
        for p in got:
            self._receipt_leases[p.seq] = (instance, now + lease)
        return got

    async def release_receipts(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self._receipt_leases.pop(seq, None)

    async def claim_outbox(
        self, instance: str, now: float, limit: int, lease: float
    ) -> list[OutboxEvent]:
        held = self._outbox_leader
        if held is not None and held[0] != instance and held[1] > now:
            return []
        self._outbox_leader = (instance, now + lease)
        return await self.outbox(limit)

    async def wait_receipts(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._receipt_signal.wait(), timeout)
        self._receipt_signal.clear()

    @property
    def listening(self) -> bool:
        return False

    def subscribe(self, callback: Callable[[str, str], None]) -> None:
        """One process per SQLite file: nobody else writes, nothing to hear of."""

    async def ensure_listening(self) -> bool:
        return False
