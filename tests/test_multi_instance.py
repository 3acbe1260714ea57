"""Two proxy instances on one PostgreSQL store act as one gateway."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import attrs
from bounceback.core import engine
from bounceback.core.model import State
from bounceback.store.postgres import PgStore
from bounceback.store.sqlite import Change
from harness import (
    ProxyProcess,
    bind_sender,
    free_port,
    gateway,
    retry_toml,
    simulator,
    wait_until,
    write_config,
)
from mqtt_broker import Collector, MosquittoBroker
from smpplib_peer import SmpplibSender, receipt_fields

pytest_plugins = ["pg_fixture"]

RETRY = retry_toml(absent_subscriber=(3.0, 1.0, 3.0))


PREFIX = "bb-multi/v1"


def instance_config(
    tmp: Path, name: str, carrier_port: int, port: int, url: str, broker: int
) -> Path:
    d = tmp / name
    d.mkdir()
    feed = f'[feed]\nport = {broker}\nprefix = "{PREFIX}"\nclient_id = "bb-{name}"\n'
    cfg = write_config(d, carrier_port, port=port, retry=RETRY, extra=feed)
    text = cfg.read_text().replace(
        '[store]\npath = "proxy.db"', f'[store]\nurl = "{url}"\nlease_seconds = 2.0'
    )
    text = text.replace("[server]\n", f'[server]\ninstance_id = "{name}"\n', 1)
    cfg.write_text(text)
    return cfg


async def test_two_instances_one_store_kill9_one(tmp_path: Path, pg_url: str) -> None:
    a_numbers = [f"4477009500{i:02d}" for i in range(6)]
    b_numbers = [f"4477009501{i:02d}" for i in range(6)]
    scen = {
        "receipt_delay": 0.05,
        "id_format": "hex",
        "receipt_id_format": "dec",
        "rules": [{"number": n, "outcomes": ["absent", "deliver"]} for n in a_numbers + b_numbers],
    }
    broker = MosquittoBroker(tmp_path)
    broker.start()
    async with simulator(scen) as sim, Collector(broker.port, [f"{PREFIX}/events/#"]) as col:
        pa, pb = free_port(), free_port()
        a = ProxyProcess(instance_config(tmp_path, "a", sim.port or 0, pa, pg_url, broker.port))
        b = ProxyProcess(instance_config(tmp_path, "b", sim.port or 0, pb, pg_url, broker.port))
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(b.start)
        try:
            sa, sb = await bind_sender(pa, SmpplibSender), await bind_sender(pb, SmpplibSender)
            ids: dict[str, str] = {}
            for s, numbers in ((sa, a_numbers), (sb, b_numbers)):
                for n in numbers:
                    seq = await asyncio.to_thread(s.submit, n)
                    status, mid = await asyncio.to_thread(s.wait_resp, seq)
                    assert status == 0
                    ids[mid] = n
            assert len(ids) == 12  # ids unique across the two instances
            # Every number soft-bounced once and is held; then instance a dies.
            for _ in range(200):
                if sim.receipts_sent >= 12:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(a.kill9)
            sa.close()
            # The sender of instance a reconnects (through the balancer) to b.
            sa2 = await bind_sender(pb, SmpplibSender)
            # Both senders are the same account: its receipts may go to either bind.
            for _ in range(600):
                if len(sa2.delivered) + len(sb.delivered) >= 12:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            fa = [receipt_fields(p) for p in sa2.delivered]
            fb = [receipt_fields(p) for p in sb.delivered]
            # Every receipt arrives exactly once, to a sender of its own account.
            assert sorted(f["id"] for f in fa + fb) == sorted(ids)
            assert all(f["stat"] == "DELIVRD" for f in fa + fb)
            # No message was resubmitted twice.
            assert all(sim.count_for(n) == 2 for n in a_numbers + b_numbers)
            # Every feed event of every message is published (the dead instance's
            # unsent ones by the survivor once the publisher lease expired).
            expected = {
                f"{mid}:{attempt}:{event}"
                for mid in ids
                for attempt, event in (
                    (0, "accepted"),
                    (1, "submitted"),
                    (1, "soft_bounce"),
                    (2, "resubmitted"),
                    (2, "delivered"),
                )
            }

            def published() -> set[str]:
                return {e["event_id"] for e in col.events()}

            await col.wait(lambda: expected <= published(), timeout=30.0, what="every event")
            assert published() == expected
            sa2.close()
            sb.close()
        finally:
            await asyncio.to_thread(a.terminate)
            await asyncio.to_thread(b.terminate)
            broker.stop()


async def test_an_instance_acts_on_what_another_wrote_not_on_its_copy(
    tmp_path: Path, pg_url: str
) -> None:
    """Instance a keeps the messages it sends in memory. Another instance then
    soft-bounces one (it got the receipt) and it falls due: a's decision must be taken
    on the stored message, whether its stale copy would lead to a write (refused by the
    version check) or to nothing at all (checked against the store)."""
    number = "447700950200"
    scen = {"receipt_delay": 0.05, "rules": [{"number": number, "outcomes": ["no_receipt"]}]}
    async with simulator(scen) as sim:
        cfg = write_config(tmp_path, sim.port or 0, retry=RETRY)
        cfg.write_text(
            cfg.read_text().replace('[store]\npath = "proxy.db"', f'[store]\nurl = "{pg_url}"')
        )
        async with gateway(cfg) as gw:
            assert gw.shared
            s = await bind_sender(gw.port, SmpplibSender)
            seq = await asyncio.to_thread(s.submit, number)
            status, mid = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0
            sent = await gw.store.get(mid)
            assert sent is not None and sent.state == State.SUBMITTED
            other = PgStore(pg_url, pool_min=1, pool_max=2)
            await other.open()
            try:
                now = time.time()
                held = attrs.evolve(
                    sent, state=State.HELD, next_attempt_at=now, version=sent.version + 1
                )
                await other.commit(Change(message=held))
            finally:
                await other.close()
            # On a's copy (submitted) a due timer does nothing; on the stored one
            # (held, due) it starts the next attempt.
            got = await gw.process(mid, engine.Due(time.time()))
            assert got is not None and got.state == State.SUBMITTING and got.attempts == 2
            await wait_until(lambda: sim.count_for(number) == 2, timeout=10)
            await asyncio.to_thread(s.close)
