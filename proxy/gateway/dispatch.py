"""Engine actions to carrier links: submit, cancel and query upstream.

`Dispatch` carries out the engine's actions that talk to carriers (it is the
path's `Upstream`): it routes a message to a bound carrier (`route`), builds the PDU
that goes (`upstream_pdu`), submits it and runs the carrier's answer back through the
path, keeping that answer in memory when the store cannot write it (`defer`,
`write_deferred`). It sends cancel_sm for cancelled messages and query_sm for
overdue receipts (a final answer is decided like a receipt, see `CarrierReceipts`),
and releases the messages held because no carrier was bound when one binds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from typing import Any

from bounceback import logs
from bounceback.core import engine
from bounceback.core.engine import QueryUpstream
from bounceback.core.model import Message, State, Verdict
from bounceback.gateway.context import Context
from bounceback.gateway.path import MessagePath, mark, rewind, soft, verdict_of
from bounceback.gateway.receipts import CarrierReceipts
from bounceback.smpp.carrier import CarrierLink, NotBound
from bounceback.smpp.session import SessionClosed
from bounceback.store.sqlite import Change, fault_kind
from smppcodecs.classify import classify_receipt, classify_submit_status
from smppcodecs.constants import STATE_STAT_WORDS, MessageState
from smppcodecs.constants import CommandStatus as S
from smppcodecs.exceptions import PduError
from smppcodecs.msgid import id_keys
from smppcodecs.pdu import GenericNack, Pdu, QuerySm, QuerySmResp, SubmitSm, decode
from smppcodecs.receipt import Receipt
from smppcodecs.smpptime import format_absolute

log = logging.getLogger("bounceback.gateway")

# Carrier answers that could not be written (the store was failing) are kept in memory
# up to this many and written when the store is back.
UNWRITTEN_MAX = 100_000
# query_sm for overdue receipts (see `Dispatch.query`).
FINAL_MESSAGE_STATES = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.EXPIRED,
        MessageState.DELETED,
        MessageState.UNDELIVERABLE,
        MessageState.REJECTED,
    }
)
QUERY_CONCURRENCY = 2  # query_sm in flight per carrier: the window is the submits'
QUERY_BACKLOG = 1000  # queries waiting per carrier beyond which a check is skipped
QUERYFAIL_LIMIT = 3  # ESME_RQUERYFAIL answers, and never a success, mean "not supported"


class Dispatch:
    """The engine's upstream actions, carried out on the carrier links (see the module)."""

    def __init__(
        self,
        ctx: Context,
        path: MessagePath,
        receipts: CarrierReceipts,
        links: dict[str, CarrierLink],
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.receipts = receipts
        self.links = links
        # Carriers an operator paused (admin API): no new submissions go to them; the
        # route's other carriers take them, or they wait as if it were not bound.
        self.paused: set[str] = set()
        # Overdue receipts: carriers that do not answer query_sm, carriers that did
        # answer one, ESME_RQUERYFAIL answers in a row, and the queries per carrier.
        self.no_query: set[str] = set()
        self._query_ok: set[str] = set()
        self._queryfail: dict[str, int] = {}
        self._query_slots: dict[str, asyncio.Semaphore] = {}
        self._queries: dict[str, int] = {}

    # ------------------------------------------------------------ the path's actions
    def submit(self, mid: str, attempt: int) -> None:
        """Send attempt `attempt` of message `mid` (in a task of its own)."""
        self.ctx.spawn(self._send(mid, attempt))

    def cancel(self, msg: Message, carrier: str, carrier_message_id: str) -> None:
        """cancel_sm at `carrier` (when it is still configured)."""
        link = self.links.get(carrier)
        if link is not None:
            self.ctx.spawn(self._cancel(link, msg, carrier_message_id))

    def query(self, msg: Message, q: QueryUpstream) -> None:
        """query_sm for an overdue receipt (in a task of its own)."""
        self.ctx.spawn(self._query(msg, q))

    # ------------------------------------------------------------ submit
    def route(self, msg: Message) -> list[CarrierLink]:
        names = [c.name for c in self.ctx.cfg.carriers_for(msg.account, msg.destination_addr)]
        if (
            self.ctx.cfg.retry.alternate_carrier
            and msg.carrier in names
            and msg.verdict is not None
            and msg.verdict.reason in ("routing", "network", "system_failure", "congestion")
        ):
            i = names.index(msg.carrier)
            names = names[i + 1 :] + names[: i + 1]
        links = [self.links[n] for n in names if n in self.links and n not in self.paused]
        # Bound and healthy carriers first (a flapping one would likely drop the
        # submit); the route's fallback order is kept within each group.
        return sorted(links, key=lambda link: not (link.bound and link.healthy))

    def upstream_pdu(self, msg: Message, attempt: int, original: Pdu | None = None) -> Pdu:
        """What goes to the carrier: the sender's PDU (`original`, or decoded from the
        store), with a receipt always requested."""
        pdu = original if original is not None else decode(msg.pdu)
        rd = (msg.registered_delivery & ~0x03) | 0x01  # always ask the carrier for a receipt
        changes: dict[str, Any] = {"sequence_number": 0, "registered_delivery": rd}
        if attempt > 1 and isinstance(pdu, SubmitSm):
            # Keep the original deadline, not a fresh relative validity.
            changes["validity_period"] = format_absolute(
                dt.datetime.fromtimestamp(msg.deadline, dt.UTC)
            )
            changes["schedule_delivery_time"] = ""
        return pdu.copy(**changes)

    async def _send(self, mid: str, attempt: int) -> None:
        original = self.path.first_pdu.pop(mid, None)
        msg = await self.path.load(mid)
        if msg is None:
            return
        links = [link for link in self.route(msg) if link.bound]
        now = time.time()
        if not links:
            await self.process_or_defer(
                mid,
                engine.SubmitResult(
                    now=now,
                    carrier="",
                    status=-1,
                    carrier_message_id="",
                    verdict=soft("not_bound", "no carrier bound"),
                    rand=random.random(),
                ),
                Change(),
            )
            return
        link = links[0]
        if attempt > 1 and self.ctx.metrics is not None:
            reason = msg.verdict.reason if msg.verdict is not None else ""
            self.ctx.metrics.retry(link.name, reason)
        pdu = self.upstream_pdu(msg, attempt, original)  # only a first attempt has one
        verdict: Verdict | None = None
        cmid = ""
        status = -1
        try:
            resp = await link.submit(pdu)
            status = resp.command_status
            cmid = getattr(resp, "message_id", "") or ""
            if status != 0:
                verdict = verdict_of(
                    classify_submit_status(status, self.receipts.rules.get(link.name))
                )
        except (TimeoutError, SessionClosed):
            verdict = soft("timeout", "no submit_sm_resp from the carrier")
        except NotBound:
            verdict = soft("not_bound", "no carrier bound")
        except PduError as exc:
            verdict = soft("timeout", f"carrier answered an unreadable PDU: {exc}")
        extra = Change()
        keys = id_keys(cmid, link.cfg.id_format) if status == 0 else []
        for k in keys:
            self.receipts.keys.put((link.name, k), (mid, attempt))
            extra.carrier_keys.append((link.name, k, mid, attempt))
        written = await self.process_or_defer(
            mid,
            engine.SubmitResult(
                now=time.time(),
                carrier=link.name,
                status=status if status >= 0 else 0x08,
                carrier_message_id=cmid,
                verdict=verdict,
                rand=random.random(),
                tz=self.path.zones(msg.destination_addr),
            ),
            extra,
        )
        if keys and written:
            self.receipts.replay_early(link.name, keys)

    async def process_or_defer(self, mid: str, event: engine.Event, extra: Change) -> bool:
        """`process` a carrier's answer; when the store cannot write it, `defer` it.
        Whether it was written."""
        at = mark(extra)
        try:
            await self.path.process(mid, event, extra=extra)
        except Exception as exc:
            if fault_kind(exc) is None:
                raise
            rewind(extra, at)
            self.defer(mid, event, extra)
            return False
        return True

    def defer(self, mid: str, event: engine.Event, extra: Change) -> None:
        """Keep a carrier answer the store could not write, to write it once the store
        is back (`write_deferred`). The message is stored and the carrier has it: a
        sender still waiting is told ESME_ROK (its final receipt tells the rest). Past
        UNWRITTEN_MAX the oldest is dropped: its message stays `submitting` and is sent
        again after a restart (as after a crash)."""
        self.path.unwritten[mid] = (event, extra)
        self.path.unwritten.move_to_end(mid)
        if self.ctx.rare("carrier_answers_deferred"):
            log.warning(
                "%d carrier answers kept in memory until the store can write (%d so far)",
                len(self.path.unwritten),
                self.ctx.counters["carrier_answers_deferred"],
            )
        while len(self.path.unwritten) > UNWRITTEN_MAX:
            lost, _ = self.path.unwritten.popitem(last=False)
            if self.ctx.rare("carrier_answers_dropped"):
                log.error(
                    "more than %d carrier answers waiting for the store: %s and older ones "
                    "will be sent again after a restart",
                    UNWRITTEN_MAX,
                    lost,
                )
        fut = self.path.waiting.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(0)

    async def write_deferred(self) -> None:
        """Write the carrier answers kept while the store could not (oldest first)."""
        while self.path.unwritten and self.ctx.store.fault is None:
            mid, (event, extra) = next(iter(self.path.unwritten.items()))
            at = mark(extra)
            try:
                new = await self.path.process(mid, event, extra=extra)
            except Exception as exc:
                if fault_kind(exc) is None:
                    self.path.unwritten.pop(mid, None)  # not a store fault: never retried
                    raise
                rewind(extra, at)
                return
            self.path.unwritten.pop(mid, None)
            self.ctx.count("carrier_answers_written")
            if new is not None and isinstance(event, engine.SubmitResult) and event.carrier:
                self.receipts.replay_early(event.carrier, [k for c, k, _, _ in extra.carrier_keys])

    def pause(self, name: str) -> bool:
        """Send nothing new to carrier `name` until `resume` (False: no such carrier).
        Its session stays bound: receipts for what it already took still come in."""
        if name not in self.links:
            return False
        self.paused.add(name)
        return True

    def resume(self, name: str) -> bool:
        """Carrier `name` takes submissions again; messages that waited for it go now."""
        if name not in self.links:
            return False
        if name in self.paused:
            self.paused.discard(name)
            if self.links[name].bound:
                self.on_carrier_bound(name)
        return True

    def on_carrier_bound(self, name: str) -> None:
        # Messages held only because no carrier was bound go (see _release_not_bound).
        self.ctx.spawn(self._release_not_bound(name))

    async def _release_not_bound(self, name: str) -> None:
        """Messages held only because no carrier was bound go when one of their
        carriers binds, ahead of their schedules (like an alert), but not all at once
        on every bind: a carrier that drops the session right after binding, or on the
        first submit_sm, would cost each of them a retry on each bind. One goes at once
        as a probe; the others follow once this bind has proven itself (answered a
        submit, or stayed bound `stable_after` seconds). If the bind is lost first,
        they keep their own schedules."""
        link = self.links.get(name)
        if link is None:
            return
        waiting = await self._claim_not_bound(link)
        if not waiting:
            return
        await self.ctx.store.release([m.id for m in waiting[1:]])
        await self.path.fire(waiting[0].id, engine.Alert(time.time()))
        if not await link.proven():
            return
        now = time.time()
        for m in await self._claim_not_bound(link):
            await self.path.fire(m.id, engine.Alert(now))

    async def _claim_not_bound(self, link: CarrierLink) -> list[Message]:
        """Claim the messages held because no carrier was bound that `link` can carry
        (the others are released at once), the earliest due first."""
        claimed = await self.ctx.store.claim_due(
            self.ctx.instance, time.time() + 3600, 2000, self.ctx.lease
        )
        waiting = [
            m
            for m in claimed
            if m.state == State.HELD
            and m.verdict is not None
            and m.verdict.reason == "not_bound"
            and link in self.route(m)
        ]
        keep = {m.id for m in waiting}
        await self.ctx.store.release([m.id for m in claimed if m.id not in keep])
        return waiting

    # ------------------------------------------------------------ cancel
    async def _cancel(self, link: CarrierLink, msg: Message, cmid: str) -> None:
        try:
            status = await link.cancel(cmid, msg.source_addr, msg.destination_addr)
            log.info(
                "cancel of %s at %s: status 0x%02X",
                msg.id,
                link.name,
                status,
                extra=logs.context(message_id=msg.id, carrier=link.name, account=msg.account),
            )
        except Exception as exc:
            log.info(
                "cancel of %s at %s failed: %s",
                msg.id,
                link.name,
                exc,
                extra=logs.context(message_id=msg.id, carrier=link.name, account=msg.account),
            )

    # ------------------------------------------------------------ overdue receipts
    def _query_counted(self, carrier: str, result: str) -> None:
        self.ctx.count(f"receipt_queries_{result}")
        if self.ctx.metrics is not None:
            self.ctx.metrics.receipt_query(carrier, result)

    async def _query(self, msg: Message, q: QueryUpstream) -> None:
        """Ask the carrier about a message whose receipt is overdue (the engine's
        QueryUpstream). A final message_state ends the message as a receipt would; any
        other answer, or none, leaves it waiting for the next check, which the engine
        has already scheduled."""
        if q.carrier in self.no_query:  # learnt since the check was decided: not sent
            return
        link = self.links.get(q.carrier)
        if link is None:  # no longer configured
            self._query_counted(q.carrier, "failed")
            return
        waiting = self._queries.get(q.carrier, 0)
        if waiting >= QUERY_BACKLOG:
            self._query_counted(q.carrier, "skipped")
            return
        slots = self._query_slots.get(q.carrier)
        if slots is None:
            slots = self._query_slots[q.carrier] = asyncio.Semaphore(QUERY_CONCURRENCY)
        self._queries[q.carrier] = waiting + 1
        try:
            async with slots:
                if q.carrier in self.no_query:  # learnt while this one waited
                    return
                resp = await link.query(self._query_pdu(msg, q.carrier_message_id))
        except (NotBound, TimeoutError, SessionClosed, PduError) as exc:
            log.debug("%s: query_sm for %s failed: %r", q.carrier, msg.id, exc)
            self._query_counted(q.carrier, "failed")
            return
        finally:
            self._queries[q.carrier] -= 1
        result = self._query_result(q.carrier, resp)
        if result != "final":
            self._query_counted(q.carrier, result)
            return
        assert isinstance(resp, QuerySmResp)
        state = MessageState(resp.message_state)
        stat = STATE_STAT_WORDS[state]
        err = f"{resp.error_code:03d}"
        receipt = Receipt(
            message_id=q.carrier_message_id,
            stat=stat,
            raw_stat=stat,
            err=err,
            message_state=int(state),
        )
        verdict = verdict_of(
            classify_receipt(
                receipt, self.receipts.rules.get(q.carrier, self.receipts.default_rules)
            )
        )
        if verdict.kind == "pending":  # an override calls this state pending: wait
            self._query_counted(q.carrier, "pending")
            return
        self._query_counted(q.carrier, "final")
        log.info(
            "%s: receipt of %s overdue; query_sm says %s (err %s)",
            q.carrier,
            msg.id,
            stat,
            err,
            extra=logs.context(message_id=msg.id, carrier=q.carrier, account=msg.account),
        )
        await self.receipts.decide_receipt(msg.id, msg, q.attempt, verdict, stat, err, queried=True)

    @staticmethod
    def _query_pdu(msg: Message, carrier_message_id: str) -> QuerySm:
        """query_sm names the message by the carrier's id and its source address, as
        it was submitted (type of number and numbering plan included)."""
        ton = npi = 0
        with contextlib.suppress(Exception):
            original = decode(msg.pdu)
            ton = getattr(original, "source_addr_ton", 0)
            npi = getattr(original, "source_addr_npi", 0)
        return QuerySm(
            sequence_number=0,
            message_id=carrier_message_id,
            source_addr_ton=ton,
            source_addr_npi=npi,
            source_addr=msg.source_addr,
        )

    def _query_result(self, carrier: str, resp: Pdu) -> str:
        """What a carrier's answer to query_sm says: `final`, `pending` (the message is
        still on its way), `unknown` (the carrier does not know this message),
        `unsupported` (it does not answer query_sm: remembered, logged once) or `failed`.

        ESME_RINVCMDID and generic_nack mean the command is not supported.
        ESME_RQUERYFAIL means either "no such message" or "query_sm not supported":
        from a carrier that has answered a query_sm before it is the former; from one
        that never has, QUERYFAIL_LIMIT of them in a row mean the latter."""
        status = resp.command_status
        unsupported = ""
        if isinstance(resp, GenericNack):
            unsupported = f"generic_nack 0x{status:08X}"
        elif status == S.ESME_RINVCMDID:
            unsupported = "ESME_RINVCMDID"
        elif status in (S.ESME_RQUERYFAIL, S.ESME_RINVMSGID):
            if status == S.ESME_RQUERYFAIL and carrier not in self._query_ok:
                n = self._queryfail[carrier] = self._queryfail.get(carrier, 0) + 1
                if n >= QUERYFAIL_LIMIT:
                    unsupported = f"ESME_RQUERYFAIL {n} times and never an answer"
            if not unsupported:
                return "unknown"
        elif status != 0 or not isinstance(resp, QuerySmResp):
            return "failed"
        if unsupported:
            if carrier not in self.no_query:
                self.no_query.add(carrier)
                log.warning(
                    "%s: the carrier does not answer query_sm (%s); overdue receipts now "
                    "wait for the receipt grace",
                    carrier,
                    unsupported,
                )
            return "unsupported"
        assert isinstance(resp, QuerySmResp)
        self._query_ok.add(carrier)
        self._queryfail.pop(carrier, None)
        try:
            state = MessageState(resp.message_state)
        except ValueError:
            return "pending"  # a state 3.4 does not define: look again later
        return "final" if state in FINAL_MESSAGE_STATES else "pending"
