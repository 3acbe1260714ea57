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
  between the bins of the interval in proportion to the hazard the bins already show
  (one step of Turnbull's self-consistency; uniform in log-time while they show
  none), with the exposure each bin saw before it.

Memory is bounded: `BINS` pairs of floats per key and at most `max_keys` keys; the
key updated longest ago goes first when a new one needs room.

**Decision.** After a failure at elapsed time `e` (the failed attempt's time since the
first one), the next attempt is the earliest `t` where the delivery delay that the
recoveries since `e` would have accumulated by `t`, the integral from e to t of P(T <=
s | T > e), reaches `cost` seconds (an attempt is worth `cost` seconds of delay), and
not before P(T <= t | T > e) reaches `threshold` (attempts stay sparse where
recoveries are rare). Destinations that come back in minutes are tried again within
minutes, those that take hours wait hours, and a tail that never comes back (whose
conditional probability of recovering stays low) is tried ever more rarely. With
`cost` 0 the threshold alone decides. The finest key level with at least `min_at_risk`
messages seen at risk around `e` decides; where its data ends before the rule is met,
the hazard seen so far is carried on (at most to twice the end of the data); when no
level has data this late the message waits as long again as it has waited (the
scale-free way to look further); with no data at all the caller's static delay is used
(the prior). `choose` says which of these chose, on which key and on how much data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import attrs

# Bin edges in seconds since the first attempt: [0, 60), then ratio 2**(1/3).
BINS = 48
_RATIO = 2.0 ** (1.0 / 3.0)
EDGES: tuple[float, ...] = (0.0, *(60.0 * _RATIO**i for i in range(BINS)))
# The last bin ends at EDGES[-1]; time beyond it is counted in the last bin.
_LOG_FLOOR = 60.0 / _RATIO  # in log-time, bin 0 is as wide as the others

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
        # Weights: the bins' current hazard times their share of the span, once any
        # bin of the interval shows a recovery; uniform in log-time before that.
        hz = [self.hazard(i) * part for i, part in parts]
        total = sum(hz)
        if total > 0:
            weights = [h / total for h in hz]
        else:
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

    def reach_cost(self, e: float, cost: float, min_at_risk: float) -> tuple[float | None, float]:
        """(earliest t > e where the expected delay the recoveries since `e` would have
        accumulated by t, the integral of P(T <= s | T > e) from e to t, reaches `cost`
        seconds, or None; the end of the data as in `reach`)."""
        acc = 0.0
        surv = 1.0  # P(T > start | T > e)
        i = bin_of(e)
        start = e
        while i < BINS:
            if self.at_risk(i) < min_at_risk:
                return None, start
            end = EDGES[i + 1] if i < BINS - 1 else start + 1e9
            lam = self.hazard(i)

            def area(x: float, lam: float = lam, surv: float = surv, start: float = start) -> float:
                d = x - start
                if lam <= 0:
                    return d * (1.0 - surv)
                return d - surv * (1.0 - math.exp(-lam * d)) / lam

            whole = area(end)
            if acc + whole >= cost:
                lo, hi = start, end
                for _ in range(40):
                    mid = (lo + hi) / 2.0
                    if acc + area(mid) >= cost:
                        hi = mid
                    else:
                        lo = mid
                return hi, end
            acc += whole
            surv *= math.exp(-lam * (end - start))
            start = end
            i += 1
        return None, start

    def to_json(self) -> dict[str, object]:
        return {
            "events": [round(x, 6) for x in self.events],
            "exposure": [round(x, 3) for x in self.exposure],
            "recovered": self.recovered,
            "failed": self.failed,
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
        if self.why:
            out["why"] = self.why
        return out


@attrs.define
class Estimates:
    """Curves per key, bounded in number (the least recently updated go first)."""

    max_keys: int = 5000
    curves: dict[Key, Curve] = attrs.field(factory=dict)

    def curve(self, key: Key) -> Curve | None:
        return self.curves.get(key)

    def _touch(self, key: Key, now: float) -> Curve:
        c = self.curves.get(key)
        if c is None:
            if len(self.curves) >= self.max_keys:
                self._evict()
            c = self.curves[key] = Curve()
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
        for key in levels(obs.country, obs.operator, obs.reason):
            c = self._touch(key, obs.now)
            if obs.recovered:
                c.add_recovery(obs.lo, obs.hi)
            else:
                c.add_survival(obs.lo, obs.hi)

    def merge(self, key: Key, curve: Curve) -> None:
        self._touch(key, curve.updated_at).merge(curve)

    def choose(
        self,
        place: tuple[str, str],
        reason: str,
        *,
        created_at: float,
        failed_at: float,
        static_delay: float,
        threshold: float,
        min_at_risk: float,
        min_delay: float,
        max_delay: float,
        cost: float = 0.0,
    ) -> Choice:
        """The next attempt after a failure of the attempt made at `failed_at` for a
        message created (first tried) at `created_at`; see the module docstring."""
        e = max(failed_at - created_at, 0.0)
        prior = failed_at + static_delay
        for key in levels(place[0], place[1], reason):
            c = self.curves.get(key)
            if c is None:
                continue
            risk = c.at_risk(bin_of(e))
            if risk < min_at_risk:
                continue
            if cost > 0:
                t, data_end = c.reach_cost(e, cost, min_at_risk)
                if t is not None and threshold > 0:
                    # Not before the attempt is likely enough to find the destination
                    # back either: sparse attempts where recoveries are rare.
                    t_p, end_p = c.reach(e, threshold, min_at_risk)
                    t, data_end = (max(t, t_p), data_end) if t_p is not None else (None, end_p)
            else:
                t, data_end = c.reach(e, threshold, min_at_risk)
            common = {
                "key": key,
                "level": level_of(key),
                "recovered": c.recovered,
                "failed": c.failed,
                "at_risk": risk,
            }
            if t is None:
                # The estimate stays below the threshold as far as it has data: beyond
                # it, the hazard seen from `e` to the end of the data, carried on (or,
                # when none was seen, as long again as the message waited so far);
                # never sooner than the static delay or the end of the data.
                # At most twice as long after the first attempt as the data reaches.
                span = data_end - e
                seen = c.cum_hazard(e, data_end) if span > 0 else 0.0
                if seen <= 0:
                    ahead = max(e, span)
                elif cost > 0:
                    ahead = math.sqrt(2.0 * cost * span / seen)
                else:
                    ahead = -math.log(max(1.0 - threshold, 1e-12)) * span / seen
                t_cap = max(2.0 * data_end, e + static_delay)
                gap = max(min(e + ahead, t_cap), data_end) - e
                gap = min(max(gap, min_delay), max_delay)
                p = 1.0 - math.exp(-c.cum_hazard(e, e + gap))
                return Choice(
                    failed_at + gap,
                    "learned",
                    probability=p,
                    why="below threshold within the data",
                    **common,  # type: ignore[arg-type]
                )
            gap = min(max(t - e, min_delay), max_delay)
            p = 1.0 - math.exp(-c.cum_hazard(e, e + gap))
            return Choice(failed_at + gap, "learned", probability=p, **common)  # type: ignore[arg-type]
        top = self.curves.get(("", "", reason))
        if top is not None and top.failed >= min_at_risk and e > 0:
            # The reason has data, but no level saw enough messages at risk this long
            # after their first attempt (a static prior that gave up sooner, or a late
            # message of a new key): wait as long again as the message has waited so
            # far, the scale-free way to look further.
            gap = min(max(static_delay, e, min_delay), max_delay)
            return Choice(
                failed_at + gap,
                "learned",
                key=("", "", reason),
                level="reason",
                recovered=top.recovered,
                failed=top.failed,
                at_risk=top.at_risk(bin_of(e)),
                why="beyond the data: as long again",
            )
        return Choice(prior, "prior", why="too little data")

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
    )
