"""TokenBucket: rates and bursts against an explicit clock."""

from __future__ import annotations

import math

import pytest
from bounceback.core.ratelimit import TokenBucket
from hypothesis import given, settings
from hypothesis import strategies as st


def _drain(bucket: TokenBucket, now: float) -> int:
    taken = 0
    while bucket.try_take(now):
        taken += 1
        assert taken < 100_000, "bucket never ran dry"
    return taken


@pytest.mark.parametrize(
    ("rate", "burst", "expected_burst"),
    [
        (10.0, None, 10.0),
        (0.5, None, 1.0),  # at least one token
        (4.0, 1.0, 1.0),
        (4.0, 12.0, 12.0),
    ],
)
def test_starts_full_with_the_default_or_given_burst(
    rate: float, burst: float | None, expected_burst: float
) -> None:
    bucket = TokenBucket(rate, burst, now=100.0)
    assert bucket.burst == expected_burst
    assert _drain(bucket, 100.0) == math.floor(expected_burst)
    assert not bucket.try_take(100.0)


def test_refills_at_the_rate() -> None:
    bucket = TokenBucket(4.0, now=0.0)  # 4/s, burst 4
    assert _drain(bucket, 0.0) == 4
    assert bucket.wait_time(0.0) == 0.25
    assert not bucket.try_take(0.125)  # half a token
    assert bucket.wait_time(0.125) == 0.125
    assert bucket.try_take(0.25)
    assert not bucket.try_take(0.25)
    assert _drain(bucket, 1.0) == 3  # 0.75 s more: three tokens


def test_burst_caps_the_refill() -> None:
    bucket = TokenBucket(2.0, 3.0, now=0.0)
    assert _drain(bucket, 0.0) == 3
    assert _drain(bucket, 3600.0) == 3  # an hour idle still gives only the burst


def test_wait_time_does_not_take() -> None:
    bucket = TokenBucket(1.0, 1.0, now=0.0)
    assert bucket.wait_time(0.0) == 0.0
    assert bucket.wait_time(0.0) == 0.0
    assert bucket.try_take(0.0)
    assert bucket.wait_time(0.0) == 1.0
    assert bucket.wait_time(0.5) == 0.5
    assert bucket.try_take(1.0)


def test_clock_going_back_neither_adds_nor_removes_tokens() -> None:
    bucket = TokenBucket(2.0, 2.0, now=10.0)
    assert _drain(bucket, 10.0) == 2
    assert not bucket.try_take(5.0)
    assert bucket.wait_time(5.0) == 0.5
    assert bucket.try_take(10.5)  # the refill counts from the latest time seen


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_non_positive_rate_is_unlimited(rate: float) -> None:
    bucket = TokenBucket(rate, now=0.0)
    assert all(bucket.try_take(0.0) for _ in range(10_000))
    assert bucket.wait_time(0.0) == 0.0


def test_sustained_rate_when_pacing_by_wait_time() -> None:
    bucket = TokenBucket(8.0, 1.0, now=0.0)
    now = 0.0
    sent = 0
    while now < 10.0:
        if bucket.try_take(now):
            sent += 1
        else:
            wait = bucket.wait_time(now)
            assert wait > 0.0
            now += wait
    assert sent == 80  # one every 1/8 s, at 0.0, 0.125 … 9.875


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 10.0, 250.0]),
    burst=st.sampled_from([1.0, 2.0, 5.0, 40.0]),
    steps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: float, steps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, now=0.0)
    now = 0.0
    taken = 0
    for step in steps:
        now += step
        while bucket.try_take(now):
            taken += 1
        assert taken <= burst + rate * now + 1e-6
        wait = bucket.wait_time(now)
        assert 0.0 < wait <= 1.0 / rate + 1e-9
        # Waiting that long (plus rounding) always yields a token.
        now += wait + 1e-6
        assert bucket.try_take(now)
        taken += 1
