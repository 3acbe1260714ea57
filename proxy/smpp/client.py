"""A small asyncio ESME client on top of `SmppSession`: the demo's and the
benchmarks' sender. (Tests use independent clients: smpplib and node-smpp.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bounceback.smpp.session import SmppSession
from smppcodecs.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DeliverSm,
    Pdu,
    SubmitSm,
)

BINDS: dict[str, type[BindTransceiver | BindTransmitter | BindReceiver]] = {
    "transceiver": BindTransceiver,
    "transmitter": BindTransmitter,
    "receiver": BindReceiver,
}


class EsmeClient(SmppSession):
    """Binds to an SMSC (Bounceback or a carrier) and submits messages."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.on_deliver: Callable[[DeliverSm], int] | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        system_id: str,
        password: str,
        *,
        bind: str = "transceiver",
        window: int = 100,
    ) -> EsmeClient:
        reader, writer = await asyncio.open_connection(host, port)
        c = cls(
            reader,
            writer,
            name=f"client:{system_id}",
            window=window,
            enquire_link_interval=30.0,
            inactivity_timeout=300.0,
        )
        c.spawn(c.run())
        resp = await c.request(
            BINDS[bind](sequence_number=0, system_id=system_id, password=password)
        )
        if resp.command_status != 0:
            await c.close()
            raise ConnectionError(f"bind refused: 0x{resp.command_status:08X}")
        return c

    def handle_request(self, pdu: Pdu) -> None:
        if isinstance(pdu, DeliverSm):
            status = self.on_deliver(pdu) if self.on_deliver is not None else 0
            self.send(pdu.response(command_status=status))
        else:
            super().handle_request(pdu)

    async def submit(
        self,
        destination: str,
        text: bytes,
        *,
        source: str = "Demo",
        registered_delivery: int = 1,
        **fields: object,
    ) -> Pdu:
        pdu = SubmitSm(
            sequence_number=0,
            source_addr=source,
            destination_addr=destination,
            short_message=text,
            registered_delivery=registered_delivery,
            **fields,  # type: ignore[arg-type]
        )
        return await self.request(pdu)
