"""Retry-effectiveness benchmark: a simulated population of numbers through the real engine.

A discrete-event simulation with a simulated clock (a heap of timed events, no
sleeping) drives the message engine's ``decide(message, event, policy)`` for every
message, exactly as the gateway does: ``Dispatch`` when a message arrives,
``SubmitResult`` when the carrier answers a submission, ``ReceiptIn`` when its
receipt comes in, ``Due`` when a held message's timer fires. Every ``Submit`` action
is "sent" to a carrier model, and the carrier's answers are classified by the real
classifier (``classify_submit_status`` / ``classify_receipt``, turned into a
``Verdict`` by the gateway's ``verdict_of``), so the engine sees the same verdicts it
would see in production.

Population (``--mix CLASS=SHARE``, ``--spell CLASS=MEDIAN_S:SIGMA``; defaults below).
Each message goes to one number; a number of a soft class is unreachable from the
message's arrival for a spell drawn from a lognormal distribution (median, sigma),
then reachable for good:

=============  =====  ==================  ============================================
class          share  spell (median, σ)   the carrier's answer while unreachable
=============  =====  ==================  ============================================
reachable      0.80   —                   (delivered at the first attempt)
absent         0.09   30 min, 2.0         receipt UNDELIV err 027 (MAP absentSubscriber)
memory_full    0.03   3 h, 0.8            receipt UNDELIV err 040 (map40: memory
                                          capacity exceeded; ``--memory-full-err 032``
                                          sends MAP sm-DeliveryFailure instead)
busy           0.02   1 min, 1.0          receipt UNDELIV err 031 (busy for MT-SMS)
network        0.02   5 min, 1.0          receipt UNDELIV err 034 (MAP systemFailure)
throttled      0.02   5 s, 1.0            submit_sm_resp 0x58 ESME_RTHROTTLED
unknown        0.02   — (hard)            receipt UNDELIV err 001 (unknownSubscriber)
=============  =====  ==================  ============================================

The absent spells are heavy-tailed: with σ = 2 about half end within 30 minutes,
one in ten lasts more than 6 hours and about one in a hundred more than two days.
Messages arrive spread evenly over ``--arrival-window`` seconds; each has a validity
of ``--validity-hours`` (default 48 h). The carrier answers a submission after
50–300 ms; a reachable destination gives a DELIVRD receipt 2–10 s later, an
unreachable one the soft receipt of its class 5–30 s later, an unknown number the
hard receipt 1–5 s later. Whether the destination is reachable is decided at the
moment of submission. No alert_notification is modelled: retries run on timers only.

A message is **recoverable** when it bounced soft at first (any soft class) and its
spell ends before its validity deadline; it is **recovered** when it is delivered.

Strategies (all through the same engine, only the ``Policy`` differs):

* ``bounceback``: ``Policy()``, the defaults (per-reason schedules, 20 % jitter,
  ``max_attempts`` 6): what a gateway with a default config runs.
* ``naive-5m``: every soft reason on one fixed interval (``--naive-interval``,
  default 300 s), no backoff, no jitter, and ``max_attempts`` large enough for the
  retries to cover the whole validity (validity / interval + 1).
* ``naive-5m x6``: the same fixed interval with our ``max_attempts`` (6).
* ``no-retry``: one submission per message: a message the engine would hold for a
  retry (a link failure such as throttling included) ends there.
* ``--max-attempts N`` (repeatable) adds ``bounceback max=N`` rows, the default
  schedules with another attempt bound; ``--schedule REASON=INITIAL:FACTOR:MAX``
  (repeatable) replaces schedules in those added rows (alone, it adds one row with
  the default bound).

Printed per strategy: the share of recoverable messages recovered, messages
delivered, submissions, extra submissions (beyond each message's first) per recovered
message, wasted submissions (every submission that did not deliver: soft and hard
receipts, refused submissions), time from arrival to delivery at p50/p90 of the
recovered messages, the lag from the moment the number became reachable to its
delivery at p50/p90 (how late the retries notice), and submissions per unknown
number (1.00 means a hard bounce is never retried). A second table breaks recovery
down by class and says why the lost recoverable messages ended (attempts ran out, or
validity). The goal checked at the end: recover at least 95 % of the recoverable
messages with fewer wasted submissions than ``naive-5m``.

With ``--population FILE [--json]`` it judges instead the three modes ``naive``,
``static`` and ``learned`` on a population described in a JSON file (the format and
the figures are in ``retry_population.py`` and bench/README.md).

Usage::

    python bench/bench_retry.py --population bench/populations/example.json [--json]
    python bench/bench_retry.py [--messages 20000] [--seed 1] [--validity-hours 48]
        [--arrival-window 3600] [--naive-interval 300]
        [--mix absent=0.09 ...] [--spell absent=1800:2.0 ...]
        [--memory-full-err 040|032] [--max-attempts N ...]
        [--schedule absent_subscriber=600:2:3600 ...] [--json]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bounceback.config.settings import SOFT_REASONS
from bounceback.core.engine import (
    DEFAULT_SCHEDULES,
    Dispatch,
    Due,
    Event,
    Policy,
    ReceiptIn,
    Schedule,
    Submit,
    SubmitResult,
    decide,
)
from bounceback.core.model import Message, State, Verdict
from bounceback.gateway.path import verdict_of
from smppcodecs.classify import Rules, classify_receipt, classify_submit_status
from smppcodecs.constants import CommandStatus
from smppcodecs.receipt import Receipt

EPOCH = 1_750_000_000.0  # the simulated clock starts here (seconds since the epoch)
HOUR = 3600.0

CLASSES: tuple[str, ...] = (
    "reachable",
    "absent",
    "memory_full",
    "busy",
    "network",
    "throttled",
    "unknown",
)
SOFT_CLASSES: tuple[str, ...] = ("absent", "memory_full", "busy", "network", "throttled")

DEFAULT_MIX: dict[str, float] = {
    "reachable": 0.80,
    "absent": 0.09,
    "memory_full": 0.03,
    "busy": 0.02,
    "network": 0.02,
    "throttled": 0.02,
    "unknown": 0.02,
}
# (median seconds, sigma of the underlying normal) of the unreachable spell.
DEFAULT_SPELLS: dict[str, tuple[float, float]] = {
    "absent": (1800.0, 2.0),
    "memory_full": (3.0 * HOUR, 0.8),
    "busy": (60.0, 1.0),
    "network": (300.0, 1.0),
    "throttled": (5.0, 1.0),
}
# The err: the carrier writes in a receipt while a number of the class is unreachable.
RECEIPT_ERR: dict[str, str] = {
    "absent": "027",
    "memory_full": "040",
    "busy": "031",
    "network": "034",
    "unknown": "001",
}

# The carrier writes memory full as 40 + SM-DeliveryFailureCause (cause 0).
CARRIER_RULES = Rules(err_space="map40")


# ---------------------------------------------------------------- population


@dataclass(frozen=True, slots=True)
class Number:
    """One message's destination: its class, arrival and when it becomes reachable."""

    klass: str
    created: float
    reachable_at: float  # inf for an unknown number; created for a reachable one
    deadline: float

    @property
    def recoverable(self) -> bool:
        return self.klass in SOFT_CLASSES and self.reachable_at < self.deadline


def make_population(
    n: int,
    rng: random.Random,
    mix: Mapping[str, float],
    spells: Mapping[str, tuple[float, float]],
    validity: float,
    window: float,
) -> list[Number]:
    """`n` numbers drawn from the mix, arriving evenly over `window` seconds."""
    names = [c for c in CLASSES if mix.get(c, 0.0) > 0.0]
    weights = [mix[c] for c in names]
    out: list[Number] = []
    for i in range(n):
        klass = rng.choices(names, weights)[0]
        created = EPOCH + window * i / max(n, 1)
        if klass == "reachable":
            reachable_at = created
        elif klass == "unknown":
            reachable_at = math.inf
        else:
            median, sigma = spells[klass]
            reachable_at = created + rng.lognormvariate(math.log(median), sigma)
        out.append(Number(klass, created, reachable_at, created + validity))
    return out


# ---------------------------------------------------------------- carrier model


class Verdicts:
    """The carrier's answers, classified once each by the real classifier."""

    def __init__(self, memory_full_err: str) -> None:
        self.errs = dict(RECEIPT_ERR, memory_full=memory_full_err)
        self._cache: dict[tuple[str, str], Verdict] = {}
        self.throttled = verdict_of(
            classify_submit_status(int(CommandStatus.ESME_RTHROTTLED), CARRIER_RULES)
        )

    def receipt(self, stat: str, err: str) -> Verdict:
        key = (stat, err)
        found = self._cache.get(key)
        if found is None:
            found = verdict_of(classify_receipt(Receipt(stat=stat, err=err), CARRIER_RULES))
            self._cache[key] = found
        return found


# ---------------------------------------------------------------- simulation


class EventQueue:
    """The timed events of one simulation: (time, message index, event), earliest
    first, and in the order they were pushed when their times are equal."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Event]] = []
        self._seq = 0

    def push(self, at: float, i: int, ev: Event) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, i, ev))

    def pop(self) -> tuple[float, int, Event]:
        at, _, i, ev = heapq.heappop(self._heap)
        return at, i, ev

    def __bool__(self) -> bool:
        return bool(self._heap)


@dataclass(slots=True)
class Outcome:
    """What happened to one message under one strategy."""

    state: State
    submissions: int = 0
    wasted: int = 0
    delivered_at: float | None = None
    why: str = ""  # how a message that did not deliver ended


def simulate(
    pop: Sequence[Number], policy: Policy, verdicts: Verdicts, seed: int, *, retry: bool = True
) -> list[Outcome]:
    """Run every message of `pop` through the engine under `policy` until all are final
    (`retry=False`: a message the engine holds for a retry ends there, unretried)."""
    rng = random.Random(seed)
    msgs: list[Message] = [
        Message(
            id=f"{i:016X}",
            account="bench",
            source_addr="Bench",
            destination_addr=f"4477009{i:05d}",
            pdu=b"",
            registered_delivery=1,
            created_at=p.created,
            deadline=p.deadline,
            deadline_is_validity=True,
            submit_date=p.created,
        )
        for i, p in enumerate(pop)
    ]
    outs = [Outcome(State.ACCEPTED) for _ in pop]
    events = EventQueue()
    push = events.push
    given_up: set[int] = set()

    def send(i: int, attempt: int, now: float) -> None:
        p = pop[i]
        out = outs[i]
        out.submissions += 1
        answered = now + rng.uniform(0.05, 0.3)
        if p.klass == "throttled" and now < p.reachable_at:
            out.wasted += 1
            status = int(CommandStatus.ESME_RTHROTTLED)
            push(
                answered,
                i,
                SubmitResult(answered, "sim", status, "", verdicts.throttled, rand=rng.random()),
            )
            return
        push(answered, i, SubmitResult(answered, "sim", 0, f"{i}.{attempt}", None))
        if now >= p.reachable_at:
            at = now + rng.uniform(2.0, 10.0)
            stat, err = "DELIVRD", "000"
        else:
            out.wasted += 1
            hard = p.klass == "unknown"
            at = now + (rng.uniform(1.0, 5.0) if hard else rng.uniform(5.0, 30.0))
            stat, err = "UNDELIV", verdicts.errs[p.klass]
        verdict = verdicts.receipt(stat, err)
        push(at, i, ReceiptIn(at, attempt, verdict, stat, err, rand=rng.random()))

    for i, p in enumerate(pop):
        push(p.created, i, Dispatch(p.created))
    while events:
        now, i, ev = events.pop()
        old = msgs[i]
        new, actions = decide(old, ev, policy)
        msgs[i] = new
        for action in actions:
            if isinstance(action, Submit):
                send(i, action.attempt, now)
        if new.state is State.HELD and old.state is not State.HELD and not retry:
            given_up.add(i)
            reason = new.verdict.reason if new.verdict is not None else ""
            outs[i].state, outs[i].why = State.FAILED, f"no retry ({reason})"
        elif new.state is State.HELD and old.state is not State.HELD:
            due = new.next_attempt_at if new.next_attempt_at is not None else now
            due = max(due, now)
            push(due, i, Due(due))
        if new.state is not old.state and new.state.final:
            out = outs[i]
            out.state = new.state
            if new.state is State.DELIVERED:
                out.delivered_at = now
            else:
                reason = new.verdict.reason if new.verdict is not None else ""
                out.why = "validity" if new.state is State.EXPIRED else f"attempts ({reason})"
    for i, (m, out) in enumerate(zip(msgs, outs, strict=True)):
        # Never expected: every submission gets an answer.
        if not m.state.final and i not in given_up:
            out.state = m.state
            out.why = "unfinished"
    return outs


# ---------------------------------------------------------------- strategies


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    policy: Policy
    family: str  # bounceback | naive | none


def fixed_schedules(interval: float) -> dict[str, Schedule]:
    return {reason: Schedule(interval, 1.0, interval) for reason in SOFT_REASONS}


def strategies(
    validity: float,
    interval: float,
    extra_max: Sequence[int],
    overrides: Mapping[str, Schedule],
) -> list[Strategy]:
    label = f"{interval / 60:g}m" if interval % 60 == 0 else f"{interval:g}s"
    covering = math.ceil(validity / interval) + 1
    base = Policy()
    out = [
        Strategy("bounceback", base, "bounceback"),
        Strategy(
            f"naive-{label}",
            Policy(max_attempts=covering, jitter=0.0, schedules=fixed_schedules(interval)),
            "naive",
        ),
        Strategy(
            f"naive-{label} x{base.max_attempts}",
            Policy(max_attempts=base.max_attempts, jitter=0.0, schedules=fixed_schedules(interval)),
            "naive",
        ),
        Strategy("no-retry", Policy(max_attempts=1), "none"),
    ]
    bounds = list(extra_max) or ([base.max_attempts] if overrides else [])
    schedules = {**DEFAULT_SCHEDULES, **overrides}
    tag = " +sched" if overrides else ""
    for n in bounds:
        out.append(
            Strategy(
                f"bounceback max={n}{tag}",
                Policy(max_attempts=n, schedules=schedules),
                "bounceback",
            )
        )
    return out


# ---------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[k]


def summarize(
    name: str, family: str, pop: Sequence[Number], outs: Sequence[Outcome], seconds: float
) -> dict[str, Any]:
    recoverable = [i for i, p in enumerate(pop) if p.recoverable]
    recovered = [i for i in recoverable if outs[i].state is State.DELIVERED]
    submissions = sum(o.submissions for o in outs)
    extra = submissions - len(pop)
    unknown = [i for i, p in enumerate(pop) if p.klass == "unknown"]
    done = [(i, d) for i in recovered if (d := outs[i].delivered_at) is not None]
    ttd = [d - pop[i].created for i, d in done]
    lag = [d - pop[i].reachable_at for i, d in done]
    by_class: dict[str, dict[str, Any]] = {}
    for klass in SOFT_CLASSES:
        rec = [i for i in recoverable if pop[i].klass == klass]
        got = [i for i in rec if outs[i].state is State.DELIVERED]
        lost_why: dict[str, int] = {}
        for i in rec:
            if outs[i].state is not State.DELIVERED:
                lost_why[outs[i].why] = lost_why.get(outs[i].why, 0) + 1
        by_class[klass] = {
            "messages": sum(1 for p in pop if p.klass == klass),
            "recoverable": len(rec),
            "recovered": len(got),
            "lost": dict(sorted(lost_why.items())),
        }
    return {
        "strategy": name,
        "family": family,
        "recoverable": len(recoverable),
        "recovered": len(recovered),
        "recovered_share": len(recovered) / len(recoverable) if recoverable else None,
        "delivered": sum(1 for o in outs if o.state is State.DELIVERED),
        "submissions": submissions,
        "extra_submissions": extra,
        "extra_per_recovered": extra / len(recovered) if recovered else None,
        "wasted": sum(o.wasted for o in outs),
        "ttd_p50": percentile(ttd, 50),
        "ttd_p90": percentile(ttd, 90),
        "lag_p50": percentile(lag, 50),
        "lag_p90": percentile(lag, 90),
        "hard_submissions_per_number": (
            sum(outs[i].submissions for i in unknown) / len(unknown) if unknown else None
        ),
        "by_class": by_class,
        "seconds": seconds,
    }


def dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 2 * HOUR:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / HOUR:.1f}h"


def opt(value: float | None, fmt: Callable[[float], str]) -> str:
    return "-" if value is None else fmt(value)


def goal(rows: Sequence[Mapping[str, Any]], target: float) -> list[dict[str, Any]]:
    """The goal per bounceback row: ≥ target recovered and fewer wasted than naive."""
    naive = next(r for r in rows if r["family"] == "naive")
    out = []
    for r in rows:
        if r["family"] != "bounceback":
            continue
        share = r["recovered_share"]
        recovers = share is not None and share >= target
        fewer = r["wasted"] < naive["wasted"]
        out.append(
            {
                "strategy": r["strategy"],
                "recovered_share": share,
                "recovers": recovers,
                "wasted": r["wasted"],
                "naive_wasted": naive["wasted"],
                "fewer_wasted_than_naive": fewer,
                "met": recovers and fewer,
            }
        )
    return out


def print_report(report: Mapping[str, Any]) -> None:
    rows: list[Mapping[str, Any]] = report["strategies"]
    params = report["params"]
    pop = report["population"]
    print(
        f"{params['messages']} messages, seed {params['seed']}, validity "
        f"{dur(params['validity'])}, arrivals over {dur(params['arrival_window'])}"
    )
    print(
        "population: "
        + ", ".join(f"{k} {v}" for k, v in pop["messages"].items())
        + f"; recoverable {pop['recoverable']}, soft but unrecoverable "
        f"{pop['soft_unrecoverable']}"
    )
    print()
    header = (
        f"{'strategy':<26} {'recov%':>7} {'delivered':>9} {'submits':>8} {'extra/rec':>9} "
        f"{'wasted':>7} {'ttd p50':>7} {'ttd p90':>7} {'lag p50':>7} {'lag p90':>7} "
        f"{'hard/num':>8} {'sim s':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['strategy']:<26} {opt(r['recovered_share'], lambda v: f'{100 * v:.1f}'):>7} "
            f"{r['delivered']:>9} {r['submissions']:>8} "
            f"{opt(r['extra_per_recovered'], lambda v: f'{v:.2f}'):>9} {r['wasted']:>7} "
            f"{dur(r['ttd_p50']):>7} {dur(r['ttd_p90']):>7} "
            f"{dur(r['lag_p50']):>7} {dur(r['lag_p90']):>7} "
            f"{opt(r['hard_submissions_per_number'], lambda v: f'{v:.2f}'):>8} "
            f"{r['seconds']:>5.1f}"
        )
    print()
    print("recovered / recoverable by class, and how the lost ones ended:")
    for r in rows:
        parts = []
        for klass, c in r["by_class"].items():
            lost = ", ".join(f"{why} {n}" for why, n in c["lost"].items())
            parts.append(
                f"{klass} {c['recovered']}/{c['recoverable']}" + (f" [{lost}]" if lost else "")
            )
        print(f"  {r['strategy']:<26} " + "; ".join(parts))
    print()
    target = params["target"]
    for g in report["goal"]:
        share = g["recovered_share"]
        print(
            f"goal {g['strategy']}: recovered {opt(share, lambda v: f'{100 * v:.1f}')}% "
            f"(>= {100 * target:.0f}%: {'yes' if g['recovers'] else 'NO'}), wasted "
            f"{g['wasted']} vs naive {g['naive_wasted']} "
            f"({'fewer' if g['fewer_wasted_than_naive'] else 'NOT fewer'}) -> "
            f"{'MET' if g['met'] else 'NOT MET'}"
        )


# ---------------------------------------------------------------- command line


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{what}: expected NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def parse_mix(items: Sequence[str]) -> dict[str, float]:
    mix = dict(DEFAULT_MIX)
    for key, value in _pairs(items, "--mix").items():
        if key not in CLASSES:
            raise SystemExit(f"--mix: unknown class {key!r} (classes: {', '.join(CLASSES)})")
        mix[key] = float(value)
        if mix[key] < 0:
            raise SystemExit(f"--mix: {key} must not be negative")
    if sum(mix.values()) <= 0:
        raise SystemExit("--mix: the shares add up to zero")
    return mix


def parse_spells(items: Sequence[str]) -> dict[str, tuple[float, float]]:
    spells = dict(DEFAULT_SPELLS)
    for key, value in _pairs(items, "--spell").items():
        if key not in SOFT_CLASSES:
            raise SystemExit(f"--spell: {key!r} is not a soft class ({', '.join(SOFT_CLASSES)})")
        median, _, sigma = value.partition(":")
        spells[key] = (float(median), float(sigma or spells[key][1]))
        if spells[key][0] <= 0 or spells[key][1] < 0:
            raise SystemExit(f"--spell: {key} needs a positive median and sigma >= 0")
    return spells


def parse_schedules(items: Sequence[str]) -> dict[str, Schedule]:
    out: dict[str, Schedule] = {}
    for key, value in _pairs(items, "--schedule").items():
        if key not in SOFT_REASONS:
            raise SystemExit(
                f"--schedule: {key!r} is not a soft reason ({', '.join(SOFT_REASONS)})"
            )
        fields = value.split(":")
        if len(fields) != 3:
            raise SystemExit(f"--schedule: expected INITIAL:FACTOR:MAX for {key}, got {value!r}")
        initial, factor, cap = (float(f) for f in fields)
        out[key] = Schedule(initial, factor, cap)
    return out


@dataclass(slots=True)
class Args:
    messages: int = 20000
    seed: int = 1
    validity_hours: float = 48.0
    arrival_window: float = 3600.0
    naive_interval: float = 300.0
    mix: list[str] = field(default_factory=list)
    spell: list[str] = field(default_factory=list)
    memory_full_err: str = "040"
    max_attempts: list[int] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)
    target: float = 0.95
    json: bool = False


def parse_args(argv: Sequence[str] | None) -> Args:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--validity-hours", type=float, default=48.0)
    ap.add_argument("--arrival-window", type=float, default=3600.0, help="seconds")
    ap.add_argument("--naive-interval", type=float, default=300.0, help="seconds")
    ap.add_argument("--mix", action="append", default=[], metavar="CLASS=SHARE")
    ap.add_argument("--spell", action="append", default=[], metavar="CLASS=MEDIAN_S:SIGMA")
    ap.add_argument("--memory-full-err", choices=("040", "032"), default="040")
    ap.add_argument("--max-attempts", type=int, action="append", default=[], metavar="N")
    ap.add_argument("--schedule", action="append", default=[], metavar="REASON=INITIAL:FACTOR:MAX")
    ap.add_argument("--target", type=float, default=0.95, help="recovered share goal")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    return ap.parse_args(argv, namespace=Args())


def run(args: Args) -> dict[str, Any]:
    if args.messages < 1 or args.validity_hours <= 0 or args.naive_interval <= 0:
        raise SystemExit("--messages, --validity-hours and --naive-interval must be positive")
    if any(n < 1 for n in args.max_attempts):
        raise SystemExit("--max-attempts must be at least 1")
    validity = args.validity_hours * HOUR
    mix = parse_mix(args.mix)
    spells = parse_spells(args.spell)
    overrides = parse_schedules(args.schedule)
    pop = make_population(
        args.messages, random.Random(args.seed), mix, spells, validity, args.arrival_window
    )
    verdicts = Verdicts(args.memory_full_err)
    rows: list[dict[str, Any]] = []
    for k, strategy in enumerate(
        strategies(validity, args.naive_interval, args.max_attempts, overrides)
    ):
        started = time.perf_counter()
        outs = simulate(
            pop,
            strategy.policy,
            verdicts,
            seed=args.seed * 1000 + k,
            retry=strategy.family != "none",
        )
        elapsed = time.perf_counter() - started
        rows.append(summarize(strategy.name, strategy.family, pop, outs, elapsed))
    counts = {c: sum(1 for p in pop if p.klass == c) for c in CLASSES}
    return {
        "params": {
            "messages": args.messages,
            "seed": args.seed,
            "validity": validity,
            "arrival_window": args.arrival_window,
            "naive_interval": args.naive_interval,
            "mix": mix,
            "spells": {k: {"median": m, "sigma": s} for k, (m, s) in spells.items()},
            "memory_full_err": args.memory_full_err,
            "schedule_overrides": {k: [s.initial, s.factor, s.max] for k, s in overrides.items()},
            "target": args.target,
        },
        "population": {
            "messages": counts,
            "recoverable": sum(1 for p in pop if p.recoverable),
            "soft_unrecoverable": sum(
                1 for p in pop if p.klass in SOFT_CLASSES and not p.recoverable
            ),
        },
        "strategies": rows,
        "goal": goal(rows, args.target),
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--population" or a.startswith("--population=") for a in argv):
        from retry_population import population_main

        return population_main(argv)
    args = parse_args(argv)
    report = run(args)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
