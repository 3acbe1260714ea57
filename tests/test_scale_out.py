"""Several instances on one PostgreSQL store share the work promptly: receipts for a
receiver bound to another instance, carrier receipts that reach the instance that did
not submit the message, suppression changes, and races on one message."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from bounceback.config.settings import load_config
from bounceback.core import engine
from bounceback.core.model import State
from bounceback.gateway.shell import Gateway
from bounceback.store.postgres import PgStore
from bounceback.store.sqlite import Suppression
from harness import (
    FAST_RETRY,
    ProxyProcess,
    bind_sender,
    free_port,
    retry_toml,
    simulator,
    wait_until,
    write_config,
)
from smppcodecs.constants import CommandStatus as S
from smppcodecs.receipt import build_receipt_pdu
from smpplib_peer import SmpplibSender, receipt_fields

pytest_plugins = ["pg_fixture"]


def instance_config(
    tmp: Path,
    name: str,
    carrier_port: int,
    url: str,
    port: int = 0,
    lease: float = 5.0,
    retry: str = FAST_RETRY,
) -> Path:
    """The configuration of instance `name` on the shared store at `url`."""
    d = tmp / name
    d.mkdir(exist_ok=True)
    cfg = write_config(d, carrier_port, port=port, retry=retry)
    text = cfg.read_text().replace(
        '[store]\npath = "proxy.db"', f'[store]\nurl = "{url}"\nlease_seconds = {lease}'
    )
    text = text.replace("[server]\n", f'[server]\ninstance_id = "{name}"\n', 1)
    cfg.write_text(text)
    return cfg


class TimedSender(SmpplibSender):
    """Records when each receipt (by the id it names) arrived."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.arrived: dict[str, float] = {}

    def _received(self, pdu: Any) -> int:
        self.arrived.setdefault(receipt_fields(pdu)["id"], time.time())
        return super()._received(pdu)


async def bind(port: int, kind: str) -> TimedSender:
    return await bind_sender(port, TimedSender, kind=kind)


async def submit(s: SmpplibSender, numbers: list[str]) -> dict[str, str]:
    """Submit to each number; our message id -> number."""
    ids: dict[str, str] = {}
    for n in numbers:
        seq = await asyncio.to_thread(s.submit, n)
        status, mid = await asyncio.to_thread(s.wait_resp, seq)
        assert status == 0, hex(status)
        ids[mid] = n
    return ids


@contextlib.asynccontextmanager
async def two_gateways(
    tmp: Path, carrier_port: int, url: str, retry: str = FAST_RETRY
) -> AsyncIterator[list[Gateway]]:
    """Instances a and b in this process, on one store, both bound to the carrier."""
    gws: list[Gateway] = []
    try:
        for name in ("a", "b"):
            gw = Gateway(load_config(instance_config(tmp, name, carrier_port, url, retry=retry)))
            await gw.start()
            gws.append(gw)
        await wait_until(lambda: all(lk.bound for g in gws for lk in g.links.values()), 20)
        yield gws
    finally:
        for gw in gws:
            await gw.stop()


async def test_receipts_reach_a_receiver_bound_to_the_other_instance(
    tmp_path: Path, pg_url: str
) -> None:
    """A transmitter on instance a, the account's only receiver on instance b: every
    receipt reaches b without a new bind (before: they waited for one)."""
    n = 20
    # Note each sender receipt row's creation time (the store's clock is ours).
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE receipt_log (message_id TEXT, created_at FLOAT8);"
            " CREATE FUNCTION log_receipt() RETURNS trigger AS $$ BEGIN"
            " INSERT INTO receipt_log VALUES (NEW.message_id, NEW.created_at); RETURN NEW;"
            " END $$ LANGUAGE plpgsql;"
            " CREATE TRIGGER log_receipt AFTER INSERT ON sender_receipts"
            " FOR EACH ROW EXECUTE FUNCTION log_receipt()"
        )
        # The carrier sends each receipt on the bind that submitted it: all to a.
        async with simulator({"receipt_delay": 0.05, "receipt_session": "same"}) as sim:
            pa, pb = free_port(), free_port()
            a = ProxyProcess(instance_config(tmp_path, "a", sim.port or 0, pg_url, pa))
            b = ProxyProcess(instance_config(tmp_path, "b", sim.port or 0, pg_url, pb))
            await asyncio.to_thread(a.start)
            await asyncio.to_thread(b.start)
            tx = rx = None
            try:
                tx = await bind(pa, "transmitter")
                rx = await bind(pb, "receiver")
                ids = await submit(tx, [f"4477009600{i:02d}" for i in range(n)])
                try:
                    await wait_until(lambda: len(rx.arrived) >= n, timeout=60)
                except TimeoutError:
                    raise AssertionError(f"{len(rx.arrived)} of {n} receipts reached b") from None
                assert sorted(rx.arrived) == sorted(ids)
                rows = await conn.fetch("SELECT message_id, created_at FROM receipt_log")
                created = {str(r[0]): float(r[1]) for r in rows}
                lat = sorted(rx.arrived[m] - created[m] for m in ids)
                print(
                    f"\nreceipt row created on a -> delivered on b, {n} receipts:"
                    f" p50 {statistics.median(lat) * 1000:.1f} ms,"
                    f" max {lat[-1] * 1000:.1f} ms"
                )
                # Each delivered receipt is deleted (once answered), none is sent twice.
                end = time.monotonic() + 30
                while await conn.fetchval("SELECT COUNT(*) FROM sender_receipts"):
                    assert time.monotonic() < end, "delivered receipts are still stored"
                    await asyncio.sleep(0.05)
                assert len(rx.delivered) == n
            finally:
                for s in (tx, rx):
                    if s is not None:
                        await asyncio.to_thread(s.close)
                await asyncio.to_thread(a.terminate)
                await asyncio.to_thread(b.terminate)
    finally:
        await conn.close()


async def test_a_receipt_at_the_other_instance_is_matched_on_notification(
    tmp_path: Path, pg_url: str
) -> None:
    """The carrier sends every receipt on the other instance's bind, some even before
    the submit_sm_resp (the carrier id is not stored yet there): each is matched when
    the submitting instance's commit is notified, not by the housekeeping fallback."""
    first = [f"4477009610{i:02d}" for i in range(6)]
    later = [f"4477009611{i:02d}" for i in range(6)]
    scen = {
        "receipt_delay": 0.05,
        "receipt_session": "other",
        "rules": [{"number": x, "outcomes": ["receipt_first"]} for x in first],
    }
    async with simulator(scen) as sim, two_gateways(tmp_path, sim.port or 0, pg_url) as gws:
        a, b = gws
        s = await bind(a.port, "transceiver")
        try:
            ids = await submit(s, first + later)

            async def final() -> int:
                rows = await a.store.query(
                    "SELECT COUNT(*) FROM messages WHERE state = 'delivered'", ()
                )
                return int(rows[0][0])

            end = time.monotonic() + 30
            while await final() < len(ids):
                assert time.monotonic() < end, "not every message was delivered"
                await asyncio.sleep(0.05)
            # From the receipt's sending (with the submission, for receipt_first) to
            # the decision on b.
            sent = {r.destination: r.time for r in sim.submissions}
            lat = []
            for mid, number in ids.items():
                m = await a.store.get(mid)
                assert m is not None and m.done_at is not None
                if number in first:
                    lat.append(m.done_at - sent[number])
            lat.sort()
            print(
                f"\nreceipt sent before the submit_sm_resp -> decided on the other instance:"
                f" p50 {statistics.median(lat) * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
            )
            await wait_until(lambda: len(s.arrived) >= len(ids), timeout=30)
            assert sorted(s.arrived) == sorted(ids)
        finally:
            await asyncio.to_thread(s.close)
        # Every receipt went to b; a matched none.
        assert a.counters.get("receipts_matched", 0) == 0
        assert b.counters.get("receipts_matched", 0) == len(ids)
        early = b.counters.get("receipts_early", 0)
        print(f"\nreceipts parked on b before the carrier id was visible: {early}")
        assert early >= 1
        notified = b.counters.get("receipts_rematched_notified", 0)
        looked_up = b.counters.get("receipts_rematched_lookup", 0)
        print(f"matched from the notice: {notified}, by the store lookup after it: {looked_up}")
        # Each parked receipt was matched by the notice of a's commit, or (when that
        # commit was slower than the wait) by the one lookup after it; none by the
        # housekeeping fallback.
        assert notified >= 1
        assert notified + looked_up == early
        assert b.counters.get("receipts_rematched_polled", 0) == 0
        assert b.counters.get("receipts_unmatched", 0) == 0


async def test_a_suppression_written_elsewhere_applies_at_once(tmp_path: Path, pg_url: str) -> None:
    """`bounceback suppression add` (the store, from outside) reaches a running
    instance by notification, and so does its removal."""
    number = "447700962000"
    async with (
        simulator({"receipt_delay": 0.05}) as sim,
        two_gateways(tmp_path, sim.port or 0, pg_url) as gws,
    ):
        b = gws[1]
        s = await bind(b.port, "transceiver")
        cli = PgStore(pg_url, pool_min=1, pool_max=2)
        await cli.open()
        try:
            now = time.time()
            await cli.suppression_add(Suppression(number, "manual", now, now + 3600, ""))
            added = time.monotonic()
            await wait_until(lambda: number in b.ctx.suppressed, timeout=30, step=0.001)
            took = (time.monotonic() - added) * 1000
            print(f"\nsuppression committed -> applied on the other instance: {took:.1f} ms")
            assert b.counters.get("suppression_notified", 0) >= 1
            seq = await asyncio.to_thread(s.submit, number)
            status, _ = await asyncio.to_thread(s.wait_resp, seq)
            assert status == S.ESME_RINVDSTADR
            assert await cli.suppression_remove(number)
            await wait_until(lambda: number not in b.ctx.suppressed, timeout=30)
            seq = await asyncio.to_thread(s.submit, number)
            status, _ = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0
        finally:
            await cli.close()
            await asyncio.to_thread(s.close)


async def test_a_receipt_for_an_older_message_is_looked_up_once(
    tmp_path: Path, pg_url: str
) -> None:
    """Receipts for messages whose carrier ids neither instance holds in memory any
    more (older messages: the notices were long ago, or before a restart) wait briefly
    for a notice that does not come, then are found by one store lookup per carrier
    and decided once each, on whichever instance they reach."""
    numbers = [f"4477009650{i:02d}" for i in range(6)]
    async with (
        simulator({"default": ["no_receipt"]}) as sim,
        two_gateways(tmp_path, sim.port or 0, pg_url) as gws,
    ):
        a, b = gws
        s = await bind(a.port, "transmitter")
        try:
            ids = await submit(s, numbers)
        finally:
            await asyncio.to_thread(s.close)
        sim_id = {r.destination: r.message_id for r in sim.submissions}
        for gw in gws:  # forget every carrier id and message held in memory
            gw.receipts.keys.clear()
            gw.path.cache.clear()
        reads = 0
        find_many = b.store.find_carrier_keys

        async def counted(carrier: str, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
            nonlocal reads
            reads += 1
            return await find_many(carrier, keys)

        b.store.find_carrier_keys = counted  # type: ignore[method-assign]
        receipts = [
            build_receipt_pdu(
                sequence_number=1,
                source_addr=n,
                destination_addr="Acme",
                message_id=str(sim_id[n]),
                stat="DELIVRD",
                err="000",
                submit_date=datetime.now(),
                done_date=datetime.now(),
            )
            for n in numbers
        ]
        answers = await asyncio.gather(*(b.on_carrier_deliver("sim", r) for r in receipts))
        assert answers == [0] * len(numbers)

        async def delivered() -> int:
            rows = await a.store.query(
                "SELECT COUNT(*) FROM messages WHERE state = 'delivered'", ()
            )
            return int(rows[0][0])

        end = time.monotonic() + 30
        while await delivered() < len(ids):
            assert time.monotonic() < end, "not every older message was delivered"
            await asyncio.sleep(0.05)
        assert b.counters.get("receipts_early", 0) == len(numbers)
        assert b.counters.get("receipts_rematched_lookup", 0) == len(numbers)
        assert b.counters.get("receipts_matched", 0) == len(numbers)
        assert reads == 1  # one lookup for the six, however they arrived
        rows = await a.store.query("SELECT COUNT(*) FROM sender_receipts", ())
        assert int(rows[0][0]) == len(numbers)


# The rival of a DELIVRD receipt: (its outcome's state, the sender receipt's stat).
RIVALS = {"receipt": (State.FAILED, "UNDELIV"), "cancel": (State.CANCELLED, "DELETED")}


@pytest.mark.parametrize("rival", sorted(RIVALS))
async def test_two_instances_race_on_one_message_one_outcome(
    tmp_path: Path, pg_url: str, rival: str
) -> None:
    """A DELIVRD receipt reaches one instance while, at the same instant, the other
    gets a hard UNDELIV receipt for the same message (or cancels it), for 50 messages
    (each instance gets the DELIVRD of half of them): each message ends in exactly one
    final state, with one sender receipt that says that state, written once (no
    update lost or applied twice)."""
    numbers = [f"4477009630{i:02d}" for i in range(50)]
    async with (
        simulator({"default": ["no_receipt"]}) as sim,
        two_gateways(tmp_path, sim.port or 0, pg_url) as gws,
    ):
        a, b = gws
        s = await bind(a.port, "transmitter")  # no receiver: receipts stay stored
        try:
            ids = await submit(s, numbers)
        finally:
            await asyncio.to_thread(s.close)
        sim_id = {r.destination: r.message_id for r in sim.submissions}
        carrier_id = {mid: str(sim_id[n]) for mid, n in ids.items()}
        version: dict[str, int] = {}
        for mid in ids:
            m = await a.store.get(mid)
            assert m is not None and m.state == State.SUBMITTED
            version[mid] = m.version

        def receipt(mid: str, stat: str, err: str) -> Any:
            return build_receipt_pdu(
                sequence_number=1,
                source_addr=ids[mid],
                destination_addr="Acme",
                message_id=carrier_id[mid],
                stat=stat,
                err=err,
                submit_date=datetime.now(),
                done_date=datetime.now(),
            )

        async def deliver(gw: Gateway, mid: str) -> None:
            assert await gw.on_carrier_deliver("sim", receipt(mid, "DELIVRD", "000")) == 0

        async def other(gw: Gateway, mid: str) -> None:
            if rival == "receipt":
                assert await gw.on_carrier_deliver("sim", receipt(mid, "UNDELIV", "001")) == 0
            else:
                await gw.process(mid, engine.Cancel(time.time()))

        await asyncio.gather(
            *(
                job
                for i, mid in enumerate(ids)
                for job in (deliver((a, b)[i % 2], mid), other((b, a)[i % 2], mid))
            )
        )
        stored = {
            str(r[0]): (str(r[1]), int(r[2]))
            for r in await a.store.query("SELECT id, state, version FROM messages", ())
        }
        receipts: dict[str, list[str]] = {}
        for mid, stat in await a.store.query("SELECT message_id, stat FROM sender_receipts", ()):
            receipts.setdefault(str(mid), []).append(str(stat))
        rival_state, rival_stat = RIVALS[rival]
        outcomes: dict[str, int] = {}
        for mid in ids:
            state, ver = stored[mid]
            assert state in (State.DELIVERED.value, rival_state.value), (mid, state)
            want = "DELIVRD" if state == State.DELIVERED.value else rival_stat
            assert receipts.get(mid) == [want], (mid, state, receipts.get(mid))
            assert ver == version[mid] + 1, (mid, ver, version[mid])
            outcomes[state] = outcomes.get(state, 0) + 1
        stale = a.counters.get("stale_decisions", 0) + b.counters.get("stale_decisions", 0)
        print(f"\n{rival}: outcomes of 50 races: {outcomes}, refused as stale: {stale}")


async def test_a_receipt_and_a_due_retry_on_two_instances_one_outcome(
    tmp_path: Path, pg_url: str
) -> None:
    """A held message's retry falls due on one instance at the instant the other gets
    the carrier's late DELIVRD for the first attempt (a carrier that reported a
    temporary failure and then delivered from its own queue), for 40 messages, each
    instance on either side of half of them. Whichever wins, each message ends
    delivered with exactly one DELIVRD sender receipt, and no write is lost: a message
    that says one attempt was submitted once, one that says two was submitted twice."""
    numbers = [f"4477009640{i:02d}" for i in range(40)]
    # The test makes the retries fall due itself: the schedule's own are an hour away,
    # so every message is still held when the races start, however slow the machine.
    hour = retry_toml(max_age=7200.0, absent_subscriber=(3600.0, 1.0, 3600.0))
    async with (
        simulator({"receipt_delay": 0.02, "default": ["absent", "no_receipt"]}) as sim,
        two_gateways(tmp_path, sim.port or 0, pg_url, retry=hour) as gws,
    ):
        a, b = gws
        s = await bind(a.port, "transmitter")  # no receiver: receipts stay stored
        try:
            ids = await submit(s, numbers)
        finally:
            await asyncio.to_thread(s.close)

        async def held() -> dict[str, Any]:
            rows = await a.store.query("SELECT id FROM messages WHERE state = 'held'", ())
            return {str(r[0]): None for r in rows}

        end = time.monotonic() + 30
        while len(await held()) < len(ids):  # the first attempt's UNDELIV (absent)
            states = "SELECT state, COUNT(*) FROM messages GROUP BY state"
            assert time.monotonic() < end, await a.store.query(states, ())
            await asyncio.sleep(0.05)
        first_id = {r.destination: r.message_id for r in sim.submissions}
        due_at: dict[str, float] = {}
        for mid in ids:
            m = await a.store.get(mid)
            assert m is not None and m.state == State.HELD and m.next_attempt_at is not None
            assert m.attempts == 1
            due_at[mid] = m.next_attempt_at

        def late_delivrd(mid: str) -> Any:
            return build_receipt_pdu(
                sequence_number=1,
                source_addr=ids[mid],
                destination_addr="Acme",
                message_id=str(first_id[ids[mid]]),
                stat="DELIVRD",
                err="000",
                submit_date=datetime.now(),
                done_date=datetime.now(),
            )

        async def receipt(gw: Gateway, mid: str) -> None:
            assert await gw.on_carrier_deliver("sim", late_delivrd(mid)) == 0

        async def retry(gw: Gateway, mid: str) -> None:
            await gw.process(mid, engine.Due(due_at[mid] + 1, frozenset()))

        await asyncio.gather(
            *(
                job
                for i, mid in enumerate(ids)
                for job in (receipt((a, b)[i % 2], mid), retry((b, a)[i % 2], mid))
            )
        )

        async def settled() -> bool:
            rows = await a.store.query(
                "SELECT COUNT(*) FROM messages WHERE state = 'delivered'", ()
            )
            return int(rows[0][0]) == len(ids)

        end = time.monotonic() + 30
        while not await settled():
            assert time.monotonic() < end, "not every message ended delivered"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a second attempt's submit still on its way would show
        submitted = Counter(r.destination for r in sim.submissions)
        receipts: dict[str, list[str]] = {}
        for mid, stat in await a.store.query("SELECT message_id, stat FROM sender_receipts", ()):
            receipts.setdefault(str(mid), []).append(str(stat))
        winners: Counter[str] = Counter()
        for mid, number in ids.items():
            m = await a.store.get(mid)
            assert m is not None and m.state == State.DELIVERED, (mid, m)
            assert receipts.get(mid) == ["DELIVRD"], (mid, receipts.get(mid))
            assert m.attempts in (1, 2), (mid, m.attempts)
            assert submitted[number] == m.attempts, (mid, submitted[number], m.attempts)
            winners["receipt" if m.attempts == 1 else "retry"] += 1
        stale = a.counters.get("stale_decisions", 0) + b.counters.get("stale_decisions", 0)
        print(f"\nreceipt vs due retry, 40 races: first {dict(winners)}, refused as stale: {stale}")


def add_gamma(config: str) -> None:
    path = Path(config)
    path.write_text(
        path.read_text() + '\n[[accounts]]\nsystem_id = "gamma"\npassword = "gamma-pw"\n'
    )


async def test_a_reload_on_one_instance_reloads_every_instance(tmp_path: Path, pg_url: str) -> None:
    """The files of both instances gain an account; instance a is told to reload
    (SIGHUP or POST /v1/reload end in reload_file): b hears of it through the store's
    notification and reloads its own file within a second."""
    async with simulator() as sim, two_gateways(tmp_path, sim.port or 0, pg_url) as gws:
        a, b = gws
        for gw in gws:
            add_gamma(gw.cfg.source)
        assert b.cfg.account("gamma") is None
        started = time.monotonic()
        changed, waiting = await a.reload_file()
        assert (changed, waiting) == (["accounts"], [])
        await wait_until(lambda: b.cfg.account("gamma") is not None, timeout=10)
        print(f"\nreload seen by the other instance after {time.monotonic() - started:.3f} s")


async def test_a_carrier_paused_on_one_instance_is_paused_on_every_instance(
    tmp_path: Path, pg_url: str
) -> None:
    async with simulator() as sim, two_gateways(tmp_path, sim.port or 0, pg_url) as gws:
        a, b = gws
        assert await a.pause("sim")
        await wait_until(lambda: "sim" in b.dispatch.paused, timeout=10)
        assert await b.resume("sim")
        await wait_until(lambda: "sim" not in a.dispatch.paused, timeout=10)
        assert not await a.pause("nope")


async def test_the_listening_connection_is_opened_again(tmp_path: Path, pg_url: str) -> None:
    """The connection that hears the notifications is cut: the instance listens again
    and delivers what was stored meanwhile, without a new bind."""
    scen = {"receipt_delay": 0.05, "receipt_session": "same"}
    async with simulator(scen) as sim, two_gateways(tmp_path, sim.port or 0, pg_url) as gws:
        a, b = gws
        tx = await bind(a.port, "transmitter")
        rx = await bind(b.port, "receiver")
        try:
            assert isinstance(b.store, PgStore)
            listener: Any = b.store._listener
            conn = await asyncpg.connect(pg_url)
            try:
                await conn.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())
            finally:
                await conn.close()
            ids = await submit(tx, [f"4477009640{i:02d}" for i in range(3)])
            await wait_until(lambda: len(rx.arrived) >= len(ids), timeout=30)
            assert sorted(rx.arrived) == sorted(ids)
            await wait_until(lambda: b.counters.get("notify_reconnects", 0) >= 1, timeout=30)
            assert b.store.listening
        finally:
            await asyncio.to_thread(tx.close)
            await asyncio.to_thread(rx.close)


class AckingSender(SmpplibSender):
    """Keeps the receipts it answered with ESME_ROK, in order; while `hold` is set it
    answers none: the first deliver_sm blocks its reader (the application is stuck)
    and is dropped, unanswered, when `unblock` is set."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.acked: list[str] = []
        self.hold = False
        self.held = 0
        self.unblock = threading.Event()

    def _received(self, pdu: Any) -> int:
        if self.hold:
            with self._cond:
                self.held += 1
            self.unblock.wait(60)
            return 0x64  # ESME_RX_T_APPN: not taken
        with self._cond:
            self.acked.append(receipt_fields(pdu)["id"])
        return super()._received(pdu)


async def test_kill9_receipts_pending_on_the_dead_instance_reach_the_sender_once(
    tmp_path: Path, pg_url: str
) -> None:
    """A sender bound to instance a only; a is killed with SIGKILL while receipts are
    pending in two ways: `sent` ones are stored and claimed by a (sent to the sender,
    not answered yet: a holds their leases), `late` ones are still at the carrier. The
    sender then binds to b: each receipt reaches it exactly once, the claimed ones
    after a's leases ran out, the late ones through b's carrier bind."""
    sent = [f"4477009650{i:02d}" for i in range(5)]  # within the sender's window
    late = [f"4477009651{i:02d}" for i in range(10)]
    conn = await asyncpg.connect(pg_url)
    async with simulator({"receipt_delay": 3.0, "receipt_session": "same"}) as sim:
        pa, pb = free_port(), free_port()
        a = ProxyProcess(instance_config(tmp_path, "a", sim.port or 0, pg_url, pa, lease=2.0))
        b = ProxyProcess(instance_config(tmp_path, "b", sim.port or 0, pg_url, pb, lease=2.0))
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)
        first: AckingSender | None = None
        again: AckingSender | None = None
        try:
            first = await bind_sender(pa, AckingSender)
            first.hold = True
            ids = await submit(first, sent)
            # Halfway to the first receipts: the reader still reads the responses.
            await asyncio.sleep(1.5)
            ids |= await submit(first, late)

            async def leased_by_a() -> int:
                return int(
                    await conn.fetchval(
                        "SELECT COUNT(*) FROM sender_receipts WHERE lease_owner = 'a'"
                    )
                )

            end = time.monotonic() + 30
            while await leased_by_a() < len(sent) or first.held < 1:
                assert time.monotonic() < end, "a did not claim the first receipts"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(a.kill9)
            # The late receipts were still at the carrier when a died.
            assert sim.receipts_sent == len(sent)
            first.unblock.set()
            await asyncio.to_thread(first.close)
            assert not first.acked
            again = await bind_sender(pb, AckingSender)
            try:
                await wait_until(lambda: len(set(again.acked)) >= len(ids), timeout=60)
            except TimeoutError:
                missing = sorted(set(ids) - set(again.acked))
                raise AssertionError(f"receipts never reached the sender: {missing}") from None
            # Answered receipts are deleted; once none is left, none can come again.
            end = time.monotonic() + 30
            while await conn.fetchval("SELECT COUNT(*) FROM sender_receipts"):
                assert time.monotonic() < end, "answered receipts are still stored"
                await asyncio.sleep(0.05)
            assert sorted(again.acked) == sorted(ids)
            twice = {m: c for m, c in Counter(again.acked).items() if c > 1}
            assert not twice, twice
        finally:
            for s in (first, again):
                if s is not None:
                    s.unblock.set()
                    await asyncio.to_thread(s.close)
            await conn.close()
            if a.proc is not None and a.proc.poll() is None:
                await asyncio.to_thread(a.kill9)
            await asyncio.to_thread(b.terminate)
