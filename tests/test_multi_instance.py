"""Two proxy instances on one PostgreSQL store act as one gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

from harness import ProxyProcess, bind_sender, free_port, retry_toml, simulator, write_config
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
