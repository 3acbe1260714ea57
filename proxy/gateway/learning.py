"""The recovery-time estimates of a running gateway ([retry] mode = "learned").

Every decision that says something about a destination's recovery time (a soft
bounce of the live attempt, a delivery after one: `engine.observation`) is counted
at once in `view`, the estimates the engine's policy reads, and in `pending`, the
counts not yet in the store. Every `[retry] learn_flush` seconds `flush` adds the
pending counts to the store's (one transaction, bounded to `learn_max_keys` keys)
and, on a store other instances share, reads the sum back: each instance decides on
what all of them have seen. Counted in both modes: a switch to learned mode starts
from the history the static schedule already gathered. A crash loses at most one
flush interval of counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from bounceback.config.settings import Config
from bounceback.core.recovery import EDGES, Estimates, Observation
from bounceback.store.sqlite import Store, fault_kind

log = logging.getLogger("bounceback.gateway")


class Learner:
    def __init__(self, config: Config, store: Store, *, shared: bool) -> None:
        self.store = store
        self.shared = shared
        self.configure(config)
        self.view = Estimates(max_keys=self.max_keys)
        self.pending = Estimates(max_keys=self.max_keys)
        self._lock = asyncio.Lock()
        self.failures = 0  # flushes failed in a row

    def configure(self, config: Config) -> None:
        r = config.retry
        self.max_keys = r.learn_max_keys
        self.interval = r.learn_flush
        if hasattr(self, "view"):
            self.view.max_keys = self.pending.max_keys = self.max_keys

    def observe(self, obs: Observation) -> None:
        self.view.observe(obs)
        self.pending.observe(obs)

    async def load(self) -> None:
        """Start from what the store holds."""
        self.view.curves = dict(await self.store.recovery_load())

    async def flush(self) -> None:
        """Add the pending counts to the store; on a shared store, read the sum."""
        async with self._lock:
            deltas, self.pending.curves = self.pending.rows(), {}
            try:
                await self.store.recovery_add(deltas, self.max_keys)
            except BaseException:
                for key, c in deltas:  # kept for the next flush
                    self.pending.merge(key, c)
                raise
            if self.shared:
                stored = Estimates(max_keys=self.max_keys)
                for key, c in await self.store.recovery_load():
                    stored.merge(key, c)
                for key, c in self.pending.rows():  # counted since the add above
                    stored.merge(key, c)
                self.view.curves = stored.curves

    async def reset(self) -> int:
        async with self._lock:
            n = await self.store.recovery_reset()
            self.view.clear()
            self.pending.clear()
            return n

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush every `interval` seconds until `stopping`, then once more."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)
            try:
                await self.flush()
                self.failures = 0
            except Exception as exc:
                self.failures += 1
                if self.failures % 100 != 1:  # the first of a run of failures, then rarely
                    continue
                if fault_kind(exc) is None:
                    log.exception("recovery estimates: flush failed")
                else:
                    log.warning("recovery estimates: not written (%s); kept for later", exc)

    def export(self, mode: str) -> dict[str, Any]:
        """The estimates as JSON (`GET /v1/estimates`): every key's counts and a summary."""
        out = []
        for key, c in self.view.rows():
            row = self.view.summary(key)
            row.update(c.to_json())
            out.append(row)
        return {
            "schema": "bounceback.estimates/1",
            "mode": mode,
            "bin_edges_s": [round(e, 3) for e in EDGES],
            "keys": len(out),
            "max_keys": self.max_keys,
            "estimates": out,
        }
