"""Durable state behind one small interface: messages, carrier-id map, sender
receipts waiting for delivery, the feed outbox, the suppression list and the
soft-bounce log.

`SqliteStore` is the embedded default (WAL, group commit: every `commit()` call
made within a short window shares one transaction, so durability does not cost a
disk sync per message). Its transactions run on the event loop's thread: with
`synchronous=NORMAL` a WAL commit is a write to the OS, not a disk sync, and
handing it to a thread cost more (futures, wake-ups, the GIL passed back and
forth) than the write itself. The disk syncs happen in checkpoints, which a
background thread runs on its own connection. Reads for reports and recovery
run on a reader thread. `bounceback.pgstore.PgStore`
keeps the same state in PostgreSQL for several instances sharing one database.

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
from typing import Any, Protocol

import attrs
import orjson

from .ids import MAX_INSTANCE
from .model import Message, State, Verdict

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
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def commit(self, change: Change) -> None: ...
    async def commit_many(self, changes: Sequence[Change]) -> None: ...
    async def get(self, message_id: str) -> Message | None: ...
    async def find_carrier_key(
        self, carrier: str, keys: Sequence[str]
    ) -> tuple[str, int] | None: ...
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


class GroupCommit:
    """Group commit: every `submit()` made while a transaction is being written, or
    within `batch_delay` of the first, shares the next transaction (up to `batch_max`
    submissions). Each `submit()` returns once its transaction committed, or raises
    what the transaction raised."""

    def __init__(
        self,
        write: Callable[[list[Change]], Awaitable[None]],
        *,
        batch_max: int,
        batch_delay: float,
    ) -> None:
        self.write = write
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        self._queue: list[tuple[list[Change], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, changes: Sequence[Change]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append((list(changes), fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flusher())
        await fut

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        if self._task is not None:
            await self._task

    async def _flusher(self) -> None:
        idle = True
        while self._queue:
            # Wait for company only when starting from idle: after a write, the queue
            # already holds everything that arrived while it ran.
            if idle and self.batch_delay > 0 and len(self._queue) < self.batch_max:
                await asyncio.sleep(self.batch_delay)
            idle = False
            batch, self._queue = self._queue[: self.batch_max], self._queue[self.batch_max :]
            changes = [c for cs, _ in batch for c in cs]
            try:
                await self.write(changes)
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
                continue
            except BaseException as exc:  # every waiter learns the transaction failed
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _log_checkpoint(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("store checkpoint failed: %s", fut.exception())


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
        version=int(r[15]),
    )


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode."""

    # Pending sender receipts of an account are served from memory while they number
    # at most this many (all of them, in seq order); beyond it, from the table.
    RECEIPTS_IN_MEMORY = 20000
    # A checkpoint (on its own thread) after this many WAL pages were written.
    CHECKPOINT_PAGES = 1000

    def __init__(self, path: str | Path, *, batch_max: int = 512, batch_delay: float = 0.002):
        self.path = str(path)
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
        self._group = GroupCommit(self._write_async, batch_max=batch_max, batch_delay=batch_delay)
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
        for stmt in SCHEMA:
            conn.execute(stmt)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)").fetchall()}
        if "version" not in columns:  # a file from before message versions
            conn.execute("ALTER TABLE messages ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
        self._wconn = conn

    def _open_reader(self) -> None:
        self._rconn = self._connect()

    def _open_checkpointer(self) -> None:
        self._cconn = self._connect()

    def _run_checkpoint(self) -> None:
        conn = self._cconn
        assert conn is not None
        # Read the result: a statement left unfinished keeps the connection's snapshot.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _maybe_checkpoint(self, pages: int) -> None:
        self._wal_pages += pages
        if self._wal_pages < self.CHECKPOINT_PAGES:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._wal_pages = 0
        loop = asyncio.get_running_loop()
        self._checkpoint = loop.run_in_executor(self._checkpointer, self._run_checkpoint)
        self._checkpoint.add_done_callback(_log_checkpoint)

    async def close(self) -> None:
        await self._group.drain()
        loop = asyncio.get_running_loop()
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
    async def commit(self, change: Change) -> None:
        await self.commit_many([change])

    async def commit_many(self, changes: Sequence[Change]) -> None:
        await self._group.submit(changes)
        for c in changes:
            if c.message is not None:
                self._msg_leases.pop(c.message.id, None)
            for seq in c.delete_receipts:
                self._receipt_leases.pop(seq, None)
            if c.receipts:
                self._receipt_signal.set()

    async def _write_async(self, changes: list[Change]) -> None:
        self._write(changes)

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
        cur = conn.execute(sql, params)
        self._maybe_checkpoint(1)
        return cur.rowcount

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

    async def find_carrier_key(self, carrier: str, keys: Sequence[str]) -> tuple[str, int] | None:
        for key in keys:
            rows = await self._read(
                "SELECT message_id, attempt FROM carrier_ids WHERE carrier = ? AND key = ?",
                (carrier, key),
            )
            if rows:
                return str(rows[0][0]), int(rows[0][1])
        return None

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
        with _immediate(conn):  # one transaction, not one per row
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
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
        while True:
            with _immediate(conn):
                ids = conn.execute(
                    "SELECT id FROM messages WHERE done_at IS NOT NULL AND done_at < ?"
                    " ORDER BY done_at LIMIT ?",
                    (before, EXPIRE_SLICE),
                ).fetchall()
                conn.executemany("DELETE FROM carrier_ids WHERE message_id = ?", ids)
                conn.executemany("DELETE FROM messages WHERE id = ?", ids)
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
