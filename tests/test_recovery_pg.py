"""Recovery-time estimates on PostgreSQL: two instances add their counts to one table and
each decides on the sum; the table stays within its bound; a reset is seen by both.
Also the same on SQLite across a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import attrs
import pytest
from bounceback.config.settings import Config, RetryConfig
from bounceback.core.engine import Policy
from bounceback.core.recovery import Observation
from bounceback.gateway.learning import Learner
from bounceback.store.postgres import PgStore
from bounceback.store.sqlite import SqliteStore

pytest_plugins = ["pg_fixture"]

T0 = 1_750_000_000.0
KEY = ("GB", "A", "absent_subscriber")


def config(max_keys: int = 5000) -> Config:
    return attrs.evolve(Config(), retry=RetryConfig(learn_max_keys=max_keys))


def seen(learner: Learner, n: int, country: str = "GB", operator: str = "A") -> None:
    """`n` messages that failed at 0 and 10 min and recovered by 20 min."""
    for _ in range(n):
        for lo, hi, rec in ((0.0, 0.0, False), (0.0, 600.0, False), (600.0, 1200.0, True)):
            first = hi == 0.0  # the message's first soft bounce counts it
            learner.observe(
                Observation(country, operator, "absent_subscriber", lo, hi, rec, T0, first)
            )


@pytest.fixture
def stores(pg_store_pair: tuple[PgStore, PgStore]) -> tuple[PgStore, PgStore]:
    """Two stores on one database, as two instances would have."""
    return pg_store_pair


async def test_two_instances_share_their_estimates(stores: tuple[PgStore, PgStore]) -> None:
    a, b = stores
    la = Learner(config(), a, shared=True)
    lb = Learner(config(), b, shared=True)
    await la.load()
    await lb.load()
    seen(la, 30)
    seen(lb, 12)
    # Before a flush each instance knows only its own.
    assert la.view.curves[KEY].recovered == 30
    assert lb.view.curves[KEY].recovered == 12
    await asyncio.gather(la.flush(), lb.flush())
    # One's read may have come before the other's add: the next flush has both.
    await la.flush()
    await lb.flush()
    for learner in (la, lb):
        c = learner.view.curves[KEY]
        assert (c.recovered, c.failed, c.messages) == (42, 84, 42)
        assert sum(c.events) == pytest.approx(42.0)
    # Counted once: the pending counts went to the store and are gone from memory.
    assert la.pending.curves == {} and lb.pending.curves == {}
    # Both decide on the sum: 42 messages at risk, enough for the operator's key.
    for _ in range(50):  # the plans are made a little per call (PLAN_BUDGET)
        choice = lb.view.choose(
            ("GB", "A"),
            "absent_subscriber",
            created_at=T0,
            failed_at=T0,
            deadline=T0 + 48 * 3600.0,
            static_delay=600.0,
            static=Policy().static_delays,
            min_at_risk=40.0,
            min_delay=60.0,
            max_delay=86400.0,
            u=0.99 / 9973.0,  # not a probe
        )
        if choice.why != "plans being made":
            break
    assert choice.level == "operator" and choice.recovered == 42
    # A new instance starts from the store.
    lc = Learner(config(), b, shared=True)
    await lc.load()
    assert lc.view.curves[KEY].recovered == 42
    # A reset on one is seen by the other at its next flush.
    assert await la.reset() == 3  # operator, country and reason keys
    seen(lb, 1)
    await lb.flush()
    assert lb.view.curves[KEY].recovered == 1


async def test_concurrent_adds_lose_nothing(stores: tuple[PgStore, PgStore]) -> None:
    a, b = stores
    learners = [Learner(config(), s, shared=True) for s in (a, b, a, b)]
    for _ in range(5):
        for learner in learners:
            seen(learner, 3)
        await asyncio.gather(*(learner.flush() for learner in learners))
    await learners[0].flush()
    assert learners[0].view.curves[KEY].recovered == 5 * 4 * 3


async def test_the_table_stays_within_its_bound(stores: tuple[PgStore, PgStore]) -> None:
    a, _ = stores
    learner = Learner(config(max_keys=16), a, shared=True)
    for i in range(40):
        seen(learner, 1, country="GB", operator=f"op{i}")
        await learner.flush()
    rows = await a.query("SELECT COUNT(*) FROM recovery_keys")
    assert rows[0][0] <= 16
    assert ("", "", "absent_subscriber") in dict(await a.recovery_load())
    assert len(learner.view.curves) <= 16


async def test_sqlite_keeps_the_estimates_across_a_restart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bb.db")
    await store.open()
    learner = Learner(config(), store, shared=False)
    seen(learner, 7)
    await learner.flush()
    await store.close()
    again = SqliteStore(tmp_path / "bb.db")
    await again.open()
    try:
        fresh = Learner(config(), again, shared=False)
        await fresh.load()
        assert fresh.view.curves[KEY].recovered == 7
        assert await fresh.reset() == 3
        assert await again.recovery_load() == []
    finally:
        await again.close()


# ---------------------------------------------------------------- through the proxy

LEARNED_RETRY = """
[retry]
max_attempts = 6
max_age = 7200.0
jitter = 0.0
mode = "learned"
learn_min_at_risk = 1
learn_flush = 0.2
[retry.schedules.absent_subscriber]
initial = 0.3
factor = 1.0
max = 0.3
learned_min = 0.3
learned_max = 0.6
"""


async def test_the_proxy_learns_and_explains_each_soft_bounce(tmp_path: Path) -> None:
    """Through a running proxy and the carrier simulator: every soft_bounce step of the
    timeline says which estimate chose the next attempt, and the observations reach
    the store."""
    from harness import gateway, simulator, wait_until, write_config
    from smpplib_peer import SmpplibSender

    first, second = "447700930101", "447700930102"
    scenario = {
        "receipt_delay": 0.02,
        "id_format": "hex",
        "receipt_id_format": "dec",
        "rules": [
            {"number": n, "outcomes": ["absent", "absent", "deliver"]} for n in (first, second)
        ],
    }
    async with (
        simulator(scenario) as sim,
        gateway(write_config(tmp_path, sim.port or 0, retry=LEARNED_RETRY)) as gw,
    ):
        s = SmpplibSender("127.0.0.1", gw.port)
        assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
        s.listen()
        ids = []
        for n in (first, second):
            seq = await asyncio.to_thread(s.submit, n, b"learn", registered_delivery=1)
            status, mid = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0
            ids.append(mid)
            await asyncio.to_thread(s.wait_delivered, len(ids), 15.0)
        s.close()
        steps = {}
        for mid in ids:
            msg = await gw.store.get(mid)
            assert msg is not None and msg.state.value == "delivered" and msg.attempts == 3
            steps[mid] = [st.fields for st in msg.history if st.event == "soft_bounce"]
            assert len(steps[mid]) == 2
            assert all("estimate" in f for f in steps[mid])
        # The first message had nothing to learn from: the schedule (the prior) chose.
        assert steps[ids[0]][0]["estimate"] == {"source": "prior", "why": "too little data"}
        # The second one's came from what the first taught, and say how much data.
        later = steps[ids[1]][0]["estimate"]
        assert isinstance(later, dict) and later["source"] == "learned"
        # Its operator has seen one message: one of the first, it probes.
        assert later["why"] == "probe"
        country = gw.ctx.learner.view.curves[("GB", "", "absent_subscriber")]
        assert country.recovered == 2 and country.failed == 4
        await wait_until(lambda: gw.ctx.learner.pending.curves == {})
        stored = dict(await gw.store.recovery_load())
        assert stored[("", "", "absent_subscriber")].recovered == 2
