"""Carrier-facing binds: Bounceback as an ordinary ESME towards each carrier SMSC.

A `CarrierLink` keeps one transceiver session (or a transmitter + receiver
pair) bound, reconnects with exponential backoff and jitter, spaces submits to
the carrier's throughput cap and slows down when the carrier throttles.

A bind counts as a success only once it has lasted: a session lost within
`stable_after` seconds of binding is *short-lived*, and the reconnect delay is not
reset after it but keeps doubling (with jitter, up to `reconnect_max`) as after a
failed bind. `FLAPPING_AFTER` short-lived binds in a row mark the carrier as
flapping (`healthy` is False, routes prefer other carriers); a bind that stays up
`stable_after` seconds makes it healthy again and resets the delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bounceback import logs
from bounceback.config.settings import Carrier
from bounceback.config.tls import carrier_context
from bounceback.core.ratelimit import TokenBucket
from bounceback.smpp.session import SessionClosed, SmppSession
from smppcodecs.constants import CommandStatus
from smppcodecs.pdu import (
    AlertNotification,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CancelSm,
    DataSm,
    DeliverSm,
    Pdu,
    QuerySm,
    ReplaceSm,
)

log = logging.getLogger("bounceback.carrier")

DeliverHandler = Callable[[str, Pdu], Awaitable[int]]
AlertHandler = Callable[[str, AlertNotification], Coroutine[Any, Any, None]]


# Short-lived binds in a row after which a carrier is judged flapping (unhealthy).
FLAPPING_AFTER = 2


class NotBound(Exception):
    """No bound session can carry the request."""


class CarrierSession(SmppSession):
    def __init__(self, link: CarrierLink, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.link = link
        self.bound = False
        # Set once this session has proven it carries traffic: it answered a submit
        # or stayed bound `stable_after` seconds.
        self.proven = asyncio.Event()

    def is_bound(self) -> bool:
        return self.bound

    def handle_request(self, pdu: Pdu) -> None:
        if isinstance(pdu, (DeliverSm, DataSm)):
            self.spawn(self._deliver(pdu))
        elif isinstance(pdu, AlertNotification):
            self.spawn(self.link.on_alert(self.link.name, pdu))
        else:
            super().handle_request(pdu)

    async def _deliver(self, pdu: DeliverSm | DataSm) -> None:
        try:
            status = await self.link.on_deliver(self.link.name, pdu)
        except Exception:
            log.exception("%s: handling deliver_sm failed", self.name)
            status = CommandStatus.ESME_RX_T_APPN
        self.send(pdu.response(command_status=status))

    def on_closed(self) -> None:
        self.bound = False
        self.link.wake()


class CarrierLink:
    """One configured carrier and its bind(s)."""

    def __init__(
        self,
        cfg: Carrier,
        *,
        on_deliver: DeliverHandler,
        on_alert: AlertHandler,
        on_pdu: Callable[[str, int, int], None] | None = None,
        on_bound: Callable[[str], None] | None = None,
        max_pdu_size: int = 65536 + 1024,
        response_timeout: float = 10.0,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.on_deliver = on_deliver
        self.on_alert = on_alert
        self._on_pdu = on_pdu
        self._on_bound = on_bound
        self.max_pdu_size = max_pdu_size
        self.response_timeout = response_timeout
        self.tx: CarrierSession | None = None
        self.rx: CarrierSession | None = None
        self._bucket = TokenBucket(cfg.throughput, now=time.monotonic())
        self._pause_until = 0.0
        self._throttle_backoff = 0.0
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.binds = 0  # successful binds so far (tests and metrics)
        self.bind_failures = 0  # failed bind attempts so far (metrics)
        self.flaps = 0  # short-lived binds in a row (reset by a bind that lasts)
        self.flaps_total = 0  # short-lived binds so far (metrics)
        self.reconnect_delay = cfg.reconnect_min  # the current backoff (before jitter)
        self.submit_observer: Callable[[str, float], None] | None = None  # (carrier, seconds)

    # ------------------------------------------------------------ state
    @property
    def bound(self) -> bool:
        return self.tx is not None and self.tx.bound and not self.tx.closed.is_set()

    @property
    def healthy(self) -> bool:
        """False while the carrier is flapping: its last FLAPPING_AFTER or more binds
        were each lost within `stable_after` seconds."""
        return self.flaps < FLAPPING_AFTER

    def wake(self) -> None:
        self._changed.set()

    async def proven(self) -> bool:
        """Wait until the current bind has proven itself (answered a submit, or stayed
        bound `stable_after` seconds): True; False when it is lost first, or when there
        is no bind."""
        s = self.tx
        if s is None or not self.bound:
            return False
        if not s.proven.is_set():
            waiters = [
                asyncio.ensure_future(s.proven.wait()),
                asyncio.ensure_future(s.closed.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
        return s.proven.is_set() and not s.closed.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._maintain(), name=f"carrier-{self.name}")

    async def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        for s in (self.tx, self.rx):
            if s is not None and not s.closed.is_set():
                await s.unbind(timeout=2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    # ------------------------------------------------------------ binding
    async def _open(self, bind: Pdu, role: str) -> CarrierSession:
        ctx = carrier_context(self.cfg)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.cfg.host, self.cfg.port, ssl=ctx), 10.0
        )
        s = CarrierSession(
            self,
            reader,
            writer,
            name=f"carrier:{self.name}:{role}",
            max_pdu_size=self.max_pdu_size,
            window=self.cfg.window,
            response_timeout=self.response_timeout,
            enquire_link_interval=self.cfg.enquire_link_interval,
            inactivity_timeout=max(self.cfg.enquire_link_interval * 3, 10.0),
            on_pdu=self._on_pdu,
        )
        s.spawn(s.run())
        resp = await s.request(bind)
        if resp.command_status != 0:
            await s.close()
            raise ConnectionError(
                f"{self.name}: bind refused with status 0x{resp.command_status:08X}"
            )
        s.bound = True
        return s

    def _bind_pdu(self, cls: type[BindTransceiver | BindTransmitter | BindReceiver]) -> Pdu:
        return cls(
            sequence_number=0,
            system_id=self.cfg.system_id,
            password=self.cfg.password,
            system_type=self.cfg.system_type,
            interface_version=0x34,
        )

    async def _maintain(self) -> None:
        logs.bind(carrier=self.name)  # every line of this link's tasks names the carrier
        self.reconnect_delay = self.cfg.reconnect_min
        while not self._stop.is_set():
            lost_after: float | None = None  # how long a lost bind had lasted
            try:
                if self.cfg.bind_mode == "transceiver":
                    self.tx = await self._open(self._bind_pdu(BindTransceiver), "trx")
                    self.rx = self.tx
                else:
                    self.tx = await self._open(self._bind_pdu(BindTransmitter), "tx")
                    self.rx = await self._open(self._bind_pdu(BindReceiver), "rx")
                self.binds += 1
                log.info("%s: bound (%s)", self.name, self.cfg.bind_mode)
                if self._on_bound is not None:
                    self._on_bound(self.name)
                lasted = await self._hold_bind(self.tx)
                if self._stop.is_set():
                    log.info("%s: unbound", self.name)
                else:
                    lost_after = lasted
            except (OSError, TimeoutError, SessionClosed, ConnectionError) as exc:
                self.bind_failures += 1
                log.warning("%s: cannot bind: %s", self.name, exc)
            except Exception:  # a bug must not end the link for good: log it and retry
                self.bind_failures += 1
                log.exception("%s: bind failed unexpectedly", self.name)
            for s in (self.tx, self.rx):
                if s is not None:
                    await s.close()
            self.tx = self.rx = None
            if self._stop.is_set():
                return
            sleep = self.reconnect_delay * (0.5 + random.random())  # jitter
            if lost_after is not None:
                self._lost(lost_after, sleep)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), sleep)
            self.reconnect_delay = min(self.reconnect_delay * 2, self.cfg.reconnect_max)

    async def _hold_bind(self, tx: CarrierSession) -> float:
        """Wait while the bind lasts (until a session closes or the link stops); once it
        has lasted `stable_after` seconds the carrier is stable. Returns how long it
        lasted."""
        bound_at = time.monotonic()
        stable_at = bound_at + self.cfg.stable_after
        stable = False
        self._changed.clear()
        while not self._stop.is_set():
            if tx.closed.is_set() or (self.rx is not None and self.rx.closed.is_set()):
                break
            left = None if stable else max(stable_at - time.monotonic(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
            self._changed.clear()
            if not stable and time.monotonic() >= stable_at and not tx.closed.is_set():
                stable = True
                self._stable()
        return time.monotonic() - bound_at

    def _stable(self) -> None:
        """The bind has stayed up `stable_after` seconds: the link has proven itself."""
        if self.tx is not None:
            self.tx.proven.set()
        if not self.healthy:
            log.info(
                "%s: stable again: bound for %g s after %d short-lived binds; "
                "reconnect delay back to %g s",
                self.name,
                self.cfg.stable_after,
                self.flaps,
                self.cfg.reconnect_min,
            )
        self.flaps = 0
        self.reconnect_delay = self.cfg.reconnect_min

    def _lost(self, lasted: float, sleep: float) -> None:
        """A bound session was lost after `lasted` seconds; we reconnect in `sleep`."""
        if lasted >= self.cfg.stable_after:
            log.warning(
                "%s: connection lost after %.1f s bound; reconnecting in %.1f s",
                self.name,
                lasted,
                sleep,
            )
            return
        self.flaps += 1
        self.flaps_total += 1
        log.warning(
            "%s: connection lost %.1f s after binding (short-lived, %d in a row); "
            "reconnecting in %.1f s",
            self.name,
            lasted,
            self.flaps,
            sleep,
        )
        if self.flaps == FLAPPING_AFTER:
            log.warning(
                "%s: flapping: %d binds in a row lost within %g s (stable_after); "
                "reconnect delay doubling up to %g s until a bind stays up %g s, "
                "routes prefer other carriers meanwhile",
                self.name,
                self.flaps,
                self.cfg.stable_after,
                self.cfg.reconnect_max,
                self.cfg.stable_after,
            )

    # ------------------------------------------------------------ traffic
    async def _pace(self) -> None:
        while True:
            now = time.monotonic()
            wait = max(self._pause_until - now, self._bucket.wait_time(now))
            if wait <= 0:
                self._bucket.try_take(now)
                return
            await asyncio.sleep(wait)

    async def submit(self, pdu: Pdu, timeout: float | None = None) -> Pdu:
        """Send a submit_sm/data_sm and return the carrier's response PDU.

        Raises NotBound, SessionClosed or TimeoutError.
        """
        started = time.monotonic()
        if started < self._pause_until or not self._bucket.try_take(started):
            await self._pace()  # no coroutine to await when a token is there now
            started = time.monotonic()
        s = self.tx
        if s is None or not s.bound or s.closed.is_set():
            raise NotBound(self.name)
        resp = await s.request(pdu, timeout or self.cfg.submit_timeout)
        s.proven.set()  # an answer, whatever it says: this bind carries traffic
        if self.submit_observer is not None:
            self.submit_observer(self.name, time.monotonic() - started)
        if resp.command_status in (CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL):
            # Slow down instead of hammering: pause all submits to this carrier.
            self._throttle_backoff = min(max(self._throttle_backoff * 2, 0.2), 10.0)
            self._pause_until = time.monotonic() + self._throttle_backoff
            log.info("%s: throttled; pausing %.1f s", self.name, self._throttle_backoff)
        elif resp.command_status == 0 and self._throttle_backoff:
            self._throttle_backoff = max(self._throttle_backoff / 2 - 0.05, 0.0)
        return resp

    async def cancel(self, carrier_message_id: str, source_addr: str, destination_addr: str) -> int:
        s = self.tx
        if s is None or not s.bound:
            raise NotBound(self.name)
        resp = await s.request(
            CancelSm(
                sequence_number=0,
                message_id=carrier_message_id,
                source_addr=source_addr,
                destination_addr=destination_addr,
            )
        )
        return resp.command_status

    async def replace(self, pdu: ReplaceSm) -> int:
        s = self.tx
        if s is None or not s.bound:
            raise NotBound(self.name)
        resp = await s.request(pdu)
        return resp.command_status

    async def query(self, pdu: QuerySm) -> Pdu:
        """Send a query_sm and return the carrier's answer: a query_sm_resp, or a
        generic_nack from a carrier that does not know the command.

        Raises NotBound, SessionClosed or TimeoutError."""
        s = self.tx
        if s is None or not s.bound:
            raise NotBound(self.name)
        return await s.request(pdu)
