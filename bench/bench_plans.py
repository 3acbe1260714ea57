"""What learned mode's planning costs the soft bounce that triggers it.

A learned-mode decision (`Estimates.choose`, once per soft bounce, on the event loop)
may find the common decision stale: remaking it needs the static schedules' median
delay on every deciding key's estimate, every key's ladder and a few rungs of each.
Spread (the proxy's way): at most `PLAN_BUDGET` rungs' worth of that work per call.
At once (the baseline, `PLAN_BUDGET` unlimited): all of it in the call that finds the
decision stale.

The table: `--keys` operator keys of one reason, each with `--messages` messages
tried every 10 minutes and recovering after 15 min to 3 h (the key's own). Then
`--calls` decisions for messages of random keys, timed one by one, in two phases:
*cold* (the first decisions on the table, as after a start on a stored table) and
*grown* (after the observations grew by a tenth: the decision is remade). Rounds
alternate spread / at once; each figure is printed as the range over rounds.

Usage: ``python bench/bench_plans.py [--keys 1000] [--messages 45] [--calls 3000]
[--rounds 3]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bounceback.core import recovery
from bounceback.core.engine import Policy
from bounceback.core.recovery import Estimates, Observation

H = 3600.0
T0 = 1_750_000_000.0
REASON = "absent_subscriber"


def fill(est: Estimates, keys: int, messages: int, seed: int) -> None:
    rng = random.Random(seed)
    for k in range(keys):
        recover = 900.0 + (k % 12) * 900.0
        for _ in range(messages):
            place = ("GB", f"op{k}")
            est.observe(Observation(*place, REASON, 0.0, 0.0, False, T0, first=True))
            t = 0.0
            at = recover * rng.uniform(0.5, 1.5)
            while t + 600.0 < at:
                est.observe(Observation(*place, REASON, t, t + 600.0, False, T0))
                t += 600.0
            est.observe(Observation(*place, REASON, t, t + 600.0, True, T0))


def timed_calls(est: Estimates, keys: int, calls: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    static = Policy().static_delays
    out = []
    for _ in range(calls):
        place = ("GB", f"op{rng.randrange(keys)}")
        started = time.perf_counter()
        est.choose(
            place,
            REASON,
            created_at=T0,
            failed_at=T0 + 600.0,
            deadline=T0 + 48 * H,
            static_delay=600.0,
            static=static,
            min_at_risk=20.0,
            min_delay=60.0,
            max_delay=86400.0,
            u=0.99 / 9973.0,  # not a probe
        )
        out.append(time.perf_counter() - started)
    return out


def figures(times: Sequence[float]) -> dict[str, float]:
    s = sorted(times)
    return {
        "mean_us": 1e6 * statistics.fmean(s),
        "p99_us": 1e6 * s[min(len(s) - 1, int(0.99 * len(s)))],
        "max_ms": 1e3 * s[-1],
        "total_ms": 1e3 * sum(s),
    }


def one_round(args: argparse.Namespace, spread: bool, seed: int) -> dict[str, dict[str, float]]:
    budget = recovery.PLAN_BUDGET
    if not spread:
        recovery.PLAN_BUDGET = 10**12
    try:
        est = Estimates(max_keys=max(5000, 4 * args.keys))
        fill(est, args.keys, args.messages, seed)
        cold = timed_calls(est, args.keys, args.calls, seed + 1)
        fill(est, args.keys, max(args.messages // 10, 1) + 2, seed + 2)  # grown by a tenth+
        grown = timed_calls(est, args.keys, args.calls, seed + 3)
        return {"cold": figures(cold), "grown": figures(grown)}
    finally:
        recovery.PLAN_BUDGET = budget


def span(values: Sequence[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}–{format(hi, fmt)}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=45, help="per key (at least 41)")
    ap.add_argument("--calls", type=int, default=3000, help="timed decisions per phase")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if args.messages < 41:
        ap.error("--messages must be at least 41 (fewer and a key's messages probe)")
    rows: dict[str, list[dict[str, dict[str, float]]]] = {"spread": [], "at once": []}
    for r in range(args.rounds):
        for name in ("spread", "at once") if r % 2 == 0 else ("at once", "spread"):
            rows[name].append(one_round(args, name == "spread", seed=r))
    print(
        f"{args.keys} keys x {args.messages} messages, {args.calls} timed decisions per "
        f"phase, {args.rounds} rounds (ranges over rounds); PLAN_BUDGET {recovery.PLAN_BUDGET}"
    )
    head = f"{'planning':<9} {'phase':<6} {'mean':>13} {'p99':>13} {'max':>15} {'total':>15}"
    print(head)
    print("-" * len(head))
    for name, rounds in rows.items():
        for phase in ("cold", "grown"):
            got: dict[str, Any] = {k: [r[phase][k] for r in rounds] for k in rounds[0][phase]}
            print(
                f"{name:<9} {phase:<6} {span(got['mean_us'], '.0f') + ' µs':>13} "
                f"{span(got['p99_us'], '.0f') + ' µs':>13} "
                f"{span(got['max_ms'], '.1f') + ' ms':>15} "
                f"{span(got['total_ms'], '.0f') + ' ms':>15}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
