"""Bounce patterns from the store: the report behind ``bounceback stats``.

The report covers the messages *accepted* in a time window ``[since, until)`` (by
their ``created_at``). Each message counts once, by where it ended up:

* **delivered**: the carrier reported it delivered; **recovered** are the delivered
  messages that needed more than one attempt (they soft-bounced at least once, then
  got through: the deliveries Bounceback's retries won back);
* **hard**: a permanent failure (a hard-bounce receipt or a permanent carrier error);
* **expired**: soft-bounced until its validity, maximum age or attempts ran out;
* **cancelled**: cancelled by its sender or an operator;
* **pending**: still on its way (accepted, submitted, or held for a retry).

Independently of the end, **soft-bounced** counts the messages that had at least one
soft verdict (carrier throttling included), and **bounced** those that soft- or
hard-bounced at least once. Rates are shares of *sent* (the messages in the window),
except the recovery rate: recovered / soft-bounced.

Rows are grouped by destination country and operator (from the number with the
``phonenumbers`` package; a number whose range it cannot place is counted under its
country calling code's main country), by hour of day of acceptance, in **UTC**
by default or in the destination's **local time** (``local_hours=True``; UTC when the
number's zone is unknown), by **carrier** (the one the message last went through; a
message never sent to a carrier counts under none), by **account** (the sender's
system_id) and along a **timeline** of acceptance (UTC buckets of a minute, an hour
or a day, every bucket of the window listed, empty ones too).

**By reason**, each bounce reason the classifier named: soft reasons (``kind``
``soft``; the link and carrier-side ones, ``throttled``, ``not_bound``, ``congestion``
and ``timeout``, as ``link``) counted from each message's retries, and the hard
reasons its failed or rejected messages ended with (``hard``). For each: the
bounces, the messages that had one, those of them later delivered (recovered), and
the time from the message's first soft bounce for that reason to its delivery
(median and 90th percentile, linear interpolation between ranks). The first soft
bounce's time is read from the message's timeline; a recovery whose timeline no
longer holds it (a long timeline keeps its first and latest steps) is counted as
recovered but not timed (``recover_samples`` says how many were timed). A hard end
without a reason counts as ``unclassified``.

The timeline has at most MAX_BUCKETS buckets: a finer bucket than that allows is
coarsened (minute, then hour, then day; the report says what was asked for), and a
window of more days than that keeps its latest days (``clipped``).

Two lists name numbers: the numbers that keep soft-bouncing (the top N by soft
bounces logged in the window; carrier-side reasons (throttling, congestion,
timeouts, no carrier bound) are left out, since they say nothing about the number),
and the hard-bounced numbers to remove from the sender's lists (the active
suppression list plus the numbers whose messages in the window failed for a
number-level reason such as an unknown subscriber).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import orjson
from bounceback.core.engine import LINK_REASONS, SUPPRESS_REASONS
from bounceback.core.localtime import Zones
from bounceback.core.model import State
from bounceback.core.recovery import Estimates
from bounceback.feed.events import iso, number_info
from bounceback.store.sqlite import Store

SCHEMA = "bounceback.report/1"
K = TypeVar("K")

RESULTS = ("delivered", "hard", "expired", "cancelled", "pending")

COUNT_FIELDS = (
    "sent",
    "delivered",
    "recovered",
    "soft_bounced",
    "bounced",
    "hard",
    "expired",
    "cancelled",
    "pending",
    "submissions",
)
COUNT_COLUMNS = (
    *COUNT_FIELDS,
    "delivery_rate",
    "bounce_rate",
    "soft_rate",
    "hard_rate",
    "recovery_rate",
    "submissions_per_message",
)  # what Counts.as_dict() gives
SHOW_NUMBERS = 50  # numbers to remove shown in the terminal and HTML (JSON and CSV: all)
RATE_FIELDS = ("delivery_rate", "bounce_rate", "soft_rate", "hard_rate", "recovery_rate")


# ---------------------------------------------------------------- one message


@attrs.frozen
class Outcome:
    """Where one message ended up (see the module documentation)."""

    result: str  # one of RESULTS
    soft_bounced: bool
    recovered: bool
    attempts: int


def message_outcome(state: str, attempts: int, data: Mapping[str, Any]) -> Outcome:
    """The outcome of a stored message from its state, attempts and data document
    (the ``data`` column: ``verdict`` and ``retries`` are read)."""
    verdict = data.get("verdict") or {}
    kind = str(verdict.get("kind", "")) if isinstance(verdict, Mapping) else ""
    retries = data.get("retries") or []
    soft = bool(retries) or state == State.HELD.value
    if state == State.DELIVERED.value:
        result = "delivered"
    elif state == State.REJECTED.value or (state == State.FAILED.value and kind == "hard"):
        result = "hard"
    elif state in (State.FAILED.value, State.EXPIRED.value):
        result = "expired"
    elif state == State.CANCELLED.value:
        result = "cancelled"
    else:
        result = "pending"
    recovered = result == "delivered" and (attempts > 1 or bool(retries))
    return Outcome(result, soft, recovered, attempts)


# ---------------------------------------------------------------- counts


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@attrs.define
class Counts:
    """Message counts for one group (a country, an operator, an hour, everything)."""

    sent: int = 0
    delivered: int = 0
    recovered: int = 0
    soft_bounced: int = 0
    bounced: int = 0
    hard: int = 0
    expired: int = 0
    cancelled: int = 0
    pending: int = 0
    submissions: int = 0

    def add(self, o: Outcome) -> None:
        self.sent += 1
        self.submissions += o.attempts
        if o.result == "delivered":
            self.delivered += 1
        elif o.result == "hard":
            self.hard += 1
        elif o.result == "expired":
            self.expired += 1
        elif o.result == "cancelled":
            self.cancelled += 1
        else:
            self.pending += 1
        if o.recovered:
            self.recovered += 1
        if o.soft_bounced:
            self.soft_bounced += 1
        if o.soft_bounced or o.result == "hard":
            self.bounced += 1

    def rates(self) -> dict[str, float | None]:
        return {
            "delivery_rate": _ratio(self.delivered, self.sent),
            "bounce_rate": _ratio(self.bounced, self.sent),
            "soft_rate": _ratio(self.soft_bounced, self.sent),
            "hard_rate": _ratio(self.hard, self.sent),
            "recovery_rate": _ratio(self.recovered, self.soft_bounced),
        }

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {name: getattr(self, name) for name in COUNT_FIELDS}
        out.update(self.rates())
        out["submissions_per_message"] = (
            round(self.submissions / self.sent, 4) if self.sent else None
        )
        return out


# ---------------------------------------------------------------- numbers


@attrs.frozen
class SoftNumber:
    """A number that keeps soft-bouncing."""

    number: str
    country: str
    operator: str
    soft_bounces: int
    reasons: tuple[tuple[str, int], ...]  # (reason, count), most frequent first
    first_at: float
    last_at: float


@attrs.frozen
class RemoveNumber:
    """A hard-bounced number that senders should take off their lists."""

    number: str
    country: str
    operator: str
    reason: str
    sources: tuple[str, ...]  # "suppression" and/or "hard_bounce"
    hard_bounces: int  # messages in the window that failed for a number-level reason
    last_at: float
    suppressed_until: float | None


def country_operator(number: str) -> tuple[str, str]:
    """(ISO country, operator) of a destination (see `events.number_info`)."""
    return number_info(number)


# ---------------------------------------------------------------- reasons


REASON_KINDS = ("soft", "link", "hard")


def reason_kind(reason: str) -> str:
    """``link`` for the carrier-side soft reasons (see `engine.LINK_REASONS`), else ``soft``."""
    return "link" if reason in LINK_REASONS else "soft"


def quantile(values: Sequence[float], q: float) -> float | None:
    """The `q` quantile (0..1) of `values`, linear between the closest ranks (the
    usual "type 7": the median of an even count is the mean of the middle two)."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@attrs.define
class ReasonStats:
    """One bounce reason: how often, for how many messages, and how they recovered."""

    reason: str
    kind: str  # soft | link | hard
    bounces: int = 0
    messages: int = 0
    recovered: int = 0
    recover_times: list[float] = attrs.field(factory=list)  # seconds, one per timed recovery

    @property
    def recovery_rate(self) -> float | None:
        """recovered / messages (None for hard reasons: a hard bounce ends the message)."""
        if self.kind == "hard":
            return None
        return _ratio(self.recovered, self.messages)

    def as_dict(self) -> dict[str, object]:
        median = quantile(self.recover_times, 0.5)
        p90 = quantile(self.recover_times, 0.9)
        return {
            "reason": self.reason,
            "kind": self.kind,
            "bounces": self.bounces,
            "messages": self.messages,
            "recovered": self.recovered,
            "recovery_rate": self.recovery_rate,
            "recover_median_s": None if median is None else round(median, 3),
            "recover_p90_s": None if p90 is None else round(p90, 3),
            "recover_samples": len(self.recover_times),
        }


REASON_FIELDS = (
    "reason",
    "kind",
    "bounces",
    "messages",
    "recovered",
    "recovery_rate",
    "recover_median_s",
    "recover_p90_s",
    "recover_samples",
)


def _first_soft_bounces(history: object, retries: Mapping[str, int]) -> dict[str, float]:
    """reason -> the time of the message's first soft bounce for it, from its timeline
    (the ``data`` column's ``history``), for the reasons whose every soft bounce the
    timeline still holds (as many ``soft_bounce`` steps as retries): a long timeline
    drops its middle steps, and a later bounce would pass for the first."""
    first: dict[str, float] = {}
    seen: dict[str, int] = {}
    if not isinstance(history, list):
        return first
    for step in history:
        if not isinstance(step, list) or len(step) != 3 or step[1] != "soft_bounce":
            continue
        fields = step[2]
        reason = fields.get("reason") if isinstance(fields, Mapping) else None
        if not isinstance(reason, str):
            continue
        seen[reason] = seen.get(reason, 0) + 1
        at = float(step[0])
        if reason not in first or at < first[reason]:
            first[reason] = at
    return {r: at for r, at in first.items() if seen[r] >= retries.get(r, 0)}


# ---------------------------------------------------------------- timeline

BUCKETS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
# A timeline has at most this many buckets: minutes and hours past it are coarsened
# (minute -> hour -> day), and past it in days the timeline keeps the latest days.
MAX_BUCKETS = 2000


def bucket_count(since: float, until: float, bucket: str) -> int:
    """Buckets of `bucket` from the one holding `since` to the one holding the end."""
    if until <= since:
        return 0
    size = BUCKETS[bucket]
    start = math.floor(since / size) * size
    return math.ceil((until - start) / size)


def default_bucket(since: float, until: float) -> str:
    """minute up to 3 hours, hour up to 3 days, else day."""
    span = until - since
    if span <= 3 * 3600:
        return "minute"
    if span <= 3 * 86400:
        return "hour"
    return "day"


def choose_bucket(since: float, until: float, bucket: str | None = None) -> str:
    """The bucket of the timeline: `bucket` (or the default for the window), made
    coarser while it would give more than MAX_BUCKETS buckets (day at the most)."""
    if bucket is not None and bucket not in BUCKETS:
        raise ValueError(f"bucket: expected one of {', '.join(BUCKETS)}, got {bucket!r}")
    names = list(BUCKETS)
    chosen = bucket or default_bucket(since, until)
    for name in names[names.index(chosen) : -1]:
        if bucket_count(since, until, name) <= MAX_BUCKETS:
            return name
    return names[-1]


@attrs.frozen
class Timeline:
    """Counts per bucket of acceptance time, every bucket of the window (UTC starts)."""

    bucket: str  # minute | hour | day: what the items are
    requested: str | None  # what was asked for (None: the default); coarser when != bucket
    start: float  # the first bucket's start
    items: tuple[Counts, ...]
    # True: more than MAX_BUCKETS days, the timeline holds the latest (the messages
    # accepted before its first bucket are in the other sections, not in it)
    clipped: bool = False

    def starts(self) -> list[float]:
        size = BUCKETS[self.bucket]
        return [self.start + i * size for i in range(len(self.items))]


# ---------------------------------------------------------------- the report


@attrs.frozen
class Report:
    since: float
    until: float
    generated_at: float
    hours: str  # "utc" or "local"
    top: int
    totals: Counts
    by_country: tuple[tuple[str, Counts], ...]
    by_operator: tuple[tuple[str, str, Counts], ...]
    by_hour: tuple[Counts, ...]  # 24 entries, hour 0 first
    soft_numbers: tuple[SoftNumber, ...]
    remove_numbers: tuple[RemoveNumber, ...]
    by_carrier: tuple[tuple[str, Counts], ...] = ()  # "": never sent to a carrier
    by_account: tuple[tuple[str, Counts], ...] = ()
    by_reason: tuple[ReasonStats, ...] = ()  # most bounces first
    timeline: Timeline = Timeline("day", None, 0.0, ())

    # The recovery-time estimates with the most data (see `estimate_rows`).
    estimates: tuple[Mapping[str, object], ...] = ()


def _hour(ts: float, number: str, zones: Zones | None) -> int:
    """The hour of `ts` in the destination's zone (`zones`), or in UTC (None)."""
    tz = zones(number) if zones is not None else None
    if tz is not None:
        return dt.datetime.fromtimestamp(ts, tz).hour
    return dt.datetime.fromtimestamp(ts, dt.UTC).hour


PAGE = 5000  # messages read per query, so a large window does not fill the memory


async def _messages(store: Store, since: float, until: float) -> AsyncIterator[tuple[Any, ...]]:
    """(destination, state, attempts, created_at, done_at, data, carrier, account) of the
    messages accepted in [since, until), a page at a time in (created_at, id) order."""
    cols = "destination_addr, state, attempts, created_at, done_at, data, carrier, account, id"
    rows = await store.query(
        f"SELECT {cols} FROM messages WHERE created_at >= ? AND created_at < ?"
        " ORDER BY created_at, id LIMIT ?",
        (since, until, PAGE),
    )
    while rows:
        for row in rows:
            yield row[:8]
        if len(rows) < PAGE:
            return
        last_at, last_id = rows[-1][3], rows[-1][8]
        # A plain range on created_at (the index) minus the rows already read.
        rows = await store.query(
            f"SELECT {cols} FROM messages WHERE created_at >= ? AND created_at < ?"
            " AND NOT (created_at = ? AND id <= ?) ORDER BY created_at, id LIMIT ?",
            (last_at, until, last_at, last_id, PAGE),
        )


def _group(groups: dict[K, Counts], key: K) -> Counts:
    """The counts of `key` in `groups`, made when new (no Counts built per message)."""
    found = groups.get(key)
    if found is None:
        found = groups[key] = Counts()
    return found


def _sorted_groups(groups: Mapping[Any, Counts]) -> list[tuple[Any, Counts]]:
    return sorted(groups.items(), key=lambda kv: (-kv[1].sent, kv[0]))


async def build_report(
    store: Store,
    since: float,
    until: float,
    *,
    now: float,
    top: int = 10,
    local_hours: bool = False,
    time_zones: Mapping[str, str] | None = None,
    bucket: str | None = None,
) -> Report:
    """Read the store and build the report for messages accepted in [since, until).
    `local_hours`: hours in each destination's zone, the one quiet hours use
    (`time_zones`: the `[retry.time_zones]` prefixes). `bucket`: the timeline's
    (minute, hour or day; None: by the window; coarsened or clipped past MAX_BUCKETS,
    see `choose_bucket` and `Timeline`)."""
    chosen = choose_bucket(since, until, bucket)
    size = BUCKETS[chosen]
    start = math.floor(since / size) * size
    n_buckets = bucket_count(since, until, chosen)
    clipped = n_buckets > MAX_BUCKETS
    if clipped:
        start += (n_buckets - MAX_BUCKETS) * size
        n_buckets = MAX_BUCKETS
    timeline = [Counts() for _ in range(n_buckets)]
    zones = Zones(time_zones) if local_hours else None
    totals = Counts()
    countries: dict[str, Counts] = {}
    operators: dict[tuple[str, str], Counts] = {}
    carriers: dict[str, Counts] = {}
    accounts: dict[str, Counts] = {}
    reasons: dict[tuple[str, str], ReasonStats] = {}
    hours = [Counts() for _ in range(24)]
    hard_numbers: dict[str, list[Any]] = {}  # number -> [reason, count, last_at]
    async for (
        number,
        state,
        attempts,
        created_at,
        done_at,
        data_text,
        carrier,
        account,
    ) in _messages(store, since, until):
        number = str(number)
        data = orjson.loads(data_text) if data_text else {}
        o = message_outcome(str(state), int(attempts), data)
        country, operator = country_operator(number)
        totals.add(o)
        _group(countries, country).add(o)
        _group(operators, (country, operator)).add(o)
        _group(carriers, str(carrier or "")).add(o)
        _group(accounts, str(account or "")).add(o)
        hours[_hour(float(created_at), number, zones)].add(o)
        if created_at >= start:
            timeline[min(int((float(created_at) - start) // size), n_buckets - 1)].add(o)
        verdict = data.get("verdict") or {}
        reason = str(verdict.get("reason", "")) if isinstance(verdict, Mapping) else ""
        if o.result == "hard" or data.get("retries"):
            _count_reasons(reasons, o, data, reason, done_at)
        if o.result == "hard" and reason in SUPPRESS_REASONS:
            at = float(done_at if done_at is not None else created_at)
            entry = hard_numbers.setdefault(number, [reason, 0, at])
            entry[1] += 1
            if at >= entry[2]:
                entry[0], entry[2] = reason, at

    soft_numbers = await _soft_numbers(store, since, until, top)
    remove = await _remove_numbers(store, hard_numbers, now)
    return Report(
        since=since,
        until=until,
        generated_at=now,
        hours="local" if local_hours else "utc",
        top=top,
        totals=totals,
        by_country=tuple(_sorted_groups(countries)),
        by_operator=tuple((c, op, n) for (c, op), n in _sorted_groups(operators)),
        by_hour=tuple(hours),
        soft_numbers=soft_numbers,
        remove_numbers=remove,
        by_carrier=tuple(_sorted_groups(carriers)),
        by_account=tuple(_sorted_groups(accounts)),
        by_reason=tuple(
            sorted(
                reasons.values(),
                key=lambda e: (-e.bounces, REASON_KINDS.index(e.kind), e.reason),
            )
        ),
        timeline=Timeline(chosen, bucket, start, tuple(timeline), clipped),
        estimates=await estimate_rows(store, top),
    )


def _count_reasons(
    reasons: dict[tuple[str, str], ReasonStats],
    o: Outcome,
    data: Mapping[str, Any],
    final_reason: str,
    done_at: float | None,
) -> None:
    """Add one message to `reasons`: each soft reason of its retries, and the reason
    of its hard end."""
    retries: dict[str, int] = {}
    for entry in data.get("retries") or []:
        if isinstance(entry, list) and len(entry) == 2 and int(entry[1]) > 0:
            retries[str(entry[0])] = retries.get(str(entry[0]), 0) + int(entry[1])
    delivered = o.result == "delivered"
    first = _first_soft_bounces(data.get("history"), retries) if delivered and retries else {}
    for name, count in retries.items():
        kind = reason_kind(name)
        e = reasons.get((name, kind))
        if e is None:
            e = reasons[(name, kind)] = ReasonStats(name, kind)
        e.bounces += count
        e.messages += 1
        if delivered:
            e.recovered += 1
            t0 = first.get(name)
            if t0 is not None and done_at is not None:
                e.recover_times.append(max(float(done_at) - t0, 0.0))
    if o.result == "hard":
        name = final_reason or "unclassified"
        e = reasons.get((name, "hard"))
        if e is None:
            e = reasons[(name, "hard")] = ReasonStats(name, "hard")
        e.bounces += 1
        e.messages += 1


async def _soft_numbers(
    store: Store, since: float, until: float, top: int
) -> tuple[SoftNumber, ...]:
    rows = await store.query(
        "SELECT number, reason, COUNT(*), MIN(at), MAX(at) FROM soft_bounces"
        " WHERE at >= ? AND at < ? GROUP BY number, reason",
        (since, until),
    )
    found: dict[str, dict[str, Any]] = {}
    for number, reason, count, first, last in rows:
        if reason in LINK_REASONS:
            continue
        e = found.setdefault(
            str(number), {"n": 0, "reasons": {}, "first": float(first), "last": float(last)}
        )
        e["n"] += int(count)
        e["reasons"][str(reason)] = e["reasons"].get(str(reason), 0) + int(count)
        e["first"] = min(e["first"], float(first))
        e["last"] = max(e["last"], float(last))
    ranked = sorted(found.items(), key=lambda kv: (-kv[1]["n"], -kv[1]["last"], kv[0]))
    out: list[SoftNumber] = []
    for number, e in ranked[: max(top, 0)]:
        country, operator = country_operator(number)
        reasons = tuple(sorted(e["reasons"].items(), key=lambda kv: (-kv[1], kv[0])))
        out.append(SoftNumber(number, country, operator, e["n"], reasons, e["first"], e["last"]))
    return tuple(out)


async def _remove_numbers(
    store: Store, hard_numbers: Mapping[str, Sequence[Any]], now: float
) -> tuple[RemoveNumber, ...]:
    merged: dict[str, RemoveNumber] = {}
    for s in await store.suppression_list(now):
        country, operator = country_operator(s.number)
        merged[s.number] = RemoveNumber(
            s.number, country, operator, s.reason, ("suppression",), 0, s.created_at, s.expires_at
        )
    for number, (reason, count, last_at) in hard_numbers.items():
        old = merged.get(number)
        if old is None:
            country, operator = country_operator(number)
            merged[number] = RemoveNumber(
                number, country, operator, reason, ("hard_bounce",), count, last_at, None
            )
        else:
            merged[number] = attrs.evolve(
                old,
                sources=(*old.sources, "hard_bounce"),
                hard_bounces=count,
                last_at=max(old.last_at, last_at),
            )
    return tuple(merged[k] for k in sorted(merged))


# ---------------------------------------------------------------- JSON


def _counts_doc(c: Counts, **keys: object) -> dict[str, object]:
    doc: dict[str, object] = dict(keys)
    doc.update(c.as_dict())
    return doc


def report_json(r: Report) -> dict[str, object]:
    """The report as one JSON-ready document (schema ``bounceback.report/1``)."""
    return {
        "schema": SCHEMA,
        "generated_at": iso(r.generated_at),
        "since": iso(r.since),
        "until": iso(r.until),
        "hours": r.hours,
        "totals": r.totals.as_dict(),
        "by_country": [_counts_doc(c, country=k or None) for k, c in r.by_country],
        "by_operator": [
            _counts_doc(c, country=k or None, operator=op or None) for k, op, c in r.by_operator
        ],
        "by_hour": [_counts_doc(c, hour=h) for h, c in enumerate(r.by_hour)],
        "by_carrier": [_counts_doc(c, carrier=k or None) for k, c in r.by_carrier],
        "by_account": [_counts_doc(c, account=k or None) for k, c in r.by_account],
        "by_reason": [e.as_dict() for e in r.by_reason],
        "timeline": {
            "bucket": r.timeline.bucket,
            "requested": r.timeline.requested,
            "clipped": r.timeline.clipped,
            "items": [
                _counts_doc(c, start=iso(t))
                for t, c in zip(r.timeline.starts(), r.timeline.items, strict=True)
            ],
        },
        "soft_bouncing_numbers": [
            {
                "number": s.number,
                "country": s.country or None,
                "operator": s.operator or None,
                "soft_bounces": s.soft_bounces,
                "reasons": dict(s.reasons),
                "first_at": iso(s.first_at),
                "last_at": iso(s.last_at),
            }
            for s in r.soft_numbers
        ],
        "numbers_to_remove": [
            {
                "number": n.number,
                "country": n.country or None,
                "operator": n.operator or None,
                "reason": n.reason,
                "sources": list(n.sources),
                "hard_bounces": n.hard_bounces,
                "last_at": iso(n.last_at),
                "suppressed_until": iso(n.suppressed_until)
                if n.suppressed_until is not None
                else None,
            }
            for n in r.remove_numbers
        ],
        "recovery_estimates": [
            {**e, "updated_at": iso(float(str(e["updated_at"])))} for e in r.estimates
        ],
    }


# ---------------------------------------------------------------- CSV

CSV_HEADER = (
    "section",
    "country",
    "operator",
    "hour",
    "number",
    *COUNT_FIELDS,
    *RATE_FIELDS,
    "soft_bounces",
    "reason",
    "last_at",
    # the columns of the sections added later, at the end: old readers keep their places
    "carrier",
    "account",
    "start",
    "kind",
    "bounces",
    "messages",
    "recover_median_s",
    "recover_p90_s",
    "recover_samples",
)

# One part of the report as its own CSV table (``render_csv(r, section)``, the admin
# API's ``/v1/stats?format=csv&section=``): the section's name is its key in the JSON
# document, its columns are the keys of that list's items.
SECTIONS: dict[str, tuple[str, ...]] = {
    "totals": COUNT_COLUMNS,
    "by_country": ("country", *COUNT_COLUMNS),
    "by_operator": ("country", "operator", *COUNT_COLUMNS),
    "by_hour": ("hour", *COUNT_COLUMNS),
    "by_carrier": ("carrier", *COUNT_COLUMNS),
    "by_account": ("account", *COUNT_COLUMNS),
    "by_reason": REASON_FIELDS,
    "timeline": ("start", *COUNT_COLUMNS),
    "soft_bouncing_numbers": (
        "number",
        "country",
        "operator",
        "soft_bounces",
        "reasons",
        "first_at",
        "last_at",
    ),
    "numbers_to_remove": (
        "number",
        "country",
        "operator",
        "reason",
        "sources",
        "hard_bounces",
        "last_at",
        "suppressed_until",
    ),
    "recovery_estimates": (
        "country",
        "operator",
        "reason",
        "level",
        "recovered",
        "failed",
        "updated_at",
        "p50_s",
        "p90_s",
        "recovered_by_24h",
        "typical_s",
    ),
}
_FIXED = frozenset({*RATE_FIELDS, "submissions_per_message"})  # shown with four decimals


def _csv_rate(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _cell(key: str, value: object) -> str:
    """A JSON value as a CSV cell: null empty, rates with four decimals, a list joined
    with "+", an object as "key:value" pairs."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and key in _FIXED:
        return _csv_rate(value)
    if isinstance(value, list):
        return "+".join(str(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


def section_rows(doc: Mapping[str, Any], section: str) -> list[Mapping[str, Any]]:
    """The items of one section of a report document (`report_json`)."""
    if section not in SECTIONS:
        raise ValueError(f"section: expected one of {', '.join(SECTIONS)}, got {section!r}")
    if section == "totals":
        return [doc["totals"]]
    if section == "timeline":
        return list(doc["timeline"]["items"])
    return list(doc[section])


def csv_from_doc(doc: Mapping[str, Any], section: str | None = None) -> str:
    """A report document (`report_json`) as CSV: the whole report in one table
    (`section` None, see `render_csv`), or one section as its own table."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if section is not None:
        rows = section_rows(doc, section)  # raises ValueError for an unknown section
        columns = SECTIONS[section]
        w.writerow(columns)
        for item in rows:
            w.writerow([_cell(k, item.get(k)) for k in columns])
        return buf.getvalue()

    w.writerow(CSV_HEADER)
    index = {name: i for i, name in enumerate(CSV_HEADER)}

    def row(section: str, **cells: object) -> None:
        out = [""] * len(CSV_HEADER)
        out[0] = section
        for key, value in cells.items():
            out[index[key]] = _cell(key, value)
        w.writerow(out)

    def group(section: str, item: Mapping[str, Any], *keys: str) -> None:
        cells = {k: item.get(k) for k in (*keys, *COUNT_FIELDS, *RATE_FIELDS)}
        row(section, **cells)

    group("total", doc["totals"])
    for item in doc["by_country"]:
        group("country", item, "country")
    for item in doc["by_operator"]:
        group("operator", item, "country", "operator")
    for item in doc["by_hour"]:
        if item["sent"]:
            group("hour", item, "hour")
    for item in doc["by_carrier"]:
        group("carrier", item, "carrier")
    for item in doc["by_account"]:
        group("account", item, "account")
    for item in doc["timeline"]["items"]:
        group("timeline", item, "start")
    for item in doc["by_reason"]:
        row("reason", **{k: item.get(k) for k in REASON_FIELDS})
    for item in doc["soft_bouncing_numbers"]:
        row(
            "soft_number",
            country=item["country"],
            operator=item["operator"],
            number=item["number"],
            soft_bounces=item["soft_bounces"],
            reason=item["reasons"],
            last_at=item["last_at"],
        )
    for item in doc["numbers_to_remove"]:
        row(
            "remove_number",
            country=item["country"],
            operator=item["operator"],
            number=item["number"],
            reason=item["reason"],
            last_at=item["last_at"],
        )
    return buf.getvalue()


def render_csv(r: Report, section: str | None = None) -> str:
    """The report as CSV. Without `section`: one table whose ``section`` column says
    what a row is: ``total``, ``country``, ``operator``, ``hour`` (hours with
    messages), ``carrier``, ``account``, ``timeline`` (every bucket), ``reason``,
    ``soft_number`` or ``remove_number``; cells that do not apply to a row are empty.
    With `section` (a key of SECTIONS, the JSON document's names): that part alone,
    its own columns."""
    return csv_from_doc(report_json(r), section)


# ---------------------------------------------------------------- text


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = ""
) -> list[str]:
    """Aligned columns. `align` has one letter per column, "l" (left) or "r" (right);
    columns it does not cover: the first left, the others right."""
    cells = [[str(h) for h in headers]] + [[str(v) for v in row] for row in rows]
    n = len(headers)
    modes = (align or "l").ljust(n, "r")
    widths = [max(len(row[i]) for row in cells) for i in range(n)]
    lines = []
    for row in cells:
        parts = [
            row[i].ljust(widths[i]) if modes[i] == "l" else row[i].rjust(widths[i])
            for i in range(n)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


GROUP_HEADERS = (
    "sent",
    "delivered",
    "recovered",
    "soft-bounced",
    "hard",
    "expired",
    "pending",
    "bounce %",
    "hard %",
    "recovery %",
)


def group_cells(c: Counts) -> list[object]:
    r = c.rates()
    return [
        c.sent,
        c.delivered,
        c.recovered,
        c.soft_bounced,
        c.hard,
        c.expired,
        c.pending + c.cancelled,
        pct(r["bounce_rate"]),
        pct(r["hard_rate"]),
        pct(r["recovery_rate"]),
    ]


def soft_number_rows(r: Report, when: Callable[[float], str]) -> list[list[object]]:
    """The rows of the "numbers that keep soft-bouncing" table (terminal and HTML)."""
    return [
        [
            s.number,
            s.country or "-",
            s.operator or "-",
            s.soft_bounces,
            ", ".join(f"{k} {v}" for k, v in s.reasons),
            when(s.last_at),
        ]
        for s in r.soft_numbers
    ]


def remove_number_rows(r: Report, when: Callable[[float], str]) -> list[list[object]]:
    """The rows of the "hard-bounced numbers to remove" table (terminal and HTML)."""
    return [
        [
            n.number,
            n.country or "-",
            n.operator or "-",
            n.reason,
            "+".join(n.sources),
            when(n.last_at),
        ]
        for n in r.remove_numbers[:SHOW_NUMBERS]
    ]


def when_utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    """A time to recover for people: 42.5s, 3m05s, 2h10m, 3d04h ("-": none)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def reason_rows(r: Report) -> list[list[object]]:
    """The rows of the "by reason" table (terminal and HTML)."""
    rows: list[list[object]] = []
    for e in r.by_reason:
        rows.append(
            [
                e.reason,
                e.kind,
                e.bounces,
                e.messages,
                e.recovered,
                pct(e.recovery_rate),
                duration(quantile(e.recover_times, 0.5)),
                duration(quantile(e.recover_times, 0.9)),
            ]
        )
    return rows


REASON_HEADERS = (
    "reason",
    "kind",
    "bounces",
    "messages",
    "recovered",
    "recovery %",
    "recover median",
    "recover p90",
)


def bucket_label(ts: float, bucket: str) -> str:
    """A timeline bucket's start as the tables show it (UTC)."""
    fmt = "%Y-%m-%d" if bucket == "day" else "%Y-%m-%d %H:%M"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt)


# How a column of a group table reads (by index in GROUP_HEADERS): good, warn or bad.
GROUP_TONES = {1: "good", 2: "good", 3: "warn", 4: "bad", 5: "warn", 7: "warn", 8: "bad"}


@attrs.frozen
class Table:
    """One table of the report as people read it (terminal text and rich tables)."""

    section: str  # its name in SECTIONS (the JSON document's key)
    title: str
    headers: tuple[str, ...]
    rows: list[list[object]]
    align: str = ""  # see `format_table`
    tones: Mapping[int, str] = attrs.field(factory=dict)  # column -> good | warn | bad
    footer: str = ""  # a line under it


def _group_tones(shift: int) -> dict[int, str]:
    return {i + shift: tone for i, tone in GROUP_TONES.items()}


def report_tables(r: Report) -> list[Table]:
    """The report's tables, in the order the terminal shows them."""
    zone = "UTC" if r.hours == "utc" else "destination local time"
    t = r.totals
    spm = f"{t.submissions / t.sent:.2f}" if t.sent else "-"
    tl = r.timeline
    coarser = f"; coarsened from {tl.requested}" if tl.requested not in (None, tl.bucket) else ""
    clipped = f"; the latest {MAX_BUCKETS} days" if tl.clipped else ""
    more = len(r.remove_numbers) - SHOW_NUMBERS
    tables = [
        Table(
            "totals",
            "Totals",
            (*GROUP_HEADERS, "submissions/msg"),
            [[*group_cells(t), spm]],
            "r",
            GROUP_TONES,
        ),
        Table(
            "by_country",
            "By country",
            ("country", *GROUP_HEADERS),
            [[k or "(unknown)", *group_cells(c)] for k, c in r.by_country],
            tones=_group_tones(1),
        ),
        Table(
            "by_operator",
            "By operator",
            ("country", "operator", *GROUP_HEADERS),
            [[k or "(unknown)", op or "(unknown)", *group_cells(c)] for k, op, c in r.by_operator],
            "ll",
            _group_tones(2),
        ),
        Table(
            "by_hour",
            f"By hour of day ({zone}; hours with messages)",
            ("hour", *GROUP_HEADERS),
            [[f"{h:02d}", *group_cells(c)] for h, c in enumerate(r.by_hour) if c.sent],
            tones=_group_tones(1),
        ),
        Table(
            "by_carrier",
            "By carrier (the one the message last went through)",
            ("carrier", *GROUP_HEADERS),
            [[k or "(none)", *group_cells(c)] for k, c in r.by_carrier],
            tones=_group_tones(1),
        ),
        Table(
            "by_account",
            "By account",
            ("account", *GROUP_HEADERS),
            [[k or "(none)", *group_cells(c)] for k, c in r.by_account],
            tones=_group_tones(1),
        ),
        Table(
            "by_reason",
            "By bounce reason (link: the carrier's side; recover: from the first soft"
            " bounce to delivery)",
            REASON_HEADERS,
            reason_rows(r),
            "ll",
            {2: "warn", 4: "good", 5: "good"},
        ),
        Table(
            "timeline",
            f"Timeline (per {tl.bucket}, UTC{coarser}{clipped}; {tl.bucket}s with messages)",
            ("start", *GROUP_HEADERS),
            [
                [bucket_label(ts, tl.bucket), *group_cells(c)]
                for ts, c in zip(tl.starts(), tl.items, strict=True)
                if c.sent
            ],
            tones=_group_tones(1),
        ),
        Table(
            "soft_bouncing_numbers",
            f"Numbers that keep soft-bouncing (top {r.top}; carrier-side reasons left out)",
            ("number", "country", "operator", "soft bounces", "reasons", "last (UTC)"),
            soft_number_rows(r, when_utc),
            "lllrll",
            {3: "warn"},
        ),
        Table(
            "numbers_to_remove",
            "Hard-bounced numbers to remove (suppression list + number-level hard bounces)",
            ("number", "country", "operator", "reason", "source", "last (UTC)"),
            remove_number_rows(r, when_utc),
            "llllll",
            {3: "bad"},
            f"... and {more} more (--format csv or json lists them all)" if more > 0 else "",
        ),
    ]
    # Recovery-time estimates ([retry] mode = "learned").
    tables.append(
        Table(
            "recovery_estimates",
            ESTIMATES_TITLE,
            ESTIMATE_HEADERS,
            [list(row) for row in estimate_cells(r)],
            "lllrrrrr",
        )
    )
    return tables


def report_heading(r: Report) -> tuple[str, str]:
    """The report's title line and the line that says how to read it."""
    zone = "UTC" if r.hours == "utc" else "destination local time"
    return (
        f"Bounceback stats for messages accepted {iso(r.since)} .. {iso(r.until)}",
        f"(pending includes cancelled; rates are shares of sent, recovery = recovered / "
        f"soft-bounced; hours in {zone})",
    )


def render_text(r: Report, sections: Collection[str] | None = None) -> str:
    """The report as aligned terminal tables (`sections`: only those, by SECTIONS name)."""
    out = [*report_heading(r)]
    for tab in report_tables(r):
        if sections is not None and tab.section not in sections:
            continue
        out += ["", tab.title]
        if tab.rows:
            out += format_table(tab.headers, tab.rows, tab.align)
            if tab.footer:
                out.append(tab.footer)
        else:
            out.append("  (none)")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- recovery estimates

ESTIMATES_TITLE = "Recovery-time estimates ([retry] mode = learned; most data first)"
ESTIMATE_HEADERS = (
    "country",
    "operator",
    "reason",
    "recovered",
    "failed",
    "median",
    "p90",
    "by 24 h",
)


async def estimate_rows(store: Store, top: int) -> tuple[Mapping[str, object], ...]:
    """The `top` recovery estimates with the most observations (a summary each)."""
    try:
        curves = await store.recovery_load()
    except Exception:  # a PostgreSQL schema from before the estimates (bounceback migrate)
        return ()
    est = Estimates(max_keys=len(curves) + 1, curves=dict(curves))
    keys = sorted(est.curves, key=lambda k: (-(est.curves[k].recovered + est.curves[k].failed), k))
    return tuple(est.summary(k) for k in keys[:top])


def _dur_s(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def estimate_cells(r: Report) -> list[list[str]]:
    return [
        [
            str(e["country"]) or "*",
            str(e["operator"]) or "*",
            str(e["reason"]),
            str(e["recovered"]),
            str(e["failed"]),
            _dur_s(e.get("p50_s")),
            _dur_s(e.get("p90_s")),
            f"{100 * float(str(e['recovered_by_24h'])):.0f}%",
        ]
        for e in r.estimates
    ]
