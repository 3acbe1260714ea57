"""PostgreSQL only: several instances on one database, leases, migrations, the due index."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import attrs
import pytest
from bounceback.core.model import Message, State
from bounceback.store import postgres as pgstore
from bounceback.store.postgres import (
    CLAIM_DUE_SQL,
    DUE_SQL,
    PgStore,
    migrate,
    migrate_main,
    migrations,
)
from bounceback.store.sqlite import Change, ReceiptRow

pytest_plugins = ["pg_fixture"]

T0 = 1_750_000_000.0
LEASE = 30.0


@pytest.fixture
def stores(pg_store_pair: tuple[PgStore, PgStore]) -> tuple[PgStore, PgStore]:
    """Two stores on one database, as two instances would have."""
    return pg_store_pair


def held(mid: str, at: float) -> Message:
    return Message(
        id=mid,
        account="acme",
        source_addr="ACME",
        destination_addr="447700900001",
        pdu=b"pdu",
        registered_delivery=1,
        created_at=T0,
        deadline=T0 + 3600,
        deadline_is_validity=False,
        submit_date=T0,
        state=State.HELD,
        next_attempt_at=at,
        updated_at=T0,
    )


def receipt(mid: str) -> ReceiptRow:
    return ReceiptRow("acme", mid, "DELIVRD", "000", T0, False, "4477", "ACME", T0, "hi")


async def test_two_stores_claim_disjoint_due_messages_under_concurrency(
    stores: tuple[PgStore, PgStore],
) -> None:
    a, b = stores
    ids = [f"M{i:04d}" for i in range(300)]
    await a.commit_many([Change(message=held(m, T0 + i % 7)) for i, m in enumerate(ids)])
    now = T0 + 10
    claims = await asyncio.gather(
        *(
            (a if i % 2 else b).claim_due(f"bb-{'a' if i % 2 else 'b'}", now, 9, LEASE)
            for i in range(40)
        )
    )
    a_ids = [m.id for i, c in enumerate(claims) if i % 2 for m in c]
    b_ids = [m.id for i, c in enumerate(claims) if not i % 2 for m in c]
    assert a_ids and b_ids
    # An instance may be handed its own claims again (a restarted instance of the same
    # name picks up its work at once), but never what another live instance holds.
    assert not set(a_ids) & set(b_ids)
    assert all(len({m.id for m in c}) == len(c) for c in claims)
    # Whatever no claim reached is still there for the next claim; nothing is lost.
    rest = await b.claim_due("bb-b", now, 1000, LEASE)
    assert not {m.id for m in rest} & set(a_ids)
    assert set(a_ids) | {m.id for m in rest} == set(ids)
    assert await a.claim_due("bb-c", now + 1, 1000, LEASE) == []


async def test_a_dead_instances_lease_expires_and_another_takes_over(
    stores: tuple[PgStore, PgStore],
) -> None:
    a, b = stores
    await a.commit_many([Change(message=held(f"D{i}", T0 + i)) for i in range(5)])
    mine = await a.claim_due("bb-a", T0 + 10, 100, LEASE)
    assert len(mine) == 5
    # bb-a dies (no more commits or renewals). Until its lease runs out nobody else works.
    assert await b.claim_due("bb-b", T0 + 10 + LEASE - 1, 100, LEASE) == []
    taken = await b.claim_due("bb-b", T0 + 10 + LEASE + 1, 100, LEASE)
    assert [m.id for m in taken] == [f"D{i}" for i in range(5)]
    rows = await b.query("SELECT DISTINCT lease_owner FROM messages")
    assert rows == [("bb-b",)]
    # A commit by the new owner clears the lease; the message is then claimable again.
    done = attrs.evolve(
        taken[0],
        state=State.DELIVERED,
        next_attempt_at=None,
        done_at=T0 + 50,
        version=taken[0].version + 1,
    )
    await b.commit(Change(message=done))
    assert await b.query("SELECT lease_owner FROM messages WHERE id = 'D0'") == [(None,)]


async def test_instance_numbers_across_stores(stores: tuple[PgStore, PgStore]) -> None:
    a, b = stores
    first = await a.register_instance("bb-first", T0, LEASE)
    numbers = await asyncio.gather(
        *((a if i % 2 else b).register_instance(f"bb-{i}", T0, LEASE) for i in range(20))
    )
    assert len({first, *numbers}) == 21
    # Every lease ran out: b takes the lowest number, a's first one, and a learns it lost it.
    taken = await b.register_instance("bb-new", T0 + LEASE + 1, LEASE)
    assert taken == first == 0
    assert await a.renew_instance(first, T0 + LEASE + 2, LEASE) is False
    assert await b.renew_instance(taken, T0 + LEASE + 2, LEASE) is True


async def test_claim_receipts_exclusive_across_stores(stores: tuple[PgStore, PgStore]) -> None:
    a, b = stores
    await a.commit(Change(receipts=[receipt(f"R{i:03d}") for i in range(100)]))
    claims = await asyncio.gather(
        *(
            (a if i % 2 else b).claim_receipts("acme", f"bb-{i % 2}", T0, 7, LEASE)
            for i in range(30)
        )
    )
    a_seqs = [p.seq for i, c in enumerate(claims) if i % 2 for p in c]
    b_seqs = [p.seq for i, c in enumerate(claims) if not i % 2 for p in c]
    assert a_seqs and b_seqs
    assert not set(a_seqs) & set(b_seqs)
    for c in claims:
        assert [p.seq for p in c] == sorted(p.seq for p in c)  # oldest first


async def test_outbox_publisher_is_one_instance(stores: tuple[PgStore, PgStore]) -> None:
    a, b = stores
    await a.commit_many([Change(events=[(f"t/{i}", str(i))]) for i in range(5)])
    got = await asyncio.gather(
        a.claim_outbox("bb-a", T0, 10, LEASE), b.claim_outbox("bb-b", T0, 10, LEASE)
    )
    winners = [g for g in got if g]
    assert len(winners) == 1
    assert [e.topic for e in winners[0]] == [f"t/{i}" for i in range(5)]


async def test_receipt_notification_reaches_the_other_instance(
    stores: tuple[PgStore, PgStore],
) -> None:
    a, b = stores
    waiter = asyncio.create_task(b.wait_receipts(60.0))
    await asyncio.sleep(0)
    await a.commit(Change(receipts=[receipt("N1")]))
    await asyncio.wait_for(waiter, 30.0)  # a guard against hanging, not a timing check
    assert [p.row.message_id for p in await b.claim_receipts("acme", "bb-b", T0, 5, LEASE)] == [
        "N1"
    ]


async def test_wait_receipts_listens_again_after_losing_its_connection(pg_url: str) -> None:
    s = PgStore(pg_url, batch_delay=0.001, pool_min=1, pool_max=2)
    await s.open()
    try:
        old = s._listener
        await old.close()
        await asyncio.wait_for(s.wait_receipts(60.0), 30.0)  # "maybe": returns at once
        assert s._listener is not None and s._listener is not old
        waiter = asyncio.create_task(s.wait_receipts(60.0))
        await asyncio.sleep(0)
        await s.commit(Change(receipts=[receipt("N2")]))
        await asyncio.wait_for(waiter, 30.0)
    finally:
        await s.close()


# ---------------------------------------------------------------- migrations


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        return {str(r[0]) for r in rows}
    finally:
        await conn.close()


async def test_migrations_apply_once_and_are_idempotent(pg_empty_url: str) -> None:
    versions = [v for v, _, _ in migrations()]
    assert versions[0] == "0001" and versions == sorted(versions)
    assert "messages" not in await _tables(pg_empty_url)
    assert await migrate(pg_empty_url) == versions
    assert await migrate(pg_empty_url) == []
    tables = await _tables(pg_empty_url)
    assert {"messages", "sender_receipts", "outbox", "instances", "schema_migrations"} <= tables
    conn = await asyncpg.connect(pg_empty_url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [(r[0], r[1]) for r in rows] == [(v, n) for v, n, _ in migrations()]


async def test_concurrent_migrations_apply_each_version_once(pg_empty_url: str) -> None:
    results = await asyncio.gather(*(migrate(pg_empty_url) for _ in range(6)))
    versions = [v for v, _, _ in migrations()]
    assert sorted(results, key=len, reverse=True) == [versions] + [[]] * 5
    # Two stores opening at once on a fresh database both come up.
    a = PgStore(pg_empty_url, pool_min=1, pool_max=2)
    b = PgStore(pg_empty_url, pool_min=1, pool_max=2)
    await asyncio.gather(a.open(), b.open())
    await a.close()
    await b.close()


async def test_a_failing_migration_leaves_nothing_behind(
    pg_empty_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "0001_initial.sql").write_text("CREATE TABLE first_one (x INTEGER);")
    (tmp_path / "0002_broken.sql").write_text(
        "CREATE TABLE second_one (x INTEGER); SELECT no_such_function();"
    )
    monkeypatch.setattr(pgstore, "MIGRATIONS_DIR", tmp_path)
    with pytest.raises(asyncpg.PostgresError):
        await migrate(pg_empty_url)
    tables = await _tables(pg_empty_url)
    assert "first_one" in tables and "second_one" not in tables
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE second_one (x INTEGER);")
    assert await migrate(pg_empty_url) == ["0002"]


def test_migrate_main_reports_what_it_did(
    pg_cluster: object, pg_empty_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bb.toml"
    cfg.write_text(
        '[[accounts]]\nsystem_id = "acme"\npassword = "pw"\n'
        '[[carriers]]\nname = "c"\nhost = "127.0.0.1"\nport = 2775\n'
        'system_id = "bb"\npassword = "pw"\n'
        f'[store]\nurl = "{pg_empty_url}"\n'
    )
    assert migrate_main(str(cfg)) == 0
    out = capsys.readouterr().out
    assert "applied 0001_initial" in out and "applied 0003_message_version" in out
    assert migrate_main(str(cfg)) == 0
    latest = migrations()[-1][0]
    assert f"schema up to date (version {latest})" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nurl = 5\n")
    assert migrate_main(str(bad)) == 2


# ---------------------------------------------------------------- the due index


async def test_the_due_query_is_an_index_scan(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        # 50 000 messages: most finished (no next attempt), some held for later, a few due.
        await conn.execute(
            "INSERT INTO messages (id, account, source_addr, destination_addr, state,"
            " attempts, carrier, carrier_message_id, next_attempt_at, created_at, updated_at,"
            " done_at, reason, pdu, data)"
            " SELECT lpad(to_hex(i), 16, '0'), 'acme', 'ACME', '4477' || i,"
            " CASE WHEN i % 10 = 0 THEN 'held' ELSE 'delivered' END, 1, 'c', '',"
            " CASE WHEN i % 10 = 0 THEN $1::float8 + (i % 1000) ELSE NULL END,"
            " $1::float8, $1::float8, NULL, '', '\\x00'::bytea, '{}'"
            " FROM generate_series(1, 50000) AS i",
            T0,
        )
        await conn.execute("ANALYZE messages")
        plans: list[str] = []
        for sql, args in (
            (CLAIM_DUE_SQL, ("bb-a", T0 + 5, 100, LEASE)),
            (DUE_SQL, (T0 + 5, 100)),
        ):
            rows = await conn.fetch("EXPLAIN " + sql, *args)
            plan = "\n".join(str(r[0]) for r in rows)
            plans.append(plan)
            assert "messages_due" in plan, plan
            assert "Seq Scan on messages" not in plan, plan
    finally:
        await conn.close()
    assert len(plans) == 2


async def test_store_reads_and_claims_use_the_migrated_schema(pg_url: str) -> None:
    s = PgStore(pg_url, pool_min=1, pool_max=2, auto_migrate=False)
    await s.open()
    try:
        await s.commit(Change(message=held("X1", T0)))
        got = await s.claim_due("bb-a", T0, 10, LEASE)
        assert [m.id for m in got] == ["X1"]
        assert got[0] == held("X1", T0)
    finally:
        await s.close()


async def test_pool_skips_the_reset_query_but_still_ends_open_transactions(pg_url: str) -> None:
    """Pooled connections are released without asyncpg's reset query (a round trip per
    query; the store keeps no session state on them); a connection given back inside
    a transaction is still rolled back before its next use."""
    s = PgStore(pg_url, batch_delay=0.001, pool_min=1, pool_max=1)
    await s.open()
    try:
        async with s.pool.acquire() as conn:
            assert conn.get_reset_query() == ""
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO meta (key, value) VALUES ('half', 'done')")
        async with s.pool.acquire() as again:
            assert not again.is_in_transaction()
            assert await again.fetchval("SELECT count(*) FROM meta WHERE key = 'half'") == 0
        assert await s.meta_get("half") is None
    finally:
        await s.close()


async def test_one_notification_per_channel_and_transaction(
    stores: tuple[PgStore, PgStore],
) -> None:
    """A transaction that writes receipts, carrier ids of two carriers and two
    suppressions notifies each channel once (the carriers and numbers as payload); a
    suppression removal notifies its number."""
    a, b = stores
    heard: list[tuple[str, str]] = []
    b.subscribe(lambda channel, payload: heard.append((channel, payload)))
    await a.commit(
        Change(
            receipts=[receipt("N1"), receipt("N2")],
            carrier_keys=[("sim", "K1", "M1", 1), ("sim", "K2", "M2", 1), ("alt", "K3", "M3", 1)],
            suppress=[
                ("447700900001", "unknown", T0, T0 + 60, "acme"),
                ("447700900002", "unknown", T0, T0 + 60, "acme"),
            ],
        )
    )
    end = asyncio.get_running_loop().time() + 30  # a guard against hanging
    while len(heard) < 3:
        assert asyncio.get_running_loop().time() < end, heard
        await asyncio.sleep(0.01)
    assert await a.suppression_remove("447700900001")
    assert not await a.suppression_remove("447700900009")
    while len(heard) < 4:
        assert asyncio.get_running_loop().time() < end, heard
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert sorted(heard) == sorted(
        [
            (pgstore.RECEIPT_CHANNEL, "acme"),
            # the ids themselves, so another instance matches their receipts from memory
            (pgstore.CARRIER_CHANNEL, "ids\nalt K3 M3 1\nsim K1 M1 1\nsim K2 M2 1"),
            (pgstore.SUPPRESSION_CHANNEL, "447700900001 447700900002"),
            (pgstore.SUPPRESSION_CHANNEL, "447700900001"),
        ]
    )


async def test_find_carrier_keys_answers_many_keys_at_once(
    stores: tuple[PgStore, PgStore],
) -> None:
    a, b = stores
    await a.commit(
        Change(
            carrier_keys=[("sim", "K1", "M1", 1), ("sim", "k1", "M1", 1), ("alt", "K1", "M3", 2)]
        )
    )
    wanted = ["K1", "k1", "nope", *(f"x{i}" for i in range(1000))]
    assert await b.find_carrier_keys("sim", wanted) == {"K1": ("M1", 1), "k1": ("M1", 1)}
    assert await b.find_carrier_keys("alt", wanted) == {"K1": ("M3", 2)}
    assert await b.find_carrier_keys("sim", []) == {}


def test_a_carrier_notice_lists_the_ids_while_they_fit() -> None:
    keys = [("sim", f"{i:06X}", f"055EC72DF60000{i:02X}", 1) for i in range(40)]
    payload = pgstore._carrier_payload(keys)
    assert pgstore.parse_carrier_payload(payload) == ({"sim"}, keys)
    many = [("sim", f"{i:06X}", f"055EC72DF6{i:06X}", 2) for i in range(1000)]
    names = pgstore._carrier_payload([*many, ("alt", "1", "x", 1)])
    assert len(names.encode()) <= pgstore.CARRIER_PAYLOAD_MAX
    assert pgstore.parse_carrier_payload(names) == ({"alt", "sim"}, [])  # names only
