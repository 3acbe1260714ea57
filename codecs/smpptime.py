"""SMPP 3.4 time formats (§7.1.1): schedule_delivery_time and validity_period.

A value is empty (immediate delivery / the SMSC's default validity) or 16 characters:

* absolute ``YYMMDDhhmmsstnnp``: local time to the tenth of a second, ``nn`` the
  offset from UTC in quarter hours (00-48), ``p`` ``+`` when local time is ahead of
  UTC and ``-`` when behind;
* relative ``YYMMDDhhmmss000R``: a duration in years, months, days, hours, minutes
  and seconds, counted from when the SMSC receives the message.

Two-digit years are read as 2000 + YY (2000-2099) and only those years can be
written. Relative durations use calendar arithmetic for years and months: the day
is clamped to the end of a shorter month (31 January + 1 month = 28 or 29
February), then days, hours, minutes and seconds are added as elapsed time.
Relative fields are durations, so each may be any two digits (e.g. 36 hours).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

__all__ = [
    "AbsoluteTime",
    "RelativeTime",
    "SmppTimeError",
    "format_absolute",
    "format_relative",
    "format_relative_parts",
    "parse_smpp_time",
    "to_utc",
]

YEAR_BASE: Final = 2000
MAX_OFFSET_QUARTERS: Final = 48
_QUARTER: Final = timedelta(minutes=15)


class SmppTimeError(ValueError):
    """A malformed SMPP time value."""


def _require_aware(dt: datetime, what: str) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")


@dataclass(slots=True, frozen=True)
class AbsoluteTime:
    """An absolute SMPP time: local wall-clock fields and the offset from UTC."""

    year: int  # full year, 2000-2099
    month: int
    day: int
    hour: int
    minute: int
    second: int
    tenths: int
    offset_quarters: int  # signed, -48..48; positive when local time is ahead of UTC

    def to_local(self) -> datetime:
        """The time as an aware datetime in its own fixed offset."""
        tz = timezone(self.offset_quarters * _QUARTER)
        return datetime(
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.tenths * 100_000,
            tzinfo=tz,
        )

    def to_utc(self) -> datetime:
        """The time as an aware datetime in UTC."""
        return self.to_local().astimezone(UTC)

    def format(self) -> str:
        sign = "-" if self.offset_quarters < 0 else "+"
        return (
            f"{self.year - YEAR_BASE:02d}{self.month:02d}{self.day:02d}"
            f"{self.hour:02d}{self.minute:02d}{self.second:02d}"
            f"{self.tenths:d}{abs(self.offset_quarters):02d}{sign}"
        )


def _add_months(dt: datetime, months: int) -> datetime:
    index = dt.year * 12 + (dt.month - 1) + months
    year, month0 = divmod(index, 12)
    month = month0 + 1
    if not 1 <= year <= 9999:
        raise OverflowError("date out of range")
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day)


@dataclass(slots=True, frozen=True)
class RelativeTime:
    """A relative SMPP time: a duration in calendar and clock fields (each 0-99)."""

    years: int
    months: int
    days: int
    hours: int
    minutes: int
    seconds: int

    def apply(self, base: datetime) -> datetime:
        """The moment this duration after ``base`` (aware), in UTC.

        Years and months move the calendar date in UTC, clamping the day to the
        month's length; days, hours, minutes and seconds are then added.
        """
        _require_aware(base, "base")
        start = _add_months(base.astimezone(UTC), self.years * 12 + self.months)
        return start + timedelta(
            days=self.days, hours=self.hours, minutes=self.minutes, seconds=self.seconds
        )

    def format(self) -> str:
        return format_relative_parts(
            self.years, self.months, self.days, self.hours, self.minutes, self.seconds
        )


def _digits(value: str, start: int, name: str) -> int:
    pair = value[start : start + 2]
    if not (pair.isascii() and pair.isdigit()):
        raise SmppTimeError(f"{name} {pair!r} at position {start} of {value!r} is not two digits")
    return int(pair)


def parse_smpp_time(value: str) -> AbsoluteTime | RelativeTime | None:
    """Parse an SMPP time; None for the empty string. Raises `SmppTimeError`."""
    if value == "":
        return None
    if len(value) != 16:
        raise SmppTimeError(f"SMPP time {value!r} has {len(value)} characters, not 16 (or empty)")
    names = ("year", "month", "day", "hour", "minute", "second")
    yy, mo, dd, hh, mi, ss = (_digits(value, i * 2, n) for i, n in enumerate(names))
    t = value[12]
    if not (t.isascii() and t.isdigit()):
        raise SmppTimeError(f"tenths {t!r} at position 12 of {value!r} is not a digit")
    tenths = int(t)
    nn = _digits(value, 13, "offset")
    p = value[15]
    if p == "R":
        if tenths != 0 or nn != 0:
            raise SmppTimeError(f"relative time {value!r} must end in '000R', not {value[12:]!r}")
        return RelativeTime(yy, mo, dd, hh, mi, ss)
    if p not in "+-":
        raise SmppTimeError(f"SMPP time {value!r} ends in {p!r}, not '+', '-' or 'R'")
    if not 1 <= mo <= 12:
        raise SmppTimeError(f"month {mo:02d} in {value!r} is not 01-12")
    year = YEAR_BASE + yy
    last = calendar.monthrange(year, mo)[1]
    if not 1 <= dd <= last:
        raise SmppTimeError(f"day {dd:02d} in {value!r} is not 01-{last:02d} for {year}-{mo:02d}")
    if hh > 23:
        raise SmppTimeError(f"hour {hh:02d} in {value!r} is not 00-23")
    if mi > 59:
        raise SmppTimeError(f"minute {mi:02d} in {value!r} is not 00-59")
    if ss > 59:
        raise SmppTimeError(f"second {ss:02d} in {value!r} is not 00-59")
    if nn > MAX_OFFSET_QUARTERS:
        raise SmppTimeError(f"UTC offset {nn:02d} quarter hours in {value!r} is not 00-48")
    return AbsoluteTime(year, mo, dd, hh, mi, ss, tenths, -nn if p == "-" else nn)


def to_utc(value: str, base: datetime) -> datetime | None:
    """The UTC moment an SMPP time names; a relative one counts from ``base`` (aware).

    None for the empty string. Raises `SmppTimeError` for a malformed value.
    """
    parsed = parse_smpp_time(value)
    if parsed is None:
        return None
    if isinstance(parsed, AbsoluteTime):
        return parsed.to_utc()
    return parsed.apply(base)


def format_absolute(dt: datetime, *, offset_quarters: int | None = None) -> str:
    """Write an aware datetime as an absolute SMPP time (truncated to tenths).

    By default the UTC time with offset ``00+``; with ``offset_quarters`` (-48..48)
    the local time at that offset from UTC, with its sign.
    """
    _require_aware(dt, "dt")
    quarters = 0 if offset_quarters is None else offset_quarters
    if not -MAX_OFFSET_QUARTERS <= quarters <= MAX_OFFSET_QUARTERS:
        raise ValueError(f"offset_quarters {quarters} is not within -48..48")
    local = dt.astimezone(timezone(quarters * _QUARTER))
    if not YEAR_BASE <= local.year <= YEAR_BASE + 99:
        raise ValueError(f"year {local.year} cannot be written with two digits (2000-2099)")
    return AbsoluteTime(
        local.year,
        local.month,
        local.day,
        local.hour,
        local.minute,
        local.second,
        local.microsecond // 100_000,
        quarters,
    ).format()


def format_relative_parts(
    years: int, months: int, days: int, hours: int, minutes: int, seconds: int
) -> str:
    """Write a relative SMPP time from its fields (each 0-99)."""
    fields = (years, months, days, hours, minutes, seconds)
    for name, v in zip(
        ("years", "months", "days", "hours", "minutes", "seconds"), fields, strict=True
    ):
        if not 0 <= v <= 99:
            raise ValueError(f"{name} {v} is not within 0..99")
    return "".join(f"{v:02d}" for v in fields) + "000R"


def format_relative(delta: timedelta) -> str:
    """Write a non-negative duration as a relative SMPP time in days, hours, minutes and
    whole seconds (fractions are dropped; years and months are 00). At most 99 days."""
    if delta < timedelta(0):
        raise ValueError(f"relative time {delta} is negative")
    total = delta.days * 86_400 + delta.seconds
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days > 99:
        raise ValueError(f"relative time {delta} is over 99 days")
    return format_relative_parts(0, 0, days, hours, minutes, seconds)
