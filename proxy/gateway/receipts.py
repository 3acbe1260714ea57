"""Carrier receipts in: deliver_sm and data_sm from carriers, matched to messages.

`CarrierReceipts` takes what carriers deliver (`on_carrier_deliver`): a receipt is
matched to the message and attempt it is for, by the carrier's message id (in memory
for recent submissions, else in the store), classified, and run through the path
(`decide_receipt`, which query_sm answers share). A receipt that beat its
submit_sm_resp is held back (*early*) and replayed when the carrier id is written
(`replay_early`; with a shared store, also when another instance's commit is
notified, `on_carrier_notice`, or found by one store lookup per carrier shortly
after, `rematch_early`) or counted unmatched after ``EARLY_RECEIPT_TTL``
(`expire_early`). A receipt whose carrier answer still waits for the store is
answered ESME_RX_T_APPN (the carrier sends it again). Mobile-originated messages go to
a bound receiver of the account routed to; alert_notification releases the held
messages of a number.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable

from bounceback.config.settings import Config
from bounceback.core import engine
from bounceback.core.model import Message, Verdict
from bounceback.gateway.context import Context
from bounceback.gateway.locks import LRU
from bounceback.gateway.path import MessagePath, verdict_of
from bounceback.smpp.carrier import CarrierLink
from bounceback.smpp.server import EsmeSession
from bounceback.store.postgres import parse_carrier_payload
from bounceback.store.sqlite import Change, fault_kind
from smppcodecs.classify import Rules, classify_receipt
from smppcodecs.constants import CommandStatus as S
from smppcodecs.msgid import id_keys
from smppcodecs.pdu import AlertNotification, DataSm, DeliverSm, Pdu
from smppcodecs.receipt import parse_receipt

log = logging.getLogger("bounceback.gateway")

EARLY_RECEIPT_TTL = 30.0  # how long a receipt that beat its submit_sm_resp is kept
UNMATCHED_LOG_EVERY = 100  # log the 1st, 101st, ... receipt for an unknown id
# Another instance may have handled the submit_sm_resp and still be committing it:
# without notifications (the listening connection is down), look again a few times.
SHARED_LOOKUP_DELAYS = (0.01, 0.02, 0.05, 0.1, 0.2)
# With notifications, a receipt whose carrier id is not in memory waits this long for
# the notice of the commit that writes it before the store is asked (one query for
# every receipt of that carrier waiting by then): a receipt that crossed from the
# other instance is matched from the notice without any store read.
NOTICE_WAIT = 0.1
KEYS_MAX = 50_000


class CarrierReceipts:
    """What carriers deliver, matched and run through the path (see the module)."""

    def __init__(
        self,
        ctx: Context,
        path: MessagePath,
        links: dict[str, CarrierLink],
        sessions: dict[str, set[EsmeSession]],
        notice: asyncio.Event,
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.links = links
        self.sessions = sessions  # the bound senders, by account (for MO)
        self.configure(ctx.cfg)
        # (carrier, key) -> (message id, attempt): only receipts that come soon after
        # their submission need it; older ones are found in the store.
        self.keys: LRU = LRU(KEYS_MAX)
        self.early: dict[tuple[str, str], tuple[float, DeliverSm | DataSm]] = {}
        # With a shared store: how many carrier-id notices came so far, the carriers
        # whose held-back receipts to look up again, and the listener's wake-up.
        self.carrier_notices = 0
        self.notice_carriers: set[str] = set()
        self.notice = notice
        self._lookups: set[str] = set()  # carriers with a store lookup scheduled

    # ------------------------------------------------------------ from carriers
    def configure(self, cfg: Config) -> None:
        """Take the classification rules per carrier from `cfg` (start, reload)."""
        self.rules: dict[str, Rules] = {
            c.name: Rules.from_mapping(cfg.classify.for_carrier(c.name)) for c in cfg.carriers
        }
        self.default_rules = Rules.from_mapping(cfg.classify.for_carrier(""))

    async def on_carrier_deliver(self, carrier: str, pdu: Pdu) -> int:
        assert isinstance(pdu, (DeliverSm, DataSm))
        receipt = parse_receipt(pdu)
        if receipt is None:
            return await self._route_mo(carrier, pdu)
        link = self.links.get(carrier)
        fmt = link.cfg.receipt_id_format if link is not None else "auto"
        rid = receipt.message_id or ""
        keys = id_keys(rid, fmt) if rid else []
        hit: tuple[str, int] | None = None
        for k in keys:
            hit = self.keys.get((carrier, k))
            if hit is not None:
                break
        # With several instances the response may be handled by the other one and its
        # commit may still be on its way. Its commit notifies the carrier ids written: a
        # notice heard from here on re-matches the receipt once parked. Without the
        # notifications, look again a few times, briefly.
        notices = self.carrier_notices
        wait_notice = self.ctx.shared and self.ctx.store.listening
        retries = SHARED_LOOKUP_DELAYS if self.ctx.shared and not wait_notice else ()
        for delay in () if wait_notice else (0.0, *retries):
            if hit is not None or not keys:
                break
            if delay:
                await asyncio.sleep(delay)
            try:
                hit = await self.ctx.store.find_carrier_key(carrier, keys)
            except Exception:
                return S.ESME_RX_T_APPN
            # The submit_sm_resp may have been handled while the store was read; no await
            # between this check and parking, so its replay cannot be missed.
            for k in keys:
                hit = hit or self.keys.get((carrier, k))
        if hit is None:
            now = time.time()
            if keys and not any((carrier, k) in self.early for k in keys):
                self.early[(carrier, keys[0])] = (now, pdu)
                for k in keys[1:]:
                    self.early[(carrier, k)] = (now, pdu)
                self.ctx.count("receipts_early")
                if wait_notice:
                    self._lookup_soon(carrier)
                elif self.ctx.shared and self.carrier_notices != notices:
                    # Carrier ids were committed while the store was read: look again.
                    self.notice_carriers.add(carrier)
                    self.notice.set()
                return 0
            self.unmatched(carrier, rid)
            await self.ctx.store.unmatched_receipt(carrier, rid, repr(pdu), now)
            return 0
        mid, attempt = hit
        if mid in self.path.unwritten:  # its carrier answer waits for the store: later
            self.ctx.count("receipts_deferred")
            return S.ESME_RX_T_APPN
        outcome = classify_receipt(receipt, self.rules.get(carrier, self.default_rules))
        verdict = verdict_of(outcome)
        if self.ctx.metrics is not None:
            self.ctx.metrics.carrier_receipt(carrier, receipt.stat or "")
        msg = await self.path.load(mid)
        try:
            await self.decide_receipt(
                mid, msg, attempt, verdict, receipt.stat or "", receipt.err or "000"
            )
        except Exception as exc:
            if fault_kind(exc) is None:
                log.exception("receipt for %s not recorded; asking the carrier to retry", mid)
            elif self.ctx.rare("receipts_deferred"):
                log.warning(
                    "receipts answered ESME_RX_T_APPN (the carrier sends them again): store: "
                    "%s (%d so far)",
                    exc,
                    self.ctx.counters["receipts_deferred"],
                )
            return S.ESME_RX_T_APPN
        self.ctx.count("receipts_matched")
        return 0

    async def decide_receipt(
        self,
        mid: str,
        msg: Message | None,
        attempt: int,
        verdict: Verdict,
        stat: str,
        err: str,
        *,
        queried: bool = False,
    ) -> None:
        """Run a final or intermediate outcome of attempt `attempt` of message `mid`
        through the engine: a carrier receipt, or the answer to a query_sm
        (`queried`). A soft one counts towards the number's flag."""
        now = time.time()
        extra = Change()
        flagged = False
        if msg is not None and verdict.kind == "soft":
            flagged = await self._soft_count(msg, now, extra)
        await self.path.process(
            mid,
            engine.ReceiptIn(
                now=now,
                attempt=attempt,
                verdict=verdict,
                stat=stat,
                err=err,
                rand=random.random(),
                tz=self.path.zones(msg.destination_addr) if msg is not None else None,
                flagged=flagged,
                queried=queried,
            ),
            extra=extra,
        )

    def unmatched(self, carrier: str, rid: str, *, early: bool = False) -> None:
        """Count a receipt no message matches; log the 1st, 101st, ... of them."""
        self.ctx.count("receipts_unmatched")
        n = self.ctx.counters["receipts_unmatched"]
        if n % UNMATCHED_LOG_EVERY == 1:
            log.warning(
                "%s: receipt for unknown id %r%s (%d unmatched so far)",
                carrier,
                rid,
                f", unmatched after {EARLY_RECEIPT_TTL:.0f} s" if early else "",
                n,
            )

    async def _soft_count(self, msg: Message, now: float, extra: Change) -> bool:
        r = self.ctx.cfg.retry
        n = await self.ctx.store.soft_bounce_count(msg.destination_addr, now - r.flag_window) + 1
        if n == r.flag_threshold:
            self.path.event(
                extra,
                msg,
                "number_flagged",
                {"soft_bounces": n, "window_seconds": r.flag_window},
                now,
            )
        return n >= r.flag_threshold

    async def _route_mo(self, carrier: str, pdu: DeliverSm | DataSm) -> int:
        link = self.links.get(carrier)
        account = ""
        if link is not None:
            account = link.cfg.mo_routes.get(pdu.destination_addr, link.cfg.mo_account)
        if not account:
            self.ctx.count("mo_unrouted")
            log.info(
                "%s: MO to %s has no account; dropped",
                carrier,
                self.ctx.shown(pdu.destination_addr),
            )
            return 0
        for s in list(self.sessions.get(account, ())):
            if s.can_receive:
                try:
                    resp = await s.request(pdu.copy(sequence_number=0))
                    self.ctx.count("mo_delivered")
                    return resp.command_status
                except Exception:
                    continue
        return S.ESME_RX_T_APPN  # account not bound now: the carrier retries later

    async def on_alert(self, carrier: str, pdu: AlertNotification) -> None:
        status = pdu.tlvs.get(0x0422, 0)
        if status not in (0, None):
            return
        now = time.time()
        held = await self.ctx.store.held_for_number(pdu.source_addr)
        log.info(
            "%s: alert for %s: %d held messages",
            carrier,
            self.ctx.shown(pdu.source_addr),
            len(held),
        )
        for m in held:
            await self.path.fire(m.id, engine.Alert(now))

    def replay_early(self, carrier: str, keys: Iterable[str]) -> None:
        for k in keys:
            hit = self.early.pop((carrier, k), None)
            if hit is not None:
                # Replay once, and drop the sibling keys (hex and decimal) of that receipt.
                for other in [key for key, v in self.early.items() if v[1] is hit[1]]:
                    del self.early[other]
                self.ctx.spawn(self.on_carrier_deliver(carrier, hit[1]))

    def _lookup_soon(self, carrier: str) -> None:
        """Look `carrier`'s held-back receipts up in the store in `NOTICE_WAIT` s (once
        for all that wait by then), for those no notice matched meanwhile."""
        if carrier in self._lookups:
            return
        self._lookups.add(carrier)

        def due() -> None:
            self._lookups.discard(carrier)
            if any(c == carrier for c, _ in self.early):
                self.ctx.spawn(self.rematch_early({carrier}, counter="receipts_rematched_lookup"))

        asyncio.get_running_loop().call_later(NOTICE_WAIT, due)

    async def rematch_early(
        self, carriers: set[str] | None, *, notified: bool = False, counter: str = ""
    ) -> None:
        """With several instances, a receipt may beat the other instance's commit of the
        carrier id: look the held-back receipts (of `carriers`, None: all) up in the
        store again, one query per carrier. Counted as `counter`, else: `notified`, a
        notification of new carrier ids asked for it (``receipts_rematched_notified``),
        else the housekeeping fallback (``receipts_rematched_polled``)."""
        counter = counter or (
            "receipts_rematched_notified" if notified else "receipts_rematched_polled"
        )
        keys: dict[str, dict[str, DeliverSm | DataSm]] = {}  # carrier -> key -> receipt
        for (carrier, key), (_at, pdu) in self.early.items():
            if carriers is None or carrier in carriers:
                keys.setdefault(carrier, {})[key] = pdu
        for carrier, held in keys.items():
            found = await self.ctx.store.find_carrier_keys(carrier, list(held))
            if not found:
                continue
            for key, hit in found.items():  # the replay below matches them from memory
                self.keys.put((carrier, key), hit)
            siblings: dict[int, list[str]] = {}  # a receipt's keys (hex and decimal)
            for k, p in held.items():
                siblings.setdefault(id(p), []).append(k)
            done: set[int] = set()
            for key in found:
                pdu = held[key]
                if id(pdu) in done:
                    continue  # one of its other keys matched first
                done.add(id(pdu))
                # Unless the other path matched it meanwhile (its keys are gone then).
                gone = [self.early.pop((carrier, k), None) for k in siblings[id(pdu)]]
                if any(g is not None and g[1] is pdu for g in gone):
                    self.ctx.count(counter)
                    self.ctx.spawn(self.on_carrier_deliver(carrier, pdu))

    async def expire_early(self, wall: float) -> None:
        """Count the receipts held back longer than EARLY_RECEIPT_TTL as unmatched."""
        for key, (at, pdu) in list(self.early.items()):
            if wall - at > EARLY_RECEIPT_TTL:
                self.early.pop(key, None)
                if not any(v[1] is pdu for v in self.early.values()):
                    parsed = parse_receipt(pdu)
                    rid = parsed.message_id if parsed is not None else None
                    self.unmatched(key[0], rid or key[1], early=True)
                    await self.ctx.store.unmatched_receipt(key[0], key[1], repr(pdu), wall)

    def on_carrier_notice(self, payload: str) -> None:
        """Another instance (or this one) wrote the carrier ids of `payload`'s carriers.
        When the notice lists the ids themselves they are kept in memory, as the
        submitting instance keeps its own: a receipt for one of them that reaches this
        instance is matched without asking the store."""
        self.carrier_notices += 1
        carriers, ids = parse_carrier_payload(payload)
        for carrier, key, mid, attempt in ids:
            self.keys.put((carrier, key), (mid, attempt))
            if (carrier, key) in self.early:  # a held-back receipt: matched from the notice
                self.ctx.count("receipts_rematched_notified")
                self.replay_early(carrier, (key,))
        if self.early and not ids:  # the notice names carriers only: ask the store
            self.notice_carriers.update(carriers)
            self.notice.set()
