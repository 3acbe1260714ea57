"""A flapping carrier: an SMSC that accepts every bind and closes the connection on
every ``submit_sm``, leaving it unanswered.

What a carrier whose link breaks under load looks like to the proxy: binds succeed,
nothing gets through. ``bench/bench_flap.py`` and the flapping-carrier test run it
in front of the proxy, then hand its port to the carrier simulator.
"""

from __future__ import annotations

import asyncio
import contextlib

from smppcodecs.framer import Framer
from smppcodecs.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    EnquireLink,
    SubmitSm,
    Unbind,
    decode,
)

__all__ = ["FlappingCarrier"]


class FlappingCarrier:
    """An SMSC that accepts every bind and closes the connection on every submit_sm."""

    def __init__(self) -> None:
        self.binds = 0  # binds accepted
        self.submits = 0  # submit_sm the connection was closed on
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Listen on `port` (0: a free one); the port listened on."""
        self._server = await asyncio.start_server(self._on_connect, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        framer = Framer()
        try:
            while data := await reader.read(65536):
                for frame in framer.feed(data):
                    pdu = decode(frame)
                    if isinstance(pdu, (BindTransceiver, BindTransmitter, BindReceiver)):
                        self.binds += 1
                        writer.write(pdu.response(system_id="flap").encode())
                    elif isinstance(pdu, (EnquireLink, Unbind)):
                        writer.write(pdu.response().encode())
                    elif isinstance(pdu, SubmitSm):
                        self.submits += 1
                        return  # the connection closes, the submit unanswered
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
