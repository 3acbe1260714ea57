"""Recovery-time estimates: how long a soft-bounced destination takes to come back.

Pure data and arithmetic (no clock, no I/O): the shell feeds observations in and
passes the table to the engine through its `Policy`; the store keeps the counts.

**Model.** For one key — (country, operator, reason), (country, "", reason) or
("", "", reason) — the time T from a message's first attempt to the moment its
destination can take it again has a piecewise-constant hazard on fixed log-spaced
bins (`EDGES`: 0, 60 s, then a third of a doubling each, up to about 36 days). Each
bin keeps two numbers: the recoveries attributed to it (`events`) and the seconds
that messages were known to be at risk in it (`exposure`); its hazard is their
ratio, as in a life table (a piecewise-exponential model). Observations are
censored, and each is counted as it happens:

* a soft bounce of an attempt made at `a_k`, after an earlier failed attempt at
  `a_{k-1}`: the destination had not recovered by `a_k`, so (a_{k-1}, a_k] adds
  exposure and no event (right-censored: a message that never recovers keeps adding
  exposure, which is what lowers the hazard in the tail);
* a delivery of an attempt made at `a_j` after the last failure at `a_{j-1}`: one
  recovery somewhere in (a_{j-1}, a_j] (interval-censored). The event is shared
  between the bins of the interval uniformly in log-time, with the exposure each bin
  saw before it: the same whatever the order observations come in, on one instance
  or several (sharing by the hazard the bins already showed, one step of Turnbull's
  self-consistency, locked the first noisy estimates in).

An interval wider than `WIDE` (an attempt planned long after the last) is counted in
the key's totals and adds nothing to the bins: its end was fixed before its outcome
was known, so leaving it out biases nothing, and spread over hours it would blur the
table. Each message's first soft bounce counts it (`messages`).

Memory is bounded: `BINS` pairs of floats per key and at most `max_keys` keys; the
key updated longest ago goes first when a new one needs room.

**Decision** (`Estimates.choose`). Before a reason has seen `min_at_risk` messages the
static delay decides (the prior). The first messages of a key probe: a share
`PROBES` / (messages seen), tried at 60 s x 4^(k + a phase of their own), so that the
probes together see every time scale. Otherwise the finest key with `min_at_risk`
messages decides with its plan (`core/planner.py`): the hazards are the key's own,
each bin drawn towards the next coarser key's by `PRIOR_STRENGTH` messages' worth of
exposure; where the reason has too little data (past its end, or in a gap) the hazard
of its last doubling of time with data is carried on. One trade-off for all keys
(`decision`) sets how many on-time deliveries an attempt must buy, so that the traffic
gets the static schedules' share of deliveries within the target delay times
(1 + margin). Remaking that decision touches every deciding key (a static profile, a
ladder, a few rungs each: milliseconds per key), so it is done a little per call
(`PLAN_BUDGET`) while the last decision holds; until a table's first decision is made
the static delay decides ("plans being made"). The message's own key's ladder is made
when it needs one. The next attempt is the plan's
next after the message's age, not past the end of the data; where no level has data
at the message's age yet it waits as long again as it has waited. `choose` says which
of these chose, on which key and on how much data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs
from bounceback.core.planner import (
    DELAYS,
    Budget,
    Ladder,
    OutOfBudget,
    Progress,
    ladder,
    pick,
    profile,
    profile_median,
    static_times,
)

# Bin edges in seconds since the first attempt: [0, 60), then ratio 2**(1/3).
BINS = 48
_RATIO = 2.0 ** (1.0 / 3.0)
EDGES: tuple[float, ...] = (0.0, *(60.0 * _RATIO**i for i in range(BINS)))
# The last bin ends at EDGES[-1]; time beyond it is counted in the last bin.
_LOG_FLOOR = 60.0 / _RATIO  # in log-time, bin 0 is as wide as the others

# A key's own counts weigh against this many messages' worth of its parent's hazard.
PRIOR_STRENGTH = 10.0
# The first messages of a key probe (see `_probe`): a share PROBES / (messages seen).
PROBES = 40.0
# An interval (lo, hi] with hi > WIDE x lo tells too little of when the destination
# came back to count: the attempt at hi was planned before its outcome was known, so
# leaving such intervals out (failures and recoveries alike) biases nothing.
WIDE = 4.5
# Plans are made per validity rounded up to this (seconds).
HORIZON_STEP = 900.0

# Planning work one `choose` call may do towards a common decision, in rungs solved
# (a ladder made for a key finer than a reason counts one, a static profile two; each
# is a millisecond at most): a table of thousands of keys is planned a little per
# soft bounce rather than in one pause of the event loop.
PLAN_BUDGET = 4

Key = tuple[str, str, str]  # (country, operator, reason); "" = any
LEVELS: tuple[str, ...] = ("operator", "country", "reason")


def levels(country: str, operator: str, reason: str) -> tuple[Key, ...]:
    """The keys one observation updates, finest first: the fall-back chain."""
    keys: list[Key] = []
    if country and operator:
        keys.append((country, operator, reason))
    if country:
        keys.append((country, "", reason))
    keys.append(("", "", reason))
    return tuple(keys)


def level_of(key: Key) -> str:
    if key[1]:
        return "operator"
    if key[0]:
        return "country"
    return "reason"


def bin_of(t: float) -> int:
    """The bin that holds elapsed time `t` (seconds)."""
    if t < EDGES[1]:
        return 0
    i = int(math.log(t / 60.0) / math.log(_RATIO)) + 1
    i = min(max(i, 1), BINS - 1)
    # Correct a float rounding at an edge.
    while i > 1 and t < EDGES[i]:
        i -= 1
    while i < BINS - 1 and t >= EDGES[i + 1]:
        i += 1
    return i


def _width(i: int) -> float:
    return EDGES[i + 1] - EDGES[i]


def _overlaps(lo: float, hi: float) -> list[tuple[int, float]]:
    """(bin, seconds of [lo, hi) inside it) for every bin the span touches."""
    if hi <= lo:
        return []
    lo = max(lo, 0.0)
    top = EDGES[-1]
    out: list[tuple[int, float]] = []
    i = bin_of(lo)
    while i < BINS:
        start = EDGES[i]
        end = EDGES[i + 1] if i < BINS - 1 else max(hi, top)
        part = min(hi, end) - max(lo, start)
        if part > 0:
            out.append((i, part))
        if hi <= end:
            break
        i += 1
    return out


def _log_len(i: int, lo: float, hi: float) -> float:
    """Length in log-time of [lo, hi) (within bin i)."""
    a = max(lo, _LOG_FLOOR)
    b = max(hi, _LOG_FLOOR * 1.000001)
    return max(math.log(b / a), 1e-9) if b > a else 1e-9


@attrs.define
class Curve:
    """The counts of one key: per-bin recoveries and seconds at risk."""

    events: list[float] = attrs.field(factory=lambda: [0.0] * BINS)
    exposure: list[float] = attrs.field(factory=lambda: [0.0] * BINS)
    recovered: int = 0  # messages delivered after a soft bounce
    failed: int = 0  # soft bounces counted (attempts that did not deliver)
    updated_at: float = 0.0
    messages: int = 0  # soft-bounced messages seen (their first interval counted)

    def hazard(self, i: int) -> float:
        x = self.exposure[i]
        return self.events[i] / x if x > 0 else 0.0

    def at_risk(self, i: int) -> float:
        """Messages known at risk in bin i (exposure in bin widths)."""
        return self.exposure[i] / _width(i) if i < BINS - 1 else self.exposure[i] / _width(i - 1)

    def add_survival(self, lo: float, hi: float) -> None:
        """Not recovered over (lo, hi]: exposure, no event."""
        for i, part in _overlaps(lo, hi):
            self.exposure[i] += part
        self.failed += 1

    def add_recovery(self, lo: float, hi: float) -> None:
        """Recovered somewhere in (lo, hi]: one event shared over the interval's bins."""
        self.recovered += 1
        parts = _overlaps(lo, hi)
        if not parts:
            i = bin_of(hi)
            self.events[i] += 1.0
            return
        # Shared uniformly in log-time over the interval: the same wherever and in
        # whatever order the observations come (hazard-weighted shares, one step of
        # Turnbull's self-consistency, locked the first noisy estimates in).
        logs = [
            _log_len(i, max(lo, EDGES[i]), min(hi, EDGES[i + 1] if i < BINS - 1 else hi))
            for i, _ in parts
        ]
        s = sum(logs)
        weights = [x / s for x in logs]
        after = 1.0
        for (i, part), w in zip(parts, weights, strict=True):
            after -= w
            self.events[i] += w
            # At risk in this bin while the recovery had not happened: all of it when
            # it came later, about half when it came here.
            self.exposure[i] += part * (max(after, 0.0) + w / 2.0)

    def merge(self, other: Curve) -> None:
        for i in range(BINS):
            self.events[i] += other.events[i]
            self.exposure[i] += other.exposure[i]
        self.recovered += other.recovered
        self.failed += other.failed
        self.messages += other.messages
        self.updated_at = max(self.updated_at, other.updated_at)

    def survival(self, t: float) -> float:
        """S(t) = P(T > t) under the estimate."""
        return math.exp(-self.cum_hazard(0.0, t))

    def cum_hazard(self, lo: float, hi: float) -> float:
        return sum(self.hazard(i) * part for i, part in _overlaps(lo, hi))

    def reach(self, e: float, threshold: float, min_at_risk: float) -> tuple[float | None, float]:
        """(earliest t > e with P(T <= t | T > e) >= threshold, or None; the end of
        the data: where fewer than `min_at_risk` messages were seen at risk)."""
        need = -math.log(max(1.0 - threshold, 1e-12))
        h = 0.0
        i = bin_of(e)
        start = e
        while i < BINS:
            if self.at_risk(i) < min_at_risk:
                return None, start
            end = EDGES[i + 1] if i < BINS - 1 else math.inf
            lam = self.hazard(i)
            span = end - start
            if lam > 0 and h + lam * span >= need:
                return start + (need - h) / lam, end
            h += lam * span
            if end == math.inf:
                break
            start = end
            i += 1
        return None, start

    def typical(self, min_at_risk: float) -> float:
        """The median recovery time of the messages that recover (as far as the data
        reaches): where 1 - S(t) is half of what it is at the end of the data; 0
        without data."""
        ends: list[tuple[float, float]] = []
        h = 0.0
        for i in range(BINS - 1):
            if self.at_risk(i) < min_at_risk:
                break
            h += self.hazard(i) * _width(i)
            ends.append((EDGES[i + 1], 1.0 - math.exp(-h)))
        if not ends or ends[-1][1] <= 0:
            return 0.0
        half = ends[-1][1] / 2.0
        prev_t, prev_f = 0.0, 0.0
        for t, f in ends:
            if f >= half:
                return prev_t + (t - prev_t) * (half - prev_f) / max(f - prev_f, 1e-12)
            prev_t, prev_f = t, f
        return ends[-1][0]

    def to_json(self) -> dict[str, object]:
        return {
            "events": [round(x, 6) for x in self.events],
            "exposure": [round(x, 3) for x in self.exposure],
            "recovered": self.recovered,
            "failed": self.failed,
            "messages": self.messages,
            "updated_at": self.updated_at,
        }


@attrs.frozen
class Choice:
    """The next attempt a recovery estimate chose, and why (for the feed and timeline)."""

    at: float  # absolute time of the next attempt (before quiet hours and validity)
    source: str  # "learned" | "prior" (the static schedule)
    key: Key | None = None
    level: str = ""  # operator | country | reason
    recovered: int = 0  # deliveries after a soft bounce the key has seen
    failed: int = 0  # failed attempts the key has seen
    at_risk: float = 0.0  # messages seen at risk at this elapsed time
    probability: float = 0.0  # P(recovered by the next attempt | not by the last one)
    why: str = ""
    target_delay: float = 0.0  # the plan's target delay (seconds)
    on_time: float = 0.0  # the plan's share of recoveries delivered within it
    static_on_time: float = 0.0  # the static schedule's share on the same estimate

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source}
        if self.key is not None:
            out.update(
                {
                    "key": "/".join(k or "*" for k in self.key),
                    "level": self.level,
                    "recovered": self.recovered,
                    "failed": self.failed,
                    "at_risk": round(self.at_risk, 1),
                    "probability": round(self.probability, 3),
                }
            )
        if self.target_delay > 0:
            out.update(
                {
                    "target_delay": round(self.target_delay, 1),
                    "on_time": round(self.on_time, 3),
                    "static_on_time": round(self.static_on_time, 3),
                }
            )
        if self.why:
            out["why"] = self.why
        return out


@attrs.define
class Estimates:
    """Curves per key, bounded in number (the least recently updated go first)."""

    max_keys: int = 5000
    curves: dict[Key, Curve] = attrs.field(factory=dict)
    # (key, horizon) -> (data count when made, ladder); horizon -> (messages when
    # made, (target delay, rung, share)).
    ladders: dict[tuple[Key, float], tuple[float, Ladder]] = attrs.field(
        factory=dict, eq=False, repr=False
    )
    decisions: dict[float, tuple[float, tuple[float, int, float]]] = attrs.field(
        factory=dict, eq=False, repr=False
    )
    # horizon -> a decision being remade, a little per call.
    jobs: dict[float, _Job] = attrs.field(factory=dict, eq=False, repr=False)
    # The planning work this `choose` call may still do (see PLAN_BUDGET).
    _budget: Budget = attrs.field(factory=Budget, init=False, eq=False, repr=False)
    # The reason keys of `curves`, found again when the table is replaced or grows.
    _reason_keys: list[Key] = attrs.field(factory=list, init=False, eq=False, repr=False)
    _indexed: dict[Key, Curve] | None = attrs.field(default=None, init=False, eq=False, repr=False)
    _indexed_len: int = attrs.field(default=-1, init=False, eq=False, repr=False)

    def curve(self, key: Key) -> Curve | None:
        return self.curves.get(key)

    def clear(self) -> None:
        """Forget every count, and the plans and decisions made on them."""
        self.curves = {}
        self.ladders.clear()
        self.decisions.clear()
        self.jobs.clear()

    def _touch(self, key: Key, now: float) -> Curve:
        c = self.curves.get(key)
        if c is None:
            if len(self.curves) >= self.max_keys:
                self._evict()
            c = self.curves[key] = Curve()
            if not key[0] and not key[1]:
                self._indexed_len = -1  # a new reason: found again by _observed
        c.updated_at = max(c.updated_at, now)
        return c

    def _evict(self) -> None:
        # The least recently updated operator/country keys go first; reason keys
        # (a dozen at most) stay while anything else can go.
        def rank(item: tuple[Key, Curve]) -> tuple[int, float]:
            key, c = item
            return (0 if key[0] or key[1] else 1, c.updated_at)

        victim = min(self.curves.items(), key=rank)[0]
        del self.curves[victim]

    def observe(self, obs: Observation) -> None:
        """Count one observation at every level of its key."""
        wide = obs.hi > WIDE * max(obs.lo, EDGES[1])
        for key in levels(obs.country, obs.operator, obs.reason):
            c = self._touch(key, obs.now)
            if obs.first:
                c.messages += 1
            if wide:  # counted, but it says little of when: see WIDE
                if obs.recovered:
                    c.recovered += 1
                else:
                    c.failed += 1
            elif obs.recovered:
                c.add_recovery(obs.lo, obs.hi)
            else:
                c.add_survival(obs.lo, obs.hi)

    def merge(self, key: Key, curve: Curve) -> None:
        self._touch(key, curve.updated_at).merge(curve)

    def hazards(self, key: Key, min_at_risk: float) -> list[float]:
        """The hazard per bin the plans use for `key`: the key's own counts, each bin
        drawn towards the next coarser level's hazard by `PRIOR_STRENGTH` messages'
        worth of exposure (so a thin key starts as its country or reason and becomes
        itself as its data grows); at the reason level, in a bin with too little data
        (fewer than `min_at_risk` messages seen at risk: past the data's end, or a gap
        such as the first minutes when no attempt looked there), the hazard of the last
        doubling of time that had data, carried on."""
        chain = levels(*key)
        parent: list[float] | None = None
        for k in reversed(chain):
            c = self.curves.get(k)
            if c is None:
                continue
            if parent is None:
                parent = _extrapolated(c, min_at_risk)
                continue
            out = []
            for i in range(BINS):
                w = PRIOR_STRENGTH * (_width(i) if i < BINS - 1 else _width(i - 1))
                out.append((c.events[i] + w * parent[i]) / (c.exposure[i] + w))
            parent = out
        return parent if parent is not None else [0.0] * BINS

    def ladder_for(
        self,
        key: Key,
        *,
        horizon: float,
        target_delay: float,
        min_at_risk: float,
        static: Callable[[str], Sequence[float]],
        budget: Budget | None = None,
    ) -> Ladder:
        """The key's ladder for messages valid `horizon` seconds (core/planner.py),
        made again if its data has grown by a tenth or the target delay has moved; a
        key finer than a reason spends one of `budget` on that (OutOfBudget when it
        has none left)."""
        cached = self.ladders.get((key, horizon))
        count = self._count(key)
        if cached is not None and _fresh(cached, count, target_delay):
            return cached[1]
        if budget is not None and (key[0] or key[1]):
            budget.spend()
        lad = ladder(
            _cdf(self.hazards(key, min_at_risk)),
            horizon=horizon,
            target_delay=target_delay,
            static=static_times(static(key[2]), horizon),
        )
        if len(self.ladders) >= 4 * self.max_keys:
            self.ladders.clear()
        self.ladders[(key, horizon)] = (count, lad)
        return lad

    def _count(self, key: Key) -> float:
        return float(sum(c.recovered + c.failed for k in levels(*key) if (c := self.curves.get(k))))

    def _observed(self) -> float:
        """Observations counted at the reason level (every observation is, once)."""
        if self._indexed is not self.curves or self._indexed_len != len(self.curves):
            self._reason_keys = [k for k in self.curves if not k[0] and not k[1]]
            self._indexed, self._indexed_len = self.curves, len(self.curves)
        return float(
            sum(c.recovered + c.failed for k in self._reason_keys if (c := self.curves.get(k)))
        )

    def decider(self, key: Key, min_at_risk: float) -> Key | None:
        """The finest key of the chain with `min_at_risk` messages seen."""
        for k in levels(*key):
            c = self.curves.get(k)
            if c is not None and c.messages >= min_at_risk:
                return k
        return None

    def weights(self, min_at_risk: float) -> dict[Key, float]:
        """Messages per deciding key: each key's own messages (those no finer key
        holds) go to the key that decides for them."""
        own = {k: float(c.messages) for k, c in self.curves.items()}
        for k, c in self.curves.items():
            chain = levels(*k)  # the key itself, then the coarser ones
            if len(chain) > 1 and chain[1] in own:
                own[chain[1]] -= c.messages
        out: dict[Key, float] = {}
        for k, w in own.items():
            d = self.decider(k, min_at_risk)
            if d is not None and w > 0:
                out[d] = out.get(d, 0.0) + w
        return out

    def decision(
        self,
        horizon: float,
        *,
        min_at_risk: float,
        margin: float,
        target_delay: float,
        static: Callable[[str], Sequence[float]],
    ) -> tuple[float, int, float] | None:
        """(target delay, rung, share) for messages valid `horizon` seconds, made again
        when the observations have grown by a twentieth. The target delay, unless
        configured, is the median delay the static schedules would give the recovered
        messages of every deciding key (weighted by its messages) on the estimates.
        Remaking it needs that median, every deciding key's ladder and a few rungs of
        each: the work is done a little per call (`PLAN_BUDGET`), the reasons' keys and
        then the keys with the most messages first, and the last decision holds until
        it is finished (None while there is none yet)."""
        count = self._observed()
        cached = self.decisions.get(horizon)
        if cached is not None and count < cached[0] * 1.05 + 5:
            return cached[1]
        job = self.jobs.get(horizon)
        if job is None:
            order = sorted(
                self.weights(min_at_risk).items(),
                key=lambda kw: (bool(kw[0][0] or kw[0][1]), -kw[1], kw[0]),
            )
            job = self.jobs[horizon] = _Job(count, target_delay, order)
        try:
            while job.target_delay <= 0 and job.profiled < len(job.keys):
                # The static schedules' delays on this key's estimate, added in.
                key, w = job.keys[job.profiled]
                self._budget.spend()
                self._budget.spend()  # a profile costs about two rungs
                cdf = _cdf(self.hazards(key, min_at_risk))
                for j, v in enumerate(profile(cdf, static_times(static(key[2]), horizon))):
                    job.delays[j] += w * v
                job.profiled += 1
            if job.target_delay <= 0:
                job.target_delay = profile_median(job.delays) or 600.0
            while len(job.ladders) < len(job.keys):
                made = self.ladder_for(
                    job.keys[len(job.ladders)][0],
                    horizon=horizon,
                    target_delay=job.target_delay,
                    min_at_risk=min_at_risk,
                    static=static,
                    budget=self._budget,
                )
                job.ladders.append(made)
            weighted = [(w, lad) for (_, w), lad in zip(job.keys, job.ladders, strict=True)]
            i, share = pick(weighted, margin, job.progress, self._budget)
        except OutOfBudget:
            return cached[1] if cached is not None else None
        out = (job.target_delay, i, share)
        self.decisions[horizon] = (job.count, out)
        del self.jobs[horizon]
        return out

    def choose(
        self,
        place: tuple[str, str],
        reason: str,
        *,
        created_at: float,
        failed_at: float,
        deadline: float,
        static_delay: float,
        static: Callable[[str], Sequence[float]],
        min_at_risk: float,
        min_delay: float,
        max_delay: float,
        margin: float = 0.1,
        target_delay: float = 0.0,
        u: float = 0.5,
    ) -> Choice:
        """The next attempt after a failure of the attempt made at `failed_at` for a
        message created (first tried) at `created_at`, valid until `deadline`: the next
        time of the plan of the finest key with `min_at_risk` messages seen (u, the
        message's stable fraction in [0, 1), picks its side of a split plan); the
        static delay while its reason has fewer."""
        self._budget = Budget(PLAN_BUDGET)
        e = max(failed_at - created_at, 0.0)
        top = self.curves.get(("", "", reason))
        if top is None or top.messages < min_at_risk:
            return Choice(failed_at + static_delay, "prior", why="too little data")
        first = self.curves.get(levels(place[0], place[1], reason)[0])
        seen = first.messages if first is not None else 0
        if (u * 9973.0) % 1.0 < PROBES / (seen + 1.0):
            return self._probe(e, u, created_at, failed_at, deadline, min_delay, max_delay)
        end = _data_end(top, min_at_risk)
        if 0 < end <= e:
            # No level has seen enough messages this long after their first attempt
            # (early in the data): wait as long again as the message has waited.
            gap = min(max(static_delay, e, min_delay), max_delay)
            return Choice(failed_at + gap, "learned", why="beyond the data: as long again")
        horizon = max(math.ceil((deadline - created_at) / HORIZON_STEP), 1) * HORIZON_STEP
        decided = self.decision(
            horizon,
            min_at_risk=min_at_risk,
            margin=margin,
            target_delay=target_delay,
            static=static,
        )
        if decided is None:
            # The first plans of a large table are being made, a little per call.
            return Choice(failed_at + static_delay, "prior", why="plans being made")
        d, i, share = decided
        key = self.decider((place[0], place[1], reason), min_at_risk) or ("", "", reason)
        c = self.curves[key]
        # The message's own key's ladder is made now if need be (one at most per call).
        lad = self.ladder_for(
            key, horizon=horizon, target_delay=d, min_at_risk=min_at_risk, static=static
        )
        rung = lad.rung(i) if u < share or i == 0 else lad.rung(i - 1)
        nxt = next((t for t in rung.offsets if t > e + lad.step / 2.0), None)
        at = created_at + nxt if nxt is not None else deadline
        # Not past the end of the data: beyond it the plan rests on a guessed tail.
        at = min(at, created_at + max(end, e + static_delay))
        gap = min(max(at - failed_at, min_delay), max_delay)
        t = e + gap
        s_e = 1.0 - lad.recovered_by(e)
        prob = (lad.recovered_by(t) - lad.recovered_by(e)) / s_e if s_e > 1e-12 else 0.0
        recoverable = max(lad.recovered_by(horizon), 1e-12)
        return Choice(
            failed_at + gap,
            "learned",
            key=key,
            level=level_of(key),
            recovered=c.recovered,
            failed=c.failed,
            at_risk=c.at_risk(bin_of(e)),
            probability=min(max(prob, 0.0), 1.0),
            target_delay=lad.target_delay,
            on_time=min(rung.on_time / recoverable, 1.0),
            static_on_time=min(lad.static_on_time / recoverable, 1.0),
        )

    def _probe(
        self,
        e: float,
        u: float,
        created_at: float,
        failed_at: float,
        deadline: float,
        min_delay: float,
        max_delay: float,
    ) -> Choice:
        """A probe's next attempt: 60 s x 4^(k + phase) after the first, the phase the
        message's own, so that the probes together see every time scale."""
        phase = (u * 7919.0) % 1.0
        k = 0
        while True:
            t = 60.0 * 4.0 ** (k + phase)
            if t > e + 30.0:
                break
            k += 1
        at = min(created_at + t, deadline)
        gap = min(max(at - failed_at, min_delay), max_delay)
        return Choice(failed_at + gap, "learned", why="probe")

    def rows(self) -> list[tuple[Key, Curve]]:
        return sorted(self.curves.items())

    def summary(self, key: Key) -> dict[str, object]:
        """Quantiles of T (seconds) where the data reaches them, for stats and the API."""
        c = self.curves[key]
        out: dict[str, object] = {
            "country": key[0],
            "operator": key[1],
            "reason": key[2],
            "level": level_of(key),
            "recovered": c.recovered,
            "failed": c.failed,
            "updated_at": c.updated_at,
        }
        for q in (0.5, 0.9):
            t, _ = c.reach(0.0, q, 1.0)
            out[f"p{int(q * 100)}_s"] = None if t is None else round(t, 1)
        out["recovered_by_24h"] = round(1.0 - c.survival(86400.0), 4)
        typical = c.typical(1.0)
        out["typical_s"] = round(typical, 1) if typical > 0 else None
        return out


@attrs.define
class _Job:
    """A common decision being remade over several calls: the deciding keys (the
    reasons' first, then by messages), their ladders made so far, and how far `pick`
    has got."""

    count: float  # observations when it started
    target_delay: float  # 0 until the static schedules' median delay is known
    keys: list[tuple[Key, float]]  # (key, messages)
    # The weighted sum of the keys' static `profile`s, and how many are in it.
    delays: list[float] = attrs.field(factory=lambda: [0.0] * (len(DELAYS) + 1))
    profiled: int = 0
    ladders: list[Ladder] = attrs.field(factory=list)  # made so far, in the keys' order
    progress: Progress = attrs.field(factory=Progress)


def _fresh(cached: tuple[float, Ladder], count: float, target_delay: float) -> bool:
    """A ladder made on `cached[0]` observations still serves: its data has grown by
    less than a tenth and the target delay has moved by less than a tenth."""
    made_count, lad = cached
    return count < made_count * 1.1 + 10 and (
        abs(target_delay - lad.target_delay) <= 0.1 * lad.target_delay
    )


def _extrapolated(c: Curve, min_at_risk: float) -> list[float]:
    """The curve's hazards where `min_at_risk` messages were seen at risk; in a bin
    with fewer, the hazard of the last three bins (a doubling of time) that had
    enough, carried on (0 before any had: no recovery seen there)."""
    out = [0.0] * BINS
    seen: list[int] = []  # the bins with enough data so far
    for i in range(BINS):
        if c.at_risk(i) >= min_at_risk:
            out[i] = c.hazard(i)
            seen.append(i)
            continue
        back = seen[-3:]
        ex = sum(c.exposure[j] for j in back)
        out[i] = sum(c.events[j] for j in back) / ex if ex > 0 else 0.0
    return out


def _data_end(c: Curve, min_at_risk: float) -> float:
    """How far after the first attempt the data reaches: the end of the last bin in
    which `min_at_risk` messages were seen at risk (0 when none)."""
    for i in range(BINS - 1, -1, -1):
        if c.at_risk(i) >= min_at_risk:
            return EDGES[i + 1] if i < BINS - 1 else math.inf
    return 0.0


def _cdf(hazards: Sequence[float]) -> Callable[[float], float]:
    """P(T <= t) of a piecewise-constant hazard on the bins."""
    cum = [0.0]
    for i in range(BINS - 1):
        cum.append(cum[-1] + hazards[i] * _width(i))

    def cdf(t: float) -> float:
        if t <= 0:
            return 0.0
        i = bin_of(t)
        return 1.0 - math.exp(-(cum[i] + hazards[i] * (t - EDGES[i])))

    return cdf


@attrs.frozen
class Observation:
    """One censored observation of a key's recovery time (seconds since the first attempt)."""

    country: str
    operator: str
    reason: str
    lo: float
    hi: float
    recovered: bool
    now: float
    first: bool = False  # the message's first soft bounce (it counts the message)


def merged(items: Iterable[tuple[Key, Curve]], max_keys: int) -> Estimates:
    est = Estimates(max_keys=max_keys)
    for key, c in items:
        est.merge(key, c)
    return est


def curve_from(
    events: Sequence[float], exposure: Sequence[float], counts: Mapping[str, float]
) -> Curve:
    """A curve from stored rows (lists may be shorter than BINS: zeros after)."""
    ev = [float(x) for x in events][:BINS]
    ex = [float(x) for x in exposure][:BINS]
    ev += [0.0] * (BINS - len(ev))
    ex += [0.0] * (BINS - len(ex))
    return Curve(
        ev,
        ex,
        int(counts.get("recovered", 0)),
        int(counts.get("failed", 0)),
        float(counts.get("updated_at", 0.0)),
        int(counts.get("messages", 0)),
    )
