"""The Store contract, run against both stores: SQLite and PostgreSQL (a throwaway cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from bounceback.core.model import Message, State, Step, Verdict
from bounceback.store.postgres import PgStore
from bounceback.store.sqlite import (
    Change,
    GroupCommit,
    ReceiptRow,
    SqliteStore,
    StaleMessage,
    Store,
    Suppression,
)

pytest_plugins = ["pg_fixture"]

T0 = 1_750_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: SqliteStore | PgStore
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "store.db", batch_delay=0.001)
    else:
        url = cast(str, request.getfixturevalue("pg_url"))
        s = PgStore(url, batch_delay=0.001, pool_min=1, pool_max=4)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def msg(mid: str, **kw: Any) -> Message:
    base = Message(
        id=mid,
        account="acme",
        source_addr="ACME",
        destination_addr="447700900001",
        pdu=b"\x00\x00\x00\x10pdu",
        registered_delivery=1,
        created_at=T0,
        deadline=T0 + 3600,
        deadline_is_validity=False,
        submit_date=T0,
        updated_at=T0,
    )
    return attrs.evolve(base, **kw)


def receipt(account: str, mid: str, stat: str = "DELIVRD") -> ReceiptRow:
    return ReceiptRow(
        account=account,
        message_id=mid,
        stat=stat,
        err="000",
        done_at=T0 + 5,
        intermediate=False,
        source_addr="447700900001",
        destination_addr="ACME",
        submit_date=T0,
        text="hello",
    )


async def test_message_round_trip_keeps_every_field(store: Store) -> None:
    full = Message(
        id="0123456789ABCDEF",
        account="acme",
        source_addr="ACME Ltd",
        destination_addr="+447700900123",
        pdu=bytes(range(256)),
        registered_delivery=0x11,
        created_at=T0 + 0.125,
        deadline=T0 + 86400.5,
        deadline_is_validity=True,
        submit_date=T0 + 0.25,
        state=State.HELD,
        attempts=3,
        carrier="carrier-a",
        carrier_message_id="abc123",
        next_attempt_at=T0 + 60.75,
        retries_by_reason=(("absent_subscriber", 2), ("memory_full", 1)),
        verdict=Verdict(
            kind="soft",
            reason="absent_subscriber",
            description="Absent subscriber",
            code="map:27",
            rule="map 27",
            source="override",
            max_retries=7,
        ),
        final_stat="UNDELIV",
        final_err="027",
        done_at=T0 + 99.5,
        text_head="héllo wörld ✓",
        parts_ref="12/1/3",
        updated_at=T0 + 61.0,
        version=3,
        history=(
            Step(T0 + 0.125, "accepted", {"ack": "carrier"}),
            Step(T0 + 1.5, "soft_bounce", {"reason": "absent_subscriber", "attempt": 1}),
        ),
    )
    await store.commit(Change(message=full, insert=True))
    got = await store.get(full.id)
    assert got == full
    assert got is not None and got.history == full.history  # not part of ==: asked apart
    assert await store.get("nope") is None
    # A later commit of the same message (the next version) replaces it.
    later = attrs.evolve(full, state=State.DELIVERED, verdict=None, next_attempt_at=None, version=4)
    await store.commit(Change(message=later))
    assert await store.get(full.id) == later


async def test_last_state_in_one_batch_wins(store: Store) -> None:
    m = msg("A1")
    await store.commit(Change(message=m, insert=True))
    v1 = attrs.evolve(m, attempts=1, state=State.SUBMITTING, version=1)
    v2 = attrs.evolve(m, attempts=2, state=State.SUBMITTED, version=2)
    await store.commit_many([Change(message=v2), Change(message=v1)])  # applied in order
    assert await store.get("A1") == v2


async def test_an_update_decided_on_an_old_version_is_refused_alone(store: Store) -> None:
    """Two writers decide on the same version: the first to commit wins, the other's
    whole change (its events too) is refused, and what shared its transaction is not."""
    m = msg("S1", state=State.SUBMITTED)
    await store.commit(Change(message=m, insert=True))
    delivered = attrs.evolve(m, state=State.DELIVERED, done_at=T0 + 5, version=1)
    cancelled = attrs.evolve(m, state=State.CANCELLED, done_at=T0 + 6, version=1)
    results = await asyncio.gather(
        store.commit(Change(message=delivered, events=[("t/delivered", "{}")])),
        store.commit(Change(message=msg("S2"), insert=True)),
        store.commit(Change(message=cancelled, events=[("t/cancelled", "{}")])),
        return_exceptions=True,
    )
    assert results[0] is None and results[1] is None
    assert isinstance(results[2], StaleMessage) and results[2].message_id == "S1"
    assert await store.get("S1") == delivered
    assert await store.get("S2") is not None
    rows = await store.query("SELECT topic FROM outbox")
    assert rows == [("t/delivered",)]
    # Decided again on what is stored (version 1), the update goes in.
    again = attrs.evolve(delivered, attempts=1, version=2)
    await store.commit(Change(message=again))
    assert await store.get("S1") == again
    # A version from the past is refused too.
    with pytest.raises(StaleMessage):
        await store.commit(Change(message=attrs.evolve(m, attempts=9, version=2)))
    assert await store.get("S1") == again


async def test_concurrent_commits_share_one_transaction(store: Store) -> None:
    before = cast(SqliteStore | PgStore, store).commits
    await asyncio.gather(*(store.commit(Change(message=msg(f"G{i:03d}"))) for i in range(50)))
    assert cast(SqliteStore | PgStore, store).commits - before == 1
    assert len(await store.query("SELECT id FROM messages")) == 50


class Recorder:
    """A GroupCommit's write that records each transaction's size (and writes nothing)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def __call__(self, changes: list[Change]) -> None:
        self.sizes.append(len(changes))


async def passes(n: int) -> None:
    """Let the event loop run `n` passes."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_lone_commit_to_an_idle_store_is_written_at_once() -> None:
    """No batching delay at a light load: with a window of an hour, a lone submission
    is written within a few passes of the event loop."""
    write = Recorder()
    group = GroupCommit(write, batch_max=512, batch_delay=3600.0)
    task = asyncio.create_task(group.submit([Change()]))
    await passes(4)
    assert task.done() and task.exception() is None
    assert write.sizes == [1]
    # And again once idle: each lone submission is its own transaction.
    for _ in range(3):
        await group.submit([Change()])
    assert write.sizes == [1, 1, 1, 1]


async def test_queuing_commits_share_a_transaction_while_more_keep_coming() -> None:
    """Writes that queue are batched: the writer waits a pass more while each pass
    brings more submissions (up to batch_max), and writes as soon as one brings none."""
    write = Recorder()
    group = GroupCommit(write, batch_max=512, batch_delay=3600.0)

    async def later(n: int) -> None:
        await passes(n)
        await group.submit([Change()])

    # Three submit in the same pass, then one more in each of the next three passes.
    tasks = [asyncio.create_task(later(n)) for n in (0, 0, 0, 1, 2, 3)]
    await asyncio.gather(*tasks)
    assert write.sizes == [6]
    # Capped by batch_max: the rest go in the next transaction.
    group.batch_max = 4
    await asyncio.gather(*(group.submit([Change()]) for _ in range(6)))
    assert write.sizes == [6, 4, 2]


async def test_batch_delay_zero_never_waits_for_more() -> None:
    """With batch_delay = 0 the writer takes what is queued when it runs, no more."""
    write = Recorder()
    group = GroupCommit(write, batch_max=512, batch_delay=0.0)

    async def later(n: int) -> None:
        await passes(n)
        await group.submit([Change()])

    await asyncio.gather(*(later(n) for n in (0, 0, 0, 1, 2, 3)))
    assert sum(write.sizes) == 6
    assert write.sizes[0] == 3 and len(write.sizes) > 1


async def test_failed_transaction_fails_every_waiter_and_writes_nothing(store: Store) -> None:
    good = store.commit(Change(message=msg("OK1"), events=[("t", "{}")]))
    bad = store.commit(Change(soft_bounce=[(cast(str, None), T0, "absent_subscriber")]))
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)
    assert await store.get("OK1") is None
    assert await store.outbox_count() == 0
    # The store still works afterwards.
    await store.commit(Change(message=msg("OK2")))
    assert await store.get("OK2") is not None


async def test_get_many_reads_the_stored_ones_in_one_go(store: Store) -> None:
    for mid in ("G1", "G2", "G3"):
        await store.commit(Change(message=msg(mid)))
    wanted = ["G1", "G3", "nope", "G1"] + [f"y{i}" for i in range(1200)]
    found = await store.get_many(wanted)
    assert sorted(found) == ["G1", "G3"]
    assert found["G3"] == await store.get("G3")
    assert await store.get_many([]) == {}


async def test_carrier_keys(store: Store) -> None:
    await store.commit(
        Change(
            message=msg("M1"),
            carrier_keys=[("c1", "ff", "M1", 1), ("c1", "255", "M1", 1), ("c2", "ff", "M9", 4)],
        )
    )
    assert await store.find_carrier_key("c1", ["nope", "255"]) == ("M1", 1)
    assert await store.find_carrier_key("c2", ["ff"]) == ("M9", 4)
    assert await store.find_carrier_key("c3", ["ff"]) is None
    assert await store.find_carrier_key("c1", []) is None
    # Many keys at once, in one query per 500: only the ones the carrier's ids hold.
    wanted = ["ff", "255", "nope"] + [f"x{i}" for i in range(1200)]
    assert await store.find_carrier_keys("c1", wanted) == {"ff": ("M1", 1), "255": ("M1", 1)}
    assert await store.find_carrier_keys("c2", wanted) == {"ff": ("M9", 4)}
    assert await store.find_carrier_keys("c1", []) == {}
    # The first key in the caller's order wins.
    await store.commit(Change(carrier_keys=[("c1", "0xff", "M2", 2)]))
    assert await store.find_carrier_key("c1", ["0xff", "ff"]) == ("M2", 2)
    # A key seen again (a later attempt) points at the new attempt.
    await store.commit(Change(carrier_keys=[("c1", "ff", "M1", 3)]))
    assert await store.find_carrier_key("c1", ["ff"]) == ("M1", 3)


async def test_due_ordering_and_limit(store: Store) -> None:
    times = {"D1": T0 + 30, "D2": T0 + 10, "D3": T0 + 20, "D4": T0 + 500, "D5": None}
    await store.commit_many(
        [Change(message=msg(k, state=State.HELD, next_attempt_at=t)) for k, t in times.items()]
    )
    assert [m.id for m in await store.due(T0 + 100, 10)] == ["D2", "D3", "D1"]
    assert [m.id for m in await store.due(T0 + 100, 2)] == ["D2", "D3"]
    assert [m.id for m in await store.due(T0 + 20, 10)] == ["D2", "D3"]
    assert await store.due(T0, 10) == []


async def test_held_for_number_and_unfinished(store: Store) -> None:
    await store.commit_many(
        [
            Change(message=msg("H1", state=State.HELD, destination_addr="111")),
            Change(message=msg("H2", state=State.SUBMITTED, destination_addr="111")),
            Change(message=msg("H3", state=State.HELD, destination_addr="222")),
            Change(message=msg("U1", state=State.ACCEPTED)),
            Change(message=msg("U2", state=State.SUBMITTING)),
            Change(message=msg("U3", state=State.DELIVERED)),
            Change(message=msg("U4", state=State.ACCEPTED)),
        ]
    )
    assert [m.id for m in await store.held_for_number("111")] == ["H1"]
    assert await store.held_for_number("333") == []
    assert [m.id for m in await store.unfinished(2)] == ["U1", "U2"]
    assert [m.id for m in await store.unfinished(10, after="U2")] == ["U4"]


async def test_pending_receipts_oldest_first_and_deletion(store: Store) -> None:
    await store.commit(Change(receipts=[receipt("acme", "R1"), receipt("other", "X1")]))
    await store.commit(Change(receipts=[receipt("acme", "R2", "UNDELIV")]))
    await store.commit(Change(receipts=[receipt("acme", "R3")]))
    pending = await store.pending_receipts("acme", 10)
    assert [p.row.message_id for p in pending] == ["R1", "R2", "R3"]
    assert pending[1].row == receipt("acme", "R2", "UNDELIV")
    assert [p.row.message_id for p in await store.pending_receipts("acme", 2)] == ["R1", "R2"]
    await store.delete_receipt(pending[0].seq)
    await store.commit(Change(delete_receipts=[pending[2].seq]))
    assert [p.row.message_id for p in await store.pending_receipts("acme", 10)] == ["R2"]
    assert [p.row.message_id for p in await store.pending_receipts("other", 10)] == ["X1"]


async def test_outbox_order_and_delete(store: Store) -> None:
    await store.commit(Change(events=[("a/1", '{"n":1}'), ("a/2", '{"n":2}')]))
    await store.commit(Change(events=[("a/3", '{"n":3}')]))
    box = await store.outbox(10)
    assert [(e.topic, e.payload) for e in box] == [
        ("a/1", '{"n":1}'),
        ("a/2", '{"n":2}'),
        ("a/3", '{"n":3}'),
    ]
    assert [e.seq for e in box] == sorted(e.seq for e in box)
    assert await store.outbox_count() == 3
    assert [e.topic for e in await store.outbox(2)] == ["a/1", "a/2"]
    await store.outbox_delete([box[0].seq, box[1].seq])
    await store.outbox_delete([])
    assert [e.topic for e in await store.outbox(10)] == ["a/3"]
    assert await store.outbox_count() == 1


async def test_suppression(store: Store) -> None:
    s1 = Suppression("111", "unknown_subscriber", T0, T0 + 100, "acme")
    s2 = Suppression("222", "manual", T0 + 1, T0 + 10, "")
    await store.suppression_add(s1)
    await store.suppression_add(s2)
    assert await store.suppressed("111", T0 + 50) == s1
    assert await store.suppressed("222", T0 + 50) is None  # expired
    assert await store.suppression_list(T0 + 5) == [s1, s2]
    assert await store.suppression_list(T0 + 50) == [s1]
    # Adding again replaces the entry.
    s1b = Suppression("111", "barred", T0 + 2, T0 + 200, "acme")
    await store.suppression_add(s1b)
    assert await store.suppressed("111", T0 + 150) == s1b
    assert await store.suppression_remove("111") is True
    assert await store.suppression_remove("111") is False
    assert await store.suppressed("111", T0 + 50) is None


async def test_soft_bounce_count_window(store: Store) -> None:
    await store.commit(
        Change(
            soft_bounce=[
                ("111", T0, "absent_subscriber"),
                ("111", T0 + 10, "memory_full"),
                ("111", T0 + 20, "absent_subscriber"),
                ("222", T0 + 20, "absent_subscriber"),
            ]
        )
    )
    assert await store.soft_bounce_count("111", T0) == 3
    assert await store.soft_bounce_count("111", T0 + 10) == 2
    assert await store.soft_bounce_count("111", T0 + 21) == 0
    assert await store.soft_bounce_count("333", T0) == 0


async def test_meta_and_unmatched(store: Store) -> None:
    assert await store.meta_get("id_floor") is None
    await store.meta_set("id_floor", "00AB")
    await store.meta_set("id_floor", "00CD")
    assert await store.meta_get("id_floor") == "00CD"
    await store.unmatched_receipt("c1", "dead", "repr", T0)
    rows = await store.query("SELECT carrier, message_id FROM unmatched_receipts")
    assert rows == [("c1", "dead")]


async def test_expire_finished(store: Store) -> None:
    await store.commit_many(
        [
            Change(
                message=msg("E1", state=State.DELIVERED, done_at=T0),
                carrier_keys=[("c1", "a1", "E1", 1), ("c2", "b1", "E1", 2)],
            ),
            Change(message=msg("E2", state=State.FAILED, done_at=T0 + 100)),
            Change(message=msg("E3", state=State.HELD), carrier_keys=[("c1", "a3", "E3", 1)]),
        ]
    )
    assert await store.expire_finished(T0 + 50) == 1
    assert await store.get("E1") is None
    assert await store.get("E2") is not None and await store.get("E3") is not None
    # The expired message's carrier ids go with it; the others stay.
    assert await store.find_carrier_key("c1", ["a1"]) is None
    assert await store.find_carrier_key("c2", ["b1"]) is None
    assert await store.find_carrier_key("c1", ["a3"]) == ("E3", 1)
    assert await store.expire_finished(T0 + 50) == 0


async def test_expire_records_removes_old_history_only(store: Store) -> None:
    await store.commit_many(
        [
            Change(
                soft_bounce=[
                    ("447700900001", T0, "absent_subscriber"),
                    ("447700900001", T0 + 100, "absent_subscriber"),
                ]
            )
        ]
    )
    await store.unmatched_receipt("c1", "old", "repr", T0)
    await store.unmatched_receipt("c1", "new", "repr", T0 + 100)
    await store.suppression_add(Suppression("447700900002", "unknown", T0 - 10, T0, "acme"))
    await store.suppression_add(Suppression("447700900003", "unknown", T0 - 10, T0 + 100, "acme"))
    removed = await store.expire_records(T0 + 50)
    assert removed == {"soft_bounces": 1, "unmatched_receipts": 1, "suppression": 1}
    assert await store.soft_bounce_count("447700900001", 0) == 1
    rows = await store.query("SELECT message_id FROM unmatched_receipts")
    assert rows == [("new",)]
    rows = await store.query("SELECT number FROM suppression")
    assert rows == [("447700900003",)]
    assert await store.expire_records(T0 + 50) == {
        "soft_bounces": 0,
        "unmatched_receipts": 0,
        "suppression": 0,
    }


async def test_query_with_question_mark_parameters(store: Store) -> None:
    await store.commit_many([Change(message=msg(f"Q{i}", account=f"a{i % 2}")) for i in range(5)])
    rows = await store.query(
        "SELECT account, COUNT(*) FROM messages WHERE created_at >= ? AND account != '?'"
        " GROUP BY account ORDER BY account",
        (T0,),
    )
    assert [(r[0], int(r[1])) for r in rows] == [("a0", 3), ("a1", 2)]


# ---------------------------------------------------------------- several instances


async def test_register_instance_numbers_are_unique_while_leased(store: Store) -> None:
    a = await store.register_instance("bb-a", T0, 30)
    b = await store.register_instance("bb-b", T0, 30)
    c = await store.register_instance("bb-c", T0, 30)
    assert len({a, b, c}) == 3
    assert all(0 <= n <= 1023 for n in (a, b, c))
    assert await store.renew_instance(a, T0 + 20, 30) is True
    assert await store.renew_instance(c, T0 + 20, 30) is True
    assert await store.renew_instance(999, T0 + 20, 30) is False  # never ours
    # b's lease (until T0+30) ran out: the lowest free number, b's, goes to the newcomer.
    d = await store.register_instance("bb-d", T0 + 40, 30)
    assert d == min(set(range(1024)) - {a, c})
    assert d == b
    # a and c renewed until T0+50: still theirs.
    e = await store.register_instance("bb-e", T0 + 41, 30)
    assert e not in {a, c, d}
    await store.unregister_instance(c)
    f = await store.register_instance("bb-f", T0 + 42, 30)
    assert f == c
    assert len({a, d, e, f}) == 4


async def test_claim_due_is_exclusive_until_the_lease_runs_out(store: Store) -> None:
    await store.commit_many(
        [Change(message=msg(f"C{i}", state=State.HELD, next_attempt_at=T0 + i)) for i in range(5)]
    )
    now = T0 + 10
    first = await store.claim_due("bb-a", now, 3, 30)
    assert [m.id for m in first] == ["C0", "C1", "C2"]
    second = await store.claim_due("bb-b", now, 10, 30)
    assert [m.id for m in second] == ["C3", "C4"]
    assert await store.claim_due("bb-c", now + 1, 10, 30) == []
    # The owner may claim its own messages again (renewing the lease).
    assert [m.id for m in await store.claim_due("bb-a", now + 1, 10, 30)] == ["C0", "C1", "C2"]
    # Released or committed messages are free for anyone.
    await store.release(["C0"])
    c1 = await store.get("C1")
    assert c1 is not None
    await store.commit(Change(message=attrs.evolve(c1, attempts=1, version=c1.version + 1)))
    assert [m.id for m in await store.claim_due("bb-c", now + 2, 10, 30)] == ["C0", "C1"]
    # bb-b's lease (until now+30) runs out: its messages can be taken over.
    assert [m.id for m in await store.claim_due("bb-c", now + 31, 10, 30)] == [
        "C0",
        "C1",
        "C2",
        "C3",
        "C4",
    ]
    assert await store.claim_due("bb-a", now + 32, 10, 30) == []
    # The plain due query ignores leases.
    assert len(await store.due(now, 10)) == 5


async def test_claim_receipts_is_exclusive(store: Store) -> None:
    await store.commit(Change(receipts=[receipt("acme", f"R{i}") for i in range(4)]))
    await store.commit(Change(receipts=[receipt("other", "X")]))
    a = await store.claim_receipts("acme", "bb-a", T0, 2, 30)
    b = await store.claim_receipts("acme", "bb-b", T0, 10, 30)
    assert [p.row.message_id for p in a] == ["R0", "R1"]
    assert [p.row.message_id for p in b] == ["R2", "R3"]
    assert await store.claim_receipts("acme", "bb-c", T0 + 1, 10, 30) == []
    assert [p.row.message_id for p in await store.claim_receipts("other", "bb-c", T0, 9, 30)] == [
        "X"
    ]
    # Delivered receipts are deleted; released ones go to the next claimant.
    await store.commit(Change(delete_receipts=[a[0].seq]))
    await store.release_receipts([a[1].seq])
    c = await store.claim_receipts("acme", "bb-c", T0 + 2, 10, 30)
    assert [p.row.message_id for p in c] == ["R1"]
    # Still stored until deleted: pending_receipts sees them whoever holds them.
    assert [p.row.message_id for p in await store.pending_receipts("acme", 10)] == [
        "R1",
        "R2",
        "R3",
    ]
    late = await store.claim_receipts("acme", "bb-c", T0 + 100, 10, 30)
    assert [p.row.message_id for p in late] == ["R1", "R2", "R3"]


async def test_claim_outbox_has_one_publisher_at_a_time(store: Store) -> None:
    await store.commit(Change(events=[("e/1", "1"), ("e/2", "2")]))
    assert [e.topic for e in await store.claim_outbox("bb-a", T0, 10, 30)] == ["e/1", "e/2"]
    assert await store.claim_outbox("bb-b", T0 + 1, 10, 30) == []
    assert [e.topic for e in await store.claim_outbox("bb-a", T0 + 20, 1, 30)] == ["e/1"]
    # bb-a renewed until T0+50; after that bb-b takes over.
    assert await store.claim_outbox("bb-b", T0 + 45, 10, 30) == []
    assert [e.topic for e in await store.claim_outbox("bb-b", T0 + 51, 10, 30)] == ["e/1", "e/2"]
    assert await store.claim_outbox("bb-a", T0 + 52, 10, 30) == []


async def test_wait_receipts_wakes_on_a_new_receipt(store: Store) -> None:
    waiter = asyncio.create_task(store.wait_receipts(60.0))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.commit(Change(events=[("no/receipt", "{}")]))
    await store.commit(Change(receipts=[receipt("acme", "W1")]))
    await asyncio.wait_for(waiter, 30.0)  # a guard against hanging, not a timing check
    assert [p.row.message_id for p in await store.pending_receipts("acme", 5)] == ["W1"]


async def test_claims_see_receipts_another_process_added(tmp_path: Path) -> None:
    """SQLite keeps an account's pending receipts in memory; a receipt written by
    another process on the same file (a `bounceback held cancel` while the proxy
    runs) is neither lost from the claims nor given a seq the proxy reuses."""
    path = tmp_path / "shared.db"
    proxy, other = SqliteStore(path, batch_delay=0), SqliteStore(path, batch_delay=0)
    await proxy.open()
    await other.open()
    try:
        await proxy.commit(Change(receipts=[receipt("acme", "M1")]))
        first = await proxy.claim_receipts("acme", "i1", T0, 10, 30.0)
        assert [p.row.message_id for p in first] == ["M1"]  # now served from memory
        await other.commit(Change(receipts=[receipt("acme", "M2")]))
        await proxy.commit(Change(receipts=[receipt("acme", "M3")]))  # no seq clash
        got = await proxy.claim_receipts("acme", "i1", T0, 10, 30.0)
        assert [p.row.message_id for p in got] == ["M1", "M2", "M3"]
        assert [p.seq for p in got] == sorted({p.seq for p in got})
        await proxy.commit(Change(delete_receipts=[p.seq for p in got]))
        assert await proxy.claim_receipts("acme", "i1", T0, 10, 30.0) == []
        assert await other.pending_receipts("acme", 10) == []
    finally:
        await other.close()
        await proxy.close()


async def test_expire_deletes_a_large_backlog_in_slices(tmp_path: Path) -> None:
    from bounceback.store import sqlite as store_module

    s = SqliteStore(tmp_path / "big.db", batch_delay=0)
    await s.open()
    try:
        n = store_module.EXPIRE_SLICE * 2 + 7
        done = [
            Change(message=msg(f"D{i:05d}", state=State.DELIVERED, done_at=T0), insert=True)
            for i in range(n)
        ]
        for c in done:
            assert c.message is not None
            c.carrier_keys.append(("c1", c.message.id.lower(), c.message.id, 1))
        live = Change(message=msg("LIVE"), insert=True, carrier_keys=[("c1", "k", "LIVE", 1)])
        soft = [("447700900001", T0, "absent_subscriber")] * n
        await s.commit_many([*done, live, Change(soft_bounce=soft)])
        commits = s.commits
        assert await s.expire_finished(T0 + 1) == n
        assert await s.expire_records(T0 + 1) == {
            "soft_bounces": n,
            "unmatched_receipts": 0,
            "suppression": 0,
        }
        assert s.commits == commits  # slices are plain statements, not group commits
        rows = await s.query("SELECT id FROM messages")
        assert rows == [("LIVE",)]
        assert await s.query("SELECT message_id FROM carrier_ids") == [("LIVE",)]
        assert await s.query("SELECT COUNT(*) FROM soft_bounces") == [(0,)]
    finally:
        await s.close()


def test_split_stale_follows_each_message_version_chain() -> None:
    from bounceback.store.sqlite import split_stale

    a0, b0 = msg("A"), msg("B")

    def up(m: Message, v: int) -> Change:
        return Change(message=attrs.evolve(m, version=v))

    batch = [
        [up(a0, 4)],  # follows the stored 3
        [up(a0, 4)],  # decided on 3 as well: stale
        [up(a0, 5), up(b0, 1)],  # follows the first; B is not stored: any start
        [up(b0, 3)],  # B is at 1 now: stale
        [Change(message=attrs.evolve(a0, version=0), insert=True)],  # inserts are not checked
        [up(b0, 2)],
    ]
    assert split_stale(batch, {"A": 3}) == ([0, 2, 4, 5], [1, 3])
    assert split_stale(batch[:1], {"A": 4}) == ([], [0])
