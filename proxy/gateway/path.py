"""The life of a message, top to bottom: an event in, a decision, a commit, actions out.

Every event for a message (its first dispatch, the carrier's answer, a receipt, a
due retry, an alert, a cancel) goes through `MessagePath.process`:

1. take the message's lock (`MessageLocks`: one event per message at a time);
2. load the message (from memory, else the store);
3. `engine.decide` it: the pure engine returns the new message and its actions;
4. write the change in one transaction: the message (over the version it was decided
   on, so a stale decision is refused and taken again), its feed events, sender
   receipts, suppressed numbers and soft bounces;
5. only then act on the outside world (`act`): answer the waiting sender, submit or
   cancel or query upstream (`Upstream`, the dispatch), wake the sender-receipt pump.

The components feed it: sender intake (new messages, cancel), carrier receipts, the
dispatch (the carrier's answers) and the scheduler (due retries, alerts via `fire`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from bounceback.config.settings import Config
from bounceback.core import engine
from bounceback.core.engine import (
    Action,
    AnswerSender,
    CancelUpstream,
    Policy,
    Publish,
    QueryUpstream,
    SenderReceipt,
    Submit,
    SuppressNumber,
)
from bounceback.core.localtime import Zones
from bounceback.core.model import Message, State, Step, Verdict, add_step, evolve, set_version
from bounceback.core.recovery import Estimates
from bounceback.feed.events import event_record, number_info
from bounceback.gateway.context import Context
from bounceback.gateway.locks import LRU, MessageLocks
from bounceback.store.sqlite import Change, ReceiptRow, StaleMessage, fault_kind
from smppcodecs.classify import Outcome
from smppcodecs.pdu import DataSm, SubmitSm

log = logging.getLogger("bounceback.gateway")

STALE_RETRIES = 5  # decisions refused as stale before an event gives up (and is logged)
CACHE_MAX = 200_000


def verdict_of(o: Outcome) -> Verdict:
    """A classifier's outcome as the engine's verdict."""
    return Verdict(
        kind=o.kind.name.lower(),
        reason=o.reason,
        description=o.description,
        code=o.code,
        rule=o.rule,
        source=o.source,
        max_retries=o.max_retries,
    )


def soft(reason: str, description: str) -> Verdict:
    """A soft bounce of the link itself (no carrier answer to classify)."""
    return Verdict("soft", reason, description, "link", reason, "default")


def policy_from_config(cfg: Config, recovery: Estimates | None = None) -> Policy:
    """The engine's policy from `cfg`; `recovery`: the estimates learned mode reads."""
    r = cfg.retry
    schedules = {**engine.DEFAULT_SCHEDULES, **r.schedules}

    quiet = r.quiet_hours()
    return Policy(
        max_attempts=r.max_attempts,
        jitter=r.jitter,
        schedules=schedules,
        quiet_start=quiet[0] if quiet else None,
        quiet_end=quiet[1] if quiet else None,
        flag_stops_retries=r.flag_stops_retries,
        receipt_query_after={c.name: c.receipt_query_after for c in cfg.carriers},
        mode=r.mode,
        recovery=recovery,
        learn_margin=r.learn_margin,
        learn_delay=r.learn_delay,
        learn_min_at_risk=r.learn_min_at_risk,
    )


class Upstream(Protocol):
    """The actions that talk to carriers (the dispatch carries them out)."""

    def submit(self, mid: str, attempt: int) -> None: ...

    def cancel(self, msg: Message, carrier: str, carrier_message_id: str) -> None: ...

    def query(self, msg: Message, q: QueryUpstream) -> None: ...


class _Recheck(Exception):
    """Decide again on the stored message (`MessagePath.process`)."""


_Mark = tuple[Message | None, int, int, int, int]


def mark(c: Change) -> _Mark:
    """What a decision adds to `c` (it only sets the message and appends)..."""
    return c.message, len(c.events), len(c.receipts), len(c.suppress), len(c.soft_bounce)


def rewind(c: Change, at: _Mark) -> None:
    """... and taking it back, for a decision taken again."""
    c.message = at[0]
    del c.events[at[1] :], c.receipts[at[2] :], c.suppress[at[3] :]
    del c.soft_bounce[at[4] :]


def _nothing(account: str) -> None:
    pass


class MessagePath:
    """Runs events through the engine, one message at a time (see the module).

    `upstream` and `wake_pump` are where the actions go; the shell wires them."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.configure(ctx.cfg)
        self.upstream: Upstream | None = None
        self.wake_pump: Callable[[str], None] = _nothing
        self.locks = MessageLocks()
        self.cache: LRU = LRU(CACHE_MAX)  # message id -> Message (write-through)
        # message id -> the sender's answer, while it waits for the carrier's.
        self.waiting: dict[str, asyncio.Future[int]] = {}
        # The sender's PDU, already decoded, for a first attempt that is about to go.
        self.first_pdu: dict[str, SubmitSm | DataSm] = {}
        self.in_progress: set[str] = set()  # messages `fire` is running an event for
        # message id -> (the carrier's answer, its carrier ids) not yet written: the
        # store was failing when it came (see `Dispatch.defer`).
        self.unwritten: OrderedDict[str, tuple[engine.Event, Change]] = OrderedDict()
        # With a shared store: the messages to read in this loop turn's one query (the
        # receipts that crossed from another instance come several at a time).
        self._reads: dict[str, asyncio.Future[Message | None]] = {}

    def configure(self, cfg: Config) -> None:
        """Take the retry policy, time zones and masking from `cfg` (start, reload)."""
        self.policy = policy_from_config(cfg, self.ctx.learner.view)
        # The destination's time zone, for quiet hours ([retry.time_zones] first).
        self.zones = Zones(cfg.retry.time_zones)
        # Accounts that asked for their numbers to be masked on the feed (checked per event).
        self._masked_accounts = frozenset(a.system_id for a in cfg.accounts if a.mask_destinations)

    async def load(self, mid: str, *, fresh: bool = False) -> Message | None:
        """The message from memory, else (or when `fresh`) from the store.

        With a shared store another instance may have changed a message held in memory;
        a decision taken on such a copy is refused by the store's version check and
        taken again on a fresh read (see `process`)."""
        msg: Message | None = None if fresh else self.cache.get(mid)
        if msg is None:
            msg = await (self._read(mid) if self.ctx.shared else self.ctx.store.get(mid))
            if msg is not None and not (msg.state.final or msg.state == State.HELD):
                # The decision that follows reads it from here (a receipt for another
                # instance's submission: one store read, not two).
                self.cache.put(mid, msg)
        return msg

    async def _read(self, mid: str) -> Message | None:
        """`mid` from the store, read with the others asked for in this loop turn."""
        fut = self._reads.get(mid)
        if fut is None:
            loop = asyncio.get_running_loop()
            if not self._reads:
                loop.call_soon(self._read_batch)
            fut = self._reads[mid] = loop.create_future()
        return await asyncio.shield(fut)

    def _read_batch(self) -> None:
        batch, self._reads = self._reads, {}

        async def read() -> None:
            try:
                found = await self.ctx.store.get_many(list(batch))
            except Exception as exc:
                for fut in batch.values():
                    if not fut.done():
                        fut.set_exception(exc)
                        fut.add_done_callback(_retrieved)  # a waiter may be gone
                return
            for mid, fut in batch.items():
                if not fut.done():
                    fut.set_result(found.get(mid))

        self.ctx.spawn(read())

    def event(
        self, change: Change, msg: Message, name: str, fields: dict[str, object], now: float
    ) -> None:
        """Add event `name` of `msg` to `change`: to the message's timeline when `msg`
        is the copy `change` writes, to the feed's outbox, and to the metrics."""
        ctx = self.ctx
        if change.message is msg:
            add_step(msg, Step(now, name, fields))
        if ctx.metrics is not None:
            ctx.metrics.message(name, msg.account, msg.carrier)
        feed = ctx.cfg.feed
        if feed is None:
            return
        if ctx.feed is not None and ctx.feed.full:
            ctx.count("feed_events_dropped")
            if ctx.counters["feed_events_dropped"] % 1000 == 1:
                log.error("feed outbox full (%d events): dropping new events", ctx.feed.backlog)
            return
        change.events.append(
            event_record(
                msg,
                name,
                fields,
                now=now,
                instance=ctx.instance,
                prefix=feed.prefix,
                mask=feed.mask_destinations or msg.account in self._masked_accounts,
                mask_keep=feed.mask_keep,
            )
        )

    async def process(
        self, mid: str, event: engine.Event, *, extra: Change | None = None
    ) -> Message | None:
        """Run one event through the engine, persist, then act.

        The decision is written only over the version of the message it was taken on:
        when another instance (or a command) changed the message meanwhile, the store
        refuses it (`StaleMessage`) and the event is decided again on the stored one.
        """
        change = extra if extra is not None else Change()
        at = mark(change)
        locks = self.locks
        if not locks.try_acquire(mid):
            await locks.acquire(mid)
        try:
            fresh = False
            for attempt in range(1, STALE_RETRIES + 1):
                try:
                    done = await self._decide(mid, event, change, fresh=fresh)
                    break
                except (StaleMessage, _Recheck) as exc:
                    if isinstance(exc, StaleMessage):
                        self.cache.pop(mid, None)
                        self.ctx.count("stale_decisions")
                        if attempt == STALE_RETRIES:
                            raise
                    fresh = True
                    rewind(change, at)
        finally:
            locks.release(mid)
        if done is None:
            return None
        new, after = done
        for a in after:
            self.act(new, a)
        return new

    async def _decide(
        self, mid: str, event: engine.Event, change: Change, *, fresh: bool
    ) -> tuple[Message, list[Action]] | None:
        """Load, decide and commit one event (under the message's lock), adding to
        `change` (see `mark`)."""
        ctx = self.ctx
        msg = await self.load(mid, fresh=fresh)
        if msg is None:
            log.warning("event for unknown message %s", mid)
            return None
        place = ("", "")
        if isinstance(event, engine.SubmitResult | engine.ReceiptIn):
            # The destination's (country, operator): the key of its recovery estimates.
            place = number_info(msg.destination_addr)
            if isinstance(event, engine.SubmitResult):
                fut = self.waiting.get(mid)
                waiting = fut is not None and not fut.done()
                event = evolve(event, place=place, sender_waiting=waiting)
            else:
                event = evolve(event, place=place)
        new, actions = engine.decide(msg, event, self.policy)
        if new is msg and ctx.shared and not fresh:
            # Nothing to write (a receipt for an older attempt, an intermediate one, a
            # retry that is not due on this copy): with no version check to say whether
            # the copy in memory is current, decide again on the stored message.
            raise _Recheck
        if new is not msg:
            set_version(new, msg.version + 1)  # `new` is the engine's fresh copy
            change.message = new
        now = getattr(event, "now", time.time())
        after: list[Action] = []
        for a in actions:
            if isinstance(a, Publish):
                self.event(change, new, a.event, dict(a.fields), now)
            elif isinstance(a, SenderReceipt):
                change.receipts.append(
                    ReceiptRow.for_message(new, a.stat, a.err, a.done_at, a.intermediate)
                )
                after.append(a)
            elif isinstance(a, SuppressNumber):
                ttl = ctx.cfg.retry.suppression_ttl
                change.suppress.append((a.number, a.reason, now, now + ttl, new.account))
                ctx.suppressed[a.number] = now + ttl
            else:
                after.append(a)
        if new.state == State.HELD and new.verdict is not None and new is not msg:
            change.soft_bounce.append((new.destination_addr, now, new.verdict.reason))
        if (
            change.message is not None
            or change.events
            or change.receipts
            or change.carrier_keys
            or change.suppress
        ):
            started = time.perf_counter()
            await ctx.store.commit(change)
            if ctx.metrics is not None:
                ctx.metrics.observe_commit(time.perf_counter() - started)
            if change.events:
                ctx.wake_feed()
        if new is not msg:
            obs = engine.observation(msg, new, place)
            if obs is not None:  # counted once the decision is written
                ctx.learner.observe(obs)
        if new.state.final or new.state == State.HELD:
            # Held messages live in the store, not in memory: they are read again by
            # primary key when due (a million held must not grow the proxy).
            self.cache.pop(mid, None)
        else:
            self.cache.put(mid, new)
        return new, after

    def act(self, msg: Message, a: Action) -> None:
        """Carry out an action of a committed decision."""
        if isinstance(a, Submit):
            assert self.upstream is not None
            self.upstream.submit(msg.id, a.attempt)
        elif isinstance(a, AnswerSender):
            fut = self.waiting.get(msg.id)
            if fut is not None and not fut.done():
                fut.set_result(a.status)
        elif isinstance(a, SenderReceipt):
            self.wake_pump(msg.account)
        elif isinstance(a, CancelUpstream):
            assert self.upstream is not None
            self.upstream.cancel(msg, a.carrier, a.carrier_message_id)
        elif isinstance(a, QueryUpstream):
            assert self.upstream is not None
            self.upstream.query(msg, a)

    async def fire(self, mid: str, event: engine.Event) -> None:
        """`process` a timer's or an alert's event, unless one runs for `mid` already;
        when the store cannot write it, the message is due again at once."""
        if mid in self.in_progress:
            return
        self.in_progress.add(mid)
        try:
            await self.process(mid, event)
        except Exception as exc:
            if fault_kind(exc) is None:
                raise
            # Due again as soon as the store writes: the scheduler claims it again.
            with contextlib.suppress(Exception):
                await self.ctx.store.release([mid])
        finally:
            self.in_progress.discard(mid)


def _retrieved(fut: asyncio.Future[Message | None]) -> None:
    """Mark a read's error as seen (its waiter reports it, or was cancelled)."""
    if not fut.cancelled():
        fut.exception()
