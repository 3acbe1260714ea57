"""What the gateway's components share: configuration, the store, counters, tasks.

One `Context` per running gateway. The components (intake, dispatch, receipts, the
scheduler, the receipt pumps) each hold it instead of a reference to the whole
`Gateway`: it gives them the settings, the store, the instance's identity, the
counters (mirrored to the metrics), the numbers suppressed, the feed, the stopping
signal and `spawn`, the supervisor of the message path's background tasks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Coroutine
from typing import Any

from bounceback.config.settings import Config
from bounceback.core.ids import IdGenerator
from bounceback.core.recent import Recent
from bounceback.feed.events import mask_number
from bounceback.feed.publisher import FeedProcess, FeedPublisher
from bounceback.gateway.learning import Learner
from bounceback.gateway.metrics import Metrics
from bounceback.store.sqlite import SqliteStore, Store, fault_kind

log = logging.getLogger("bounceback.gateway")

LOG_EVERY = 100  # a repeated failure is logged the 1st, 101st, ... time


class Context:
    """The running gateway's shared state (see the module)."""

    def __init__(self, config: Config, store: Store) -> None:
        self.cfg = config
        self.store = store
        # Only one process uses a SQLite file; PostgreSQL may be shared by several
        # instances, so nothing read from it is cached and work is claimed with leases.
        self.shared = not isinstance(store, SqliteStore)
        self.lease = config.store.lease_seconds
        self.instance = config.server.instance_id or (
            f"{socket.gethostname()}:{config.server.port or os.getpid()}"
        )
        self.instance_no = 0
        self.ids = IdGenerator(0)
        self.counters: dict[str, int] = {}
        self.metrics: Metrics | None = Metrics() if config.metrics is not None else None
        # The last hour, for the admin API: each carrier's submit round trips and each
        # account's submit_sm answer times (per key, bounded in time and count).
        self.recent_submits = Recent()
        self.recent_senders = Recent()
        self.feed: FeedPublisher | FeedProcess | None = None
        self.suppressed: dict[str, float] = {}  # number -> expires_at
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        # Recovery-time estimates: counted here, kept in the store ([retry] learn_*).
        self.learner = Learner(config, store, shared=self.shared)

    # ------------------------------------------------------------ counters
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n
        if self.metrics is not None:
            self.metrics.count(name, n)

    def rare(self, counter: str) -> bool:
        """Count one `counter` event; whether this one should be logged."""
        self.count(counter)
        return self.counters[counter] % LOG_EVERY == 1

    # ------------------------------------------------------------ tasks
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        # create_task, not ensure_future: a coroutine needs none of its type checks.
        t: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task[Any]) -> None:
        """The supervisor of the message path's tasks: what escapes one is counted and
        logged (never left as an unretrieved exception)."""
        self.tasks.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is None:
            return
        self.count("task_failures")
        n = self.counters["task_failures"]
        if n % LOG_EVERY != 1:
            return
        name = getattr(t.get_coro(), "__qualname__", t.get_name())
        if fault_kind(exc) is not None:  # the store logs its faults itself
            log.warning("%s: %s (%d background failures so far)", name, exc, n)
        else:
            log.error("%s failed (%d background failures so far)", name, n, exc_info=exc)

    # ------------------------------------------------------------ misc
    @property
    def floor_key(self) -> str:
        """The store's meta key of this instance number's id floor."""
        return f"id_floor:{self.instance_no}"

    def shown(self, number: str) -> str:
        """A phone number as the logs show it ([logging] mask_destinations)."""
        return mask_number(number, 4) if self.cfg.logging.mask_destinations else number

    def wake_feed(self) -> None:
        """Events were committed: the feed publishes them."""
        if self.feed is not None:
            self.feed.wake.set()
