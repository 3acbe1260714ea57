"""The console's overview (``GET /v1/overview``): the gateway now, from what it knows.

Nothing here is stored or counted anew: throughput comes from the metrics registry's
counters (sender ``submit_sm``, carrier ``submit_sm`` and receipts, receipts handed to
senders), turned into rates over the samples the previous overviews took (kept for
`WINDOW` seconds, so any client polling every few seconds sees a rate over about a
minute); the outcome shares of the messages accepted in the last minutes, and the
held messages by reason, come from the store; each carrier's link state and pause
from the running links; the feed's and the store's health from the publisher and
the store's fault state, as ``/readyz`` reads them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from bounceback.config.settings import Config
    from bounceback.feed.publisher import FeedProcess, FeedPublisher
    from bounceback.gateway.dispatch import Dispatch
    from bounceback.gateway.metrics import Metrics
    from bounceback.smpp.carrier import CarrierLink
    from bounceback.store.sqlite import Store
    from prometheus_client import Counter

__all__ = ["Overview"]

WINDOW: Final = 60.0  # seconds of samples the rates are taken over
MIN_STEP: Final = 0.5  # samples closer together than this are not kept

HELD_SQL: Final = (
    "SELECT reason, COUNT(*) FROM messages WHERE next_attempt_at IS NOT NULL"
    " AND state = 'held' GROUP BY reason"
)
OUTCOME_SQL: Final = (
    "SELECT state, CASE WHEN attempts > 1 THEN 1 ELSE 0 END, COUNT(*) FROM messages"
    " WHERE created_at >= ? GROUP BY 1, 2"
)
# The stored states as the overview counts them (a recovered message is a delivered
# one that needed more than one attempt).
RESULT_OF: Final = {
    "delivered": "delivered",
    "failed": "hard",
    "rejected": "hard",
    "expired": "expired",
    "cancelled": "cancelled",
}


class Observed(Protocol):
    """What the overview reads of the running gateway."""

    cfg: Config
    store: Store
    links: dict[str, CarrierLink]

    @property
    def counters(self) -> dict[str, int]: ...

    @property
    def metrics(self) -> Metrics | None: ...

    @property
    def feed(self) -> FeedPublisher | FeedProcess | None: ...

    @property
    def dispatch(self) -> Dispatch: ...


def _samples(counter: Counter) -> Iterable[tuple[Mapping[str, str], float]]:
    for metric in counter.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                yield s.labels, s.value


def counters_now(gw: Observed) -> dict[str, float]:
    """The counters the overview follows, as flat keys (``carrier:NAME:KEY`` per carrier)."""
    out: dict[str, float] = dict.fromkeys(
        ("submits", "carrier_submits", "receipts", "sender_receipts", "throttled"), 0.0
    )
    out["sender_receipts"] = float(gw.counters.get("receipts_to_senders", 0))
    m = gw.metrics
    if m is None:
        return out
    for labels, value in _samples(m.pdus):
        side, direction, command = labels["side"], labels["direction"], labels["command"]
        if side == "esme" and direction == "in" and command in ("submit_sm", "data_sm"):
            out["submits"] += value
        elif side == "carrier" and direction == "out" and command in ("submit_sm", "data_sm"):
            out["carrier_submits"] += value
            key = f"carrier:{labels['name']}:submits"
            out[key] = out.get(key, 0.0) + value
        elif (
            side == "carrier"
            and direction == "in"
            and command in ("submit_sm_resp", "data_sm_resp")
            and labels["status"] == "ESME_RTHROTTLED"
        ):
            out["throttled"] += value
            key = f"carrier:{labels['name']}:throttled"
            out[key] = out.get(key, 0.0) + value
    for labels, value in _samples(m.receipts):
        if labels["result"] in ("matched", "unmatched"):
            out["receipts"] += value
    for labels, value in _samples(m.messages):
        outcome, carrier = labels["outcome"], labels["carrier"]
        out[f"outcome:{outcome}"] = out.get(f"outcome:{outcome}", 0.0) + value
        if carrier and outcome in ("soft_bounce", "hard_bounce", "delivered"):
            key = f"carrier:{carrier}:{outcome}"
            out[key] = out.get(key, 0.0) + value
    return out


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


class Overview:
    """Answers `GatewayControl.overview`; keeps the counter samples the rates need."""

    def __init__(self, gw: Observed) -> None:
        self.gw = gw
        # The first sample is the start (all zero): the first overview has rates too.
        self._samples: deque[tuple[float, dict[str, float]]] = deque(
            [(time.monotonic(), counters_now(gw))]
        )

    def _sample(self, now: float) -> tuple[float, dict[str, float], dict[str, float]]:
        """(seconds between the oldest kept sample and now, its counters, now's)."""
        current = counters_now(self.gw)
        q = self._samples
        while len(q) > 1 and q[1][0] <= now - WINDOW:
            q.popleft()  # the oldest stays while it is the only one older than WINDOW
        if not q or now - q[-1][0] >= MIN_STEP:
            q.append((now, current))
        then, before = q[0]
        return now - then, before, current

    async def answer(self, minutes: float) -> dict[str, Any]:
        gw = self.gw
        span, before, now_c = self._sample(time.monotonic())

        def delta(key: str) -> float:
            return now_c.get(key, 0.0) - before.get(key, 0.0)

        def per_second(key: str) -> float | None:
            return round(delta(key) / span, 3) if span > 0 else None

        throughput = {
            "window_seconds": round(span, 1),
            "submits_per_second": per_second("submits"),
            "carrier_submits_per_second": per_second("carrier_submits"),
            "receipts_per_second": per_second("receipts"),
            "sender_receipts_per_second": per_second("sender_receipts"),
            "totals": {
                k: int(now_c[k])
                for k in ("submits", "carrier_submits", "receipts", "sender_receipts")
            },
        }

        since = time.time() - minutes * 60
        results = dict.fromkeys(
            ("delivered", "recovered", "hard", "expired", "cancelled", "pending"), 0
        )
        accepted = 0
        for state, several, n in await gw.store.query(OUTCOME_SQL, (since,)):
            n = int(n)
            accepted += n
            result = RESULT_OF.get(str(state), "pending")
            results[result] += n
            if result == "delivered" and int(several):
                results["recovered"] += n
        ended = accepted - results["pending"]
        outcomes: dict[str, Any] = {"minutes": minutes, "accepted": accepted, **results}
        outcomes["rates"] = {
            "delivered": _ratio(results["delivered"], ended),
            "recovered": _ratio(results["recovered"], ended),
            "hard": _ratio(results["hard"], ended),
            "expired": _ratio(results["expired"], ended),
        }

        held = {str(r or "") or "unknown": int(n) for r, n in await gw.store.query(HELD_SQL)}

        paused = gw.dispatch.paused
        carriers = []
        for name, link in gw.links.items():
            k = f"carrier:{name}:"
            submitted = delta(k + "submits")
            soft, hard = delta(k + "soft_bounce"), delta(k + "hard_bounce")
            if name in paused:
                state = "paused"
            elif link.bound:
                state = "up" if link.healthy else "flapping"
            else:
                state = "down"
            carriers.append(
                {
                    "name": name,
                    "bound": link.bound,
                    "healthy": link.healthy,
                    "paused": name in paused,
                    "state": state,
                    # over the same window as the throughput: soft and hard bounces per
                    # submission, and throttled answers (ESME_RTHROTTLED) per submission
                    "submits_per_second": per_second(k + "submits"),
                    "bounce_rate": _ratio(soft + hard, submitted),
                    "soft_rate": _ratio(soft, submitted),
                    "throttle_rate": _ratio(delta(k + "throttled"), submitted),
                    "totals": {
                        "submits": int(now_c.get(k + "submits", 0)),
                        "soft_bounces": int(now_c.get(k + "soft_bounce", 0)),
                        "hard_bounces": int(now_c.get(k + "hard_bounce", 0)),
                        "throttled": int(now_c.get(k + "throttled", 0)),
                    },
                }
            )

        store = gw.store
        store_doc: dict[str, Any] = {
            "kind": type(store).__name__.removesuffix("Store").lower(),
            "writable": store.fault is None,
            "fault": store.fault,
        }
        m = gw.metrics
        if m is not None:
            ready, reason = await m.readiness()
            store_doc["ready"], store_doc["readiness"] = ready, reason
        feed: dict[str, Any] = {"configured": gw.cfg.feed is not None}
        if gw.feed is not None:
            feed["connected"] = bool(gw.feed.connected)
            feed["full"] = bool(gw.feed.full)
            feed["backlog"] = await store.outbox_count()

        return {
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "throughput": throughput,
            "outcomes": outcomes,
            "held": {"total": sum(held.values()), "by_reason": dict(sorted(held.items()))},
            "carriers": carriers,
            "store": store_doc,
            "feed": feed,
        }
