"""Attempt plans (core/planner.py) and the estimator choices they rest on: the
solutions of one key trade failed attempts for on-time deliveries monotonically, the
common trade-off meets its target, the static schedules' median delay, and estimates
that do not depend on the order their observations came in."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from statistics import NormalDist

import pytest
from bounceback.core.planner import (
    DELAYS,
    MUS,
    failed,
    ladder,
    median_delay,
    on_time,
    pick,
    profile,
    profile_median,
    static_times,
)
from bounceback.core.recovery import Curve, Estimates, Observation
from hypothesis import given, settings
from hypothesis import strategies as st

H = 3600.0


def lognormal(median_h: float, sigma: float, never: float = 0.0) -> Callable[[float], float]:
    def cdf(t: float) -> float:
        if t <= 0:
            return 0.0
        return (1.0 - never) * NormalDist().cdf(math.log(t / (median_h * H)) / sigma)

    return cdf


@settings(max_examples=12, deadline=None)
@given(
    median=st.floats(min_value=0.1, max_value=30.0),
    sigma=st.floats(min_value=0.2, max_value=1.5),
    never=st.floats(min_value=0.0, max_value=0.5),
    delay=st.floats(min_value=300.0, max_value=4 * H),
)
def test_a_higher_price_buys_more_on_time_deliveries_for_more_attempts(
    median: float, sigma: float, never: float, delay: float
) -> None:
    cdf = lognormal(median, sigma, never)
    lad = ladder(cdf, horizon=48 * H, target_delay=delay, static=[600.0, 1800.0])
    assert len(lad.rungs) == len(MUS)
    for a, b in zip(lad.rungs, lad.rungs[1:], strict=False):
        assert b.on_time >= a.on_time - 1e-9
        assert b.failed >= a.failed - 1e-9
    for r in lad.rungs:
        # Every plan ends with an attempt just before the horizon, in order, on the grid.
        assert r.offsets and r.offsets[-1] == pytest.approx(48 * H - 60.0)
        assert list(r.offsets) == sorted(set(r.offsets)) and r.offsets[0] > 0
        assert 0.0 <= r.on_time <= cdf(48 * H) + 1e-9
        # Its figures are what the offsets give on the estimate.
        assert r.failed == pytest.approx(failed(lad.recovered_by, r.offsets), rel=1e-6, abs=1e-6)
    # At no price the cheapest plan: the last chance only.
    assert len(lad.rungs[0].offsets) == 1


def test_the_common_trade_off_meets_the_target_with_the_fewest_attempts() -> None:
    fast = ladder(
        lognormal(0.25, 1.0, 0.05),
        horizon=48 * H,
        target_delay=1800.0,
        static=static_times([600.0 * 2**i for i in range(15)], 48 * H),
    )
    slow = ladder(
        lognormal(6.0, 0.8, 0.1),
        horizon=48 * H,
        target_delay=1800.0,
        static=static_times([600.0 * 2**i for i in range(15)], 48 * H),
    )
    weighted = [(100.0, fast), (150.0, slow)]
    i, share = pick(weighted, 0.05)
    assert 0 < i < len(MUS) and 0.0 <= share <= 1.0

    def mixed(j: int, s: float, field: str) -> float:
        return float(
            sum(
                w * (s * getattr(lad.rungs[j], field) + (1 - s) * getattr(lad.rungs[j - 1], field))
                for w, lad in weighted
            )
        )

    target = 1.05 * max(
        sum(w * lad.static_on_time for w, lad in weighted),
        0.5 * sum(w * lad.cdf[-1] for w, lad in weighted),
    )
    assert mixed(i, share, "on_time") == pytest.approx(target, rel=1e-6)
    # Fewer failed attempts than the static schedules on the same estimates.
    assert mixed(i, share, "failed") < sum(w * lad.static_failed for w, lad in weighted)
    # A lower rung alone is short of the target.
    assert sum(w * lad.rungs[i - 1].on_time for w, lad in weighted) < target


def test_the_median_delay_of_a_known_schedule() -> None:
    """Recoveries uniform over (0, 4 h], attempts every hour: delays uniform over
    [0, 1 h), median 30 min; two such keys with other spacing weigh by their messages."""

    def uniform(t: float) -> float:
        return min(max(t / (4 * H), 0.0), 1.0)

    hourly = [H, 2 * H, 3 * H, 4 * H]
    assert median_delay([(1.0, uniform, hourly)]) == pytest.approx(1800.0, rel=1e-3)
    half_hourly = [H / 2 * k for k in range(1, 9)]
    both = median_delay([(1.0, uniform, hourly), (3.0, uniform, half_hourly)])
    assert 900.0 < both < 1800.0
    assert on_time(uniform, hourly, H) == pytest.approx(1.0)
    assert failed(uniform, hourly) == pytest.approx(0.75 + 0.5 + 0.25)


def test_static_times_stop_at_the_horizon() -> None:
    assert static_times([600.0, 1200.0, 2400.0], 2000.0) == [600.0, 1800.0]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10_000))
def test_estimates_do_not_depend_on_the_order_of_their_observations(seed: int) -> None:
    """Two instances that count the same observations in different orders hold the
    same curves (recoveries are shared over their interval the same way whenever)."""
    rng = random.Random(seed)
    observations = []
    for _ in range(60):
        t = rng.lognormvariate(math.log(2 * H), 1.0)
        phase = rng.random()
        lo = 0.0
        for k in range(12):
            hi = 60.0 * 4.0 ** (k + phase)
            observations.append((lo, hi, t <= hi))
            if t <= hi:
                break
            lo = hi
    a, b = Curve(), Curve()
    for lo, hi, rec in observations:
        (a.add_recovery if rec else a.add_survival)(lo, hi)
    rng.shuffle(observations)
    for lo, hi, rec in observations:
        (b.add_recovery if rec else b.add_survival)(lo, hi)
    assert a.events == pytest.approx(b.events) and a.exposure == pytest.approx(b.exposure)


def test_a_wide_interval_is_counted_but_says_nothing_of_when() -> None:
    est = Estimates()
    est.observe(Observation("GB", "A", "absent_subscriber", 0.0, 0.0, False, 1.0, True))
    est.observe(Observation("GB", "A", "absent_subscriber", 0.0, 20 * H, True, 2.0))
    c = est.curves[("GB", "A", "absent_subscriber")]
    assert (c.messages, c.recovered, c.failed) == (1, 1, 1)
    assert sum(c.events) == 0.0 and sum(c.exposure) == 0.0
    est.observe(Observation("GB", "A", "absent_subscriber", H, 2 * H, True, 3.0))
    assert sum(c.events) == pytest.approx(1.0) and sum(c.exposure) > 0


def test_the_tabulated_median_agrees_with_the_exact_one() -> None:
    """`profile`/`profile_median` (what the estimates use: a key's share tabulated once,
    then added) give the median `median_delay` finds by bisection."""

    def slow(t: float) -> float:
        return 0.9 * (1.0 - math.exp(-t / (6 * H)))

    def fast(t: float) -> float:
        return 0.95 * (1.0 - math.exp(-t / 600.0))

    schedule = static_times([600.0 * 2**i for i in range(15)], 48 * H)
    parts = [(100.0, slow, schedule), (250.0, fast, schedule)]
    total = [0.0] * (len(DELAYS) + 1)
    for w, cdf, times in parts:
        for j, v in enumerate(profile(cdf, times)):
            total[j] += w * v
    assert profile_median(total) == pytest.approx(median_delay(parts), rel=0.01)
    assert profile_median([0.0] * (len(DELAYS) + 1)) == 0.0
