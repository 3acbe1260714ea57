"""A flapping carrier end to end: it binds, then closes the connection on every
submit_sm for a while, then behaves.

A small SMSC on the project's codec (`bounceback.smpp.flapping`, which
bench/bench_flap.py runs too) plays the flapping carrier;
when the flap ends the built-in simulator takes over its port and delivers.
An smpplib sender sends messages through the proxy during the flap. Nothing may
fail because of the link: every message gets exactly one final receipt, DELIVRD,
once the flap is over. And the proxy must not hammer the carrier: short-lived
binds do not reset the reconnect delay, so the binds the carrier sees during the
flap stay under what the configured backoff allows, well below what a reconnect
at `reconnect_min` after every bind would make.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bounceback.config.settings import load_config
from bounceback.core.model import State
from bounceback.gateway.shell import Gateway
from bounceback.smpp.flapping import FlappingCarrier
from bounceback.smpp.simulator import CarrierSimulator, Scenario
from harness import bind_sender, free_port, gateway, retry_toml, wait_until, write_config
from smpplib_peer import SmpplibSender, receipt_fields


def most_binds(span: float, reconnect_min: float, reconnect_max: float) -> int:
    """The most binds a link can make in `span` seconds when every lost bind is
    followed by the backoff: a jittered sleep of at least half the delay, the delay
    doubling from reconnect_min up to reconnect_max and never reset."""
    binds, slept, delay = 1, 0.0, reconnect_min
    while True:
        slept += 0.5 * delay
        if slept > span:
            return binds
        binds += 1
        delay = min(2 * delay, reconnect_max)


@dataclass
class FlapRun:
    statuses: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    flapped: float = 0.0  # how long the flapping carrier ran (loop time)
    binds: int = 0  # binds the flapping carrier accepted
    submits: int = 0  # submit_sm it dropped the connection on
    healthy_at_end: bool | None = None
    receipts: list[dict[str, str]] = field(default_factory=list)
    states: dict[str, State] = field(default_factory=dict)
    link_retries: int = 0  # over all messages
    sim_counts: dict[str, int] = field(default_factory=dict)
    healthy_again: bool | None = None


async def run_flap(
    tmp: Path,
    *,
    flap: float,
    messages: int,
    reconnect_min: float,
    reconnect_max: float,
    stable_after: float | None,
    schedule: tuple[float, float, float],
    settle: float = 20.0,
) -> FlapRun:
    """Run the scenario and report what happened (the test asserts on it)."""
    out = FlapRun()
    loop = asyncio.get_running_loop()
    carrier = FlappingCarrier()
    port = await carrier.start()
    started = loop.time()
    keys = f"reconnect_min = {reconnect_min}\nreconnect_max = {reconnect_max}\n"
    if stable_after is not None:
        keys += f"stable_after = {stable_after}\n"
    retry = retry_toml(
        max_attempts=1,  # link failures are no attempts: one destination try is enough
        jitter=0.2,
        max_age=3600.0,
        not_bound=schedule,
        timeout=schedule,
    )
    cfg = write_config(tmp, port, retry=retry)
    cfg.write_text(cfg.read_text().replace("reconnect_min = 0.1\nreconnect_max = 0.5\n", keys))
    sim = CarrierSimulator(Scenario.from_mapping({"receipt_delay": 0.02}))
    try:
        async with gateway(cfg) as gw:
            link = gw.links["sim"]
            s = await bind_sender(gw.port, SmpplibSender)
            try:
                for i in range(messages):
                    number = f"4477009400{i:02d}"
                    seq = await asyncio.to_thread(s.submit, number, b"flap")
                    status, mid = await asyncio.to_thread(s.wait_resp, seq)
                    out.statuses.append(status)
                    if status == 0:
                        out.ids.append(mid)
                        out.numbers.append(number)
                    await asyncio.sleep(flap / messages / 2)  # sent during the flap
                await asyncio.sleep(max(started + flap - loop.time(), 0.0))
                out.flapped = loop.time() - started
                out.binds, out.submits = carrier.binds, carrier.submits
                out.healthy_at_end = getattr(link, "healthy", None)
                await carrier.stop()
                await sim.start(port=port)  # the carrier behaves again
                await asyncio.to_thread(s.wait_delivered, len(out.ids), settle)
                await asyncio.sleep(0.5)  # room for a duplicate receipt
                out.receipts = [receipt_fields(p) for p in list(s.delivered)]
                for mid in out.ids:
                    msg = await gw.store.get(mid)
                    assert msg is not None
                    out.states[mid] = msg.state
                    out.link_retries += sum(c for _, c in msg.retries_by_reason)
                out.sim_counts = {n: sim.count_for(n) for n in out.numbers}
                if stable_after is not None:
                    with contextlib.suppress(TimeoutError):
                        await wait_until(lambda: link.healthy, timeout=stable_after + 10.0)
                    out.healthy_again = getattr(link, "healthy", None)
            finally:
                await asyncio.to_thread(s.close)
    finally:
        await carrier.stop()
        await sim.stop()
    return out


FLAP = 1.5
MESSAGES = 20
RECONNECT_MIN = 0.05
RECONNECT_MAX = 0.8
STABLE_AFTER = 2.0  # longer than any session of the flap can last


async def test_a_flapping_carrier_fails_no_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    run = await run_flap(
        tmp_path,
        flap=FLAP,
        messages=MESSAGES,
        reconnect_min=RECONNECT_MIN,
        reconnect_max=RECONNECT_MAX,
        stable_after=STABLE_AFTER,
        schedule=(0.1, 2.0, 0.4),
    )
    # The flap happened: every message was accepted and its first attempt failed there.
    assert run.statuses == [0] * MESSAGES
    assert run.submits >= 2 and run.link_retries >= MESSAGES
    # Nothing failed because of the link: one DELIVRD receipt per message, once.
    assert sorted(r["id"] for r in run.receipts) == sorted(run.ids)
    assert {r["stat"] for r in run.receipts} == {"DELIVRD"}
    assert set(run.states.values()) == {State.DELIVERED}
    assert set(run.sim_counts.values()) == {1}
    # The carrier was judged flapping and the reconnect delay grew: no more binds
    # than the backoff allows in the time the flap lasted, far fewer than
    # reconnecting at reconnect_min after each bind would make.
    assert run.healthy_at_end is False
    allowed = most_binds(run.flapped, RECONNECT_MIN, RECONNECT_MAX)
    without_backoff = 1 + int(run.flapped / (0.5 * RECONNECT_MIN))
    assert allowed * 3 < without_backoff
    assert 3 <= run.binds <= allowed, (run.binds, allowed, run.flapped)
    # Once a bind stays up stable_after seconds, the carrier is healthy again.
    assert run.healthy_again is True
    assert "sim: flapping: 2 binds in a row lost within 2 s" in caplog.text
    assert "sim: stable again" in caplog.text


async def test_a_bind_releases_held_messages_only_once_it_has_proven_itself(
    tmp_path: Path,
) -> None:
    """Messages held because no carrier was bound do not all go on each bind: one
    probes the bind, the others follow when it has answered a submit."""
    held = 8
    port = free_port()  # nothing listens yet: every message is held for not_bound
    slow = (600.0, 1.0, 600.0)  # nothing becomes due by its schedule during the test
    retry = retry_toml(max_age=7200.0, not_bound=slow, timeout=slow)
    cfg = write_config(tmp_path, port, retry=retry)
    cfg.write_text(
        cfg.read_text().replace(
            "reconnect_max = 0.5\n", "reconnect_max = 0.2\nstable_after = 60.0\n"
        )
    )
    gw = Gateway(load_config(cfg))
    await gw.start()
    carrier = FlappingCarrier()
    sim = CarrierSimulator(Scenario.from_mapping({"receipt_delay": 0.02}))
    s = await bind_sender(gw.port, SmpplibSender)
    try:
        ids = []
        for i in range(held):
            seq = await asyncio.to_thread(s.submit, f"4477009500{i:02d}", b"held")
            status, mid = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0
            ids.append(mid)

        async def states() -> list[tuple[State, dict[str, int]]]:
            out = []
            for mid in ids:
                m = await gw.store.get(mid)
                assert m is not None
                out.append((m.state, dict(m.retries_by_reason)))
            return out

        assert all(st == State.HELD and "not_bound" in r for st, r in await states())

        # The carrier binds and drops the connection on the first submit_sm.
        await carrier.start(port)
        await wait_until(lambda: carrier.submits >= 1)
        await carrier.stop()
        await wait_until(lambda: not gw.links["sim"].bound)
        for _ in range(500):
            now = await states()
            if all(st == State.HELD for st, _ in now):
                break
            await asyncio.sleep(0.02)
        # Each bind cost one retry (its probe's), not one per held message.
        burned = sum(sum(r.values()) for _, r in now) - held
        assert 1 <= burned <= carrier.binds < held, (burned, carrier.binds)

        # The carrier behaves: a probe is answered, the others follow at once (their
        # own schedules are ten minutes away); the probes dropped wait for theirs.
        waiting = [mid for mid, (_, r) in zip(ids, now, strict=True) if r == {"not_bound": 1}]
        assert len(waiting) >= held - carrier.binds
        await sim.start(port=port)
        got = await asyncio.to_thread(s.wait_delivered, len(waiting), 30.0)
        assert sorted(receipt_fields(p)["id"] for p in got) == sorted(waiting)
    finally:
        await asyncio.to_thread(s.close)
        await gw.stop()
        await carrier.stop()
        await sim.stop()
