"""Store faults injected for real, without root: a full disk (SQLite's
`max_page_count`), a database another connection holds locked (`BEGIN EXCLUSIVE`),
a COMMIT that SQLite rolled back itself. Each asserts what the sender sees (an answer
within `submit_wait`, a temporary error while nothing can be stored), what the
operator sees (/readyz, metrics, one log line), that the proxy recovers by itself, and
that every message answered ESME_ROK reaches exactly one final receipt."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bounceback.config.settings import load_config
from bounceback.core.model import Message
from bounceback.gateway.shell import Gateway
from bounceback.store.sqlite import Change, SqliteStore, StoreUnavailable, _immediate
from harness import gateway, simulator, wait_until, write_config
from peers import NodeSender
from smppcodecs.constants import CommandStatus as S
from smpplib_peer import SmpplibSender, receipt_fields

BIG = 1_073_741_823  # SQLite's default max_page_count


def fault_config(tmp: Path, carrier_port: int) -> Path:
    path = write_config(
        tmp,
        carrier_port,
        extra='[metrics]\nhost = "127.0.0.1"\nport = 0\n',
    )
    text = path.read_text()
    text = text.replace("submit_wait = 3.0\n", "submit_wait = 1.5\n")
    text = text.replace("batch_delay = 0.001\n", "batch_delay = 0.001\nwrite_timeout = 0.3\n")
    path.write_text(text)
    return path


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@contextlib.contextmanager
def loop_problems() -> Iterator[list[dict[str, Any]]]:
    """What the event loop's exception handler is told (unretrieved task errors...)."""
    problems: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: problems.append(ctx))
    try:
        yield problems
        gc.collect()
    finally:
        loop.set_exception_handler(old)


def make_message(i: int) -> Message:
    now = time.time()
    return Message(
        id=f"{i:016X}",
        account="acme",
        source_addr="Acme",
        destination_addr=f"4477009{i:05d}",
        pdu=b"x" * 200,
        registered_delivery=1,
        created_at=now,
        deadline=now + 3600,
        deadline_is_validity=False,
        submit_date=now,
        updated_at=now,
    )


async def submit(s: SmpplibSender, number: str) -> tuple[int, str]:
    seq = await asyncio.to_thread(s.submit, number, b"fault")
    status, mid = await asyncio.to_thread(s.wait_resp, seq)
    return int(status), str(mid)


# ================================================================ the store alone


async def test_a_full_disk_is_a_fault_the_store_gets_over_by_itself(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", batch_delay=0.0, write_timeout=0.2)
    store.PROBE_INTERVAL = 0.05
    await store.open()
    try:
        conn = store._wconn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(StoreUnavailable) as err:
            for i in range(200):
                await store.commit(Change(message=make_message(i), insert=True))
        assert err.value.kind == "full"
        assert store.fault is not None and "full" in store.fault
        # The probe keeps failing while there is no room...
        await asyncio.sleep(0.3)
        assert store.fault is not None and store.write_errors["full"] >= 2
        # ... and the fault ends by itself once there is.
        conn.execute(f"PRAGMA max_page_count={BIG}")
        await wait_until(lambda: store.fault is None)
        await store.commit(Change(message=make_message(999), insert=True))
        assert await store.get(f"{999:016X}") is not None
    finally:
        await store.close()


async def test_a_locked_database_never_blocks_the_event_loop(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", batch_delay=0.0, write_timeout=0.3)
    await store.open()
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        with pytest.raises(StoreUnavailable) as err:
            await store.commit(Change(message=make_message(1), insert=True))
        t.cancel()
        assert err.value.kind == "locked" and store.fault == "database is locked"
        # The loop kept running while the write waited for the lock (a 5 s busy
        # timeout inside SQLite would have frozen it: no tick at all).
        assert ticks >= 3
        # While failing, a write does not wait again: it fails at once.
        with pytest.raises(StoreUnavailable):
            await store.commit(Change(message=make_message(2), insert=True))
        other.execute("ROLLBACK")
        await wait_until(lambda: store.fault is None)
        await store.commit(Change(message=make_message(3), insert=True))
    finally:
        other.close()
        await store.close()


async def test_a_new_message_not_written_in_time_is_never_written(tmp_path: Path) -> None:
    """The sender is refused when its message's write does not happen in time; the
    write must then not happen later either (the sender will send it again)."""
    store = SqliteStore(tmp_path / "s.db", batch_delay=0.0, write_timeout=5.0)
    await store.open()
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(TimeoutError):
            await store.commit(Change(message=make_message(7), insert=True), timeout=0.1)
        other.execute("ROLLBACK")
        await store.commit(Change(message=make_message(8), insert=True))
        assert await store.get(f"{8:016X}") is not None
        assert await store.get(f"{7:016X}") is None
    finally:
        other.close()
        await store.close()


class _CommitRolledBack:
    """A connection whose COMMIT fails the way SQLITE_FULL can: SQLite has already
    rolled the transaction back when the error reaches us."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            self.conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)


def test_a_failed_commit_reports_its_own_error_not_the_rollbacks(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    with (
        pytest.raises(sqlite3.OperationalError, match="database or disk is full"),
        _immediate(_CommitRolledBack(conn)),  # type: ignore[arg-type]
    ):
        conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    # An error inside the transaction still rolls it back.
    with pytest.raises(ZeroDivisionError), _immediate(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        _ = 1 / 0
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


async def test_the_wal_stays_bounded_under_writes_that_never_pause(tmp_path: Path) -> None:
    """A passive checkpoint cannot catch up with a writer that never pauses; past
    WAL_LIMIT_FRAMES a RESTART checkpoint lets the WAL start over. The same writes
    with and without that limit, in the same run."""

    class Small(SqliteStore):
        CHECKPOINT_PAGES = 50
        WAL_LIMIT_FRAMES = 200
        JOURNAL_SIZE_LIMIT = 200 * 4096

    class Unbounded(Small):
        WAL_LIMIT_FRAMES = 10**9  # passive checkpoints only, as before

    async def peak_wal(cls: type[SqliteStore], name: str) -> tuple[int, SqliteStore]:
        store = cls(tmp_path / name, batch_delay=0.0)
        await store.open()
        peak = 0
        try:
            for i in range(4000):
                await store.commit(Change(message=make_message(i), insert=True))
                if i % 50 == 0:
                    peak = max(peak, store.wal_size())
        finally:
            await store.close()
        return peak, store

    unbounded, _ = await peak_wal(Unbounded, "u.db")
    bounded, store = await peak_wal(Small, "b.db")
    assert store.checkpoints.get("RESTART", 0) >= 1
    assert unbounded > 4 * Small.JOURNAL_SIZE_LIMIT  # the problem is real here
    assert bounded < unbounded / 2


async def test_checkpoints_run_on_a_timer_too(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", batch_delay=0.0)
    await store.open()
    try:
        await store.commit(Change(message=make_message(1), insert=True))  # far below 1000 pages
        await wait_until(lambda: store.checkpoints.get("PASSIVE", 0) >= 1)
    finally:
        await store.close()


# ================================================================ through the proxy


async def test_disk_full_refuses_new_messages_and_recovers_without_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    with loop_problems() as problems:
        async with (
            simulator({"receipt_delay": 0.05}) as sim,
            gateway(load_config(fault_config(tmp_path, sim.port or 0))) as gw,
        ):
            await wait_until(lambda: all(link.bound for link in gw.links.values()))
            assert gw.metrics is not None
            mport = gw.metrics.port
            s = SmpplibSender("127.0.0.1", gw.port)
            assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
            s.listen()
            accepted: list[str] = []
            for i in range(5):
                status, mid = await submit(s, f"4477009010{i:02d}")
                assert status == 0
                accepted.append(mid)
            await asyncio.to_thread(s.wait_delivered, 5, 15.0)
            conn = gw.store._wconn  # type: ignore[attr-defined]
            conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
            refused = 0
            for i in range(200):
                status, mid = await submit(s, f"4477009011{i:02d}")
                if status == 0:
                    accepted.append(mid)
                    continue
                assert (status, mid) == (S.ESME_RMSGQFUL, "")
                refused += 1
                if refused == 5:
                    break
            assert refused == 5
            # What the operator sees while it lasts.
            assert gw.store.fault is not None
            code, body = await asyncio.to_thread(http_get, mport, "/readyz")
            assert code == 503 and "store cannot write" in body and "full" in body
            _, text = await asyncio.to_thread(http_get, mport, "/metrics")
            assert "bounceback_store_writable 0.0" in text
            assert 'bounceback_store_write_errors_total{kind="full"}' in text
            assert 'bounceback_fault_events_total{what="store_refusals"}' in text
            # Space comes back: new messages are accepted again, no restart.
            conn.execute(f"PRAGMA max_page_count={BIG}")
            await wait_until(lambda: gw.store.fault is None)
            status, mid = await submit(s, "447700901200")
            assert status == 0
            accepted.append(mid)
            code, _ = await asyncio.to_thread(http_get, mport, "/readyz")
            assert code == 200
            # Every message answered ESME_ROK has exactly one final receipt.
            got = await asyncio.to_thread(s.wait_delivered, len(accepted), 15.0)
            ids = [receipt_fields(p)["id"] for p in got]
            assert sorted(ids) == sorted(accepted)
            await asyncio.sleep(0.3)
            assert len(s.delivered) == len(accepted)  # and no second one
            rows = await gw.store.query("SELECT state, COUNT(*) FROM messages GROUP BY state")
            assert dict(rows) == {"delivered": len(accepted)}
            await asyncio.to_thread(s.close)
    assert problems == []
    assert caplog.text.count("store cannot write (full)") == 1  # once, not a flood
    # The refusals: logged the 1st (then the 101st, ...) time, with their count.
    refusals = [r.getMessage() for r in caplog.records if "ESME_RMSGQFUL" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].endswith("(1 so far)"), refusals
    assert "cannot rollback" not in caplog.text


async def test_a_locked_store_answers_every_submit_in_time_and_strands_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    with loop_problems() as problems:
        async with simulator({"receipt_delay": 0.05}) as sim:
            cfg = load_config(fault_config(tmp_path, sim.port or 0))
            async with gateway(cfg) as gw:
                await wait_until(lambda: all(link.bound for link in gw.links.values()))
                s = SmpplibSender("127.0.0.1", gw.port)
                assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
                s.listen()
                status, first = await submit(s, "447700902000")
                assert status == 0
                await asyncio.to_thread(s.wait_delivered, 1, 15.0)
                # A message on its way to the carrier when another process locks the
                # database: the carrier's answer cannot be written.
                link = gw.links["sim"]
                gate = asyncio.Event()
                submit_original = link.submit

                async def gated(pdu: Any, timeout: float | None = None) -> Any:
                    await gate.wait()
                    return await submit_original(pdu, timeout)

                link.submit = gated  # type: ignore[method-assign]
                pending = asyncio.create_task(submit(s, "447700902001"))
                await wait_until(lambda: gw.counters.get("accepted", 0) >= 2)
                other = sqlite3.connect(cfg.store.path, isolation_level=None)
                other.execute("BEGIN EXCLUSIVE")
                gate.set()
                # The sender hears ESME_ROK: the message is stored and the carrier has it.
                status, second = await pending
                assert status == 0 and second
                assert gw.counters.get("carrier_answers_deferred", 0) == 1
                # Every new submit is answered while the lock is still held (each within
                # submit_wait: the answers come although the lock is never let go).
                for i in range(5):
                    assert await submit(s, f"44770090210{i}") == (S.ESME_RMSGQFUL, "")
                # Its receipt waits until the carrier answer is written.
                await wait_until(lambda: gw.counters.get("receipts_deferred", 0) >= 1)
                other.execute("ROLLBACK")
                other.close()
                got = await asyncio.to_thread(s.wait_delivered, 2, 15.0)
                assert [receipt_fields(p)["id"] for p in got] == [first, second]
                msg = await gw.store.get(second)
                assert msg is not None and msg.state.value == "delivered"
                assert msg.carrier_message_id != ""
                assert gw.counters.get("carrier_answers_written", 0) == 1
                status, _third = await submit(s, "447700902200")
                assert status == 0
                await asyncio.to_thread(s.wait_delivered, 3, 15.0)
                rows = await gw.store.query("SELECT state, COUNT(*) FROM messages GROUP BY state")
                assert dict(rows) == {"delivered": 3}
                await asyncio.to_thread(s.close)
    assert problems == []
    assert "cannot rollback" not in caplog.text
    assert "Task exception was never retrieved" not in caplog.text
    assert caplog.text.count("store cannot write (locked)") == 1


async def test_a_task_that_fails_is_counted_and_logged_not_left_unretrieved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    async with simulator({}) as sim:
        gw = Gateway(load_config(fault_config(tmp_path, sim.port or 0)))

        async def broken() -> None:
            raise RuntimeError("a bug")

        with loop_problems() as problems:
            t = gw.ctx.spawn(broken())
            with contextlib.suppress(RuntimeError):
                await t
            await asyncio.sleep(0)
        assert problems == []
        assert gw.counters["task_failures"] == 1
        assert "broken failed" in caplog.text and "RuntimeError: a bug" in caplog.text


@pytest.mark.node
async def test_cancel_while_the_store_cannot_write_is_answered_cancelfail(tmp_path: Path) -> None:
    """A request that changes a message (cancel_sm) during a store fault gets a clear
    refusal, not silence; once the store writes it goes through."""
    scen = {"rules": [{"number": "447700903000", "outcomes": ["no_receipt"]}]}
    async with simulator(scen) as sim:
        cfg = load_config(fault_config(tmp_path, sim.port or 0))
        async with gateway(cfg) as gw, NodeSender() as sender:
            assert (await sender.connect(gw.port, password="acme-pw"))["status"] == 0
            resp = await sender.submit("447700903000", "cancel me")
            assert resp["status"] == 0
            mid = resp["message_id"]
            other = sqlite3.connect(cfg.store.path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            cancel = await sender.cancel(mid, destination_addr="447700903000")
            assert cancel["status"] == S.ESME_RCANCELFAIL
            other.execute("ROLLBACK")
            other.close()
            await wait_until(lambda: gw.store.fault is None)
            cancel = await sender.cancel(mid, destination_addr="447700903000")
            assert cancel["status"] == 0
            msg = await gw.store.get(mid)
            assert msg is not None and msg.state.value == "cancelled"
