"""What the admin API asks of the gateway (`admin.api.Control`), answered from it.

Reads go to the store (every instance on a shared store sees the same messages);
actions go through the same path as the proxy's own events (`Gateway.process`), so a
retry started by an operator or a cancel is decided by the engine, written over the
version it was decided on, published on the feed and answered to the sender exactly
as if the proxy had decided it. Every action is logged with the name of the token
that asked for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from bounceback import logs
from bounceback.analysis.stats import build_report, report_json
from bounceback.core import engine
from bounceback.core.model import Message
from bounceback.feed.events import admin_document, mask_number
from bounceback.gateway.overview import Observed, Overview
from bounceback.store.sqlite import MESSAGE_COLS, Change, Suppression, message_from_row
from smppcodecs.msgid import id_keys

if TYPE_CHECKING:
    from bounceback.core.recent import Recent
    from bounceback.gateway.learning import Learner
    from bounceback.smpp.server import EsmeSession


class Gateway(Observed, Protocol):
    """The parts of `shell.Gateway` the admin API's answers come from (the console's
    overview, `overview.Overview`, reads those of `overview.Observed`)."""

    sessions: dict[str, set[EsmeSession]]

    def shown(self, number: str) -> str: ...

    async def process(self, mid: str, event: engine.Event) -> Message | None: ...

    async def suppress(
        self, number: str, reason: str, account: str = "", *, ttl: float | None = None
    ) -> Suppression: ...

    async def unsuppress(self, number: str) -> bool: ...

    @property
    def instance(self) -> str: ...

    @property
    def recent_submits(self) -> Recent: ...

    @property
    def recent_senders(self) -> Recent: ...

    def wake_feed(self) -> None: ...

    async def pause(self, carrier: str) -> bool: ...

    async def resume(self, carrier: str) -> bool: ...

    async def reload_file(self, *, announce: bool = True) -> tuple[list[str], list[str]]: ...

    @property
    def learner(self) -> Learner: ...


__all__ = ["GatewayControl"]

log = logging.getLogger("bounceback.admin")

_FILTERS = {
    "state": "state = ?",
    "account": "account = ?",
    "destination": "destination_addr = ?",
    "carrier": "carrier = ?",
    "reason": "reason = ?",
    "since": "created_at >= ?",
    "until": "created_at < ?",
}


def _of(carrier: str) -> dict[str, str]:
    return logs.context(carrier=carrier)


class GatewayControl:
    """`admin.api.Control` on one gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._overview = Overview(gw)  # the console's overview (keeps counter samples)

    async def _published(
        self, action: str, by: str, target: str, details: Mapping[str, object]
    ) -> None:
        """Put the action on the feed (through the outbox, like every event) when a feed
        is configured; a store that cannot write it leaves the action done and logged."""
        feed = self.gw.cfg.feed
        if feed is None:
            return
        if target.lstrip("+").isdigit() and feed.mask_destinations:
            target = mask_number(target, feed.mask_keep)
        doc = admin_document(
            action,
            by,
            target,
            details,
            now=time.time(),
            instance=self.gw.instance,
            prefix=feed.prefix,
        )
        try:
            await self.gw.store.commit(Change(events=[doc]))
        except Exception as exc:
            log.warning("admin: the %s by %s is not on the feed: %s", action, by, exc)
            return
        self.gw.wake_feed()

    def shown(self, number: str) -> str:
        return self.gw.shown(number)

    async def message(self, message_id: str) -> Message | None:
        return await self.gw.store.get(message_id)

    async def message_by_carrier_id(self, carrier: str, carrier_id: str) -> Message | None:
        carriers = [c for c in self.gw.cfg.carriers if not carrier or c.name == carrier]
        for c in carriers:
            keys = id_keys(carrier_id, c.id_format)
            found = await self.gw.store.find_carrier_key(c.name, keys) if keys else None
            if found is not None:
                return await self.gw.store.get(found[0])
        return None

    async def search(self, filters: Mapping[str, Any], after: str, limit: int) -> list[Message]:
        where = ["id > ?"]
        params: list[Any] = [after]
        for name, clause in _FILTERS.items():
            if name in filters:
                where.append(clause)
                params.append(filters[name])
        rows = await self.gw.store.query(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE {' AND '.join(where)}"
            f" ORDER BY id LIMIT {int(limit)}",
            params,
        )
        return [message_from_row(r) for r in rows]  # one query, not one per message

    async def retry_now(self, message_id: str, by: str) -> Message | None:
        msg = await self.gw.process(message_id, engine.Dispatch(time.time()))
        log.info(
            "admin: %s started the next attempt of %s now",
            by,
            message_id,
            extra=logs.context(message_id=message_id),
        )
        if msg is not None:
            await self._published("retry", by, message_id, {"state": msg.state.value})
        return msg

    async def cancel(self, message_id: str, by: str) -> Message | None:
        msg = await self.gw.process(message_id, engine.Cancel(time.time()))
        log.info(
            "admin: %s cancelled %s", by, message_id, extra=logs.context(message_id=message_id)
        )
        if msg is not None:
            await self._published("cancel", by, message_id, {"state": msg.state.value})
        return msg

    async def suppression(self, prefix: str, after: str, limit: int) -> list[Suppression]:
        rows = await self.gw.store.query(
            "SELECT number, reason, created_at, expires_at, account FROM suppression"
            " WHERE number > ? AND number LIKE ? AND expires_at > ?"
            f" ORDER BY number LIMIT {int(limit)}",
            (after, prefix.replace("%", "").replace("_", "") + "%", time.time()),
        )
        return [
            Suppression(str(r[0]), str(r[1]), float(r[2]), float(r[3]), str(r[4])) for r in rows
        ]

    async def block(
        self, number: str, reason: str, ttl: float | None, account: str, by: str
    ) -> Suppression:
        s = await self.gw.suppress(number, reason, account, ttl=ttl)
        log.info("admin: %s blocked %s (%s)", by, self.gw.shown(number), reason)
        details = {
            "reason": reason,
            "expires_at": dt.datetime.fromtimestamp(s.expires_at, dt.UTC).isoformat(),
        }
        await self._published("block", by, number, details)
        return s

    async def unblock(self, number: str, by: str) -> bool:
        removed = await self.gw.unsuppress(number)
        if removed:
            log.info("admin: %s unblocked %s", by, self.gw.shown(number))
        if removed:
            await self._published("unblock", by, number, {})
        return removed

    async def reload(self, by: str) -> tuple[list[str], list[str]]:
        changed, waiting = await self.gw.reload_file()
        log.info(
            "admin: %s reloaded the configuration: changed %s%s",
            by,
            ", ".join(changed) or "nothing",
            f"; {', '.join(waiting)} wait for a restart" if waiting else "",
        )
        details = {"changed": changed, "restart_needed": waiting}
        await self._published("reload", by, self.gw.cfg.source, details)
        return changed, waiting

    async def stats(
        self, since: float, until: float, *, top: int, local_hours: bool, bucket: str | None = None
    ) -> dict[str, object]:
        report = await build_report(
            self.gw.store,
            since,
            until,
            now=time.time(),
            top=top,
            local_hours=local_hours,
            time_zones=self.gw.cfg.retry.time_zones,
            bucket=bucket,
        )
        return report_json(report)

    async def flagged(self, after: str, limit: int) -> list[dict[str, Any]]:
        r = self.gw.cfg.retry
        rows = await self.gw.store.query(
            "SELECT number, COUNT(*), MAX(at) FROM soft_bounces WHERE at >= ? AND number > ?"
            f" GROUP BY number HAVING COUNT(*) >= ? ORDER BY number LIMIT {int(limit)}",
            (time.time() - r.flag_window, after, r.flag_threshold),
        )
        return [
            {
                "number": str(n),
                "soft_bounces": int(c),
                "last": dt.datetime.fromtimestamp(float(at), dt.UTC).isoformat(),
            }
            for n, c, at in rows
        ]

    async def unflag(self, number: str, by: str) -> int:
        n = await self.gw.store.soft_bounces_clear(number)
        if n:
            log.info(
                "admin: %s cleared the flag of %s (%d soft bounces)", by, self.gw.shown(number), n
            )
        if n:
            await self._published("unflag", by, number, {"soft_bounces": n})
        return n

    async def pause(self, carrier: str, by: str) -> bool:
        done = await self.gw.pause(carrier)
        if done:
            log.info(
                "admin: %s paused carrier %s", by, carrier, extra=logs.context(carrier=carrier)
            )
            await self._published("pause", by, carrier, {})
        return done

    async def resume(self, carrier: str, by: str) -> bool:
        done = await self.gw.resume(carrier)
        if done:
            log.info(
                "admin: %s resumed carrier %s", by, carrier, extra=logs.context(carrier=carrier)
            )
            await self._published("resume", by, carrier, {})
        return done

    async def carriers(self, minutes: float = 15.0) -> list[dict[str, Any]]:
        since = time.time() - minutes * 60
        recent: dict[str, dict[str, Any]] = {}
        rows = await self.gw.store.query(
            "SELECT carrier, state, reason, COUNT(*) FROM messages"
            " WHERE created_at >= ? AND carrier != '' GROUP BY carrier, state, reason",
            (since,),
        )
        for carrier, state, reason, n in rows:
            r = recent.setdefault(
                str(carrier), {"minutes": minutes, "messages": 0, "states": {}, "reasons": {}}
            )
            r["messages"] += int(n)
            r["states"][str(state)] = r["states"].get(str(state), 0) + int(n)
            if reason:
                r["reasons"][str(reason)] = r["reasons"].get(str(reason), 0) + int(n)
        out = []
        paused = self.gw.dispatch.paused
        for name, link in self.gw.links.items():
            out.append(
                {
                    "name": name,
                    "paused": name in paused,
                    "bound": link.bound,
                    "healthy": link.healthy,
                    "binds": link.binds,
                    "bind_failures": link.bind_failures,
                    "flaps": link.flaps_total,
                    "sessions": [
                        {
                            "role": role,
                            "bound": s.bound,
                            "outstanding": s.outstanding,
                            "window": s.window,
                        }
                        for role, s in (("tx", link.tx), ("rx", link.rx))
                        if s is not None and not s.closed.is_set()
                    ],
                    # submit_sm / data_sm to this carrier (this instance) in the last
                    # `minutes`: how many per second, round trips p50/p95/max (seconds).
                    "submits": self.gw.recent_submits.summary(name, time.monotonic(), minutes * 60),
                    # Messages accepted in the last `minutes` whose latest attempt went
                    # here: by state, and by the reason of their latest verdict.
                    "recent": recent.get(
                        name, {"minutes": minutes, "messages": 0, "states": {}, "reasons": {}}
                    ),
                }
            )
        return out

    async def accounts(self) -> list[dict[str, Any]]:
        now = mono = time.monotonic()
        rows = await self.gw.store.query(
            "SELECT account, COUNT(*) FROM sender_receipts GROUP BY account", ()
        )
        waiting = {str(a): int(n) for a, n in rows}
        out = []
        for acct in self.gw.cfg.accounts:
            sessions = [
                s for s in self.gw.sessions.get(acct.system_id, ()) if not s.closed.is_set()
            ]
            out.append(
                {
                    "system_id": acct.system_id,
                    "ack": acct.ack,
                    "receipts_waiting": waiting.get(acct.system_id, 0),
                    # submit_sm from this account in the last 15 minutes: per second, and
                    # the time to its answer (p50/p95/max, seconds).
                    "submits": self.gw.recent_senders.summary(acct.system_id, mono, 900.0),
                    "throughput": acct.throughput,
                    "binds": [
                        {
                            "type": s.bind_type,
                            "peer": s.peer,
                            "seconds": round(now - s.connected_at, 1),
                            "outstanding": s.outstanding,
                        }
                        for s in sessions
                    ],
                }
            )
        return out

    # ---------------------------------------------------------------- the console's overview

    async def overview(self, minutes: float = 15.0) -> dict[str, Any]:
        return await self._overview.answer(minutes)

    # ------------------------------------------------------------ recovery estimates
    async def estimates(self) -> dict[str, Any]:
        learner = self.gw.learner
        if learner.shared:
            await learner.flush()  # what every instance has counted so far
        return learner.export(self.gw.cfg.retry.mode)

    async def reset_estimates(self, by: str) -> int:
        n = await self.gw.learner.reset()
        log.info("admin: %s reset the recovery estimates (%d keys)", by, n)
        await self._published("reset_estimates", by, "estimates", {"keys": n})
        return n
