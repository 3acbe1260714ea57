"""`kill -9` of the proxy loses no accepted message and no receipt."""

from __future__ import annotations

import asyncio
from pathlib import Path

from harness import ProxyProcess, bind_sender, free_port, retry_toml, simulator, write_config
from smpplib_peer import SmpplibSender, receipt_fields


async def test_kill9_with_messages_in_flight(tmp_path: Path) -> None:
    scen = {"receipt_delay": 1.5, "id_format": "hex", "receipt_id_format": "dec"}
    async with simulator(scen) as sim:
        port = free_port()
        proxy = ProxyProcess(write_config(tmp_path, sim.port or 0, port=port))
        await asyncio.to_thread(proxy.start)
        try:
            s = await bind_sender(port, SmpplibSender)
            ids = []
            for i in range(20):
                seq = await asyncio.to_thread(s.submit, f"4477009100{i:02d}")
                status, mid = await asyncio.to_thread(s.wait_resp, seq)
                assert status == 0
                ids.append(mid)
            assert len(s.delivered) == 0  # receipts not back yet
            await asyncio.to_thread(proxy.kill9)
            s.close()
            await asyncio.to_thread(proxy.start)
            s2 = await bind_sender(port, SmpplibSender)
            got = await asyncio.to_thread(s2.wait_delivered, 20, 30.0)
            fields = [receipt_fields(p) for p in got]
            assert sorted(f["id"] for f in fields) == sorted(ids)
            assert all(f["stat"] == "DELIVRD" for f in fields)
            # Every message was submitted to the carrier exactly once.
            assert all(sim.count_for(f"4477009100{i:02d}") == 1 for i in range(20))
            s2.close()
        finally:
            await asyncio.to_thread(proxy.terminate)


async def test_kill9_with_held_messages_resumes_them(tmp_path: Path) -> None:
    numbers = [f"4477009200{i:02d}" for i in range(5)]
    scen = {
        "receipt_delay": 0.02,
        "rules": [{"number": n, "outcomes": ["absent", "deliver"]} for n in numbers],
    }
    retry = retry_toml(absent_subscriber=(3.0, 1.0, 3.0))
    async with simulator(scen) as sim:
        port = free_port()
        proxy = ProxyProcess(write_config(tmp_path, sim.port or 0, port=port, retry=retry))
        await asyncio.to_thread(proxy.start)
        try:
            s = await bind_sender(port, SmpplibSender)
            ids = []
            for n in numbers:
                seq = await asyncio.to_thread(s.submit, n)
                status, mid = await asyncio.to_thread(s.wait_resp, seq)
                assert status == 0
                ids.append(mid)
            for _ in range(100):
                if all(sim.count_for(n) == 1 for n in numbers) and sim.receipts_sent >= 5:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the soft bounces are recorded and held
            await asyncio.to_thread(proxy.kill9)
            s.close()
            assert all(sim.count_for(n) == 1 for n in numbers)
            await asyncio.to_thread(proxy.start)
            s2 = await bind_sender(port, SmpplibSender)
            got = await asyncio.to_thread(s2.wait_delivered, 5, 30.0)
            fields = [receipt_fields(p) for p in got]
            assert sorted(f["id"] for f in fields) == sorted(ids)
            assert all(f["stat"] == "DELIVRD" for f in fields)
            assert all(sim.count_for(n) == 2 for n in numbers)
            s2.close()
        finally:
            await asyncio.to_thread(proxy.terminate)
