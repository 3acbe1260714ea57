"""The PostgreSQL store: the same state as `SqliteStore`, shared by several instances.

`PgStore` implements the `Store` protocol over an asyncpg pool. Writes go
through the same group commit as SQLite (every `commit()` made while a
transaction is being written shares the next one), so a batch of Changes costs
one round of network trips and one WAL flush.

Several instances on one database:

* each instance holds an instance number 0..1023 (it is embedded in message ids)
  with a lease it renews (`register_instance`, `renew_instance`);
* due messages and sender receipts are claimed with
  ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING …``,
  which stamps `lease_owner` and `lease_until`; rows another live instance holds
  are not returned, rows whose lease ran out (a dead instance) are;
* the feed outbox has one publisher at a time (a row in `leaders` with a lease),
  which publishes in seq order, so the events of a message stay in order;
* a transaction that inserts sender receipts also sends a NOTIFY on
  `RECEIPT_CHANNEL` (payload: the account), so the instance where the sender is
  bound hears of them at once (`wait_receipts`, `subscribe`);
* a transaction that writes carrier message ids sends one NOTIFY on
  `CARRIER_CHANNEL` (payload: the carrier names), so that an instance holding a
  receipt that came before the id was visible matches it at once;
* a suppression write or removal sends one NOTIFY on `SUPPRESSION_CHANNEL`
  (payload: the numbers, or ``*`` when they do not fit), so that every instance
  applies it at once;
* a configuration reload on one instance sends a NOTIFY on `CONFIG_CHANNEL`
  (payload: that instance's name), so that every other one reloads its file too;
  a carrier paused or resumed through the admin API, one on `CARRIER_STATE_CHANNEL`
  (payload: ``pause NAME`` or ``resume NAME``), so that every instance does the same.

The schema is Bounceback's own: versioned SQL files in `migrations/`, applied in
order, each inside a transaction, recorded in `schema_migrations`, under an
advisory lock so that instances starting together do not race (`migrate`).

asyncpg is the ``bounceback[postgres]`` extra: it is imported when a PostgreSQL store
is opened or migrated, so that this module (and `store_from_config`) imports without
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bounceback.config.extras import config_problems, require
from bounceback.config.settings import ConfigError, StoreConfig, _mask_url, load_config
from bounceback.core.model import Message, State
from bounceback.core.recovery import Curve, Key
from bounceback.store.sqlite import (
    EXPIRING,
    MAX_INSTANCES,
    MESSAGE_COLS,
    RECEIPT_COLS,
    RECOVERY_ADD_BIN,
    RECOVERY_ADD_KEY,
    RECOVERY_EVICT,
    RECOVERY_LOAD_BINS,
    RECOVERY_LOAD_KEYS,
    Change,
    Conflicts,
    GroupCommit,
    OutboxEvent,
    PendingReceipt,
    SqliteStore,
    Store,
    Suppression,
    collect,
    message_from_row,
    receipt_from_row,
    recovery_from_rows,
    recovery_rows,
)

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")

# Advisory lock keys (scoped to the database by PostgreSQL).
MIGRATE_LOCK = 0x6262_6D69_6772  # "bbmigr"
INSTANCE_LOCK = 0x6262_696E_7374  # "bbinst"

RECEIPT_CHANNEL = "bounceback_receipts"
CARRIER_CHANNEL = "bounceback_carrier_ids"
SUPPRESSION_CHANNEL = "bounceback_suppression"
CONFIG_CHANNEL = "bounceback_config"
CARRIER_STATE_CHANNEL = "bounceback_carrier_state"
CHANNELS = (
    RECEIPT_CHANNEL,
    CARRIER_CHANNEL,
    SUPPRESSION_CHANNEL,
    CONFIG_CHANNEL,
    CARRIER_STATE_CHANNEL,
)
# A NOTIFY payload must stay under 8000 bytes; a longer list is sent as "*" (all).
PAYLOAD_MAX = 4000
OUTBOX_JOB = "outbox"


class _Refused(Exception):
    """A message update did not apply (its version is not the next): roll back."""


def _asyncpg() -> Any:
    """asyncpg, or a `MissingExtra` naming ``bounceback[postgres]``."""
    return require("asyncpg", "PostgreSQL")


@functools.cache
def _retry_errors() -> tuple[type[BaseException], ...]:
    asyncpg = _asyncpg()
    return (
        asyncpg.exceptions.DeadlockDetectedError,
        asyncpg.exceptions.SerializationError,
    )


_UPDATE_MESSAGE = ", ".join(
    f"{c} = EXCLUDED.{c}" for c in (x.strip() for x in MESSAGE_COLS.split(",")) if c != "id"
)

UPSERT_MESSAGE_SQL = (
    f"INSERT INTO messages ({MESSAGE_COLS}) VALUES "
    "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) "
    f"ON CONFLICT (id) DO UPDATE SET {_UPDATE_MESSAGE}, lease_owner = NULL, lease_until = NULL"
)
# Updates of known messages in one statement, one array per column, each applying
# only over the version before it; it returns the ids it wrote, so a refused update is
# seen without a query of its own.
_MESSAGE_TYPES = (
    "text", "text", "text", "text", "text", "integer", "text", "text",
    "float8", "float8", "float8", "float8", "text", "bytea", "text", "bigint",
)  # fmt: skip
UPDATE_MESSAGES_SQL = (
    f"INSERT INTO messages ({MESSAGE_COLS}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_MESSAGE_TYPES, 1))
    + f") ON CONFLICT (id) DO UPDATE SET {_UPDATE_MESSAGE}, lease_owner = NULL,"
    " lease_until = NULL WHERE messages.version = EXCLUDED.version - 1 RETURNING id"
)

DUE_SQL = (
    f"SELECT {MESSAGE_COLS} FROM messages WHERE next_attempt_at IS NOT NULL"
    " AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2"
)

# $1 instance, $2 now, $3 limit, $4 lease seconds
CLAIM_DUE_SQL = (
    "UPDATE messages SET lease_owner = $1, lease_until = $2::float8 + $4::float8"
    " WHERE id IN (SELECT id FROM messages"
    " WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $2::float8"
    " AND (lease_until IS NULL OR lease_until <= $2::float8 OR lease_owner = $1)"
    " ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
    f" RETURNING {MESSAGE_COLS}"
)

# $1 account, $2 instance, $3 now, $4 limit, $5 lease seconds
CLAIM_RECEIPTS_SQL = (
    "UPDATE sender_receipts SET lease_owner = $2, lease_until = $3::float8 + $5::float8"
    " WHERE seq IN (SELECT seq FROM sender_receipts WHERE account = $1"
    " AND (lease_until IS NULL OR lease_until <= $3::float8 OR lease_owner = $2)"
    " ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED)"
    f" RETURNING {RECEIPT_COLS}"
)

# $1 job, $2 instance, $3 now, $4 lease seconds
TAKE_LEADER_SQL = (
    "INSERT INTO leaders (job, owner, lease_until) VALUES ($1, $2, $3::float8 + $4::float8)"
    " ON CONFLICT (job) DO UPDATE SET owner = EXCLUDED.owner,"
    " lease_until = EXCLUDED.lease_until"
    " WHERE leaders.owner = EXCLUDED.owner OR leaders.lease_until <= $3::float8"
    " RETURNING owner"
)


# ---------------------------------------------------------------- migrations


def migrations() -> list[tuple[str, str, str]]:
    """(version, name, sql) of every migration file, in order."""
    found: list[tuple[str, str, str]] = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if m is None:
            raise RuntimeError(f"migration file {path.name!r} is not named NNNN_name.sql")
        found.append((m.group(1), m.group(2), path.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migration files share a version: {versions}")
    return found


async def _migrate_conn(conn: Any) -> tuple[list[str], str]:
    """Apply the missing migrations on one connection: (applied versions, current version)."""
    await conn.execute("SELECT pg_advisory_lock($1::bigint)", MIGRATE_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version TEXT PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {str(r[0]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
        known = migrations()
        unknown = sorted(done - {v for v, _, _ in known})
        if unknown:
            log.warning("the database has schema versions this release does not know: %s", unknown)
        applied: list[str] = []
        for version, name, sql in known:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(version)
            log.info("applied schema migration %s_%s", version, name)
        current = max([*done, *applied], default="")
        return applied, current
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1::bigint)", MIGRATE_LOCK)


async def migrate(url: str) -> list[str]:
    """Bring the database at `url` to the newest schema; returns the versions applied."""
    conn = await _asyncpg().connect(url)
    try:
        applied, _ = await _migrate_conn(conn)
        return applied
    finally:
        await conn.close()


def migrate_main(config_path: str) -> int:
    """`bounceback migrate --config FILE`: prepare the configured store's schema.

    Exit codes: 0 done, 1 the database could not be migrated, 2 invalid configuration."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    missing = config_problems(cfg)
    if missing:
        print("\n".join(str(p) for p in missing), file=sys.stderr)
        return 2
    st = cfg.store
    if st.backend != "postgresql":

        async def sqlite_schema() -> None:
            s = SqliteStore(st.path)
            await s.open()
            await s.close()

        try:
            asyncio.run(sqlite_schema())
        except Exception as exc:
            print(f"SQLite {st.path}: {exc}", file=sys.stderr)
            return 1
        print(f"SQLite {st.path}: schema ready (SQLite needs no migrations)")
        return 0

    async def run() -> tuple[list[str], str]:
        conn = await _asyncpg().connect(st.url)
        try:
            return await _migrate_conn(conn)
        finally:
            await conn.close()

    where = f"PostgreSQL {_mask_url(st.url)}"
    try:
        applied, current = asyncio.run(run())
    except Exception as exc:
        print(f"{where}: migration failed: {exc}", file=sys.stderr)
        return 1
    names = {v: n for v, n, _ in migrations()}
    for v in applied:
        print(f"{where}: applied {v}_{names.get(v, '')}")
    if not applied:
        print(f"{where}: schema up to date (version {current})")
    else:
        print(f"{where}: schema now at version {current}")
    return 0


@functools.cache
def _pool_connection() -> type[Any]:
    class _PoolConnection(_asyncpg().Connection):  # type: ignore[misc]
        """A pooled connection. The store keeps no session state on them (LISTEN has a
        connection of its own, advisory locks are per transaction, nothing is SET), so
        the reset asyncpg sends on every release (UNLISTEN, RESET ALL, ...) is skipped:
        it cost a round trip per query. An open transaction is still rolled back."""

        def get_reset_query(self) -> str:
            return ""

    return _PoolConnection


def store_from_config(cfg: StoreConfig) -> Store:
    """The store a `StoreConfig` names: PostgreSQL when it has a URL, else SQLite."""
    if cfg.backend == "postgresql":
        return PgStore(
            cfg.url,
            batch_max=cfg.batch_max,
            batch_delay=cfg.batch_delay,
            lease_seconds=cfg.lease_seconds,
        )
    return SqliteStore(
        cfg.path,
        batch_max=cfg.batch_max,
        batch_delay=cfg.batch_delay,
        write_timeout=cfg.write_timeout,
    )


def _qmarks_to_dollars(sql: str) -> str:
    """Rewrite ``?`` placeholders (the SQLite style of report queries) to ``$n``, leaving
    quoted strings and identifiers alone."""
    out: list[str] = []
    n = 0
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


# NOTIFY takes up to 8000 bytes.
CARRIER_PAYLOAD_MAX = 7900
CARRIER_IDS = "ids"  # the first line of a notice that lists the carrier ids themselves


def _carrier_payload(keys: Sequence[tuple[str, str, str, int]]) -> str:
    """The carrier ids a commit wrote, one ``carrier key message_id attempt`` line each
    after a first line ``ids``, so that another instance matches their receipts from
    memory; only the carriers' names (see `_payload`) when they would not fit."""
    text = "\n".join([CARRIER_IDS, *(f"{c} {k} {m} {a}" for c, k, m, a in keys)])
    if len(text.encode()) <= CARRIER_PAYLOAD_MAX:
        return text
    return _payload(k[0] for k in keys)


def parse_carrier_payload(payload: str) -> tuple[set[str], list[tuple[str, str, str, int]]]:
    """(the carriers named, the carrier ids listed) of a `CARRIER_CHANNEL` notice."""
    lines = payload.split("\n")
    if lines[0] != CARRIER_IDS:
        return set(payload.split()), []
    ids = []
    for line in lines[1:]:
        c, k, m, a = line.split(" ")
        ids.append((c, k, m, int(a)))
    return {c for c, _, _, _ in ids}, ids


def _payload(names: Iterable[str]) -> str:
    """Names joined by spaces for a NOTIFY, or ``*`` when they would not fit."""
    text = " ".join(sorted(set(names)))
    return text if len(text) <= PAYLOAD_MAX else "*"


def _rowcount(status: str) -> int:
    """The row count of a command status such as ``DELETE 3``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


# ---------------------------------------------------------------- the store


class PgStore:
    """Bounceback's state in PostgreSQL, shared by several instances."""

    def __init__(
        self,
        url: str,
        *,
        batch_max: int = 512,
        batch_delay: float = 0.002,
        lease_seconds: float = 30.0,
        pool_min: int = 2,
        pool_max: int = 10,
        auto_migrate: bool = True,
    ) -> None:
        self.url = url
        self.lease_seconds = lease_seconds  # what callers use for their claims
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.auto_migrate = auto_migrate
        self._group = GroupCommit(self._write, batch_max=batch_max, batch_delay=batch_delay)
        self._pool: Any = None
        self._listener: Any = None
        self._receipt_signal = asyncio.Event()
        self._subscribers: list[Callable[[str, str], None]] = []
        self._listen_failures = 0  # failed attempts to listen in a row
        self._slot_tokens: dict[int, str] = {}
        self.commits = 0  # transactions committed (for metrics and tests)
        # The pool reconnects and retries by itself (see `_write`); a write that fails
        # anyway fails its caller, and the store never refuses ahead of time.
        self.fault: str | None = None

    @property
    def batch_max(self) -> int:
        return self._group.batch_max

    @property
    def batch_delay(self) -> float:
        return self._group.batch_delay

    # ------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        if self.auto_migrate:
            await migrate(self.url)
        self._pool = await _asyncpg().create_pool(
            self.url,
            min_size=self.pool_min,
            max_size=self.pool_max,
            connection_class=_pool_connection(),
        )
        await self._listen()

    async def _listen(self) -> None:
        """A connection of its own that LISTENs on the notification channels."""
        asyncpg = _asyncpg()
        conn: Any = None
        try:
            conn = await asyncpg.connect(self.url)
            for channel in CHANNELS:
                await conn.add_listener(channel, self._on_notify)
        except (OSError, asyncpg.PostgresError) as exc:
            self._listen_failures += 1
            if self._listen_failures % 100 == 1:  # tried every second: not a flood
                log.warning(
                    "cannot listen for notifications (%s); polling instead (%d tries so far)",
                    exc,
                    self._listen_failures,
                )
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            self._listener = None
            return
        self._listen_failures = 0
        self._listener = conn

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if channel == RECEIPT_CHANNEL:
            self._receipt_signal.set()
        for callback in self._subscribers:
            try:
                callback(channel, payload)
            except Exception:
                log.exception("handling a notification on %s failed", channel)

    def subscribe(self, callback: Callable[[str, str], None]) -> None:
        """Call `callback(channel, payload)` for every notification heard (in the loop)."""
        self._subscribers.append(callback)

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    async def ensure_listening(self) -> bool:
        """Listen again when the listening connection was lost. True when it had to:
        the notifications sent meanwhile were lost, so the caller looks for itself."""
        if self.listening:
            return False
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.terminate()
            self._listener = None
        await self._listen()
        return True

    async def close(self) -> None:
        await self._group.drain()
        if self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(Exception):
                await listener.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> Any:
        """The asyncpg pool (open)."""
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    # ------------------------------------------------------------ writes
    async def commit(self, change: Change, timeout: float | None = None) -> None:
        # A timeout that runs out while the transaction is already on its way to the
        # server cannot stop it: the sender is refused, and the message may be sent.
        await self._group.submit([change], timeout)

    async def commit_many(self, changes: Sequence[Change]) -> None:
        await self._group.submit(changes)

    async def _write(self, changes: list[Change]) -> None:
        b = collect(changes, time.time())
        keys = sorted({(c, k): (c, k, m, a) for c, k, m, a in b.carrier_keys}.values())
        supp = sorted({s[0]: s for s in b.suppress}.values())
        for attempt in range(3):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    if b.messages:
                        await conn.executemany(UPSERT_MESSAGE_SQL, b.messages)
                    if b.updates:
                        await self._update_messages(conn, b.updates)
                    if b.events:
                        await conn.executemany(
                            "INSERT INTO outbox (topic, payload) VALUES ($1, $2)", b.events
                        )
                    if b.receipts:
                        await conn.executemany(
                            "INSERT INTO sender_receipts (account, message_id, stat, err,"
                            " done_at, intermediate, source_addr, destination_addr,"
                            " submit_date, text, created_at)"
                            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                            b.receipts,
                        )
                    notes: list[str] = []
                    if b.receipts:
                        for account in sorted(b.accounts):
                            notes += [RECEIPT_CHANNEL, account]
                    if keys:
                        notes += [CARRIER_CHANNEL, _carrier_payload(keys)]
                    if supp:
                        notes += [SUPPRESSION_CHANNEL, _payload(x[0] for x in supp)]
                    if notes:
                        # One statement; the NOTIFYs are delivered on commit.
                        n = len(notes) // 2
                        await conn.execute(
                            "SELECT "
                            + ", ".join(f"pg_notify(${2 * i + 1}, ${2 * i + 2})" for i in range(n)),
                            *notes,
                        )
                    if b.deletes:
                        await conn.execute(
                            "DELETE FROM sender_receipts WHERE seq = ANY($1::bigint[])", b.deletes
                        )
                    if keys:
                        await conn.executemany(
                            "INSERT INTO carrier_ids (carrier, key, message_id, attempt)"
                            " VALUES ($1,$2,$3,$4) ON CONFLICT (carrier, key) DO UPDATE SET"
                            " message_id = EXCLUDED.message_id, attempt = EXCLUDED.attempt",
                            keys,
                        )
                    if supp:
                        await conn.executemany(
                            "INSERT INTO suppression (number, reason, created_at, expires_at,"
                            " account) VALUES ($1,$2,$3,$4,$5) ON CONFLICT (number) DO UPDATE"
                            " SET reason = EXCLUDED.reason, created_at = EXCLUDED.created_at,"
                            " expires_at = EXCLUDED.expires_at, account = EXCLUDED.account",
                            supp,
                        )
                    if b.soft_bounces:
                        await conn.executemany(
                            "INSERT INTO soft_bounces (number, at, reason) VALUES ($1,$2,$3)",
                            b.soft_bounces,
                        )
            except _retry_errors():
                if attempt == 2:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
                continue
            except _Refused:
                # Rolled back: tell the group commit what is stored, so that it can
                # refuse the stale submissions and write the others again.
                rows = await self._fetch(
                    "SELECT id, version FROM messages WHERE id = ANY($1::text[])",
                    sorted({r[0] for r in b.updates}),
                )
                raise Conflicts({str(r[0]): int(r[1]) for r in rows}) from None
            self.commits += 1
            return

    @staticmethod
    async def _update_messages(conn: Any, updates: list[tuple[Any, ...]]) -> None:
        """Write message updates (rows ordered by id: locks are taken in that order by
        every writer), each only over the version before it; `_Refused` if one was
        decided on another version than the stored one."""
        # One statement may not update a row twice: several versions of one message
        # in the batch go in rounds, the first of each message, then the second, ...
        rounds: list[list[tuple[Any, ...]]] = []
        seen: dict[str, int] = {}
        for row in updates:
            n = seen[row[0]] = seen.get(row[0], -1) + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(row)
        for rows in rounds:
            written = await conn.fetch(UPDATE_MESSAGES_SQL, *zip(*rows, strict=True))
            if len(written) != len(rows):
                raise _Refused

    async def _exec(self, sql: str, *params: Any) -> int:
        status: str = await self.pool.execute(sql, *params)
        return _rowcount(status)

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        rows: list[Any] = await self.pool.fetch(sql, *params)
        return rows

    # ------------------------------------------------------------ reads
    async def get(self, message_id: str) -> Message | None:
        rows = await self._fetch(f"SELECT {MESSAGE_COLS} FROM messages WHERE id = $1", message_id)
        return message_from_row(rows[0]) if rows else None

    async def get_many(self, message_ids: Sequence[str]) -> dict[str, Message]:
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE id = ANY($1::text[])",
            list(dict.fromkeys(message_ids)),
        )
        return {m.id: m for m in map(message_from_row, rows)}

    async def find_carrier_key(self, carrier: str, keys: Sequence[str]) -> tuple[str, int] | None:
        if not keys:
            return None
        rows = await self._fetch(
            "SELECT key, message_id, attempt FROM carrier_ids"
            " WHERE carrier = $1 AND key = ANY($2::text[])",
            carrier,
            list(keys),
        )
        found = {str(r[0]): (str(r[1]), int(r[2])) for r in rows}
        for key in keys:
            if key in found:
                return found[key]
        return None

    async def find_carrier_keys(
        self, carrier: str, keys: Sequence[str]
    ) -> dict[str, tuple[str, int]]:
        if not keys:
            return {}
        rows = await self._fetch(
            "SELECT key, message_id, attempt FROM carrier_ids"
            " WHERE carrier = $1 AND key = ANY($2::text[])",
            carrier,
            list(keys),
        )
        return {str(r[0]): (str(r[1]), int(r[2])) for r in rows}

    async def due(self, now: float, limit: int) -> list[Message]:
        return [message_from_row(r) for r in await self._fetch(DUE_SQL, now, limit)]

    async def held_for_number(self, number: str) -> list[Message]:
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE destination_addr = $1 AND state = $2",
            number,
            State.HELD.value,
        )
        return [message_from_row(r) for r in rows]

    async def unfinished(self, limit: int, after: str = "") -> list[Message]:
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE state IN ('accepted','submitting')"
            " AND id > $1 ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [message_from_row(r) for r in rows]

    async def pending_receipts(self, account: str, limit: int) -> list[PendingReceipt]:
        rows = await self._fetch(
            f"SELECT {RECEIPT_COLS} FROM sender_receipts WHERE account = $1 ORDER BY seq LIMIT $2",
            account,
            limit,
        )
        return [receipt_from_row(r) for r in rows]

    async def delete_receipt(self, seq: int) -> None:
        await self.commit(Change(delete_receipts=[seq]))

    async def outbox(self, limit: int) -> list[OutboxEvent]:
        rows = await self._fetch(
            "SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT $1", limit
        )
        return [OutboxEvent(int(r[0]), r[1], r[2]) for r in rows]

    async def outbox_delete(self, seqs: Sequence[int]) -> None:
        if seqs:
            await self._exec("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", list(seqs))

    async def outbox_count(self) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM outbox")
        return int(rows[0][0])

    async def suppressed(self, number: str, now: float) -> Suppression | None:
        rows = await self._fetch(
            "SELECT number, reason, created_at, expires_at, account FROM suppression"
            " WHERE number = $1 AND expires_at > $2",
            number,
            now,
        )
        return Suppression(*rows[0]) if rows else None

    async def suppression_list(self, now: float) -> list[Suppression]:
        rows = await self._fetch(
            "SELECT number, reason, created_at, expires_at, account FROM suppression"
            " WHERE expires_at > $1 ORDER BY created_at",
            now,
        )
        return [Suppression(*r) for r in rows]

    async def suppression_add(self, s: Suppression) -> None:
        await self.commit(
            Change(suppress=[(s.number, s.reason, s.created_at, s.expires_at, s.account)])
        )

    async def suppression_remove(self, number: str) -> bool:
        rows = await self._fetch(
            "WITH gone AS (DELETE FROM suppression WHERE number = $1 RETURNING number)"
            " SELECT pg_notify($2, number) FROM gone",
            number,
            SUPPRESSION_CHANNEL,
        )
        return len(rows) > 0

    async def announce_reload(self, instance: str) -> None:
        await self._exec("SELECT pg_notify($1, $2)", CONFIG_CHANNEL, instance)

    async def announce_carrier(self, action: str, carrier: str) -> None:
        await self._exec("SELECT pg_notify($1, $2)", CARRIER_STATE_CHANNEL, f"{action} {carrier}")

    async def soft_bounces_clear(self, number: str) -> int:
        return await self._exec("DELETE FROM soft_bounces WHERE number = $1", number)

    async def recovery_add(self, deltas: Sequence[tuple[Key, Curve]], max_keys: int) -> None:
        keys, bins = recovery_rows(deltas)
        if not keys:
            return
        add_key = _qmarks_to_dollars(RECOVERY_ADD_KEY.replace("MAX(", "GREATEST("))
        # Keys in one order in every instance: concurrent adds never deadlock.
        keys.sort(key=lambda r: r[:3])
        bins.sort(key=lambda r: r[:4])
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(add_key, keys)
            await conn.executemany(_qmarks_to_dollars(RECOVERY_ADD_BIN), bins)
            count = int(await conn.fetchval("SELECT COUNT(*) FROM recovery_keys"))
            if count > max_keys:
                gone = await conn.fetch(_qmarks_to_dollars(RECOVERY_EVICT), count - max_keys)
                for table in ("recovery_keys", "recovery_bins"):
                    await conn.executemany(
                        f"DELETE FROM {table} WHERE country = $1 AND operator = $2 AND reason = $3",
                        [tuple(r) for r in gone],
                    )

    async def recovery_load(self) -> list[tuple[Key, Curve]]:
        return recovery_from_rows(
            await self._fetch(RECOVERY_LOAD_KEYS), await self._fetch(RECOVERY_LOAD_BINS)
        )

    async def recovery_reset(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            n = _rowcount(await conn.execute("DELETE FROM recovery_keys"))
            await conn.execute("DELETE FROM recovery_bins")
        return n

    async def soft_bounce_count(self, number: str, since: float) -> int:
        rows = await self._fetch(
            "SELECT COUNT(*) FROM soft_bounces WHERE number = $1 AND at >= $2", number, since
        )
        return int(rows[0][0])

    async def unmatched_receipt(self, carrier: str, message_id: str, text: str, at: float) -> None:
        await self._exec(
            "INSERT INTO unmatched_receipts (carrier, message_id, text, at) VALUES ($1,$2,$3,$4)",
            carrier,
            message_id,
            text,
            at,
        )

    async def meta_get(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM meta WHERE key = $1", key)
        return str(rows[0][0]) if rows else None

    async def meta_set(self, key: str, value: str) -> None:
        await self._exec(
            "INSERT INTO meta (key, value) VALUES ($1, $2)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            key,
            value,
        )

    async def expire_finished(self, before: float) -> int:
        """Delete finished messages older than `before` and their carrier ids."""
        rows = await self._fetch(
            "WITH gone AS (DELETE FROM messages WHERE done_at IS NOT NULL AND done_at < $1"
            " RETURNING id), keys AS (DELETE FROM carrier_ids c USING gone"
            " WHERE c.message_id = gone.id) SELECT COUNT(*) FROM gone",
            before,
        )
        return int(rows[0][0])

    async def expire_records(self, before: float) -> dict[str, int]:
        """Delete history older than `before`: soft bounces, unmatched receipts, and
        suppression entries that stopped applying by then."""
        removed: dict[str, int] = {}
        for table, column in EXPIRING:
            removed[table] = await self._exec(f"DELETE FROM {table} WHERE {column} < $1", before)
        return removed

    async def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only SQL for reports; ``?`` placeholders are accepted as in SQLite."""
        rows = await self._fetch(_qmarks_to_dollars(sql), *params)
        return [tuple(r) for r in rows]

    # ------------------------------------------------------------ several instances
    async def register_instance(self, name: str, now: float, lease: float) -> int:
        token = secrets.token_hex(8)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", INSTANCE_LOCK)
            held = {
                int(r[0]): (str(r[1]), float(r[2]))
                for r in await conn.fetch("SELECT slot, name, lease_until FROM instances")
            }
            free = [n for n in range(MAX_INSTANCES) if n not in held or held[n][1] <= now]
            if not free:
                raise RuntimeError(f"all {MAX_INSTANCES} instance numbers are held")
            mine = [n for n in free if n in held and held[n][0] == name]
            number = (mine or free)[0]
            await conn.execute(
                "INSERT INTO instances (slot, name, token, started_at, lease_until)"
                " VALUES ($1, $2, $3, $4::float8, $4::float8 + $5::float8)"
                " ON CONFLICT (slot) DO UPDATE SET name = EXCLUDED.name,"
                " token = EXCLUDED.token, started_at = EXCLUDED.started_at,"
                " lease_until = EXCLUDED.lease_until",
                number,
                name,
                token,
                now,
                lease,
            )
        self._slot_tokens[number] = token
        return number

    async def renew_instance(self, number: int, now: float, lease: float) -> bool:
        token = self._slot_tokens.get(number)
        if token is None:
            return False
        n = await self._exec(
            "UPDATE instances SET lease_until = $3::float8 + $4::float8"
            " WHERE slot = $1 AND token = $2",
            number,
            token,
            now,
            lease,
        )
        return n == 1

    async def unregister_instance(self, number: int) -> None:
        token = self._slot_tokens.pop(number, None)
        if token is not None:
            await self._exec("DELETE FROM instances WHERE slot = $1 AND token = $2", number, token)

    async def claim_due(self, instance: str, now: float, limit: int, lease: float) -> list[Message]:
        rows = await self._fetch(CLAIM_DUE_SQL, instance, now, limit, lease)
        got = [message_from_row(r) for r in rows]
        got.sort(key=lambda m: (m.next_attempt_at or 0.0, m.id))
        return got

    async def release(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            await self._exec(
                "UPDATE messages SET lease_owner = NULL, lease_until = NULL"
                " WHERE id = ANY($1::text[])",
                list(message_ids),
            )

    async def claim_receipts(
        self, account: str, instance: str, now: float, limit: int, lease: float
    ) -> list[PendingReceipt]:
        rows = await self._fetch(CLAIM_RECEIPTS_SQL, account, instance, now, limit, lease)
        return sorted((receipt_from_row(r) for r in rows), key=lambda p: p.seq)

    async def release_receipts(self, seqs: Sequence[int]) -> None:
        if seqs:
            await self._exec(
                "UPDATE sender_receipts SET lease_owner = NULL, lease_until = NULL"
                " WHERE seq = ANY($1::bigint[])",
                list(seqs),
            )

    async def claim_outbox(
        self, instance: str, now: float, limit: int, lease: float
    ) -> list[OutboxEvent]:
        leader = await self._fetch(TAKE_LEADER_SQL, OUTBOX_JOB, instance, now, lease)
        if not leader:
            return []
        return await self.outbox(limit)

    async def wait_receipts(self, timeout: float) -> None:
        """Return when a NOTIFY said new sender receipts were committed (by any instance),
        or after `timeout`. A notification that arrives while nobody waits is kept for
        the next call; meant for one waiting task per store."""
        if not self.listening:
            # The listening connection is gone: listen again and report "maybe", since
            # notifications sent meanwhile were lost.
            await self.ensure_listening()
            if self.listening:
                return
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._receipt_signal.wait(), timeout)
        self._receipt_signal.clear()
