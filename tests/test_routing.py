"""Routing across two carriers end to end: prefix and account routes, fallback when a
carrier is down, and `[retry] alternate_carrier` for soft bounces.

Two simulators play carriers "a" and "b"; smpplib senders bind to the proxy. Which
carrier got a message is read from each simulator's own count of submissions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bounceback.config.settings import load_config
from bounceback.gateway.shell import Gateway
from bounceback.smpp.carrier import FLAPPING_AFTER
from bounceback.smpp.simulator import CarrierSimulator
from harness import gateway, simulator, wait_until
from smpplib_peer import SmpplibSender, receipt_fields

FAST_SYSTEM_FAILURE = """
[retry.schedules.system_failure]
initial = 0.3
factor = 1.0
max = 0.3
[retry.schedules.absent_subscriber]
initial = 0.3
factor = 1.0
max = 0.3
"""

ROUTES = """
[[routes]]
prefix = "4477"
carriers = ["a", "b"]

[[routes]]
prefix = "33"
carriers = ["b"]

[[routes]]
prefix = "447799"
accounts = ["beta"]
carriers = ["b"]

[[routes]]
prefix = "4478"
carriers = ["a"]

[[routes]]
prefix = "4478"
accounts = ["beta"]
carriers = ["b"]
"""


def two_carrier_config(
    tmp: Path, port_a: int, port_b: int, *, alternate: bool = False, routes: str = ROUTES
) -> Path:
    text = f"""
[server]
host = "127.0.0.1"
port = 0
enquire_link_interval = 5.0
response_timeout = 5.0
submit_wait = 3.0

[[accounts]]
system_id = "acme"
password = "acme-pw"

[[accounts]]
system_id = "beta"
password = "beta-pw"

[[carriers]]
name = "a"
host = "127.0.0.1"
port = {port_a}
system_id = "bounceback"
password = "sim-pw"
reconnect_min = 0.1
reconnect_max = 0.5

[[carriers]]
name = "b"
host = "127.0.0.1"
port = {port_b}
system_id = "bounceback"
password = "sim-pw"
reconnect_min = 0.1
reconnect_max = 0.5

{routes}

[store]
path = "proxy.db"
batch_delay = 0.001

[retry]
max_attempts = 5
max_age = 7200.0
jitter = 0.0
alternate_carrier = {"true" if alternate else "false"}
{FAST_SYSTEM_FAILURE}
"""
    p = tmp / "proxy.toml"
    p.write_text(text)
    return p


def scenario(rules: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {
        "receipt_delay": 0.02,
        "id_format": "hex",
        "receipt_id_format": "dec",
        "rules": [{"number": n, "outcomes": o} for n, o in (rules or {}).items()],
    }


@asynccontextmanager
async def sender(gw: Gateway, system_id: str = "acme") -> AsyncIterator[SmpplibSender]:
    s = SmpplibSender("127.0.0.1", gw.port)
    assert await asyncio.to_thread(s.bind, "transceiver", system_id, f"{system_id}-pw") == 0
    s.listen()
    try:
        yield s
    finally:
        s.close()


async def send(s: SmpplibSender, number: str) -> str:
    seq = await asyncio.to_thread(s.submit, number, b"route test")
    status, mid = await asyncio.to_thread(s.wait_resp, seq)
    assert status == 0
    assert mid
    return mid


def where(a: CarrierSimulator, b: CarrierSimulator, number: str) -> str:
    """Which simulator took the (single) submission to `number`."""
    got = (a.count_for(number), b.count_for(number))
    assert got in ((1, 0), (0, 1)), f"{number}: submissions at a, b = {got}"
    return "a" if got == (1, 0) else "b"


def test_config_reads_the_routes(tmp_path: Path) -> None:
    cfg = load_config(two_carrier_config(tmp_path, 2775, 2776, alternate=True))
    assert cfg.retry.alternate_carrier is True
    assert [(r.prefix, r.accounts, r.carriers) for r in cfg.routes] == [
        ("4477", (), ("a", "b")),
        ("33", (), ("b",)),
        ("447799", ("beta",), ("b",)),
        ("4478", (), ("a",)),
        ("4478", ("beta",), ("b",)),
    ]


async def test_longest_prefix_and_account_routes_pick_the_carrier(tmp_path: Path) -> None:
    cases = [
        ("acme", "447700900001", "a"),  # 4477 -> [a, b]: the first of the route
        ("acme", "33612345601", "b"),  # 33 -> [b]
        ("acme", "447799000001", "a"),  # 447799 is beta's only: acme falls back to 4477
        ("beta", "447799000002", "b"),  # the longest prefix wins for beta
        ("beta", "447700900003", "a"),  # beta outside its own route: 4477
        ("acme", "4915100000001", "a"),  # no route: every carrier in config order
        ("acme", "447812000001", "a"),  # 4478 for every account -> [a]
        ("beta", "447812000002", "b"),  # same prefix, the route naming beta wins
    ]
    async with (
        simulator(scenario()) as a,
        simulator(scenario()) as b,
        gateway(two_carrier_config(tmp_path, a.port or 0, b.port or 0)) as gw,
        sender(gw, "acme") as acme,
        sender(gw, "beta") as beta,
    ):
        senders = {"acme": acme, "beta": beta}
        ids: dict[str, str] = {}
        for account, number, _ in cases:
            ids[number] = await send(senders[account], number)
        got = {number: where(a, b, number) for _, number, _ in cases}
        assert got == {number: carrier for _, number, carrier in cases}
        for number, mid in ids.items():
            msg = await gw.store.get(mid)
            assert msg is not None and msg.carrier == got[number]
        # Every message was delivered once, each receipt to the account that sent it.
        wanted = {"acme": 0, "beta": 0}
        for account, _, _ in cases:
            wanted[account] += 1
        for account, s in senders.items():
            got_receipts = await asyncio.to_thread(s.wait_delivered, wanted[account], 10.0)
            fields = [receipt_fields(p) for p in got_receipts]
            assert sorted(f["id"] for f in fields) == sorted(
                ids[n] for acc, n, _ in cases if acc == account
            )
            assert {f["stat"] for f in fields} == {"DELIVRD"}


async def test_a_down_messages_fall_back_to_b(tmp_path: Path) -> None:
    async with (
        simulator(scenario()) as a,
        simulator(scenario()) as b,
        gateway(two_carrier_config(tmp_path, a.port or 0, b.port or 0)) as gw,
        sender(gw) as s,
    ):
        before = await send(s, "447700910000")
        assert where(a, b, "447700910000") == "a"
        await asyncio.to_thread(s.wait_delivered, 1, 10.0)  # a's receipt, before a goes
        await a.stop()
        await wait_until(lambda: not gw.links["a"].bound)
        numbers = [f"4477009100{i:02d}" for i in range(1, 6)]
        ids = [await send(s, n) for n in numbers]
        assert [where(a, b, n) for n in numbers] == ["b"] * 5
        got = await asyncio.to_thread(s.wait_delivered, 6, 10.0)
        fields = [receipt_fields(p) for p in got]
        assert sorted(f["id"] for f in fields) == sorted([before, *ids])
        assert {f["stat"] for f in fields} == {"DELIVRD"}
        for mid in ids:
            msg = await gw.store.get(mid)
            assert msg is not None and msg.carrier == "b" and msg.attempts == 1
        # A route whose only carrier is up is untouched.
        await send(s, "33612345602")
        assert where(a, b, "33612345602") == "b"


async def test_alternate_carrier_resubmits_a_system_failure_through_b(tmp_path: Path) -> None:
    n = "447700920001"
    async with (
        simulator(scenario({n: ["system_failure"]})) as a,
        simulator(scenario()) as b,
        gateway(two_carrier_config(tmp_path, a.port or 0, b.port or 0, alternate=True)) as gw,
        sender(gw) as s,
    ):
        mid = await send(s, n)
        got = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
        f = receipt_fields(got[0])
        assert f["stat"] == "DELIVRD" and f["id"] == mid
        await asyncio.sleep(0.5)  # room for a duplicate receipt or a stray resubmission
        assert len(s.delivered) == 1
        assert a.count_for(n) == 1 and b.count_for(n) == 1
        msg = await gw.store.get(mid)
        assert msg is not None and msg.state.value == "delivered"
        assert msg.attempts == 2 and msg.carrier == "b"


async def test_without_alternate_carrier_the_retry_goes_to_a_again(tmp_path: Path) -> None:
    n = "447700920002"
    async with (
        simulator(scenario({n: ["system_failure", "deliver"]})) as a,
        simulator(scenario()) as b,
        gateway(two_carrier_config(tmp_path, a.port or 0, b.port or 0, alternate=False)) as gw,
        sender(gw) as s,
    ):
        mid = await send(s, n)
        got = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
        f = receipt_fields(got[0])
        assert f["stat"] == "DELIVRD" and f["id"] == mid
        await asyncio.sleep(0.5)
        assert len(s.delivered) == 1
        assert a.count_for(n) == 2 and b.count_for(n) == 0
        msg = await gw.store.get(mid)
        assert msg is not None and msg.attempts == 2 and msg.carrier == "a"


async def test_alternate_carrier_keeps_the_carrier_for_a_subscriber_reason(
    tmp_path: Path,
) -> None:
    """Absent subscriber is the destination's state, not the carrier's: no switch."""
    n = "447700920003"
    async with (
        simulator(scenario({n: ["absent", "deliver"]})) as a,
        simulator(scenario()) as b,
        gateway(two_carrier_config(tmp_path, a.port or 0, b.port or 0, alternate=True)) as gw,
        sender(gw) as s,
    ):
        mid = await send(s, n)
        got = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
        assert receipt_fields(got[0])["stat"] == "DELIVRD"
        await asyncio.sleep(0.3)
        assert len(s.delivered) == 1
        assert a.count_for(n) == 2 and b.count_for(n) == 0
        msg = await gw.store.get(mid)
        assert msg is not None and msg.carrier == "a"


async def test_a_flapping_carrier_is_tried_after_the_healthy_ones(tmp_path: Path) -> None:
    async with (
        simulator(scenario()) as a,
        simulator(scenario()) as b,
        gateway(two_carrier_config(tmp_path, a.port or 0, b.port or 0)) as gw,
        sender(gw) as s,
    ):
        link_a = gw.links["a"]
        # Short-lived binds in a row: a is flapping (though bound right now).
        link_a.flaps = FLAPPING_AFTER
        assert link_a.bound and not link_a.healthy
        await send(s, "447700930001")
        assert where(a, b, "447700930001") == "b"
        # Only carrier of its route: a flapping carrier is still used.
        await send(s, "447812930002")
        assert where(a, b, "447812930002") == "a"
        # Healthy again (a bind stayed up stable_after): the route's order is back.
        link_a.flaps = 0
        await send(s, "447700930003")
        assert where(a, b, "447700930003") == "a"
        got = await asyncio.to_thread(s.wait_delivered, 3, 10.0)
        assert {receipt_fields(p)["stat"] for p in got} == {"DELIVRD"}
