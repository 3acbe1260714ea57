"""`bench_retry.py --population FILE [--json]`: naive, static and learned retries
judged on a population described in a JSON file (see bench/README.md).

The population format::

    {"name": "example", "messages": 20000, "validity_hours": 48, "seed": 7,
     "groups": [{"share": 0.5, "country": "GB", "operator": "A",
                 "soft": [{"share": 0.2, "err": "027",
                           "recover_hours": {"lognormal": {"median": 0.25, "sigma": 1.0}}}],
                 "hard": [{"share": 0.02, "err": "001"}],
                 "never": 0.01}]}

A message falls into a group by `share`; within it into a soft entry, a hard entry or
`never` by their shares, the rest being delivered at the first attempt. A soft
message draws its recovery time T (hours after the first attempt): every attempt
before T gets a receipt UNDELIV with the entry's `err`, the first at or after T gets
DELIVRD. A hard message's first attempt gets its `err`; a never message's every
attempt gets UNDELIV err:027. Distributions (hours): lognormal {median, sigma},
exponential {mean}, uniform {low, high}, fixed {value}. Messages arrive evenly over
the first 24 h, each with `validity_hours` of validity; the receipts are classified
by the real classifier (the GSM MAP err space, as the carrier simulator's) and the
messages run through the real engine on a simulated clock.

Modes: ``naive`` (every 5 minutes until the validity ends), ``static`` (the default
`[retry]` schedules) and ``learned`` (`[retry] mode = "learned"`: the recovery
estimates start empty and learn from this run's own outcomes, in arrival order).

Figures per mode: ``recovered_share`` (delivered / recoverable; recoverable: a soft
message whose T is within its validity), ``wasted`` (attempts that soft-bounced, the
first included), ``delay_median_s`` and ``delay_p90_s`` (the submission of the
delivering attempt minus T, over the recovered messages) and ``submissions``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import phonenumbers
from bench_retry import EventQueue, dur, percentile  # the same figures as the class benchmark
from bounceback.config.settings import SOFT_REASONS
from bounceback.core.engine import (
    Dispatch,
    Due,
    Policy,
    ReceiptIn,
    Schedule,
    Submit,
    SubmitResult,
    decide,
    observation,
)
from bounceback.core.model import Message, State, Verdict
from bounceback.core.planner import Ladder, ladder, median_delay, pick, static_times
from bounceback.core.recovery import BINS, EDGES, Curve, Estimates, Key, levels
from bounceback.feed.events import number_info
from bounceback.gateway.path import verdict_of
from smppcodecs.classify import Rules, classify_receipt
from smppcodecs.receipt import Receipt

EPOCH = 1_750_000_000.0
HOUR = 3600.0
ARRIVALS = 24 * HOUR
NAIVE_INTERVAL = 300.0
MODES = ("naive", "static", "learned")

DISTS: dict[str, tuple[str, ...]] = {
    "lognormal": ("median", "sigma"),
    "exponential": ("mean",),
    "uniform": ("low", "high"),
    "fixed": ("value",),
}


class PopulationError(Exception):
    """A malformed population file: the message is `FILE: KEY: reason`."""


# ---------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Dist:
    kind: str
    params: tuple[float, ...]

    def draw(self, rng: random.Random) -> float:
        """Hours."""
        if self.kind == "lognormal":
            median, sigma = self.params
            return rng.lognormvariate(math.log(median), sigma)
        if self.kind == "exponential":
            return rng.expovariate(1.0 / self.params[0])
        if self.kind == "uniform":
            return rng.uniform(*self.params)
        return self.params[0]

    def cdf(self, hours: float) -> float:
        """P(T <= hours)."""
        if hours <= 0:
            return 0.0
        if self.kind == "lognormal":
            median, sigma = self.params
            return NormalDist().cdf(math.log(hours / median) / sigma)
        if self.kind == "exponential":
            return 1.0 - math.exp(-hours / self.params[0])
        if self.kind == "uniform":
            lo, hi = self.params
            return min(max((hours - lo) / (hi - lo), 0.0), 1.0) if hi > lo else float(hours >= lo)
        return float(hours >= self.params[0])


@dataclass(frozen=True, slots=True)
class SoftEntry:
    share: float
    err: str
    recover: Dist


@dataclass(frozen=True, slots=True)
class HardEntry:
    share: float
    err: str


@dataclass(frozen=True, slots=True)
class Group:
    share: float
    country: str
    operator: str
    soft: tuple[SoftEntry, ...]
    hard: tuple[HardEntry, ...]
    never: float
    number: str  # an example mobile number of the country (its last digits vary)


@dataclass(frozen=True, slots=True)
class Population:
    name: str
    messages: int
    validity_hours: float
    seed: int
    groups: tuple[Group, ...]


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, reason: str) -> PopulationError:
        return PopulationError(f"{self.file}: {key}: {reason}")

    def obj(self, value: object, key: str, known: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected an object, got {json.dumps(value)}")
        for k in value:
            if k not in known:
                raise self.fail(
                    f"{key}.{k}" if key else k, f"unknown key (known: {', '.join(known)})"
                )
        return value

    def need(self, d: Mapping[str, Any], name: str, key: str) -> Any:
        if name not in d:
            raise self.fail(key, "missing")
        return d[name]

    def number(
        self, value: object, key: str, *, lo: float = 0.0, above: bool = False, hi: float = math.inf
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {json.dumps(value)}")
        v = float(value)
        if not math.isfinite(v) or v < lo or (above and v == lo) or v > hi:
            bound = f"> {lo:g}" if above else f">= {lo:g}"
            if hi < math.inf:
                bound += f" and <= {hi:g}"
            raise self.fail(key, f"must be {bound}, got {value}")
        return v

    def integer(self, value: object, key: str, *, lo: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {json.dumps(value)}")
        if value < lo:
            raise self.fail(key, f"must be >= {lo}, got {value}")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {json.dumps(value)}")
        return value

    def err(self, value: object, key: str) -> str:
        s = self.string(value, key)
        if not s.isdigit() or len(s) > 3:
            raise self.fail(
                key, f'expected a receipt err of up to 3 digits such as "027", got {s!r}'
            )
        return s.zfill(3)

    def dist(self, value: object, key: str) -> Dist:
        d = self.obj(value, key, tuple(DISTS))
        if len(d) != 1:
            raise self.fail(key, f"expected exactly one of {', '.join(DISTS)}")
        kind, params = next(iter(d.items()))
        sub = f"{key}.{kind}"
        p = self.obj(params, sub, DISTS[kind])
        values = []
        for name in DISTS[kind]:
            pk = f"{sub}.{name}"
            v = self.need(p, name, pk)
            values.append(self.number(v, pk, lo=0.0, above=name != "sigma" and name != "low"))
        if kind == "uniform" and values[1] < values[0]:
            raise self.fail(f"{sub}.high", f"must be >= low ({values[0]:g})")
        return Dist(kind, tuple(values))

    def group(self, value: object, key: str) -> Group:
        g = self.obj(value, key, ("share", "country", "operator", "soft", "hard", "never"))
        share = self.number(self.need(g, "share", f"{key}.share"), f"{key}.share", above=True)
        country = self.string(self.need(g, "country", f"{key}.country"), f"{key}.country")
        example = phonenumbers.example_number_for_type(
            country.upper(), phonenumbers.PhoneNumberType.MOBILE
        )
        if example is None:
            raise self.fail(f"{key}.country", f"unknown country {country!r} (an ISO 3166 code)")
        number = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
        operator = self.string(self.need(g, "operator", f"{key}.operator"), f"{key}.operator")
        soft_list = g.get("soft", [])
        hard_list = g.get("hard", [])
        for name, lst in (("soft", soft_list), ("hard", hard_list)):
            if not isinstance(lst, list):
                raise self.fail(f"{key}.{name}", f"expected a list, got {json.dumps(lst)}")
        soft = []
        for j, e in enumerate(soft_list):
            k = f"{key}.soft[{j}]"
            d = self.obj(e, k, ("share", "err", "recover_hours"))
            soft.append(
                SoftEntry(
                    self.number(self.need(d, "share", f"{k}.share"), f"{k}.share", hi=1.0),
                    self.err(self.need(d, "err", f"{k}.err"), f"{k}.err"),
                    self.dist(
                        self.need(d, "recover_hours", f"{k}.recover_hours"), f"{k}.recover_hours"
                    ),
                )
            )
        hard = []
        for j, e in enumerate(hard_list):
            k = f"{key}.hard[{j}]"
            d = self.obj(e, k, ("share", "err"))
            hard.append(
                HardEntry(
                    self.number(self.need(d, "share", f"{k}.share"), f"{k}.share", hi=1.0),
                    self.err(self.need(d, "err", f"{k}.err"), f"{k}.err"),
                )
            )
        never = self.number(g.get("never", 0.0), f"{key}.never", hi=1.0)
        total = sum(e.share for e in soft) + sum(e.share for e in hard) + never
        if total > 1.0 + 1e-9:
            raise self.fail(key, f"soft, hard and never shares add up to {total:g} (> 1)")
        return Group(share, country.upper(), operator, tuple(soft), tuple(hard), never, number)

    def population(self, doc: object) -> Population:
        d = self.obj(doc, "", ("name", "messages", "validity_hours", "seed", "groups"))
        name = self.string(d.get("name", Path(self.file).stem), "name")
        messages = self.integer(self.need(d, "messages", "messages"), "messages", lo=1)
        validity = self.number(
            self.need(d, "validity_hours", "validity_hours"), "validity_hours", above=True
        )
        seed = self.integer(d.get("seed", 1), "seed", lo=0)
        groups_raw = self.need(d, "groups", "groups")
        if not isinstance(groups_raw, list) or not groups_raw:
            raise self.fail("groups", "expected a non-empty list of groups")
        groups = tuple(self.group(g, f"groups[{i}]") for i, g in enumerate(groups_raw))
        total = sum(g.share for g in groups)
        if abs(total - 1.0) > 1e-6:
            raise self.fail("groups", f"the groups' shares add up to {total:g}, not 1")
        return Population(name, messages, validity, seed, groups)


def read_population(path: str | Path) -> Population:
    """The population in `path`, or PopulationError(`FILE: KEY: reason`)."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PopulationError(f"{file}: (file): {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PopulationError(
            f"{file}: (line {exc.lineno}, column {exc.colno}): not JSON: {exc.msg}"
        ) from None
    return _Reader(file).population(doc)


# ---------------------------------------------------------------- drawing


@dataclass(frozen=True, slots=True)
class Item:
    """One message of the population."""

    group: int
    kind: str  # ok | soft | hard | never
    err: str
    recover_at: float  # absolute time T: soft; created for ok; inf otherwise
    created: float
    deadline: float
    destination: str

    @property
    def recoverable(self) -> bool:
        return self.kind == "soft" and self.recover_at < self.deadline


def draw(pop: Population) -> list[Item]:
    rng = random.Random(pop.seed)
    weights = [g.share for g in pop.groups]
    validity = pop.validity_hours * HOUR
    out: list[Item] = []
    for i in range(pop.messages):
        gi = rng.choices(range(len(pop.groups)), weights)[0]
        g = pop.groups[gi]
        created = EPOCH + ARRIVALS * i / pop.messages
        dest = g.number[:-4] + f"{i % 10000:04d}"
        u = rng.random()
        kind, err, at = "ok", "000", created
        for e in g.soft:
            if u < e.share:
                kind, err, at = "soft", e.err, created + e.recover.draw(rng) * HOUR
                break
            u -= e.share
        else:
            for h in g.hard:
                if u < h.share:
                    kind, err, at = "hard", h.err, math.inf
                    break
                u -= h.share
            else:
                if u < g.never:
                    kind, err, at = "never", "027", math.inf
        out.append(Item(gi, kind, err, at, created, created + validity, dest))
    return out


# ---------------------------------------------------------------- simulation


@dataclass(slots=True)
class Outcome:
    state: State = State.ACCEPTED
    submissions: int = 0
    wasted: int = 0
    delivered_at: float | None = None  # submission time of the delivering attempt


# Learned mode's learn_margin unless --margin says otherwise: the [retry] default.
DEFAULT_MARGIN = Policy().learn_margin


def policy_for(mode: str, validity: float, margin: float = DEFAULT_MARGIN) -> Policy:
    if mode == "naive":
        fixed = {r: Schedule(NAIVE_INTERVAL, 1.0, NAIVE_INTERVAL) for r in SOFT_REASONS}
        return Policy(
            max_attempts=math.ceil(validity / NAIVE_INTERVAL) + 1, jitter=0.0, schedules=fixed
        )
    if mode == "static":
        return Policy()
    return Policy(mode="learned", recovery=Estimates(), learn_margin=margin)


def simulate(
    pop: Population,
    items: Sequence[Item],
    mode: str,
    seed: int,
    policy: Policy | None = None,
    *,
    learn: bool = True,
) -> list[Outcome]:
    rules = Rules()
    cache: dict[tuple[str, str], Verdict] = {}

    def verdict(stat: str, err: str) -> Verdict:
        v = cache.get((stat, err))
        if v is None:
            v = cache[(stat, err)] = verdict_of(
                classify_receipt(Receipt(stat=stat, err=err), rules)
            )
        return v

    if policy is None:
        policy = policy_for(mode, pop.validity_hours * HOUR)
    est = policy.recovery
    places = {}
    for gi, g in enumerate(pop.groups):
        country = number_info(g.number)[0]
        places[gi] = (country, g.operator)
    rng = random.Random(seed)
    msgs = [
        Message(
            id=f"{i:016X}",
            account="bench",
            source_addr="Bench",
            destination_addr=it.destination,
            pdu=b"",
            registered_delivery=1,
            created_at=it.created,
            deadline=it.deadline,
            deadline_is_validity=True,
            submit_date=it.created,
        )
        for i, it in enumerate(items)
    ]
    outs = [Outcome() for _ in items]
    events = EventQueue()
    push = events.push

    def send(i: int, attempt: int, now: float) -> None:
        it = items[i]
        out = outs[i]
        out.submissions += 1
        answered = now + rng.uniform(0.05, 0.3)
        push(answered, i, SubmitResult(answered, "sim", 0, f"{i}.{attempt}", None))
        if it.kind == "ok" or (it.kind == "soft" and now >= it.recover_at):
            at = now + rng.uniform(2.0, 10.0)
            stat, err = "DELIVRD", "000"
            out.delivered_at = now
        else:
            at = now + rng.uniform(5.0, 30.0)
            stat, err = "UNDELIV", it.err
        v = verdict(stat, err)
        if v.kind == "soft":
            out.wasted += 1
        place = places[it.group]
        push(at, i, ReceiptIn(at, attempt, v, stat, err, rand=rng.random(), place=place))

    for i, it in enumerate(items):
        push(it.created, i, Dispatch(it.created))
    while events:
        now, i, ev = events.pop()
        old = msgs[i]
        new, actions = decide(old, ev, policy)
        msgs[i] = new
        if learn and est is not None and new is not old:
            obs = observation(old, new, places[items[i].group])
            if obs is not None:
                est.observe(obs)
        for action in actions:
            if isinstance(action, Submit):
                send(i, action.attempt, now)
        if new.state is State.HELD and old.state is not State.HELD:
            due = max(new.next_attempt_at if new.next_attempt_at is not None else now, now)
            push(due, i, Due(due))
        if new.state is not old.state and new.state.final:
            outs[i].state = new.state
            if new.state is not State.DELIVERED:
                outs[i].delivered_at = None
    return outs


def summarize(items: Sequence[Item], outs: Sequence[Outcome], seconds: float) -> dict[str, Any]:
    recoverable = [i for i, it in enumerate(items) if it.recoverable]
    recovered = [
        i for i, it in enumerate(items) if it.kind == "soft" and outs[i].state is State.DELIVERED
    ]
    delays = [d - items[i].recover_at for i in recovered if (d := outs[i].delivered_at) is not None]
    med = percentile(delays, 50)
    p90 = percentile(delays, 90)
    return {
        "recoverable": len(recoverable),
        "recovered": len(recovered),
        "recovered_share": round(len(recovered) / len(recoverable), 4) if recoverable else None,
        "wasted": sum(o.wasted for o in outs),
        "delay_median_s": None if med is None else round(med, 1),
        "delay_p90_s": None if p90 is None else round(p90, 1),
        "submissions": sum(o.submissions for o in outs),
        "seconds": round(seconds, 2),
    }


def goals(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The issue's goal: learned recovers at least as much as static (and >= 99 %),
    wastes at most half of static's, with a median delay no longer than static's."""
    s, learned = rows["static"], rows["learned"]
    share_l = learned["recovered_share"] or 0.0
    share_s = s["recovered_share"] or 0.0
    recovered = share_l >= share_s and share_l >= 0.99 if s["recoverable"] else True
    wasted_ratio = learned["wasted"] / s["wasted"] if s["wasted"] else None
    med_l, med_s = learned["delay_median_s"], s["delay_median_s"]
    delay = med_l is None or med_s is None or med_l <= med_s
    return {
        "recovered": recovered,
        "wasted_ratio": None if wasted_ratio is None else round(wasted_ratio, 3),
        "wasted": wasted_ratio is None or wasted_ratio <= 0.5,
        "delay_median": delay,
        "met": recovered and (wasted_ratio is None or wasted_ratio <= 0.5) and delay,
    }


def oracle(path: str) -> dict[str, Any]:
    """The plans on the population's true recovery-time distributions, the static
    schedules' median delay as the target and no margin: how few wasted attempts the
    planner's rule needs when it knows what learned mode has to learn (no jitter, no
    probes; the first attempt, wasted in every mode, counted)."""
    pop = read_population(path)
    horizon = pop.validity_hours * HOUR
    policy = Policy()
    rules = Rules()
    keys: dict[tuple[int, str], list[tuple[float, Dist | None]]] = {}
    for gi, g in enumerate(pop.groups):
        for e in g.soft:
            verdict = verdict_of(classify_receipt(Receipt(stat="UNDELIV", err=e.err), rules))
            keys.setdefault((gi, verdict.reason), []).append((g.share * e.share, e.recover))
        if g.never:
            keys.setdefault((gi, "absent_subscriber"), []).append((g.share * g.never, None))
    parts = []
    for (_, reason), entries in keys.items():
        total = sum(w for w, _ in entries)

        def cdf(t: float, entries: list[tuple[float, Dist | None]] = entries) -> float:
            got = sum(w * d.cdf(t / HOUR) for w, d in entries if d is not None)
            return got / sum(w for w, _ in entries)

        parts.append((total, cdf, static_times(policy.static_delays(reason), horizon)))
    target = median_delay(parts)
    weighted = [
        (w, ladder(cdf, horizon=horizon, target_delay=target, static=times))
        for w, cdf, times in parts
    ]
    i, share = pick(weighted, 0.0)

    def mixed(lad: Ladder, field: str) -> float:
        hi = float(getattr(lad.rung(i), field))
        lo = float(getattr(lad.rung(max(i - 1, 0)), field))
        return share * hi + (1.0 - share) * lo

    static_wasted = sum(w * (1.0 + lad.static_failed) for w, lad in weighted)
    plan_wasted = sum(w * (1.0 + mixed(lad, "failed")) for w, lad in weighted)
    recovered = sum(w * lad.cdf[-1] for w, lad in weighted)
    on_time = sum(w * mixed(lad, "on_time") for w, lad in weighted)
    # The same rule through the engine (jitter, bounds, the last chance, rung mixing by
    # message id) on the true table, learning nothing: what learned mode would do with
    # unlimited data, at no margin and at the default one.
    items = draw(pop)
    seed = pop.seed * 1000
    static_row = summarize(items, simulate(pop, items, "static", seed), 0.0)
    engine = []
    for margin in sorted({0.0, DEFAULT_MARGIN}):
        table = Policy(mode="learned", recovery=true_estimates(pop), learn_margin=margin)
        row = summarize(items, simulate(pop, items, "learned", seed + 1, table, learn=False), 0.0)
        engine.append(
            {
                "margin": margin,
                "wasted_ratio": round(row["wasted"] / max(static_row["wasted"], 1), 3),
                "delay_median_ratio": _ratio(row["delay_median_s"], static_row["delay_median_s"]),
                "recovered_share": row["recovered_share"],
            }
        )
    return {
        "population": pop.name,
        "target_delay_s": round(target, 1),
        "wasted_ratio": round(plan_wasted / static_wasted, 3),
        "on_time_share": round(on_time / recovered, 3),
        "engine": engine,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


# The true table's weight: this many messages' worth of data per unit of share, so
# that every bin is "seen" and no key probes or falls back.
_TRUE_MESSAGES = 1e6


def true_estimates(pop: Population) -> Estimates:
    """The recovery table learned mode would hold with unlimited data: every key of the
    fall-back chain (operator, country, reason) with the population's true hazard per
    bin and its share of the messages."""
    rules = Rules()
    keys: dict[Key, list[tuple[float, Dist | None]]] = {}
    for g in pop.groups:
        country = number_info(g.number)[0]
        soft = [
            (verdict_of(classify_receipt(Receipt(stat="UNDELIV", err=e.err), rules)).reason, e)
            for e in g.soft
        ]
        for reason, e in soft:
            for k in levels(country, g.operator, reason):
                keys.setdefault(k, []).append((g.share * e.share, e.recover))
        if g.never:
            for k in levels(country, g.operator, "absent_subscriber"):
                keys.setdefault(k, []).append((g.share * g.never, None))
    est = Estimates()
    for key, entries in keys.items():
        total = sum(w for w, _ in entries)

        def survival(t: float, entries: list[tuple[float, Dist | None]] = entries) -> float:
            got = sum(w * d.cdf(t / HOUR) for w, d in entries if d is not None)
            return max(1.0 - got / sum(w for w, _ in entries), 1e-12)

        curve = Curve(messages=round(_TRUE_MESSAGES * total), recovered=1, failed=1)
        for i in range(BINS):
            lo = EDGES[i]
            hi = EDGES[i + 1] if i < BINS - 1 else 2.0 * EDGES[i]
            curve.exposure[i] = _TRUE_MESSAGES * (hi - lo)
            hazard = math.log(survival(lo) / survival(hi)) / (hi - lo)
            curve.events[i] = hazard * curve.exposure[i]
        est.curves[key] = curve
    return est


def run(
    path: str,
    modes: Sequence[str] = MODES,
    *,
    warm: bool = False,
    margin: float = DEFAULT_MARGIN,
) -> dict[str, Any]:
    """Each mode over the population; `warm`: learned mode first runs once through the
    same population to fill its estimates, and the second run is the one reported (a
    proxy that has seen a day of this traffic, rather than one that starts empty);
    `margin`: learned mode's `learn_margin`."""
    pop = read_population(path)
    items = draw(pop)
    rows: dict[str, dict[str, Any]] = {}
    for k, mode in enumerate(modes):
        policy = policy_for(mode, pop.validity_hours * HOUR, margin)
        if warm and mode == "learned":
            simulate(pop, items, mode, seed=pop.seed * 1000 + k + 100, policy=policy)
        started = time.perf_counter()
        outs = simulate(pop, items, mode, seed=pop.seed * 1000 + k, policy=policy)
        rows[mode] = summarize(items, outs, time.perf_counter() - started)
    report: dict[str, Any] = {
        "population": pop.name,
        "messages": pop.messages,
        "validity_hours": pop.validity_hours,
        "recoverable": sum(1 for it in items if it.recoverable),
        "learned_warm": warm,
        "learn_margin": margin,
        "modes": rows,
    }
    if "static" in rows and "learned" in rows:
        report["goal"] = goals(rows)
    return report


def print_report(r: Mapping[str, Any]) -> None:
    print(
        f"population {r['population']}: {r['messages']} messages, validity "
        f"{r['validity_hours']:g} h, recoverable {r['recoverable']}"
    )
    head = (
        f"{'mode':<8} {'recov%':>7} {'wasted':>8} {'delay p50':>9} {'delay p90':>9} {'submits':>8}"
    )
    print(head)
    print("-" * len(head))
    for mode, row in r["modes"].items():
        share = row["recovered_share"]
        print(
            f"{mode:<8} {'-' if share is None else f'{100 * share:.2f}':>7} {row['wasted']:>8} "
            f"{dur(row['delay_median_s']):>9} {dur(row['delay_p90_s']):>9} "
            f"{row['submissions']:>8}"
        )
    g = r.get("goal")
    if g:
        print(
            f"goal: recovered {'yes' if g['recovered'] else 'NO'}, wasted "
            f"{g['wasted_ratio']} x static ({'yes' if g['wasted'] else 'NO'}), delay median "
            f"{'yes' if g['delay_median'] else 'NO'} -> {'MET' if g['met'] else 'NOT MET'}"
        )


def population_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="bench_retry.py --population", description="naive, static and learned retries"
    )
    ap.add_argument("--population", required=True, metavar="FILE")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--mode", action="append", choices=MODES, help="only these modes")
    ap.add_argument(
        "--oracle",
        action="store_true",
        help="only the plans on the true distributions (what learning aims at)",
    )
    ap.add_argument(
        "--warm",
        action="store_true",
        help="learned mode runs through the population once before the reported run",
    )
    ap.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        metavar="M",
        help="learned mode's learn_margin (default: the [retry] default, %(default)s)",
    )
    args = ap.parse_args(argv)
    if not 0.0 <= args.margin <= 1.0:
        ap.error("--margin: between 0 and 1")
    if args.oracle:
        try:
            print(json.dumps(oracle(args.population), indent=2))
        except PopulationError as exc:
            print(exc, file=sys.stderr)
            return 2
        return 0
    try:
        report = run(
            args.population,
            tuple(args.mode) if args.mode else MODES,
            warm=args.warm,
            margin=args.margin,
        )
    except PopulationError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    return 0
