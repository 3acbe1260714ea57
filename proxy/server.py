"""The sender-facing side: Bounceback as an SMSC that ESMEs bind to."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

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

from .config import Account
from .session import SmppSession

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("bounceback.server")

BIND_TYPES: dict[type[Pdu], str] = {
    BindTransmitter: "transmitter",
    BindReceiver: "receiver",
    BindTransceiver: "transceiver",
}


class EsmeSession(SmppSession):
    """One sender connection."""

    def __init__(self, gateway: Gateway, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gw = gateway
        self.account: Account | None = None
        self.bind_type = ""
        self.connected_at = time.monotonic()

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
                self.spawn(self.gw.on_submit(self, pdu))
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
        status, account = self.gw.authenticate(self, system_id, password, bind_type)
        if status != 0 or account is None:
            log.info("%s: bind %s as %r refused: 0x%02X", self.name, bind_type, system_id, status)
            self._reply(pdu, status)
            return
        self.account = account
        self.bind_type = bind_type
        self.name = f"esme:{account.system_id}:{self.peer}"
        self._window_sem_resize(account.window)
        self.send(pdu.response(system_id=self.gw.system_id))
        log.info("%s: bound as %s", self.name, bind_type)
        self.gw.register(self)

    def _window_sem_resize(self, window: int) -> None:
        import asyncio

        self.window = max(window, 1)
        self._window_sem = asyncio.Semaphore(self.window)

    def on_closed(self) -> None:
        self.gw.unregister(self)
