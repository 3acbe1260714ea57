"""What happened lately, per key: timed observations kept for a bounded time and
count, summarised over the last minutes (pure: the caller passes the time).

The admin API's carrier figures (submissions per second and their round-trip
percentiles over the last minutes) come from here; the Prometheus histograms count
since the start instead.
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["Recent"]

KEEP_SECONDS: Final = 3600.0  # the longest window asked for
KEEP_COUNT: Final = 50_000  # per key: a busy carrier's last hour may be more


class Recent:
    """(time, value) observations per key, the last `keep` seconds and `count` each."""

    def __init__(self, keep: float = KEEP_SECONDS, count: int = KEEP_COUNT) -> None:
        self.keep = keep
        self.count = count
        self._seen: dict[str, deque[tuple[float, float]]] = {}

    def add(self, key: str, now: float, value: float) -> None:
        q = self._seen.get(key)
        if q is None:
            q = self._seen[key] = deque(maxlen=self.count)
        q.append((now, value))
        while q and q[0][0] < now - self.keep:
            q.popleft()

    def summary(self, key: str, now: float, seconds: float) -> dict[str, float | int | None]:
        """Over the last `seconds`: how many, per second, and the values' p50/p95/max."""
        values = sorted(v for t, v in self._seen.get(key, ()) if t >= now - seconds)
        n = len(values)

        def pct(p: float) -> float | None:
            return values[min(n - 1, int(p * n))] if n else None

        return {
            "count": n,
            "per_second": n / seconds if seconds > 0 else 0.0,
            "p50": pct(0.50),
            "p95": pct(0.95),
            "max": values[-1] if n else None,
        }
