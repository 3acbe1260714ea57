"""Sender intake: what bound senders ask of the gateway, turned into engine events.

`SenderIntake` is the gateway side of every sender session (`smpp.server.Senders`):
it opens the session for each accepted connection (closing it when no bind comes in
time), authenticates binds, keeps the bound sessions by account and the per-account
token buckets, and handles the requests: submit_sm, data_sm and submit_multi
(`accept`: refused at once for a suppressed number, else stored with its first
attempt decided in the same commit, the sender answered once the carrier has or
within ``[server] submit_wait``), query_sm, cancel_sm and replace_sm.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from bounceback import logs
from bounceback.config.settings import Account, Config
from bounceback.core import engine
from bounceback.core.access import Access
from bounceback.core.engine import Submit
from bounceback.core.model import Message, State, evolve
from bounceback.core.ratelimit import TokenBucket
from bounceback.gateway.context import Context
from bounceback.gateway.path import MessagePath
from bounceback.smpp.carrier import CarrierLink
from bounceback.smpp.server import EsmeSession
from bounceback.store.sqlite import (
    Change,
    StaleMessage,
    StoreUnavailable,
    Suppression,
    fault_kind,
)
from smppcodecs.constants import CommandStatus as S
from smppcodecs.constants import MessageState
from smppcodecs.pdu import (
    CancelSm,
    DataSm,
    DataSmResp,
    QuerySm,
    ReplaceSm,
    SmeAddress,
    SubmitMulti,
    SubmitSm,
    UnsuccessSme,
    decode,
)
from smppcodecs.smpptime import format_absolute, to_utc
from smppcodecs.text import decode_text

log = logging.getLogger("bounceback.gateway")

STATE_TO_SMPP = {
    State.ACCEPTED: MessageState.ENROUTE,
    State.SUBMITTING: MessageState.ENROUTE,
    State.SUBMITTED: MessageState.ENROUTE,
    State.HELD: MessageState.ENROUTE,
    State.DELIVERED: MessageState.DELIVERED,
    State.EXPIRED: MessageState.EXPIRED,
    State.CANCELLED: MessageState.DELETED,
    State.FAILED: MessageState.UNDELIVERABLE,
    State.REJECTED: MessageState.REJECTED,
}


def _answer(fut: asyncio.Future[int], status: int) -> None:
    if not fut.done():
        fut.set_result(status)


class SenderIntake:
    """The sender sessions' handler (see the module)."""

    def __init__(
        self,
        ctx: Context,
        path: MessagePath,
        links: dict[str, CarrierLink],
        sessions: dict[str, set[EsmeSession]],
        wake_pump: Callable[[str], None],
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.links = links
        self.sessions = sessions  # account -> its bound sessions
        self.wake_pump = wake_pump
        self.connections: set[EsmeSession] = set()  # every open session, bound or not
        self.system_id = "bounceback"
        self.access = Access.from_config(ctx.cfg.server)  # connection limits, failed binds
        self._buckets: dict[str, TokenBucket] = {}

    # ------------------------------------------------------------ what sessions read
    @property
    def cfg(self) -> Config:
        return self.ctx.cfg

    @property
    def counters(self) -> dict[str, int]:
        return self.ctx.counters

    def count(self, name: str, n: int = 1) -> None:
        self.ctx.count(name, n)

    # ------------------------------------------------------------ sessions
    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        srv = self.ctx.cfg.server
        # PDUs are counted under the session's account once it has bound ("" before).
        me: list[EsmeSession] = []

        def account() -> str:
            acct = me[0].account if me else None
            return acct.system_id if acct is not None else ""

        hook = self.ctx.metrics.pdu_hook("esme", account) if self.ctx.metrics else None
        s = EsmeSession(
            self,
            reader,
            writer,
            name="esme:unbound",
            max_pdu_size=srv.max_pdu_size,
            window=10,
            response_timeout=srv.response_timeout,
            enquire_link_interval=srv.enquire_link_interval,
            inactivity_timeout=srv.inactivity_timeout,
            on_pdu=hook,
        )
        me.append(s)
        s.name = f"esme:unbound:{s.peer}"
        logs.bind(session=s.name)  # this connection's lines (and its tasks') name it
        self.connections.add(s)
        self.ctx.spawn(self._bind_deadline(s))
        try:
            await s.run()
        except asyncio.CancelledError:
            pass
        finally:
            self.connections.discard(s)

    async def _bind_deadline(self, s: EsmeSession) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(s.closed.wait(), self.ctx.cfg.server.bind_timeout)
            return
        if s.account is None:
            log.info("%s: no bind within %.0f s; closing", s.name, self.ctx.cfg.server.bind_timeout)
            await s.close()

    def authenticate(
        self, s: EsmeSession, system_id: str, password: str, bind_type: str
    ) -> tuple[int, Account | None]:
        status, acct = self._authenticate(s, system_id, password, bind_type)
        if self.ctx.metrics is not None:  # unknown system_ids share one series
            known = self.ctx.cfg.account(system_id) is not None
            self.ctx.metrics.bind("esme", system_id if known else "", status)
        return status, acct

    def _authenticate(
        self, s: EsmeSession, system_id: str, password: str, bind_type: str
    ) -> tuple[int, Account | None]:
        import hmac

        if self.ctx.stopping.is_set():
            return S.ESME_RBINDFAIL, None
        acct = self.ctx.cfg.account(system_id)
        if acct is None:
            return S.ESME_RINVSYSID, None
        if not acct.allows_ip(s.peer_ip):  # outside allowed_ips the account does not exist
            log.warning("%s: %r may not bind from this address (allowed_ips)", s.name, system_id)
            return S.ESME_RINVSYSID, None
        if not hmac.compare_digest(password.encode(), acct.password.encode()):
            return S.ESME_RINVPASWD, None
        if bind_type not in acct.bind_types:
            return S.ESME_RBINDFAIL, None
        if len(self.sessions.get(system_id, ())) >= acct.max_binds:
            return S.ESME_RBINDFAIL, None
        return 0, acct

    def register(self, s: EsmeSession) -> None:
        assert s.account is not None
        name = s.account.system_id
        self.sessions.setdefault(name, set()).add(s)
        if s.can_receive:
            self.wake_pump(name)

    def unregister(self, s: EsmeSession) -> None:
        if s.account is not None:
            self.sessions.get(s.account.system_id, set()).discard(s)

    def configure(self, cfg: Config) -> None:
        """A reload: throughput limits start again from the accounts of `cfg`."""
        self._buckets.clear()

    def take_token(self, acct: Account) -> bool:
        b = self._buckets.get(acct.system_id)
        if b is None:
            b = self._buckets[acct.system_id] = TokenBucket(acct.throughput, now=time.monotonic())
        return b.try_take(time.monotonic())

    # ------------------------------------------------------------ accept
    def _new_message(
        self, acct: Account, pdu: SubmitSm | DataSm, now: float, raw: bytes | None = None
    ) -> Message:
        mid = self.ctx.ids.next(int(now * 1000))
        r = self.ctx.cfg.retry
        validity = getattr(pdu, "validity_period", "")
        deadline = now + r.default_validity
        if validity:
            try:
                v = to_utc(validity, dt.datetime.fromtimestamp(now, dt.UTC))
            except ValueError:
                v = None
            if v is not None:
                deadline = v.timestamp()
        max_deadline = now + r.max_age
        text = ""
        sm = getattr(pdu, "short_message", b"")
        if sm:
            with contextlib.suppress(Exception):
                text = decode_text(sm[:40], pdu.data_coding)[:20]
        return Message(
            id=mid,
            account=acct.system_id,
            source_addr=pdu.source_addr,
            destination_addr=pdu.destination_addr,
            pdu=raw if raw is not None else pdu.encode(),
            registered_delivery=pdu.registered_delivery,
            created_at=now,
            deadline=min(deadline, max_deadline),
            deadline_is_validity=deadline <= max_deadline,
            submit_date=now,
            text_head=text,
            updated_at=now,
        )

    async def accept(
        self, acct: Account, pdu: SubmitSm | DataSm, raw: bytes | None = None
    ) -> tuple[int, str]:
        """Take one message from a sender: returns (command_status, our message id).
        `raw`: the PDU as received, kept as the message's PDU (else `pdu` is encoded).

        The answer comes within `[server] submit_wait` whatever the store does: a
        store that cannot write (or does not within that time) gets the sender
        ESME_RMSGQFUL, a temporary error it retries, and nothing is kept of the
        message (see `GroupCommit`)."""
        loop = asyncio.get_running_loop()
        answer_by = loop.time() + self.ctx.cfg.server.submit_wait
        if self.ctx.store.fault is not None:
            if self.ctx.rare("store_refusals"):
                log.warning(
                    "refusing new messages with ESME_RMSGQFUL: the store cannot write (%s) "
                    "(%d so far)",
                    self.ctx.store.fault,
                    self.ctx.counters["store_refusals"],
                )
            return S.ESME_RMSGQFUL, ""
        now = time.time()
        dest = pdu.destination_addr
        exp = self.ctx.suppressed.get(dest)
        if exp is not None and exp > now and acct.suppression == "reject":
            self.ctx.count("suppression_hits")
            # Recorded (stats, audit, the feed) but never sent: the number hard-bounced.
            refused = evolve(
                self._new_message(acct, pdu, now, raw),
                state=State.REJECTED,
                final_stat="REJECTD",
                final_err=f"{S.ESME_RINVDSTADR:03X}",
                done_at=now,
            )
            change = Change(message=refused, insert=True)
            self.path.event(change, refused, "suppressed", {"reason": "suppressed"}, now)
            with contextlib.suppress(Exception):
                await self.ctx.store.commit(change, timeout=max(answer_by - loop.time(), 0.0))
            return S.ESME_RINVDSTADR, ""
        if exp is not None and exp <= now:
            self.ctx.suppressed.pop(dest, None)
        msg = self._new_message(acct, pdu, now, raw)
        change = Change(message=msg, insert=True)
        self.path.event(change, msg, "accepted", {"ack": acct.ack}, now)
        # The first attempt starts in the same transaction (one commit, not two).
        first, actions = engine.decide(msg, engine.Dispatch(now), self.path.policy)
        dispatched = first.state == State.SUBMITTING and actions == [Submit(1)]
        if dispatched:
            change.message = msg = first
        try:
            started = time.perf_counter()
            await self.ctx.store.commit(change, timeout=max(answer_by - loop.time(), 0.0))
            if self.ctx.metrics is not None:
                self.ctx.metrics.observe_commit(time.perf_counter() - started)
        except (StoreUnavailable, TimeoutError) as exc:
            if self.ctx.rare("store_refusals"):
                log.warning(
                    "refusing new messages with ESME_RMSGQFUL: store: %s (%d so far)",
                    exc or "slow",
                    self.ctx.counters["store_refusals"],
                )
            return S.ESME_RMSGQFUL, ""
        except Exception:
            log.exception("store refused a new message")
            return S.ESME_RSYSERR, ""
        self.ctx.wake_feed()
        self.path.cache.put(msg.id, msg)
        self.ctx.count("accepted")
        fut: asyncio.Future[int] | None = None
        if acct.ack != "stored":
            fut = self.path.waiting[msg.id] = loop.create_future()
        if dispatched:
            self.path.first_pdu[msg.id] = pdu
            self.path.act(msg, Submit(1))
        else:
            self.ctx.spawn(self.path.process(msg.id, engine.Dispatch(now)))
        if fut is None:
            return 0, msg.id
        # Bounded wait for the carrier; then the sender gets our id: stored and on its way.
        expiry = loop.call_later(max(answer_by - loop.time(), 0.0), _answer, fut, 0)
        try:
            status = await fut
        finally:
            expiry.cancel()
            self.path.waiting.pop(msg.id, None)
        return status, (msg.id if status == 0 else "")

    async def on_submit(
        self, s: EsmeSession, pdu: SubmitSm | DataSm, raw: bytes | None = None
    ) -> None:
        assert s.account is not None
        started = time.perf_counter()
        status, mid = await self.accept(s.account, pdu, raw)
        took = time.perf_counter() - started
        self.ctx.recent_senders.add(s.account.system_id, time.monotonic(), took)
        if self.ctx.metrics is not None:
            self.ctx.metrics.observe_sender_submit(s.account.system_id, took)
        if isinstance(pdu, DataSm):
            s.send(
                DataSmResp(
                    sequence_number=pdu.sequence_number, command_status=status, message_id=mid
                )
            )
        else:
            s.send(pdu.response(command_status=status, message_id=mid))

    async def on_submit_multi(self, s: EsmeSession, pdu: SubmitMulti) -> None:
        assert s.account is not None
        results: list[tuple[SmeAddress | Any, int, str]] = []

        async def one(dest: Any) -> None:
            if not isinstance(dest, SmeAddress):
                results.append((dest, S.ESME_RINVDLNAME, ""))
                return
            single = SubmitSm(
                sequence_number=0,
                service_type=pdu.service_type,
                source_addr_ton=pdu.source_addr_ton,
                source_addr_npi=pdu.source_addr_npi,
                source_addr=pdu.source_addr,
                dest_addr_ton=dest.dest_addr_ton,
                dest_addr_npi=dest.dest_addr_npi,
                destination_addr=dest.destination_addr,
                esm_class=pdu.esm_class,
                protocol_id=pdu.protocol_id,
                priority_flag=pdu.priority_flag,
                schedule_delivery_time=pdu.schedule_delivery_time,
                validity_period=pdu.validity_period,
                registered_delivery=pdu.registered_delivery,
                replace_if_present_flag=pdu.replace_if_present_flag,
                data_coding=pdu.data_coding,
                sm_default_msg_id=pdu.sm_default_msg_id,
                short_message=pdu.short_message,
                tlvs=dict(pdu.tlvs),
            )
            assert s.account is not None
            st, mid = await self.accept(s.account, single)
            results.append((dest, st, mid))

        await asyncio.gather(*(one(d) for d in pdu.dest_addresses))
        ok = [mid for _, st, mid in results if st == 0]
        failed = [
            UnsuccessSme(
                dest_addr_ton=getattr(d, "dest_addr_ton", 0),
                dest_addr_npi=getattr(d, "dest_addr_npi", 0),
                destination_addr=getattr(d, "destination_addr", getattr(d, "dl_name", "")),
                error_status_code=st,
            )
            for d, st, _ in results
            if st != 0
        ]
        status = 0 if ok else (failed[0].error_status_code if failed else S.ESME_RINVNUMDESTS)
        s.send(
            pdu.response(
                command_status=status,
                message_id=ok[0] if ok else "",
                unsuccess_smes=failed,
            )
        )

    # ------------------------------------------------------------ query / cancel / replace
    async def _own(self, s: EsmeSession, mid: str) -> Message | None:
        msg = await self.path.load(mid, fresh=self.ctx.shared)
        if msg is None or s.account is None or msg.account != s.account.system_id:
            return None
        return msg

    async def on_query(self, s: EsmeSession, pdu: QuerySm) -> None:
        msg = await self._own(s, pdu.message_id)
        if msg is None:
            s.send(pdu.response(command_status=S.ESME_RQUERYFAIL))
            return
        final_date = ""
        if msg.done_at is not None:
            final_date = format_absolute(dt.datetime.fromtimestamp(msg.done_at, dt.UTC))
        err = 0
        with contextlib.suppress(ValueError):
            err = int(msg.final_err or "0", 16) & 0xFF
        s.send(
            pdu.response(
                message_id=msg.id,
                final_date=final_date,
                message_state=int(STATE_TO_SMPP[msg.state]),
                error_code=err,
            )
        )

    async def on_cancel(self, s: EsmeSession, pdu: CancelSm) -> None:
        msg = await self._own(s, pdu.message_id)
        if msg is None:
            s.send(pdu.response(command_status=S.ESME_RINVMSGID))
            return
        if msg.state.final:
            s.send(pdu.response(command_status=S.ESME_RCANCELFAIL))
            return
        try:
            await self.path.process(msg.id, engine.Cancel(time.time()))
        except Exception as exc:
            if fault_kind(exc) is None:
                raise
            s.send(pdu.response(command_status=S.ESME_RCANCELFAIL))  # store failing
            return
        s.send(pdu.response())

    async def on_replace(self, s: EsmeSession, pdu: ReplaceSm) -> None:
        msg = await self._own(s, pdu.message_id)
        if msg is None:
            s.send(pdu.response(command_status=S.ESME_RINVMSGID))
            return
        async with self.path.locks.hold(msg.id):
            msg = await self.path.load(msg.id, fresh=self.ctx.shared)
            if msg is None or msg.state.final:
                s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                return
            orig = decode(msg.pdu)
            if not isinstance(orig, SubmitSm):
                s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                return
            if msg.state in (State.SUBMITTED, State.SUBMITTING):
                link = self.links.get(msg.carrier)
                if msg.state == State.SUBMITTING or link is None:
                    s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                    return
                try:
                    st = await link.replace(
                        pdu.copy(sequence_number=0, message_id=msg.carrier_message_id)
                    )
                except Exception:
                    st = S.ESME_RREPLACEFAIL
                if st != 0:
                    s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                    return
            changes: dict[str, Any] = {
                "short_message": pdu.short_message,
                "sm_default_msg_id": pdu.sm_default_msg_id,
            }
            if pdu.validity_period:
                changes["validity_period"] = pdu.validity_period
            if pdu.schedule_delivery_time:
                changes["schedule_delivery_time"] = pdu.schedule_delivery_time
            if pdu.registered_delivery:
                changes["registered_delivery"] = pdu.registered_delivery
            new_pdu = orig.copy(**changes)
            new = evolve(
                msg,
                pdu=new_pdu.encode(),
                registered_delivery=new_pdu.registered_delivery,
                updated_at=time.time(),
                version=msg.version + 1,
            )
            try:
                await self.ctx.store.commit(Change(message=new))
            except StaleMessage:  # changed by another instance meanwhile: ask again
                self.path.cache.pop(new.id, None)
                s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                return
            except StoreUnavailable:
                s.send(pdu.response(command_status=S.ESME_RREPLACEFAIL))
                return
            self.path.cache.put(new.id, new)
        s.send(pdu.response())

    # ------------------------------------------------------------ admin
    async def suppress(
        self, number: str, reason: str, account: str = "", *, ttl: float | None = None
    ) -> Suppression:
        """Refuse submits to `number` from now on (for `ttl` seconds, default
        ``[retry] suppression_ttl``), here at once and on other instances when notified."""
        now = time.time()
        life = ttl if ttl is not None else self.ctx.cfg.retry.suppression_ttl
        s = Suppression(number, reason, now, now + life, account)
        await self.ctx.store.suppression_add(s)
        self.ctx.suppressed[number] = s.expires_at
        return s

    async def unsuppress(self, number: str) -> bool:
        """Take `number` off the suppression list (False: it was not on it)."""
        removed = await self.ctx.store.suppression_remove(number)
        self.ctx.suppressed.pop(number, None)
        return removed
