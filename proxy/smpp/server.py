"""The sender-facing side: Bounceback as an SMSC that ESMEs bind to.

`open_listeners` starts the plain and/or TLS listeners. Every accepted connection is
held without reading until it is admitted: the connection limits are checked
(`access.ConnectionLimits`; over a limit the connection is closed at once), then the
TLS handshake runs (bounded by ``bind_timeout``; a failure is logged and counted),
and only then does the gateway's session start reading.

The gateway side is anything that implements `Senders` (the gateway's sender intake):
it authenticates binds, keeps the bound sessions and handles their requests.

Binds go through the failed-bind tracker (`access.FailedBinds`): an address that is
locked out gets ESME_RBINDFAIL and is disconnected; a failed bind is answered at once
for the first few failures, later ones after a growing delay. While a bind is being
answered nothing else is read from that connection (the inbound window is 1 until
the session is bound, then the account's ``window``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any, Protocol

from bounceback import logs
from bounceback.config.settings import Account, Config
from bounceback.config.tls import describe_peer, listener_context
from bounceback.core.access import Access
from bounceback.smpp.session import READ_SIZE, SmppSession
from smppcodecs.constants import CommandStatus as S
from smppcodecs.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CancelSm,
    DataSm,
    DeliverSm,
    Pdu,
    QuerySm,
    ReplaceSm,
    SubmitMulti,
    SubmitSm,
)

log = logging.getLogger("bounceback.server")

BIND_TYPES: dict[type[Pdu], str] = {
    BindTransmitter: "transmitter",
    BindReceiver: "receiver",
    BindTransceiver: "transceiver",
}

# Bind answers that count as a failed attempt for the lockout: a wrong password, an
# unknown system_id, or an address outside the account's allowed_ips.
AUTH_FAILURES = frozenset({S.ESME_RINVPASWD, S.ESME_RINVSYSID})
REFUSAL_LOG_EVERY = 100  # warn on the 1st, 101st, ... refusal (no log floods)


class Senders(Protocol):
    """What sender sessions and the listeners need from whoever handles senders."""

    @property
    def cfg(self) -> Config: ...

    @property
    def access(self) -> Access: ...

    @property
    def system_id(self) -> str: ...

    @property
    def counters(self) -> Mapping[str, int]: ...

    def count(self, name: str, n: int = 1) -> None: ...

    def authenticate(
        self, s: EsmeSession, system_id: str, password: str, bind_type: str
    ) -> tuple[int, Account | None]: ...

    def register(self, s: EsmeSession) -> None:
        """`s` is bound."""

    def unregister(self, s: EsmeSession) -> None:
        """`s` closed."""

    def take_token(self, acct: Account) -> bool:
        """Whether `acct` may submit one more message now (its throughput)."""

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run a session on an admitted connection."""

    async def on_submit(
        self, s: EsmeSession, pdu: SubmitSm | DataSm, raw: bytes | None = None
    ) -> None: ...

    async def on_submit_multi(self, s: EsmeSession, pdu: SubmitMulti) -> None: ...

    async def on_query(self, s: EsmeSession, pdu: QuerySm) -> None: ...

    async def on_cancel(self, s: EsmeSession, pdu: CancelSm) -> None: ...

    async def on_replace(self, s: EsmeSession, pdu: ReplaceSm) -> None: ...


class EsmeSession(SmppSession):
    """One sender connection."""

    def __init__(self, gateway: Senders, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gw = gateway
        self.account: Account | None = None
        self.bind_type = ""
        self.connected_at = time.monotonic()
        self.inbound_window = 1  # until bound: one bind at a time

    # ------------------------------------------------------------ state
    def is_bound(self) -> bool:
        return self.account is not None

    @property
    def can_transmit(self) -> bool:
        return self.bind_type in ("transmitter", "transceiver")

    @property
    def can_receive(self) -> bool:
        return self.bind_type in ("receiver", "transceiver") and not self.closed.is_set()

    # ------------------------------------------------------------ requests
    def handle_request(self, pdu: Pdu) -> None:
        bind_type = BIND_TYPES.get(type(pdu))
        if bind_type is not None:
            self._bind(pdu, bind_type)
            return
        if self.account is None:
            self._reply(pdu, S.ESME_RINVBNDSTS)
            return
        if isinstance(pdu, (SubmitSm, DataSm, SubmitMulti)):
            if not self.can_transmit:
                self._reply(pdu, S.ESME_RINVBNDSTS)
                return
            if not self.gw.take_token(self.account):
                self._reply(pdu, S.ESME_RTHROTTLED)
                return
            if isinstance(pdu, SubmitMulti):
                self.spawn(self.gw.on_submit_multi(self, pdu))
            else:
                self.spawn(self.gw.on_submit(self, pdu, self.frame))
        elif isinstance(pdu, QuerySm):
            self.spawn(self.gw.on_query(self, pdu))
        elif isinstance(pdu, CancelSm):
            self.spawn(self.gw.on_cancel(self, pdu))
        elif isinstance(pdu, ReplaceSm):
            self.spawn(self.gw.on_replace(self, pdu))
        elif isinstance(pdu, DeliverSm):
            self._reply(pdu, S.ESME_RINVBNDSTS)  # an SMSC does not take deliver_sm
        else:
            super().handle_request(pdu)

    def _reply(self, pdu: Pdu, status: int) -> None:
        self.send(pdu.response(command_status=status))

    def _bind(self, pdu: Pdu, bind_type: str) -> None:
        system_id: str = getattr(pdu, "system_id", "")
        password: str = getattr(pdu, "password", "")
        if self.account is not None:
            self._reply(pdu, S.ESME_RALYBND)
            return
        binds = self.gw.access.binds
        now = time.monotonic()
        left = binds.locked(self.peer_ip, now)
        if left > 0:
            self.gw.count("binds_refused_locked_out")
            log.info(
                "%s: bind as %r refused: address locked out for another %.0f s",
                self.name,
                system_id,
                left,
            )
            self._reply(pdu, S.ESME_RBINDFAIL)
            self.spawn(self._close_soon())
            return
        status, account = self.gw.authenticate(self, system_id, password, bind_type)
        if status != 0 or account is None:
            log.info("%s: bind %s as %r refused: 0x%02X", self.name, bind_type, system_id, status)
            if status in AUTH_FAILURES:
                self.gw.count("binds_failed")
                failure = binds.failed(self.peer_ip, now)
                if failure.lockout_started:
                    self.gw.count("bind_lockouts")
                    log.warning(
                        "%s: %d failed binds within %.0f s: address locked out for %.0f s",
                        self.name,
                        failure.failures,
                        binds.window,
                        failure.locked_for,
                    )
                if failure.delay > 0:
                    self.gw.count("binds_delayed")
                    self.spawn(self._reply_later(pdu, status, failure.delay))
                    return
            self._reply(pdu, status)
            return
        binds.succeeded(self.peer_ip)
        self.account = account
        self.bind_type = bind_type
        self.name = f"esme:{account.system_id}:{self.peer}"
        logs.bind(session=self.name, account=account.system_id)
        self.set_window(account.window)
        self.inbound_window = max(account.window, 1)
        self.send(pdu.response(system_id=self.gw.system_id))
        log.info("%s: bound as %s", self.name, bind_type)
        self.gw.register(self)

    async def _reply_later(self, pdu: Pdu, status: int, delay: float) -> None:
        """A failed bind's answer, slowed down (nothing else is read meanwhile)."""
        await asyncio.sleep(delay)
        self._reply(pdu, status)

    def on_closed(self) -> None:
        self.gw.unregister(self)


# ---------------------------------------------------------------- listeners


class _HeldProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that reads nothing until the connection is admitted.

    Only on asyncio: uvloop starts reading after `connection_made` even when it paused
    the transport, so bytes may arrive before admission (for a plain connection the
    session reads them from the StreamReader; a TLS handshake would lose them, which
    is why the TLS listener never runs on uvloop, see `config.EVENT_LOOPS`)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()
        super().connection_made(transport)


async def open_listeners(gw: Senders) -> tuple[asyncio.Server | None, asyncio.Server | None]:
    """Start the plain listener (``[server] plain``, on ``port``) and the TLS listener
    (when ``tls_cert`` is set, on ``tls_port``). Returns (plain, tls)."""
    srv = gw.cfg.server
    plain = await listen(gw, srv.host, srv.port) if srv.plain else None
    try:
        ctx = listener_context(srv)
        tls = await listen(gw, srv.host, srv.tls_port, ctx) if ctx is not None else None
    except BaseException:
        if plain is not None:  # no half-opened pair: the plain one closes again
            plain.close()
        raise
    return plain, tls


def listener_port(server: asyncio.Server | None) -> int:
    """The port a listener is bound to (0 for none)."""
    if server is None or not server.sockets:
        return 0
    return int(server.sockets[0].getsockname()[1])


async def listen(
    gw: Senders, host: str, port: int, tls: ssl.SSLContext | None = None
) -> asyncio.Server:
    """One listener whose connections go through `admit` to the gateway."""
    loop = asyncio.get_running_loop()
    serve = functools.partial(admit, gw, tls=tls)

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        return _HeldProtocol(reader, serve, loop=loop)

    return await loop.create_server(factory, host, port)


async def admit(
    gw: Senders,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Connection limits, then the TLS handshake, then the gateway's session."""
    peer: Any = writer.get_extra_info("peername")
    address = str(peer[0]) if isinstance(peer, tuple) else ""
    refused = gw.access.connections.open(address)
    if refused is not None:
        gw.count("connections_refused")
        n = gw.counters.get("connections_refused", 0)
        if n % REFUSAL_LOG_EVERY == 1:
            log.warning(
                "connection from %s refused: %s (%d refused so far)",
                address,
                "max_connections reached"
                if refused == "total"
                else "max_connections_per_ip reached for the address",
                n,
            )
        writer.close()
        return
    try:
        if tls is not None:
            try:
                await writer.start_tls(tls, ssl_handshake_timeout=gw.cfg.server.bind_timeout)
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                gw.count("tls_handshake_failed")
                n = gw.counters.get("tls_handshake_failed", 0)
                level = logging.WARNING if n % REFUSAL_LOG_EVERY == 1 else logging.INFO
                log.log(level, "TLS handshake with %s failed: %s", address, exc)
                writer.close()
                return
            log.info(
                "TLS connection from %s (%s)",
                address,
                describe_peer(writer.get_extra_info("ssl_object")),
            )
        else:
            transport = writer.transport
            if isinstance(transport, asyncio.ReadTransport):
                transport.resume_reading()
        await gw.on_connect(reader, writer)
    except Exception:
        log.exception("connection from %s failed", address)
        writer.close()
    finally:
        gw.access.connections.close(address)
