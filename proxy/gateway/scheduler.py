"""Time-driven work: the scheduler, housekeeping, recovery and the store's notices.

`Scheduler.run` claims the messages whose retry (or receipt check) is due and fires
them through the path; `Scheduler.housekeeping` writes the carrier answers kept while
the store could not, applies retention, expires held-back receipts, keeps the
instance's registration and id floor, re-reads suppressions and (with a shared store)
hands over the messages of instances that died; `Scheduler.recover` resubmits the
messages a crash caught mid-submit. With a shared store, `Notices` acts on the other
instances' notifications (receipts to deliver, carrier ids written, suppressions
changed) and keeps the listening connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bounceback.core import engine
from bounceback.core.ids import IdGenerator
from bounceback.core.model import State, evolve
from bounceback.gateway.context import Context
from bounceback.gateway.dispatch import Dispatch
from bounceback.gateway.path import MessagePath
from bounceback.gateway.receipts import CarrierReceipts
from bounceback.smpp.server import EsmeSession
from bounceback.store.postgres import (
    CARRIER_CHANNEL,
    CARRIER_STATE_CHANNEL,
    CONFIG_CHANNEL,
    RECEIPT_CHANNEL,
    SUPPRESSION_CHANNEL,
)
from bounceback.store.sqlite import Change, StaleMessage

log = logging.getLogger("bounceback.gateway")

STUCK_AFTER = 60.0  # an unfinished message untouched this long lost its instance
# A shared store: how often the listening connection is checked (and opened again),
# and how often the accounts with receivers here look for receipts even unnotified.
LISTEN_CHECK = 1.0
RECEIPT_FALLBACK = 5.0


def replace_suppressed(ctx: Context, numbers: dict[str, float]) -> None:
    """The suppressed numbers are now `numbers` (the whole list, read from the store)."""
    ctx.suppressed.clear()
    ctx.suppressed.update(numbers)


class Scheduler:
    """Due retries, housekeeping and recovery (see the module)."""

    def __init__(
        self, ctx: Context, path: MessagePath, receipts: CarrierReceipts, dispatch: Dispatch
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.receipts = receipts
        self.dispatch = dispatch

    async def run(self) -> None:
        while not self.ctx.stopping.is_set():
            now = time.time()
            if self.ctx.store.fault is not None:  # nothing could be written: wait for it
                await asyncio.sleep(0.25)
                continue
            try:
                due = await self.ctx.store.claim_due(self.ctx.instance, now, 1000, self.ctx.lease)
            except Exception:
                log.exception("due query failed")
                due = []
            no_query = frozenset(self.dispatch.no_query)
            for m in due:
                if m.id not in self.path.in_progress:
                    self.ctx.spawn(self.path.fire(m.id, engine.Due(now, no_query)))
            await asyncio.sleep(0.05 if len(due) >= 1000 else 0.25)

    async def housekeeping(self) -> None:
        retention = self.ctx.cfg.store.retention_days * 86400.0
        expire_every = min(3600.0, max(1.0, retention / 4))  # [store] retention_days
        next_expiry = 0.0
        next_sweep = 0.0
        while not self.ctx.stopping.is_set():
            await asyncio.sleep(1.0)
            if self.path.unwritten:
                try:
                    await self.dispatch.write_deferred()
                except Exception:
                    log.exception("writing the carrier answers kept in memory failed")
            if self.ctx.store.fault is not None:
                continue  # the store reports and retries its fault itself
            try:
                now = time.monotonic()
                wall = time.time()
                if now >= next_expiry:
                    next_expiry = now + expire_every
                    gone = await self.ctx.store.expire_finished(wall - retention)
                    if gone:
                        self.ctx.count("messages_expired_retention", gone)
                        log.info("retention: removed %d finished messages", gone)
                    # Number flagging counts soft bounces over flag_window: keep those.
                    kept = max(retention, self.ctx.cfg.retry.flag_window)
                    records = await self.ctx.store.expire_records(wall - kept)
                    if any(records.values()):
                        self.ctx.count("records_expired_retention", sum(records.values()))
                        log.info(
                            "retention: removed %s",
                            ", ".join(f"{n} {t} rows" for t, n in records.items() if n),
                        )
                if self.ctx.shared:
                    await self.receipts.rematch_early(None, notified=False)
                await self.receipts.expire_early(wall)
                await self.ctx.store.meta_set(self.ctx.floor_key, f"{self.ctx.ids.last:016X}")
                if not await self.ctx.store.renew_instance(
                    self.ctx.instance_no, wall, self.ctx.lease
                ):
                    log.error(
                        "instance number %d was taken over; re-registering", self.ctx.instance_no
                    )
                    self.ctx.instance_no = await self.ctx.store.register_instance(
                        self.ctx.instance, wall, self.ctx.lease
                    )
                    self.ctx.ids = IdGenerator(self.ctx.instance_no, self.ctx.ids.last)
                if now >= next_sweep:
                    next_sweep = now + 10.0
                    # Suppression changes made by the CLI or another instance.
                    listed = await self.ctx.store.suppression_list(wall)
                    replace_suppressed(self.ctx, {x.number: x.expires_at for x in listed})
                    if self.ctx.shared:
                        await self.recover(older_than=wall - STUCK_AFTER)
            except Exception as exc:  # a locked or full store: try again next round
                log.warning("housekeeping: %s", exc)

    async def recover(self, older_than: float | None = None) -> None:
        """Messages caught mid-submit by a crash are resubmitted (at least once).

        At start (one process per SQLite file) that is every unfinished message; with a
        shared store, housekeeping hands over only those untouched for a while (their
        instance died), and the due-claim leases decide who resubmits them.
        """
        now = time.time()
        after = ""
        while True:
            batch = await self.ctx.store.unfinished(500, after)
            if not batch:
                break
            stale = [
                m
                for m in batch
                if older_than is None or (m.updated_at < older_than and m.id not in self.path.locks)
            ]
            held = [
                evolve(m, state=State.HELD, next_attempt_at=now, version=m.version + 1)
                for m in stale
            ]
            # One commit each (they share transactions): a message that another
            # instance changed meanwhile is not stuck, and is refused alone.
            results = await asyncio.gather(
                *(self.ctx.store.commit(Change(message=m)) for m in held), return_exceptions=True
            )
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, StaleMessage):
                    raise r
            after = batch[-1].id
            log.info("recovered %d unfinished messages", len(batch))


class Notices:
    """A shared store's notifications, acted on (see the module)."""

    def __init__(
        self,
        ctx: Context,
        receipts: CarrierReceipts,
        sessions: dict[str, set[EsmeSession]],
        wake_pump: Callable[[str], None],
        notice: asyncio.Event,
    ) -> None:
        self.ctx = ctx
        self.receipts = receipts
        self.sessions = sessions
        self.wake_pump = wake_pump
        # Set by a notification that needs the store (see `run`): the numbers whose
        # suppression changed ("*": all); carriers are `CarrierReceipts.notice_carriers`.
        self.notice = notice
        self._numbers: set[str] = set()
        # Another instance reloaded its configuration: reload ours (the shell sets it).
        self.on_reload: Callable[[str], None] | None = None
        # A carrier paused or resumed on any instance: (action, carrier name).
        self.on_carrier_state: Callable[[str, str], None] | None = None

    def _receivers_here(self) -> list[str]:
        """The accounts with a receiver bound to this instance."""
        return [a for a, ss in self.sessions.items() if any(s.can_receive for s in ss)]

    def on_notice(self, channel: str, payload: str) -> None:
        """A notification from the shared store (any instance's commit, ours too)."""
        if channel == RECEIPT_CHANNEL:
            # Receipts for an account: its pump here claims them (the leases make one
            # instance deliver each) when a receiver of it is bound here.
            if any(s.can_receive for s in self.sessions.get(payload, ())):
                self.ctx.count("receipt_notices")
                self.wake_pump(payload)
        elif channel == CARRIER_CHANNEL:
            self.receipts.on_carrier_notice(payload)
        elif channel == SUPPRESSION_CHANNEL:
            self._numbers.update(payload.split() or ["*"])
            self.notice.set()
        elif channel == CARRIER_STATE_CHANNEL and self.on_carrier_state is not None:
            action, _, carrier = payload.partition(" ")
            self.on_carrier_state(action, carrier)
        elif (
            channel == CONFIG_CHANNEL
            and payload != self.ctx.instance
            and self.on_reload is not None
        ):
            self.on_reload(payload)

    async def run(self) -> None:
        """Act on the notifications that need the store; keep the listening connection
        open; every `RECEIPT_FALLBACK` s wake the pumps of the accounts with receivers
        here (a notification may be lost with its connection)."""
        loop = asyncio.get_running_loop()
        next_fallback = loop.time() + RECEIPT_FALLBACK
        while not self.ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.notice.wait(), LISTEN_CHECK)
            self.notice.clear()
            try:
                if self.receipts.notice_carriers:
                    carriers, self.receipts.notice_carriers = self.receipts.notice_carriers, set()
                    await self.receipts.rematch_early(
                        None if "*" in carriers else carriers, notified=True
                    )
                if self._numbers:
                    numbers, self._numbers = self._numbers, set()
                    await self._refresh_suppressed(numbers)
                if await self.ctx.store.ensure_listening() and self.ctx.store.listening:
                    # Listening again: the notifications sent meanwhile were lost, so
                    # look for everything (until then, the periodic looks stand in).
                    log.warning("the store's notifications were interrupted; catching up")
                    self.ctx.count("notify_reconnects")
                    next_fallback = 0.0
                    await self.receipts.rematch_early(None, notified=False)
                    await self._refresh_suppressed({"*"})
                if loop.time() >= next_fallback:
                    next_fallback = loop.time() + RECEIPT_FALLBACK
                    for account in self._receivers_here():
                        self.wake_pump(account)
            except Exception as exc:  # the store is failing: the next round tries again
                if self.ctx.rare("notice_failures"):
                    log.warning(
                        "acting on store notifications: %s (%d so far)",
                        exc,
                        self.ctx.counters["notice_failures"],
                    )

    async def _refresh_suppressed(self, numbers: set[str]) -> None:
        """Read the suppression of `numbers` ("*": the whole list) from the store."""
        wall = time.time()
        if "*" in numbers:
            listed = await self.ctx.store.suppression_list(wall)
            replace_suppressed(self.ctx, {x.number: x.expires_at for x in listed})
            self.ctx.count("suppression_notified")
            return
        for number in numbers:
            s = await self.ctx.store.suppressed(number, wall)
            if s is None:
                self.ctx.suppressed.pop(number, None)
            else:
                self.ctx.suppressed[number] = s.expires_at
        self.ctx.count("suppression_notified", len(numbers))
