"""The bounce engine end to end: soft bounces held and resubmitted, hard bounces
passed back at once, expiry, throttling, quiet hours and alert_notification —
against our simulator and, for the main paths, a node-smpp carrier."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import zoneinfo
from pathlib import Path

from bounceback.gateway.shell import Gateway
from harness import gateway, retry_toml, simulator, wait_until, write_config
from peers import NodeCarrier, NodeSender
from smppcodecs.constants import CommandStatus as S
from smpplib_peer import SmpplibSender, receipt_fields


async def bound(gw: Gateway) -> SmpplibSender:
    s = SmpplibSender("127.0.0.1", gw.port)
    assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
    s.listen()
    return s


async def send(s: SmpplibSender, number: str, **kw: object) -> tuple[int, str]:
    seq = await asyncio.to_thread(s.submit, number, b"bounce test", **kw)
    return await asyncio.to_thread(s.wait_resp, seq)


def scenario(rules: dict[str, list[str]], **kw: object) -> dict[str, object]:
    data: dict[str, object] = {
        "receipt_delay": 0.02,
        "id_format": "hex",
        "receipt_id_format": "dec",
        "rules": [{"number": n, "outcomes": o} for n, o in rules.items()],
    }
    data.update(kw)
    return data


async def test_soft_twice_then_delivered_is_three_submissions_one_receipt(tmp_path: Path) -> None:
    n = "447700930001"
    async with (
        simulator(scenario({n: ["absent", "absent", "deliver"]})) as sim,
        gateway(write_config(tmp_path, sim.port or 0)) as gw,
    ):
        s = await bound(gw)
        status, mid = await send(s, n)
        assert status == 0
        got = await asyncio.to_thread(s.wait_delivered, 1, 15.0)
        f = receipt_fields(got[0])
        assert f["stat"] == "DELIVRD" and f["id"] == mid and f["receipted_message_id"] == mid
        await asyncio.sleep(0.5)
        assert sim.count_for(n) == 3
        assert len(s.delivered) == 1
        msg = await gw.store.get(mid)
        assert msg is not None and msg.state.value == "delivered" and msg.attempts == 3
        s.close()


async def test_unknown_subscriber_is_one_submission_and_undeliv_at_once(tmp_path: Path) -> None:
    n = "447700930002"
    async with (
        simulator(scenario({n: ["unknown"]})) as sim,
        gateway(write_config(tmp_path, sim.port or 0)) as gw,
    ):
        s = await bound(gw)
        status, mid = await send(s, n)
        assert status == 0
        got = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
        f = receipt_fields(got[0])
        assert f["stat"] == "UNDELIV" and f["id"] == mid
        await asyncio.sleep(0.5)
        assert sim.count_for(n) == 1
        msg = await gw.store.get(mid)
        assert msg is not None and msg.verdict is not None
        assert msg.verdict.reason == "unknown_subscriber" and msg.verdict.source == "default"
        # The number is now suppressed: a new message is refused at once.
        status2, _ = await send(s, n)
        assert status2 == S.ESME_RINVDSTADR
        assert sim.count_for(n) == 1
        s.close()


async def test_never_recovers_ends_expired_at_validity(tmp_path: Path) -> None:
    n = "447700930003"
    retry = retry_toml(max_attempts=20, absent_subscriber=(0.5, 1.0, 0.5))
    async with (
        simulator(scenario({n: ["absent"]})) as sim,
        gateway(write_config(tmp_path, sim.port or 0, retry=retry)) as gw,
    ):
        s = await bound(gw)
        t0 = time.time()
        status, mid = await send(s, n, validity_period="000000000003000R")  # 3 seconds
        assert status == 0
        got = await asyncio.to_thread(s.wait_delivered, 1, 20.0)
        f = receipt_fields(got[0])
        assert f["stat"] == "EXPIRED" and f["id"] == mid
        assert time.time() - t0 >= 2.5  # not before its validity ran out
        assert 3 <= sim.count_for(n) <= 8  # retried until the deadline, every 0.5 s
        await asyncio.sleep(0.5)
        assert len(s.delivered) == 1
        s.close()


async def test_attempts_run_out_gives_last_failure(tmp_path: Path) -> None:
    n = "447700930004"
    retry = retry_toml(max_attempts=3, absent_subscriber=(0.2, 1.0, 0.2))
    async with (
        simulator(scenario({n: ["absent"]})) as sim,
        gateway(write_config(tmp_path, sim.port or 0, retry=retry)) as gw,
    ):
        s = await bound(gw)
        _status, mid = await send(s, n)
        got = await asyncio.to_thread(s.wait_delivered, 1, 15.0)
        f = receipt_fields(got[0])
        assert f["stat"] == "UNDELIV" and f["err"] == "006" and f["id"] == mid
        assert sim.count_for(n) == 3
        s.close()


async def test_throttling_is_retried_within_seconds(tmp_path: Path) -> None:
    n = "447700930005"
    async with (
        simulator(scenario({n: ["throttle", "deliver"]})) as sim,
        gateway(write_config(tmp_path, sim.port or 0)) as gw,
    ):
        s = await bound(gw)
        t0 = time.monotonic()
        status, _mid = await send(s, n)
        assert status == 0  # a temporary carrier error: accepted and held
        got = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
        assert receipt_fields(got[0])["stat"] == "DELIVRD"
        assert time.monotonic() - t0 < 10.0
        assert sim.count_for(n) == 2
        s.close()


async def test_quiet_hours_wait_for_the_morning(tmp_path: Path) -> None:
    n = "447700930006"  # a UK number: Europe/London
    now = dt.datetime.now(zoneinfo.ZoneInfo("Europe/London"))
    start = (now - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=2)).strftime("%H:%M")
    retry = f"""
[retry]
max_attempts = 5
max_age = 86400.0
jitter = 0.0
quiet_hours_start = "{start}"
quiet_hours_end = "{end}"
[retry.schedules.absent_subscriber]
initial = 1.0
factor = 1.0
max = 1.0
"""
    async with (
        simulator(scenario({n: ["absent", "deliver"]})) as sim,
        gateway(write_config(tmp_path, sim.port or 0, retry=retry)) as gw,
    ):
        s = await bound(gw)
        status, mid = await send(s, n)
        assert status == 0

        async def held() -> bool:
            m = await gw.store.get(mid)
            return m is not None and m.state.value == "held"

        for _ in range(100):
            if await held():
                break
            await asyncio.sleep(0.05)
        msg = await gw.store.get(mid)
        assert msg is not None and msg.next_attempt_at is not None
        # Held until the end of the quiet window (more than an hour away), not 1 s.
        assert msg.next_attempt_at - time.time() > 3600
        await asyncio.sleep(1.5)
        assert sim.count_for(n) == 1
        s.close()


async def test_alert_notification_resubmits_held_messages_at_once(tmp_path: Path) -> None:
    n = "447700930007"
    retry = retry_toml(jitter=None, absent_subscriber=(600.0, 1.0, 600.0))
    async with (
        simulator(scenario({n: ["absent", "deliver"]})) as sim,
        gateway(write_config(tmp_path, sim.port or 0, retry=retry)) as gw,
    ):
        s = await bound(gw)
        _status, _mid = await send(s, n)
        await wait_until(lambda: gw.counters.get("receipts_matched", 0) >= 1)
        await asyncio.sleep(0.3)
        assert sim.count_for(n) == 1
        assert await sim.send_alert(n) >= 1
        got = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
        assert receipt_fields(got[0])["stat"] == "DELIVRD"
        assert sim.count_for(n) == 2
        s.close()


async def test_node_carrier_and_node_sender_main_paths(tmp_path: Path) -> None:
    """node-smpp on both sides: hex ids in submit_sm_resp, decimal in receipts."""
    soft_n, hard_n, ok_n = "447700930010", "447700930011", "447700930012"
    async with NodeCarrier(hex_ids=True, receipt_delay_ms=20) as carrier:
        await carrier.script_outcomes(soft_n, ["absent", "absent", "deliver"])
        await carrier.script_outcomes(hard_n, ["unknown"])
        async with (
            gateway(write_config(tmp_path, carrier.port)) as gw,
            NodeSender() as sender,
        ):
            assert (await sender.connect(gw.port, system_id="acme", password="acme-pw"))[
                "status"
            ] == 0
            ids = {}
            for n in (soft_n, hard_n, ok_n):
                r = await sender.submit(n, "hello", data_coding=0)
                assert r["status"] == 0
                ids[n] = r["message_id"]
            stats = {}
            for n, mid in ids.items():
                rec = await sender.wait_receipt_for(mid, timeout=20.0)
                stats[n] = rec["receipt"]["stat"]
            assert stats == {soft_n: "DELIVRD", hard_n: "UNDELIV", ok_n: "DELIVRD"}
            counts = await carrier.counts()
            assert counts[soft_n] == 3 and counts[hard_n] == 1 and counts[ok_n] == 1
            await asyncio.sleep(0.5)
            assert len(sender.receipts) == 3  # exactly one final receipt each
