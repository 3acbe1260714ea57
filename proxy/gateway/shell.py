"""The running proxy: the gateway's components wired together, started and stopped.

`Gateway` builds the components around one shared `Context` (settings, store,
counters, tasks) and wires them:

* `intake.SenderIntake`: sender sessions, binds, submit/query/cancel/replace;
* `path.MessagePath`: the life of a message (event, engine, commit, actions);
* `dispatch.Dispatch`: the engine's actions on the carrier links;
* `receipts.CarrierReceipts`: what carriers deliver (receipts, MO, alerts);
* `scheduler.Scheduler` and `scheduler.Notices`: timers, housekeeping, the shared
  store's notifications;
* `pump.Pumps`: stored receipts to the senders' receivers.

`start` opens the store, the feed, the carrier links, the listeners and the HTTP
listener (metrics, health, admin API; stopping what it started when a step fails);
`stop` takes them down again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bounceback.config.settings import Config, ConfigError, load_config, reloaded
from bounceback.config.tls import http_context
from bounceback.core import engine
from bounceback.core.access import Access
from bounceback.core.engine import Policy
from bounceback.core.ids import IdGenerator
from bounceback.core.model import Message
from bounceback.core.recent import Recent
from bounceback.feed.publisher import FeedProcess, FeedPublisher
from bounceback.gateway.context import Context
from bounceback.gateway.dispatch import Dispatch
from bounceback.gateway.intake import SenderIntake
from bounceback.gateway.learning import Learner
from bounceback.gateway.metrics import Metrics
from bounceback.gateway.path import MessagePath
from bounceback.gateway.pump import Pumps
from bounceback.gateway.receipts import CarrierReceipts
from bounceback.gateway.scheduler import Notices, Scheduler
from bounceback.smpp.carrier import CarrierLink
from bounceback.smpp.server import EsmeSession, listener_port, open_listeners
from bounceback.store.postgres import store_from_config
from bounceback.store.sqlite import Store, Suppression
from smppcodecs.pdu import Pdu

if TYPE_CHECKING:
    from bounceback.admin.server import AdminServer

log = logging.getLogger("bounceback.gateway")


class Gateway:
    """Bounceback's running proxy."""

    def __init__(self, config: Config, *, store: Store | None = None) -> None:
        self.cfg = config
        self.store: Store = store or store_from_config(config.store)
        self.ctx = ctx = Context(config, self.store)
        self.links: dict[str, CarrierLink] = {}  # filled by `start`
        self.sessions: dict[str, set[EsmeSession]] = {}  # account -> bound senders
        notice = asyncio.Event()  # a shared store's notification needs acting on
        self.pumps = Pumps(ctx, self.sessions)
        self.path = MessagePath(ctx)
        self.receipts = CarrierReceipts(ctx, self.path, self.links, self.sessions, notice)
        self.dispatch = Dispatch(ctx, self.path, self.receipts, self.links)
        self.path.upstream = self.dispatch
        self.path.wake_pump = self.pumps.wake
        self.intake = SenderIntake(ctx, self.path, self.links, self.sessions, self.pumps.wake)
        self.scheduler = Scheduler(ctx, self.path, self.receipts, self.dispatch)
        self.notices = Notices(ctx, self.receipts, self.sessions, self.pumps.wake, notice)
        self.notices.on_reload = self._reload_notified
        self.notices.on_carrier_state = self._carrier_state_notified
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._starting = ""  # the step of `start` under way (named when it fails)
        self.port = 0
        self.tls_port = 0
        self.http: AdminServer | None = None  # /metrics, /healthz, /readyz and the admin API
        self.admin_port = 0

    # ------------------------------------------------------------ what others read
    @property
    def counters(self) -> dict[str, int]:
        return self.ctx.counters

    @property
    def metrics(self) -> Metrics | None:
        return self.ctx.metrics

    @property
    def feed(self) -> FeedPublisher | FeedProcess | None:
        return self.ctx.feed

    @property
    def shared(self) -> bool:
        return self.ctx.shared

    @property
    def ids(self) -> IdGenerator:
        return self.ctx.ids

    @property
    def access(self) -> Access:
        return self.intake.access

    @property
    def policy(self) -> Policy:
        return self.path.policy

    @property
    def learner(self) -> Learner:
        return self.ctx.learner

    @property
    def stopping(self) -> asyncio.Event:
        return self.ctx.stopping

    def count(self, name: str, n: int = 1) -> None:
        self.ctx.count(name, n)

    async def process(self, mid: str, event: engine.Event) -> Message | None:
        """Run one event for message `mid` through the path (see `MessagePath`)."""
        return await self.path.process(mid, event)

    async def on_carrier_deliver(self, carrier: str, pdu: Pdu) -> int:
        """A carrier's deliver_sm or data_sm (see `CarrierReceipts`)."""
        return await self.receipts.on_carrier_deliver(carrier, pdu)

    def _observe_submit(self, carrier: str, seconds: float) -> None:
        self.ctx.recent_submits.add(carrier, time.monotonic(), seconds)
        if self.metrics is not None:
            self.metrics.observe_submit(carrier, seconds)

    @property
    def recent_submits(self) -> Recent:
        return self.ctx.recent_submits

    @property
    def recent_senders(self) -> Recent:
        return self.ctx.recent_senders

    @property
    def instance(self) -> str:
        return self.ctx.instance

    def wake_feed(self) -> None:
        self.ctx.wake_feed()

    def shown(self, number: str) -> str:
        """A number as logs show it (masked as configured)."""
        return self.ctx.shown(number)

    async def suppress(
        self, number: str, reason: str, account: str = "", *, ttl: float | None = None
    ) -> Suppression:
        return await self.intake.suppress(number, reason, account, ttl=ttl)

    async def unsuppress(self, number: str) -> bool:
        return await self.intake.unsuppress(number)

    # ------------------------------------------------------------ live changes
    def reload(self, new: Config) -> tuple[list[str], list[str]]:
        """Run with `new` from now on where that needs no restart: accounts (passwords,
        throughput, ack, ...), routes, retry schedules, classification, log level and
        admin tokens. Binds stay up; a bound sender's account settings change under
        it, and the senders of an account that is gone are unbound. Returns the
        sections that changed and those that differ but wait for a restart."""
        cfg, changed, waiting = reloaded(self.cfg, new)
        if cfg.logging.level != self.cfg.logging.level:  # `run` set it from the file
            logging.getLogger().setLevel(cfg.logging.level.upper())
        self.cfg = self.ctx.cfg = cfg
        self.ctx.learner.configure(cfg)
        self.path.configure(cfg)
        self.receipts.configure(cfg)
        self.intake.configure(cfg)
        if self.http is not None:
            self.http.configure(cfg.admin)
        for name, sessions in list(self.sessions.items()):
            acct = cfg.account(name)
            for s in list(sessions):
                if acct is None:
                    log.warning("reload: account %s is gone: unbinding its sender", name)
                    self.ctx.spawn(s.unbind(timeout=2.0))
                else:
                    s.account = acct
        return changed, waiting

    async def reload_file(self, *, announce: bool = True) -> tuple[list[str], list[str]]:
        """Read the configuration file again and `reload` it (ConfigError when it does
        not validate: nothing of it is applied). With `announce`, the other instances
        on a shared store are told to reload theirs."""
        cfg = await asyncio.to_thread(load_config, self.cfg.source)
        changed, waiting = self.reload(cfg)
        if announce and self.ctx.shared:
            with contextlib.suppress(Exception):  # a reload here stands either way
                await self.store.announce_reload(self.ctx.instance)
        return changed, waiting

    async def pause(self, carrier: str) -> bool:
        """Send nothing new to `carrier`, here and (on a shared store) on every instance."""
        done = self.dispatch.pause(carrier)
        if done and self.ctx.shared:
            with contextlib.suppress(Exception):  # paused here either way
                await self.store.announce_carrier("pause", carrier)
        return done

    async def resume(self, carrier: str) -> bool:
        """Let `carrier` take submissions again, here and on every instance."""
        done = self.dispatch.resume(carrier)
        if done and self.ctx.shared:
            with contextlib.suppress(Exception):
                await self.store.announce_carrier("resume", carrier)
        return done

    def _carrier_state_notified(self, action: str, carrier: str) -> None:
        if action == "pause":
            self.dispatch.pause(carrier)
        elif action == "resume":
            self.dispatch.resume(carrier)

    def _reload_notified(self, origin: str) -> None:
        self.ctx.spawn(self._reload_from(origin))

    async def _reload_from(self, origin: str) -> None:
        await self.reload_logged(after=origin)

    async def reload_logged(self, *, after: str = "") -> None:
        """`reload_file`, saying in the log what changed and what waits for a restart, or
        every problem (FILE: KEY: reason) of a file that does not validate, which
        changes nothing. `after`: the instance whose reload this follows (then it is not
        announced again); "" for one asked of this instance (SIGHUP)."""
        why = f" (after {after})" if after else ""
        try:
            changed, waiting = await self.reload_file(announce=not after)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload%s refused: %s", why, problem)
            log.error("reload%s refused: the running configuration stays in force", why)
            return
        log.info(
            "reloaded %s%s: changed %s%s",
            self.cfg.source,
            why,
            ", ".join(changed) or "nothing",
            f"; {', '.join(waiting)} differ and wait for a restart" if waiting else "",
        )

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the store, start the feed, the carrier links, the listeners and the
        HTTP listener. When any of it fails, what was started is stopped again and
        `StartError` names the step that failed: no half-started proxy stays up."""
        self._starting = "the store"
        try:
            await self._start()
        except BaseException as exc:
            step = self._starting
            await self._abandon_start()
            if isinstance(exc, Exception):
                raise StartError(f"{step}: {_describe(exc)}") from exc
            raise

    async def _abandon_start(self) -> None:
        """Stop whatever `_start` started before it failed (each step on its own)."""
        self.ctx.stopping.set()
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        for link in self.links.values():
            with contextlib.suppress(Exception):
                await link.stop()
        await self._cancel_tasks()
        if self.ctx.feed is not None:
            with contextlib.suppress(Exception):
                await self.ctx.feed.stop()
        if self.http is not None:
            with contextlib.suppress(Exception):
                await self.http.stop()
            self.http = None
        if self._starting != "the store":  # it opened
            with contextlib.suppress(Exception):
                await self.store.unregister_instance(self.ctx.instance_no)
            with contextlib.suppress(Exception):
                await self.store.close()

    async def _start(self) -> None:
        ctx = self.ctx
        await self.store.open()
        self._starting = "the store (instance registration)"
        now = time.time()
        ctx.instance_no = await self.store.register_instance(ctx.instance, now, ctx.lease)
        floor = await self.store.meta_get(ctx.floor_key)
        ctx.ids = IdGenerator(ctx.instance_no, int(floor, 16) if floor else 0)
        for s in await self.store.suppression_list(time.time()):
            ctx.suppressed[s.number] = s.expires_at
        await ctx.learner.load()
        if not ctx.shared:
            await self.scheduler.recover()
        else:
            self.store.subscribe(self.notices.on_notice)
        self._starting = "the feed"
        if self.cfg.feed is not None:
            if self.cfg.feed.publisher == "process" and _is_file(self.cfg.source):
                ctx.feed = FeedProcess(self.cfg.feed, self.store, ctx.instance, self.cfg.source)
            else:  # inline, or a config that is not a file the child could read
                ctx.feed = FeedPublisher(self.cfg.feed, self.store, ctx.instance, lease=ctx.lease)
            ctx.feed.start()
        self._starting = "the carrier links"
        for c in self.cfg.carriers:
            link = CarrierLink(
                c,
                on_deliver=self.receipts.on_carrier_deliver,
                on_alert=self.receipts.on_alert,
                on_bound=self.dispatch.on_carrier_bound,
                on_pdu=self.metrics.pdu_hook("carrier", c.name)
                if self.metrics is not None
                else None,
                max_pdu_size=self.cfg.server.max_pdu_size,
                response_timeout=self.cfg.server.response_timeout,
            )
            self.links[c.name] = link
            link.submit_observer = self._observe_submit
            link.start()
        self._starting = "the listeners"
        self._server, self._tls_server = await open_listeners(self.intake)  # plain and/or TLS
        self.port = listener_port(self._server)
        self.tls_port = listener_port(self._tls_server)
        ctx.spawn(self.scheduler.run())
        ctx.spawn(self.scheduler.housekeeping())
        ctx.spawn(ctx.learner.run(ctx.stopping))
        if ctx.shared:
            ctx.spawn(self.notices.run())
        if self.metrics is not None and self.cfg.metrics is not None:
            m = self.cfg.metrics
            self._starting = f"the HTTP listener on {m.host}:{m.port}"
            # aiohttp is imported only when an HTTP listener is configured.
            from bounceback.admin.server import AdminServer
            from bounceback.gateway.control import GatewayControl

            self.metrics.attach(self)
            self.http = AdminServer(GatewayControl(self), self.metrics, self.cfg.admin)
            await self.http.start(m.host, m.port, http_context(m))
            self.metrics.port = self.admin_port = self.http.port
            log.info(
                "metrics on %s://%s:%d/metrics%s",
                "https" if m.tls_cert else "http",
                m.host,
                self.http.port,
                ", admin API under /v1" if self.cfg.admin is not None else "",
            )
        log.info("listening on %s:%d", self.cfg.server.host, self.port)

    async def stop(self) -> None:
        """Graceful: stop taking binds, unbind senders and carriers, flush the store."""
        self.ctx.stopping.set()
        if self._server is not None:
            self._server.close()
        if self._tls_server is not None:
            self._tls_server.close()
        for sessions in list(self.sessions.values()):
            for s in list(sessions):
                await s.unbind(timeout=2.0)
        for s in list(self.intake.connections):
            await s.close()
        for link in self.links.values():
            await link.stop()
        await self._cancel_tasks()
        with contextlib.suppress(Exception):  # the last counts; lost only with the store
            await self.ctx.learner.flush()
        await self.store.meta_set(self.ctx.floor_key, f"{self.ctx.ids.last:016X}")
        if self.ctx.feed is not None:
            await self.ctx.feed.stop()
        with contextlib.suppress(Exception):
            await self.store.unregister_instance(self.ctx.instance_no)
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.metrics is not None:
            self.metrics.detach()
        await self.store.close()

    async def _cancel_tasks(self) -> None:
        """Cancel the message path's tasks and the receipt pumps, and wait for them."""
        tasks = list(self.ctx.tasks) + list(self.pumps.tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


class StartError(Exception):
    """`Gateway.start` failed; what it had started is stopped again."""


def _describe(exc: BaseException) -> str:
    """An exception as one line for an operator."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.errno is not None:
        text = text.replace(f"[Errno {exc.errno}] ", "")
    return " ".join(text.split())


def _is_file(path: str) -> bool:
    """Whether the config came from a file (a child process can read it again)."""
    return Path(path).is_file()
