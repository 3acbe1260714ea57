"""Bounceback's own message ids: unique, ordered, printable, restart-safe."""

from __future__ import annotations

import itertools
import re

import pytest
from bounceback.core.ids import (
    COUNTER_BITS,
    EPOCH_MS,
    INSTANCE_BITS,
    MAX_INSTANCE,
    IdGenerator,
    id_time_ms,
)
from hypothesis import given, settings
from hypothesis import strategies as st

HEX16 = re.compile(r"[0-9A-F]{16}")
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z in ms


def _fields(message_id: str) -> tuple[int, int, int]:
    """(ms since the id epoch, instance, counter) of one id."""
    value = int(message_id, 16)
    counter = value & ((1 << COUNTER_BITS) - 1)
    instance = (value >> COUNTER_BITS) & ((1 << INSTANCE_BITS) - 1)
    return value >> (INSTANCE_BITS + COUNTER_BITS), instance, counter


def test_layout_is_64_bits() -> None:
    assert 42 + INSTANCE_BITS + COUNTER_BITS == 64
    assert MAX_INSTANCE == 1023


def test_format_is_16_upper_case_hex() -> None:
    gen = IdGenerator(5)
    for now in (EPOCH_MS, T0, T0 + 1, 4_102_444_800_000):  # up to 2100-01-01
        mid = gen.next(now)
        assert HEX16.fullmatch(mid), mid
        assert mid == mid.upper()


def test_fields_of_a_fresh_id() -> None:
    mid = IdGenerator(7).next(T0)
    assert _fields(mid) == (T0 - EPOCH_MS, 7, 0)


def test_same_millisecond_many_calls_unique_and_increasing() -> None:
    gen = IdGenerator(3)
    ids = [gen.next(T0) for _ in range(10_000)]  # more than one millisecond's counter
    values = [int(i, 16) for i in ids]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert len(set(ids)) == len(ids)
    assert all(HEX16.fullmatch(i) for i in ids)
    assert all(_fields(i)[1] == 3 for i in ids)
    # The counter ran over: later ids borrow the following milliseconds.
    assert _fields(ids[4095]) == (T0 - EPOCH_MS, 3, 4095)
    assert _fields(ids[4096]) == (T0 - EPOCH_MS + 1, 3, 0)
    assert id_time_ms(ids[-1]) == T0 + 10_000 // 4096


def test_borrowed_milliseconds_are_not_reused_when_the_clock_catches_up() -> None:
    gen = IdGenerator(1)
    first = [gen.next(T0) for _ in range(5000)]
    later = [gen.next(T0 + 1) for _ in range(10)]
    assert int(later[0], 16) > int(first[-1], 16)
    assert len(set(first + later)) == 5010


def test_clock_stepping_back_keeps_ids_increasing() -> None:
    gen = IdGenerator(2)
    a = gen.next(T0 + 60_000)
    b = gen.next(T0)  # the clock stepped back a minute
    c = gen.next(T0 - 3_600_000)  # and an hour more
    d = gen.next(T0 + 60_001)  # and forward again
    values = [int(x, 16) for x in (a, b, c, d)]
    assert values == sorted(values)
    assert len(set(values)) == 4
    assert id_time_ms(b) == T0 + 60_000  # stays at the last time handed out
    assert id_time_ms(d) == T0 + 60_001


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.integers(min_value=-5_000, max_value=5_000), min_size=1, max_size=300),
    instance=st.integers(min_value=0, max_value=MAX_INSTANCE),
)
def test_any_clock_walk_gives_strictly_increasing_ids(steps: list[int], instance: int) -> None:
    gen = IdGenerator(instance)
    now = T0
    last = -1
    for step in steps:
        now += step
        mid = gen.next(now)
        value = int(mid, 16)
        assert value > last
        assert HEX16.fullmatch(mid)
        assert _fields(mid)[1] == instance
        assert id_time_ms(mid) >= now  # never earlier than the clock
        assert gen.last == value
        last = value


@settings(max_examples=100, deadline=None)
@given(
    times=st.lists(st.integers(min_value=T0, max_value=T0 + 50), min_size=1, max_size=200),
    a=st.integers(min_value=0, max_value=MAX_INSTANCE),
    b=st.integers(min_value=0, max_value=MAX_INSTANCE),
)
def test_instances_never_collide(times: list[int], a: int, b: int) -> None:
    if a == b:
        b = (a + 1) % (MAX_INSTANCE + 1)
    ga, gb = IdGenerator(a), IdGenerator(b)
    ids_a = {ga.next(t) for t in times}
    ids_b = {gb.next(t) for t in times}
    assert len(ids_a) == len(ids_b) == len(times)
    assert not ids_a & ids_b


def test_two_instances_in_the_same_millisecond() -> None:
    ga, gb = IdGenerator(0), IdGenerator(MAX_INSTANCE)
    a = [ga.next(T0) for _ in range(100)]
    b = [gb.next(T0) for _ in range(100)]
    assert not set(a) & set(b)
    assert {_fields(x)[1] for x in a} == {0}
    assert {_fields(x)[1] for x in b} == {MAX_INSTANCE}


@pytest.mark.parametrize("now", [EPOCH_MS, EPOCH_MS + 1, T0, T0 + 123_456_789, 4_102_444_800_000])
def test_id_time_round_trip(now: int) -> None:
    assert id_time_ms(IdGenerator(9).next(now)) == now


def test_times_before_the_epoch_clamp_to_it() -> None:
    mid = IdGenerator(0).next(EPOCH_MS - 10_000)
    assert id_time_ms(mid) == EPOCH_MS
    assert HEX16.fullmatch(mid)


@pytest.mark.parametrize("instance", [-1, MAX_INSTANCE + 1, 5000])
def test_instance_out_of_range_is_refused(instance: int) -> None:
    with pytest.raises(ValueError, match="instance"):
        IdGenerator(instance)


@pytest.mark.parametrize("instance", [0, 1, MAX_INSTANCE])
def test_instance_limits_are_accepted(instance: int) -> None:
    assert IdGenerator(instance).instance == instance


def test_floor_keeps_a_restart_above_the_previous_run() -> None:
    first = IdGenerator(4)
    previous = [first.next(T0 + 10_000) for _ in range(50)]
    mark = f"{first.last:016X}"
    assert mark == previous[-1]
    # The new process starts with a clock that is behind the old run's last id.
    second = IdGenerator(4, int(mark, 16))
    assert second.last == int(mark, 16)
    nxt = [second.next(T0) for _ in range(50)]
    assert int(nxt[0], 16) > int(previous[-1], 16)
    assert not set(nxt) & set(previous)
    assert all(int(a, 16) < int(b, 16) for a, b in itertools.pairwise(nxt))


def test_floor_in_the_past_does_not_hold_ids_back() -> None:
    old = IdGenerator(4).next(T0)
    gen = IdGenerator(4, int(old, 16))
    mid = gen.next(T0 + 5_000)
    assert id_time_ms(mid) == T0 + 5_000
    assert _fields(mid)[2] == 0


def test_floor_with_a_full_counter_moves_to_the_next_millisecond() -> None:
    ms = T0 - EPOCH_MS
    floor = (ms << (INSTANCE_BITS + COUNTER_BITS)) | (4 << COUNTER_BITS) | 4095
    gen = IdGenerator(4, floor)
    mid = gen.next(T0)
    assert int(mid, 16) > floor
    assert _fields(mid) == (ms + 1, 4, 0)
