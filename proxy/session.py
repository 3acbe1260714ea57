"""What every SMPP session shares, whichever side it is on: framing, decoding,
sequence numbers, a window of outstanding requests, enquire_link on idle,
response and inactivity timeouts, and unbind.

Subclasses (`EsmeSession` facing senders, `CarrierSession` facing carriers)
implement `handle_request` and the bind logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from smppcodecs.constants import CommandId, CommandStatus, is_response
from smppcodecs.exceptions import PduError
from smppcodecs.framer import Framer
from smppcodecs.pdu import (
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    Unbind,
    UnbindResp,
    decode,
    generic_nack,
)

log = logging.getLogger("bounceback.session")

# Requests that have no response PDU.
NO_RESPONSE = frozenset({CommandId.OUTBIND, CommandId.ALERT_NOTIFICATION})


class SessionClosed(Exception):
    """The session ended while a request was outstanding."""


class SmppSession:
    """One SMPP connection (either role)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        name: str,
        max_pdu_size: int = 65536 + 1024,
        window: int = 10,
        response_timeout: float = 10.0,
        enquire_link_interval: float = 30.0,
        inactivity_timeout: float = 120.0,
        on_pdu: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        self.framer = Framer(max_command_length=max_pdu_size)
        self.window = max(window, 1)
        self._window_sem = asyncio.Semaphore(self.window)
        self.response_timeout = response_timeout
        self.enquire_link_interval = enquire_link_interval
        self.inactivity_timeout = inactivity_timeout
        self._seq = 0
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self.closed = asyncio.Event()
        self.last_rx = time.monotonic()
        self.unbinding = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_pdu = on_pdu  # metrics hook: (direction, command_id, status)
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    # ------------------------------------------------------------ sending
    def next_sequence(self) -> int:
        self._seq = self._seq + 1 if self._seq < 0x7FFFFFFF else 1
        return self._seq

    def send(self, pdu: Pdu) -> None:
        """Write one PDU (a response, or a request whose answer is not awaited)."""
        if self.writer.is_closing():
            return
        self.writer.write(pdu.encode())
        if self._on_pdu is not None:
            self._on_pdu("out", pdu.command_id, pdu.command_status)

    async def request(self, pdu: Pdu, timeout: float | None = None) -> Pdu:
        """Send a request within the window and wait for its response."""
        if self.closed.is_set():
            raise SessionClosed(self.name)
        async with self._window_sem:
            if self.closed.is_set():
                raise SessionClosed(self.name)
            seq = self.next_sequence()
            pdu.sequence_number = seq
            fut: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
            self._pending[seq] = fut
            try:
                self.send(pdu)
                if self.writer.transport.get_write_buffer_size() > 1 << 20:
                    await self.writer.drain()
                return await asyncio.wait_for(fut, timeout or self.response_timeout)
            finally:
                self._pending.pop(seq, None)

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------ receiving
    async def run(self) -> None:
        """Read and dispatch PDUs until the connection ends."""
        keeper = asyncio.create_task(self._keepalive())
        try:
            while not self.closed.is_set():
                data = await self.reader.read(65536)
                if not data:
                    break
                self.last_rx = time.monotonic()
                try:
                    frames = self.framer.feed(data)
                except PduError as exc:
                    log.warning("%s: %s; closing", self.name, exc)
                    self.send(generic_nack(exc.sequence_number or 0, exc.command_status))
                    break
                for frame in frames:
                    self._dispatch(frame)
                if self.writer.transport.get_write_buffer_size() > 1 << 20:
                    await self.writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("%s: connection lost: %s", self.name, exc)
        finally:
            keeper.cancel()
            await self.close()

    def _dispatch(self, frame: bytes) -> None:
        try:
            pdu = decode(frame)
        except PduError as exc:
            self._answer_error(exc)
            return
        if self._on_pdu is not None:
            self._on_pdu("in", pdu.command_id, pdu.command_status)
        if is_response(pdu.command_id):
            fut = self._pending.get(pdu.sequence_number)
            if fut is not None and not fut.done():
                fut.set_result(pdu)
            elif isinstance(pdu, GenericNack):
                log.warning("%s: generic_nack status=0x%08X", self.name, pdu.command_status)
            return
        if isinstance(pdu, EnquireLink):
            self.send(EnquireLinkResp(sequence_number=pdu.sequence_number))
            return
        if isinstance(pdu, Unbind):
            self.send(UnbindResp(sequence_number=pdu.sequence_number))
            self.unbinding = True
            self.spawn(self._close_soon())
            return
        self.handle_request(pdu)

    def _answer_error(self, exc: PduError) -> None:
        log.info("%s: bad PDU: %s", self.name, exc)
        cid = exc.command_id
        seq = exc.sequence_number or 0
        if not exc.in_sync:
            self.send(generic_nack(seq, exc.command_status))
            self.spawn(self._close_soon())
            return
        if cid is None or is_response(cid) or cid in NO_RESPONSE:
            if cid is not None and is_response(cid):
                fut = self._pending.get(seq)
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
                return
            self.send(generic_nack(seq, exc.command_status))
            return
        resp_cls = _RESPONSES.get(cid)
        if resp_cls is None:
            self.send(generic_nack(seq, CommandStatus.ESME_RINVCMDID))
            return
        self.send(resp_cls(sequence_number=seq, command_status=exc.command_status))

    def handle_request(self, pdu: Pdu) -> None:
        """Handle one request PDU (override). Default: generic_nack."""
        self.send(generic_nack(pdu.sequence_number, CommandStatus.ESME_RINVCMDID))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ keepalive
    async def _keepalive(self) -> None:
        try:
            while not self.closed.is_set():
                await asyncio.sleep(min(self.enquire_link_interval, self.inactivity_timeout) / 2)
                idle = time.monotonic() - self.last_rx
                if idle >= self.inactivity_timeout:
                    log.warning("%s: silent for %.0f s; closing", self.name, idle)
                    await self.close()
                    return
                if idle >= self.enquire_link_interval and self.is_bound():
                    self.spawn(self._enquire())
        except asyncio.CancelledError:
            pass

    async def _enquire(self) -> None:
        with contextlib.suppress(Exception):
            await self.request(EnquireLink(sequence_number=0))

    def is_bound(self) -> bool:
        return True

    # ------------------------------------------------------------ ending
    async def unbind(self, timeout: float = 5.0) -> None:
        """Unbind cleanly (send unbind, wait for unbind_resp), then close."""
        self.unbinding = True
        with contextlib.suppress(Exception):
            await self.request(Unbind(sequence_number=0), timeout=timeout)
        await self.close()

    async def _close_soon(self) -> None:
        with contextlib.suppress(Exception):
            await self.writer.drain()
        await self.close()

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(SessionClosed(self.name))
        self._pending.clear()
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        self.on_closed()

    def on_closed(self) -> None:
        """Hook for subclasses: the connection is gone."""


def _resp_table() -> dict[int, type[Pdu]]:
    from smppcodecs.pdu import PDU_CLASSES

    table: dict[int, type[Pdu]] = {}
    for cid in PDU_CLASSES:
        if not is_response(cid) and (cid | 0x80000000) in PDU_CLASSES:
            table[cid] = PDU_CLASSES[cid | 0x80000000]
    return table


_RESPONSES = _resp_table()
