"""Attempt plans: the retry times a key's recovery estimate implies.

Pure arithmetic over hazards (no clock, no I/O); `recovery.Estimates` keeps the plans
and asks for new ones as its data grows.

**What a plan optimises.** The static schedule of a reason is the operator's stated
promptness: the proxy measures it as the share of recovered messages it delivers
within a *target delay* D of the destination coming back (D is, unless configured,
the median delay the static schedules would give all the traffic seen, on the
estimates: `median_delay`). A plan is the sequence of attempt times (seconds since the
first attempt) that minimises the expected failed attempts minus mu times the share of
recoveries delivered within D, on the key's estimated recovery-time distribution F.

That is a shortest path over a time grid (step D/4 or coarser): after an attempt at
grid time t_i, the next at t_j costs 1 - F(t_j) (it fails when T > t_j) and earns
F(t_j) - F(max(t_i, t_j - D)) (the recoveries it delivers within D). The cost splits
into a part that depends on j alone when t_j - D >= t_i and a window of D/step points
otherwise, so one pass is O(grid x D/step). A key's `ladder` holds its solutions for
the prices in `MUS`, each solved when first needed; `pick` chooses one price for all
keys, weighted by their messages (a bisection: a handful of rungs per key) — the
cheapest way for the traffic as a whole to get the static schedules' on-time share
(times 1 + margin), since a key where on-time deliveries are cheap can carry more of
them than one where they are dear — and splits the messages between two neighbouring
prices in the proportion that meets the share exactly (one price alone can jump from
too few on-time deliveries to too many attempts). Every plan ends with an attempt just
before the horizon, so a destination that recovers late still gets one within its
validity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs

# The finest grid step, and the most grid points one plan takes.
MIN_STEP = 60.0
MAX_POINTS = 1500
# Every attempt costs this much more than its chance of failing: of two plans that are
# otherwise as good, the one with fewer attempts.
_TIE = 1e-9


def static_times(delays: Sequence[float], horizon: float) -> list[float]:
    """Attempt offsets of a static schedule (its delays without jitter), within the
    horizon; the first attempt (0) excluded."""
    out: list[float] = []
    t = 0.0
    for d in delays:
        t += d
        if t >= horizon:
            break
        out.append(t)
    return out


def on_time(cdf: Callable[[float], float], times: Sequence[float], delay: float) -> float:
    """The share of all messages delivered within `delay` of recovering by attempts at
    `times` (after one at 0)."""
    got = 0.0
    prev = 0.0
    for t in times:
        got += cdf(t) - cdf(max(prev, t - delay))
        prev = t
    return got


def failed(cdf: Callable[[float], float], times: Sequence[float]) -> float:
    """Expected attempts at `times` that find the destination still away."""
    return sum(1.0 - cdf(t) for t in times)


def median_delay(
    parts: Sequence[tuple[float, Callable[[float], float], Sequence[float]]],
) -> float:
    """The median delay (seconds from recovery to the delivering attempt) of the
    recovered messages of several keys, each (weight, cdf, attempt times)."""
    total = sum(w * cdf(times[-1]) for w, cdf, times in parts if times)
    if total <= 0:
        return 0.0
    hi = max((times[-1] for _, _, times in parts if times), default=0.0)
    lo = 0.0
    for _ in range(40):
        mid = (lo + hi) / 2.0
        got = sum(w * on_time(cdf, times, mid) for w, cdf, times in parts)
        if got >= total / 2.0:
            hi = mid
        else:
            lo = mid
    return hi


# Delays (seconds) at which a key's static on-time share is tabulated (`profile`):
# 10 s to about ten days, a tenth apart.
DELAYS: tuple[float, ...] = tuple(10.0 * 1.1**i for i in range(122))


def profile(cdf: Callable[[float], float], times: Sequence[float]) -> list[float]:
    """`on_time(cdf, times, d)` for every d in DELAYS, then the share the attempts
    recover (`cdf` at the last): weighted and added over keys, what `profile_median`
    reads."""
    at = [cdf(t) for t in times]
    out = []
    for d in DELAYS:
        got = 0.0
        prev = 0.0
        for t, f in zip(times, at, strict=True):
            got += f - cdf(max(prev, t - d))
            prev = t
        out.append(got)
    out.append(at[-1] if at else 0.0)
    return out


def profile_median(total: Sequence[float]) -> float:
    """The median delay of a sum of weighted `profile`s (linear between the DELAYS;
    0 when nothing is recovered)."""
    half = total[-1] / 2.0
    if half <= 0:
        return 0.0
    prev_d, prev_v = 0.0, 0.0
    for d, v in zip(DELAYS, total, strict=False):
        if v >= half:
            return prev_d + (d - prev_d) * (half - prev_v) / max(v - prev_v, 1e-12)
        prev_d, prev_v = d, v
    return DELAYS[-1]


def _solve(F: Sequence[float], k: int, mu: float) -> tuple[list[int], float, float]:
    """The grid indices of the attempts after 0 minimising failed attempts minus mu
    times on-time deliveries (window k points); with their failures and on-time share."""
    n = len(F)
    W = [0.0] * n
    nxt = [n - 1] * n
    best_b = math.inf  # min over j >= i + k of the j-only cost
    best_j = n - 1
    for i in range(n - 2, -1, -1):
        jb = i + k
        if jb <= n - 1:
            cost = (1.0 - F[jb]) + _TIE - mu * (F[jb] - F[jb - k]) + W[jb]
            if cost <= best_b:
                best_b, best_j = cost, jb
        c, cj = best_b, best_j
        fi = F[i]
        for j in range(i + 1, min(i + k, n)):
            a = (1.0 - F[j]) + _TIE - mu * (F[j] - fi) + W[j]
            if a < c:
                c, cj = a, j
        W[i] = c
        nxt[i] = cj
    path: list[int] = []
    i = 0
    fails = 0.0
    ontime = 0.0
    while i < n - 1:
        j = nxt[i]
        path.append(j)
        fails += 1.0 - F[j]
        ontime += F[j] - F[max(i, j - k)]
        i = j
    return path, fails, ontime


def grid_step(target_delay: float, horizon: float) -> tuple[float, int]:
    """(step, window points) of the grid for a target delay and horizon."""
    step = max(MIN_STEP, target_delay / 4.0, horizon / MAX_POINTS)
    return step, max(1, round(target_delay / step))


# The trade-offs each key is solved for: failed attempts against on-time deliveries.
MUS: tuple[float, ...] = (0.0, *(0.05 * 1.3**i for i in range(36)))


@attrs.frozen
class Rung:
    """One solution of a key's ladder: its attempt offsets (after the first, at 0),
    expected failed attempts and on-time share (of all the key's messages)."""

    mu: float
    offsets: tuple[float, ...]
    failed: float
    on_time: float


@attrs.frozen
class Ladder:
    """A key's estimate on the plan grid and the static schedule's figures on it; its
    solution for trade-off MUS[i] is `rung(i)`, solved when first asked for (a common
    decision needs a handful of a key's rungs, not all of them)."""

    static_on_time: float
    static_failed: float
    step: float
    target_delay: float
    cdf: tuple[float, ...] = attrs.field(repr=False)  # F on the grid
    window: int = 1  # grid points in the target delay
    _solved: dict[int, Rung] = attrs.field(factory=dict, repr=False, eq=False)

    def rung(self, i: int) -> Rung:
        """The solution for trade-off MUS[i]."""
        got = self._solved.get(i)
        if got is None:
            path, fails, on = _solve(self.cdf, self.window, MUS[i])
            got = self._solved[i] = Rung(MUS[i], tuple(j * self.step for j in path), fails, on)
        return got

    @property
    def rungs(self) -> tuple[Rung, ...]:
        """Every solution, in the order of MUS."""
        return tuple(self.rung(i) for i in range(len(MUS)))

    def has(self, i: int) -> bool:
        """Whether rung i is solved already."""
        return i in self._solved

    def recovered_by(self, t: float) -> float:
        """F(t) on the grid (linear between points)."""
        x = t / self.step
        i = int(x)
        if i >= len(self.cdf) - 1:
            return self.cdf[-1]
        f = x - i
        return self.cdf[i] * (1.0 - f) + self.cdf[i + 1] * f


def ladder(
    cdf: Callable[[float], float],
    *,
    horizon: float,
    target_delay: float,
    static: Sequence[float],
) -> Ladder:
    """A key's ladder (see the module docstring). `cdf(t)` is the estimated P(T <= t);
    `static` the static schedule's attempt offsets."""
    step, k = grid_step(target_delay, horizon)
    last = max(horizon - MIN_STEP, step)
    n = max(2, math.ceil(last / step) + 1)
    step = last / (n - 1)  # the last point on the grid: just before the horizon
    F = tuple(cdf(i * step) for i in range(n))
    d = k * step
    return Ladder(on_time(cdf, static, d), failed(cdf, static), step, d, F, k)


class OutOfBudget(Exception):
    """A `Budget` ran out: the work stops here and resumes on a later call."""


@attrs.define
class Budget:
    """How many rungs may still be solved (or ladders made) in this call."""

    left: float = math.inf

    def spend(self) -> None:
        if self.left <= 0:
            raise OutOfBudget
        self.left -= 1


@attrs.define
class Progress:
    """What a `pick` spread over several calls has summed so far: its target, the
    on-time total of every rung it finished, and where it stopped in the next one."""

    target: float | None = None
    totals: dict[int, float] = attrs.field(factory=dict)
    rung: int = -1
    key: int = 0
    acc: float = 0.0


def pick(
    weighted: Sequence[tuple[float, Ladder]],
    margin: float,
    progress: Progress | None = None,
    budget: Budget | None = None,
) -> tuple[int, float]:
    """The one trade-off for all keys: the rung index i and the share of messages that
    take it (the rest take rung i - 1) so that, over the keys weighted by their
    messages, the on-time share is the static schedules' (or half the recoveries, when
    that is more) times (1 + margin) — with the fewest failed attempts a common
    trade-off gives (a Lagrangian: one price of an attempt in on-time deliveries
    everywhere). A higher price never buys fewer on-time deliveries, so the lowest rung
    that reaches the target is found by bisection.

    With a `budget`, every rung solved spends one and `OutOfBudget` stops the work;
    called again with the same `weighted` and `progress`, it resumes where it stopped."""
    progress = progress if progress is not None else Progress()
    budget = budget if budget is not None else Budget()
    if progress.target is None:
        static = sum(w * lad.static_on_time for w, lad in weighted)
        # Half of what the plans recover (every recoverable message: more than the
        # static schedules, whose last attempts can fall short), and no less than
        # static's.
        half = 0.5 * sum(w * lad.cdf[-1] for w, lad in weighted)
        progress.target = (1.0 + margin) * max(static, half)
    target = progress.target

    def got(i: int) -> float:
        done = progress.totals.get(i)
        if done is not None:
            return done
        if progress.rung != i:
            progress.rung, progress.key, progress.acc = i, 0, 0.0
        while progress.key < len(weighted):
            w, lad = weighted[progress.key]
            if not lad.has(i):
                budget.spend()
            progress.acc += w * lad.rung(i).on_time
            progress.key += 1
        progress.totals[i] = progress.acc
        return progress.acc

    top = len(MUS) - 1
    if got(top) < target:
        return top, 1.0
    lo, hi = -1, top  # got(lo) < target <= got(hi); rung -1 stands for "nothing"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if got(mid) >= target:
            hi = mid
        else:
            lo = mid
    if hi == 0:
        return 0, 1.0
    prev, now = got(hi - 1), got(hi)
    if now - prev <= 1e-12:
        return hi, 1.0
    return hi, min(max((target - prev) / (now - prev), 0.0), 1.0)
