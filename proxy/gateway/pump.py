"""Receipts to senders: one pump per account delivers the account's stored receipts
to its bound receivers, oldest first, as a pipeline.

Every receiver session has a send window (the account's ``window``). The pump keeps
each window full: it claims receipts from the store (`Store.claim_receipts`, leases,
so several instances on one PostgreSQL store share the work), sends one wherever a
slot is free, and reacts to each answer as it comes back (a done callback on the
response's future, no task per receipt):

* status 0: the receipt is deleted from the store (deletes go in batches, one commit
  at a time, while the windows keep flowing) and its slot takes the next receipt;
* a non-zero status (ESME_RX_T_APPN, say): the sender asked us to try again later;
  its lease is released and it is sent again after ``RETRY_DELAY``;
* no answer within ``[server] response_timeout``: the lease is released and the
  receipt goes again at once, on a receiver that is answering when there is one;
* the session closed: the same, at once.

One unanswered receipt therefore holds one window slot for one timeout, never the
account's other receipts.

Receivers are told apart by how they answer. A receiver is *healthy* until a receipt
sent to it goes unanswered; it is then *suspect* and gets no receipts while another
receiver of the account is healthy or on trial. A suspect receiver is sent an
enquire_link (one at a time); when it answers that or anything else, it is *on
trial*: one receipt at a time until it answers a receipt, which makes it healthy
again. When every receiver is suspect, one that has been so for a response timeout
gets one receipt at a time (the only way its receipts can go anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections import deque
from collections.abc import Collection, Mapping

from bounceback.gateway.context import Context
from bounceback.smpp.server import EsmeSession
from bounceback.smpp.session import SessionClosed
from bounceback.store.sqlite import Change, PendingReceipt, ReceiptRow
from smppcodecs.pdu import EnquireLink, Pdu
from smppcodecs.receipt import build_receipt_pdu

log = logging.getLogger("bounceback.gateway")

RETRY_DELAY = 1.0  # a receipt the sender refused (non-zero status) waits this long
TICK = 1.0  # while work is pending, look again at least this often (retries, leases)

HEALTHY, TRIAL, SUSPECT = 0, 1, 2


class Receiver:
    """What the pump knows of one receiver session."""

    __slots__ = ("inflight", "probing", "since", "state")

    def __init__(self) -> None:
        self.state = HEALTHY
        self.since = 0.0  # when it last left a request unanswered (loop time)
        self.inflight = 0  # receipts sent to it and not answered yet
        self.probing = False  # an enquire_link of ours is outstanding


Answer = tuple[int, "EsmeSession", "asyncio.Future[Pdu]"]


class ReceiptPump:
    """Delivers one account's stored receipts to its receivers (see the module)."""

    def __init__(
        self, ctx: Context, sessions: Mapping[str, Collection[EsmeSession]], account: str
    ) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.account = account
        self.event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._queue: deque[PendingReceipt] = deque()  # claimed, not sent yet, oldest first
        self._inflight: dict[int, EsmeSession] = {}  # sent, until deleted or released
        self._later: dict[int, float] = {}  # refused: not sent again before (loop time)
        self._answers: list[Answer] = []  # answers not looked at yet
        self._probes: list[tuple[EsmeSession, asyncio.Future[Pdu]]] = []
        self._done: list[int] = []  # answered with status 0: to delete
        self._release: list[int] = []  # to release (sent again later, maybe elsewhere)
        self._receivers: dict[EsmeSession, Receiver] = {}
        self._dry = False  # the last claim found every receipt there was
        self._claimed_at = 0.0  # loop time of the last claim (leases run from it)
        self._deleting: asyncio.Task[None] | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._turn = 0  # where the search for a target starts (ties go round)
        self._again = False  # a receipt was released to go again at once: claim

    # ------------------------------------------------------------ signals
    def wake(self) -> None:
        """New receipts were stored, or a receiver bound: look at the store again."""
        self._dry = False
        self.event.set()

    def _answered(self, seq: int, s: EsmeSession, fut: asyncio.Future[Pdu]) -> None:
        self._answers.append((seq, s, fut))
        self.event.set()

    def _probed(self, s: EsmeSession, fut: asyncio.Future[Pdu]) -> None:
        self._probes.append((s, fut))
        self.event.set()

    def _on_tick(self) -> None:
        self._tick = None
        self.event.set()

    # ------------------------------------------------------------ the loop
    async def run(self) -> None:
        ctx = self.ctx
        event = self.event
        try:
            while not ctx.stopping.is_set():
                await event.wait()
                await asyncio.sleep(0)  # let this turn's answers and wakes gather
                event.clear()
                try:
                    await self._round()
                except Exception as exc:  # the store failed: try again on the next tick
                    if ctx.rare("receipt_pump_failures"):  # 1st, 101st, ...: not a flood
                        log.warning(
                            "receipts for %s: %s (%d so far)",
                            self.account,
                            exc,
                            ctx.counters["receipt_pump_failures"],
                        )
                    self._schedule()
        finally:
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            if self._done:  # stopping: what was acknowledged is not sent again
                seqs, self._done = self._done, []
                with contextlib.suppress(Exception):
                    await ctx.store.commit(Change(delete_receipts=seqs))

    def _schedule(self) -> None:
        if self._tick is None:
            self._tick = self._loop.call_later(TICK, self._on_tick)

    async def _round(self) -> None:
        ctx = self.ctx
        now = self._loop.time()
        if self._answers:
            self._take_answers(now)
        if self._probes:
            self._take_probes(now)
        targets = self._targets(now)
        if targets is None:  # nobody can receive: let another instance have them
            self._release.extend(p.seq for p in self._queue)
            self._release.extend(self._later)
            self._queue.clear()
            self._later.clear()
        else:
            room = sum(t[1] for t in targets)
            later_due = bool(self._later) and min(self._later.values()) <= now
            pending = self._queue or self._inflight or self._later
            renew = pending and now - self._claimed_at > ctx.lease / 3
            again = self._again
            if (room > len(self._queue) and not self._dry) or later_due or renew or again:
                await self._claim(targets, now)
            if room and self._queue:
                await self._send(targets)
        if self._release:
            seqs, self._release = self._release, []
            await ctx.store.release_receipts(seqs)
        if self._done:
            self._flush_deletes()
        if self._queue or self._inflight or self._later or self._done:
            self._schedule()

    def _flush_deletes(self) -> None:
        """Delete the acknowledged receipts: one commit at a time, each taking what was
        answered while the one before was written."""
        if self._deleting is None or self._deleting.done():
            seqs, self._done = self._done, []
            self._deleting = self.ctx.spawn(self._delete(seqs))

    def _take_answers(self, now: float) -> None:
        answers, self._answers = self._answers, []
        receivers = self._receivers
        for seq, s, fut in answers:
            r = receivers.get(s)
            if r is not None:
                r.inflight -= 1
            exc = SessionClosed(s.name) if fut.cancelled() else fut.exception()
            if exc is None:
                if r is not None:
                    r.state = HEALTHY
                status = fut.result().command_status
                if status == 0:
                    self._done.append(seq)
                    continue
                self.ctx.count("receipts_to_senders_refused")
                self._later[seq] = now + RETRY_DELAY
            elif isinstance(exc, TimeoutError):
                self.ctx.count("receipts_to_senders_unanswered")
                if r is not None:
                    r.state = SUSPECT
                    r.since = now
            elif not isinstance(exc, SessionClosed):  # an answer we could not decode
                self._later[seq] = now + RETRY_DELAY
            if seq not in self._later:
                self._again = True  # it goes again now, before newer ones
            self._inflight.pop(seq, None)
            self._release.append(seq)
            self._dry = False

    def _take_probes(self, now: float) -> None:
        probes, self._probes = self._probes, []
        for s, fut in probes:
            r = self._receivers.get(s)
            if r is None:
                continue
            r.probing = False
            # Answered: on trial. Unanswered: still suspect; its cool-off runs from the
            # receipt that went unanswered, not from the probe.
            if not fut.cancelled() and fut.exception() is None and r.state == SUSPECT:
                r.state = TRIAL

    def _targets(self, now: float) -> list[tuple[EsmeSession, int, Receiver]] | None:
        """The receivers that may take receipts now, with how many each; None when the
        account has no receiver at all."""
        sessions = [s for s in self.sessions.get(self.account, ()) if s.can_receive]
        if not sessions:
            self._receivers.clear()
            return None
        known = self._receivers
        if len(known) != len(sessions) or not all(s in known for s in sessions):
            self._receivers = known = {s: known.get(s) or Receiver() for s in sessions}
        targets: list[tuple[EsmeSession, int, Receiver]] = []
        fallback: list[tuple[EsmeSession, int, Receiver]] = []
        answering = False
        for s, r in known.items():
            free = s.free
            if r.state == HEALTHY:
                answering = True
                if free > 0:
                    targets.append((s, free, r))
                continue
            room = min(free, 1 - r.inflight)
            if r.state == TRIAL:
                answering = True
                if room > 0:
                    targets.append((s, room, r))
                continue
            if not r.probing and free > 0:
                fut = s.try_request(EnquireLink(sequence_number=0))
                if fut is not None:
                    r.probing = True
                    fut.add_done_callback(functools.partial(self._probed, s))
                    room = min(room, free - 1)
            if room > 0 and now - r.since >= s.response_timeout:
                fallback.append((s, room, r))
        return targets if answering else fallback

    async def _claim(self, targets: list[tuple[EsmeSession, int, Receiver]], now: float) -> None:
        """Claim (or renew) the oldest receipts: the queue becomes what is claimable and
        neither in flight nor waiting for a retry."""
        window = sum(s.window for s, _, _ in targets) or 1
        inflight, later = self._inflight, self._later
        want = max(4 * window, 32)
        limit = want + len(inflight) + len(later)
        self._claimed_at = now
        self._again = False
        got = await self.ctx.store.claim_receipts(
            self.account, self.ctx.instance, time.time(), limit, self.ctx.lease
        )
        self._dry = len(got) < limit
        now = self._loop.time()
        queue: deque[PendingReceipt] = deque()
        for p in got:
            if p.seq in inflight:
                continue
            if later:
                at = later.get(p.seq)
                if at is not None:
                    if at > now:
                        continue
                    del later[p.seq]
            queue.append(p)
        self._queue = queue
        if later:  # due but not claimed: delivered elsewhere, or simply not first now
            for seq in [seq for seq, at in later.items() if at <= now]:
                del later[seq]

    async def _send(self, targets: list[tuple[EsmeSession, int, Receiver]]) -> None:
        """Oldest first; each to the target with the most free slots (ties in turn)."""
        queue, inflight = self._queue, self._inflight
        pdu_of = receipt_pdu
        answered = self._answered
        room = [t[1] for t in targets]
        n = len(room)
        used: set[int] = set()
        while queue:
            best, most = -1, 0
            for k in range(n):
                i = (self._turn + k) % n
                if room[i] > most:
                    best, most = i, room[i]
            if best < 0:
                break
            s, _, r = targets[best]
            p = queue[0]
            fut = s.try_request(pdu_of(p.row), on_done=functools.partial(answered, p.seq, s))
            if fut is None:  # its window is full after all
                room[best] = 0
                continue
            queue.popleft()
            room[best] -= 1
            self._turn = best + 1
            inflight[p.seq] = s
            r.inflight += 1
            used.add(best)
        for i in used:
            s = targets[i][0]
            if s.writer.transport.get_write_buffer_size() > s.write_buffer_limit:
                with contextlib.suppress(ConnectionError):
                    await s.writer.drain()

    async def _delete(self, seqs: list[int]) -> None:
        """Delete the acknowledged receipts (one commit for the batch)."""
        try:
            await self.ctx.store.commit(Change(delete_receipts=seqs))
        except Exception as exc:
            if self.ctx.rare("receipt_deletes_deferred"):  # 1st, 101st, ...: not a flood
                log.warning(
                    "receipts for %s: not deleted yet: %s (%d so far)",
                    self.account,
                    exc,
                    self.ctx.counters["receipt_deletes_deferred"],
                )
            self._done.extend(seqs)
            self._schedule()
            return
        inflight = self._inflight
        for seq in seqs:
            inflight.pop(seq, None)
        self.ctx.count("receipts_to_senders", len(seqs))
        self.event.set()


class Pumps:
    """The receipt pumps of a gateway, one per account, started when first woken."""

    def __init__(self, ctx: Context, sessions: Mapping[str, Collection[EsmeSession]]) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self._pumps: dict[str, ReceiptPump] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def wake(self, account: str) -> None:
        """New receipts for `account` are stored, or one of its receivers bound."""
        pump = self._pumps.get(account)
        if pump is None:
            pump = self._pumps[account] = ReceiptPump(self.ctx, self.sessions, account)
        pump.wake()
        t = self.tasks.get(account)
        if t is None or t.done():
            self.tasks[account] = asyncio.get_running_loop().create_task(pump.run())


def receipt_pdu(row: ReceiptRow) -> Pdu:
    """The deliver_sm that carries a stored receipt to its sender."""
    return build_receipt_pdu(
        sequence_number=0,
        source_addr=row.source_addr,
        destination_addr=row.destination_addr,
        message_id=row.message_id,
        stat=row.stat,
        err=row.err,
        submit_date=receipt_date(row.submit_date),
        done_date=receipt_date(row.done_at),
        text=row.text,
        intermediate=row.intermediate,
    )


_RECEIPT_DATES: dict[int, dt.datetime] = {}  # minute since the epoch -> its datetime


def receipt_date(ts: float) -> dt.datetime:
    """A receipt's date for `ts`: UTC without a zone, to the minute, which is all a
    receipt's date shows (YYMMDDhhmm). Receipts come in bursts within a few minutes
    of one another: one datetime per minute serves them all."""
    minute = int(ts // 60)
    d = _RECEIPT_DATES.get(minute)
    if d is None:
        if len(_RECEIPT_DATES) >= 4096:
            _RECEIPT_DATES.clear()
        d = dt.datetime.fromtimestamp(minute * 60, dt.UTC).replace(tzinfo=None)
        _RECEIPT_DATES[minute] = d
    return d
