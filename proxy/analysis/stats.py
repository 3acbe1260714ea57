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
country calling code's main country) and by hour of day of acceptance, in **UTC**
by default or in the destination's **local time** (``local_hours=True``; UTC when the
number's zone is unknown).

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
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from bounceback.core.engine import LINK_REASONS, SUPPRESS_REASONS
from bounceback.core.localtime import Zones
from bounceback.core.model import State
from bounceback.core.recovery import Estimates
from bounceback.feed.events import iso, number_info
from bounceback.store.sqlite import Store

SCHEMA = "bounceback.report/1"

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
    """(destination, state, attempts, created_at, done_at, data) of the messages accepted
    in [since, until), a page at a time in (created_at, id) order."""
    cols = "destination_addr, state, attempts, created_at, done_at, data, id"
    rows = await store.query(
        f"SELECT {cols} FROM messages WHERE created_at >= ? AND created_at < ?"
        " ORDER BY created_at, id LIMIT ?",
        (since, until, PAGE),
    )
    while rows:
        for row in rows:
            yield row[:6]
        if len(rows) < PAGE:
            return
        last_at, last_id = rows[-1][3], rows[-1][6]
        # A plain range on created_at (the index) minus the rows already read.
        rows = await store.query(
            f"SELECT {cols} FROM messages WHERE created_at >= ? AND created_at < ?"
            " AND NOT (created_at = ? AND id <= ?) ORDER BY created_at, id LIMIT ?",
            (last_at, until, last_at, last_id, PAGE),
        )


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
) -> Report:
    """Read the store and build the report for messages accepted in [since, until).
    `local_hours`: hours in each destination's zone, the one quiet hours use
    (`time_zones`: the `[retry.time_zones]` prefixes)."""
    zones = Zones(time_zones) if local_hours else None
    totals = Counts()
    countries: dict[str, Counts] = {}
    operators: dict[tuple[str, str], Counts] = {}
    hours = [Counts() for _ in range(24)]
    hard_numbers: dict[str, list[Any]] = {}  # number -> [reason, count, last_at]
    async for number, state, attempts, created_at, done_at, data_text in _messages(
        store, since, until
    ):
        number = str(number)
        data = json.loads(data_text) if data_text else {}
        o = message_outcome(str(state), int(attempts), data)
        country, operator = country_operator(number)
        totals.add(o)
        countries.setdefault(country, Counts()).add(o)
        operators.setdefault((country, operator), Counts()).add(o)
        hours[_hour(float(created_at), number, zones)].add(o)
        verdict = data.get("verdict") or {}
        reason = str(verdict.get("reason", "")) if isinstance(verdict, Mapping) else ""
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
        estimates=await estimate_rows(store, top),
    )


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
        "recovery_estimates": [dict(e) for e in r.estimates],
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
)


def _csv_rate(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def render_csv(r: Report) -> str:
    """One CSV table; the ``section`` column says what a row is: ``total``, ``country``,
    ``operator``, ``hour``, ``soft_number`` or ``remove_number``. Cells that do not apply
    to a section are empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)

    def group(section: str, c: Counts, country: str = "", op: str = "", hour: str = "") -> None:
        rates = c.rates()
        w.writerow(
            [
                section,
                country,
                op,
                hour,
                "",
                *(getattr(c, f) for f in COUNT_FIELDS),
                *(_csv_rate(rates[f]) for f in RATE_FIELDS),
                "",
                "",
                "",
            ]
        )

    blank = [""] * (len(COUNT_FIELDS) + len(RATE_FIELDS))
    group("total", r.totals)
    for country, c in r.by_country:
        group("country", c, country)
    for country, op, c in r.by_operator:
        group("operator", c, country, op)
    for hour, c in enumerate(r.by_hour):
        if c.sent:
            group("hour", c, hour=str(hour))
    for s in r.soft_numbers:
        reasons = " ".join(f"{k}:{v}" for k, v in s.reasons)
        w.writerow(
            [
                *("soft_number", s.country, s.operator, "", s.number),
                *blank,
                *(s.soft_bounces, reasons, iso(s.last_at)),
            ]
        )
    for n in r.remove_numbers:
        w.writerow(
            [
                *("remove_number", n.country, n.operator, "", n.number),
                *blank,
                *("", n.reason, iso(n.last_at)),
            ]
        )
    return buf.getvalue()


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


def render_text(r: Report) -> str:
    """The report as aligned terminal tables."""
    zone = "UTC" if r.hours == "utc" else "destination local time"
    t = r.totals
    out = [
        f"Bounceback stats for messages accepted {iso(r.since)} .. {iso(r.until)}",
        f"(pending includes cancelled; rates are shares of sent, recovery = recovered / "
        f"soft-bounced; hours in {zone})",
        "",
        "Totals",
    ]
    spm = f"{t.submissions / t.sent:.2f}" if t.sent else "-"
    out += format_table((*GROUP_HEADERS, "submissions/msg"), [[*group_cells(t), spm]], "r")
    out += ["", "By country"]
    out += format_table(
        ("country", *GROUP_HEADERS),
        [[k or "(unknown)", *group_cells(c)] for k, c in r.by_country],
    )
    out += ["", "By operator"]
    out += format_table(
        ("country", "operator", *GROUP_HEADERS),
        [[k or "(unknown)", op or "(unknown)", *group_cells(c)] for k, op, c in r.by_operator],
        "ll",
    )
    out += ["", f"By hour of day ({zone}; hours with messages)"]
    out += format_table(
        ("hour", *GROUP_HEADERS),
        [[f"{h:02d}", *group_cells(c)] for h, c in enumerate(r.by_hour) if c.sent],
    )
    out += ["", f"Numbers that keep soft-bouncing (top {r.top}; carrier-side reasons left out)"]
    if r.soft_numbers:
        out += format_table(
            ("number", "country", "operator", "soft bounces", "reasons", "last (UTC)"),
            soft_number_rows(r, when_utc),
            "lllrll",
        )
    else:
        out.append("  (none)")
    out += ["", "Hard-bounced numbers to remove (suppression list + number-level hard bounces)"]
    if r.remove_numbers:
        out += format_table(
            ("number", "country", "operator", "reason", "source", "last (UTC)"),
            remove_number_rows(r, when_utc),
            "llllll",
        )
        more = len(r.remove_numbers) - SHOW_NUMBERS
        if more > 0:
            out.append(f"... and {more} more (--format csv or json lists them all)")
    else:
        out.append("  (none)")
    out += ["", ESTIMATES_TITLE]
    out += (
        format_table(ESTIMATE_HEADERS, estimate_cells(r), "lllrrrrr")
        if r.estimates
        else ["  (none)"]
    )
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
