"""SMPP 3.4 absolute and relative time values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smppcodecs.smpptime import (
    AbsoluteTime,
    RelativeTime,
    SmppTimeError,
    format_absolute,
    format_relative,
    format_relative_parts,
    parse_smpp_time,
    to_utc,
)

BASE = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)


def test_empty_is_none() -> None:
    assert parse_smpp_time("") is None
    assert to_utc("", BASE) is None


def test_reference_example() -> None:
    t = parse_smpp_time("250115103000004+")
    assert t == AbsoluteTime(2025, 1, 15, 10, 30, 0, 0, 4)
    assert isinstance(t, AbsoluteTime)
    assert t.to_utc() == datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
    assert t.to_utc().tzinfo is UTC
    assert t.to_local().utcoffset() == timedelta(hours=1)
    assert to_utc("250115103000004+", BASE) == datetime(2025, 1, 15, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("250115103000004-", datetime(2025, 1, 15, 11, 30, tzinfo=UTC)),
        ("250115103000020-", datetime(2025, 1, 15, 15, 30, tzinfo=UTC)),  # UTC-5
        ("250115103000022+", datetime(2025, 1, 15, 5, 0, tzinfo=UTC)),  # UTC+5:30
        ("250115103000000+", datetime(2025, 1, 15, 10, 30, tzinfo=UTC)),
        ("250115103000000-", datetime(2025, 1, 15, 10, 30, tzinfo=UTC)),
        ("250101010000008+", datetime(2024, 12, 31, 23, 0, tzinfo=UTC)),  # across a year
        ("241231230000048-", datetime(2025, 1, 1, 11, 0, tzinfo=UTC)),
        ("240229235959948+", datetime(2024, 2, 29, 11, 59, 59, 900_000, tzinfo=UTC)),
        ("000101000000000+", datetime(2000, 1, 1, tzinfo=UTC)),
        ("991231235959900+", datetime(2099, 12, 31, 23, 59, 59, 900_000, tzinfo=UTC)),
    ],
)
def test_absolute(value: str, expected: datetime) -> None:
    parsed = parse_smpp_time(value)
    assert isinstance(parsed, AbsoluteTime)
    assert parsed.to_utc() == expected
    assert to_utc(value, BASE) == expected


def test_negative_offset_is_signed() -> None:
    t = parse_smpp_time("250115103000020-")
    assert isinstance(t, AbsoluteTime)
    assert t.offset_quarters == -20
    assert t.format() == "250115103000020-"


@pytest.mark.parametrize(
    ("value", "base", "expected"),
    [
        ("000002120000000R", BASE, BASE + timedelta(days=2, hours=12)),
        ("000000001000000R", BASE, BASE + timedelta(minutes=10)),
        ("000000000000000R", BASE, BASE),
        ("000000990000000R", BASE, BASE + timedelta(hours=99)),  # any two digits
        ("000100000000000R", datetime(2025, 1, 31, tzinfo=UTC), datetime(2025, 2, 28, tzinfo=UTC)),
        ("000100000000000R", datetime(2024, 1, 31, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC)),
        ("000300000000000R", datetime(2024, 11, 30, tzinfo=UTC), datetime(2025, 2, 28, tzinfo=UTC)),
        ("001300000000000R", datetime(2024, 1, 31, tzinfo=UTC), datetime(2025, 2, 28, tzinfo=UTC)),
        ("010000000000000R", datetime(2024, 2, 29, tzinfo=UTC), datetime(2025, 2, 28, tzinfo=UTC)),
        # Months first, then days: Jan 31 + 1 month + 1 day = Mar 1 (2025), not Mar 4.
        ("000101000000000R", datetime(2025, 1, 31, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)),
        (
            "000002120000000R",
            datetime(2025, 1, 15, 12, 0, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2025, 1, 18, 5, 0, tzinfo=UTC),
        ),
    ],
)
def test_relative(value: str, base: datetime, expected: datetime) -> None:
    parsed = parse_smpp_time(value)
    assert isinstance(parsed, RelativeTime)
    result = parsed.apply(base)
    assert result == expected
    assert result.utcoffset() == timedelta(0)
    assert to_utc(value, base) == expected


def test_relative_fields() -> None:
    assert parse_smpp_time("010203040506000R") == RelativeTime(1, 2, 3, 4, 5, 6)


def test_relative_needs_aware_base() -> None:
    with pytest.raises(ValueError):
        to_utc("000002120000000R", datetime(2025, 1, 1))


def test_format_absolute() -> None:
    dt = datetime(2025, 1, 15, 9, 30, 0, 250_000, tzinfo=UTC)
    assert format_absolute(dt) == "250115093000200+"
    assert format_absolute(dt, offset_quarters=4) == "250115103000204+"
    assert format_absolute(dt, offset_quarters=-20) == "250115043000220-"
    local = datetime(2025, 1, 15, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    assert format_absolute(local) == "250115093000000+"
    with pytest.raises(ValueError):
        format_absolute(datetime(2025, 1, 15))  # naive
    with pytest.raises(ValueError):
        format_absolute(dt, offset_quarters=49)
    with pytest.raises(ValueError):
        format_absolute(datetime(1999, 12, 31, tzinfo=UTC))
    with pytest.raises(ValueError):
        format_absolute(datetime(2100, 1, 1, tzinfo=UTC))


def test_format_relative() -> None:
    assert format_relative(timedelta(days=2, hours=12)) == "000002120000000R"
    assert format_relative(timedelta(minutes=10)) == "000000001000000R"
    assert format_relative(timedelta(days=99, seconds=86_399, microseconds=999)) == (
        "000099235959000R"
    )
    assert format_relative(timedelta(0)) == "000000000000000R"
    with pytest.raises(ValueError):
        format_relative(timedelta(days=100))
    with pytest.raises(ValueError):
        format_relative(timedelta(seconds=-1))
    assert format_relative_parts(1, 2, 3, 4, 5, 6) == "010203040506000R"
    with pytest.raises(ValueError):
        format_relative_parts(0, 0, 0, 100, 0, 0)
    with pytest.raises(ValueError):
        format_relative_parts(-1, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2501151030000", "13 characters"),
        ("250115103000004+0", "17 characters"),
        ("250115103000004", "15 characters"),
        ("2501151030000a4+", "offset"),
        ("2a0115103000004+", "year"),
        (" 50115103000004+", "year"),
        ("25011510300x004+", "second"),
        ("250115103000X04+", "tenths"),
        ("２５0115103000004+", "year"),  # full-width digits are not ASCII digits
        ("251315103000004+", "month 13"),
        ("250015103000004+", "month 00"),
        ("250100103000004+", "day 00"),
        ("250132103000004+", "day 32"),
        ("250229103000004+", "day 29"),  # 2025 is not a leap year
        ("250431103000004+", "day 31"),
        ("250115243000004+", "hour 24"),
        ("250115106000004+", "minute 60"),
        ("250115103060004+", "second 60"),
        ("250115103000049+", "offset 49"),
        ("250115103000099-", "offset 99"),
        ("250115103000004*", "'*'"),
        ("250115103000004r", "'r'"),
        ("000002120000100R", "000R"),  # non-zero tenths in a relative time
        ("000002120000001R", "000R"),  # non-zero offset in a relative time
        ("000002120000010R", "000R"),
        ("0000021200-0000R", "second"),
    ],
)
def test_malformed(value: str, words: str) -> None:
    with pytest.raises(SmppTimeError) as info:
        parse_smpp_time(value)
    assert isinstance(info.value, ValueError)
    assert words.lower() in str(info.value).lower()
    with pytest.raises(SmppTimeError):
        to_utc(value, BASE)


# ---------------------------------------------------------------- round trips

aware_times = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(aware_times, st.one_of(st.none(), st.integers(-48, 48)))
def test_absolute_round_trip(dt: datetime, quarters: int | None) -> None:
    text = format_absolute(dt, offset_quarters=quarters)
    assert len(text) == 16
    parsed = parse_smpp_time(text)
    assert isinstance(parsed, AbsoluteTime)
    assert parsed.offset_quarters == (quarters or 0)
    truncated = dt.replace(microsecond=dt.microsecond // 100_000 * 100_000)
    assert parsed.to_utc() == truncated
    assert parsed.format() == text


@st.composite
def absolute_strings(draw: st.DrawFn) -> str:
    year = draw(st.integers(0, 99))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, 28))
    hms = [draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))]
    tenths = draw(st.integers(0, 9))
    nn = draw(st.integers(0, 48))
    sign = draw(st.sampled_from("+-")) if nn else "+"
    return (
        f"{year:02d}{month:02d}{day:02d}{hms[0]:02d}{hms[1]:02d}{hms[2]:02d}{tenths}{nn:02d}{sign}"
    )


@settings(max_examples=300, deadline=None)
@given(absolute_strings())
def test_absolute_string_round_trip(value: str) -> None:
    parsed = parse_smpp_time(value)
    assert isinstance(parsed, AbsoluteTime)
    assert parsed.format() == value
    assert format_absolute(parsed.to_utc(), offset_quarters=parsed.offset_quarters) == value


@settings(max_examples=300, deadline=None)
@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=99, seconds=86_399)))
def test_relative_round_trip(delta: timedelta) -> None:
    whole = timedelta(days=delta.days, seconds=delta.seconds)
    text = format_relative(delta)
    parsed = parse_smpp_time(text)
    assert isinstance(parsed, RelativeTime)
    assert parsed.years == 0 and parsed.months == 0
    assert parsed.apply(BASE) == BASE + whole
    assert parsed.format() == text


@settings(max_examples=200, deadline=None)
@given(st.tuples(*[st.integers(0, 99)] * 6))
def test_relative_parts_round_trip(parts: tuple[int, int, int, int, int, int]) -> None:
    text = format_relative_parts(*parts)
    assert parse_smpp_time(text) == RelativeTime(*parts)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=20), st.text(alphabet="0123456789+-R ", min_size=16, max_size=16))
)
def test_parse_never_raises_other_errors(value: str) -> None:
    try:
        parsed = parse_smpp_time(value)
    except SmppTimeError as exc:
        assert str(exc)
        return
    assert parsed is None or isinstance(parsed, AbsoluteTime | RelativeTime)
    assert (parsed is None) == (value == "")
