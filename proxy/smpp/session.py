"""What every SMPP session shares, whichever side it is on: framing, decoding,
sequence numbers, a window of outstanding requests, enquire_link on idle,
response and inactivity timeouts, and unbind.

Subclasses (`EsmeSession` facing senders, `CarrierSession` facing carriers)
implement `handle_request` and the bind logic.

Bounds on what a peer can make a session hold:

* Framing: the framer refuses a command_length above ``max_pdu_size`` as soon as
  its four octets are in (generic_nack, then close), so a session never buffers more
  than one read (64 KiB) plus one PDU.
* Inbound window (backpressure): every task started while a request is being handled
  (a submit_sm waiting for the store and the carrier, say) counts against
  ``inbound_window``. When that many are in progress, further requests of the current
  read wait (at most one read's worth) and the session stops reading from the socket
  until one finishes; the peer's further PDUs wait in its own socket buffers (TCP flow
  control), not in our memory. Responses in the same read are dispatched at once, so
  a sender's deliver_sm_resp never waits behind its own submits. PDUs answered on
  the spot (enquire_link, errors) take no slot.
* Outbound: when the transport's write buffer passes ``write_buffer_limit`` (a peer
  that sends but does not read), the session stops reading until it drains.
* Time: ``inactivity_timeout`` counts from the last *whole* PDU received, so a peer
  trickling a byte at a time (slowloris) is closed just like a silent one.
* Fairness: every ``YIELD_EVERY`` PDUs, and after each read, the session yields to
  the event loop, so a peer flooding tiny PDUs cannot starve the other sessions.

Our own requests cost little per request: each outstanding one is a record in
``_pending`` (its deadline, its window, and the future or callback to answer), and
one timer per session, set for the earliest deadline, expires whatever is due (no
timer per request). A response finishes its request on the spot, as it is decoded:
the window slot comes back and the future (or callback) is answered, with no
callback left for the event loop to schedule. ``request_cb`` answers by a plain
callback, for callers that need no future at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
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

READ_SIZE = 65536  # octets asked of the socket per read
WRITE_BUFFER_LIMIT = 1 << 20  # unsent octets queued before the session stops reading
YIELD_EVERY = 64  # PDUs dispatched before the session lets other tasks run
TIMEOUT_LOG_EVERY = 100  # log the 1st, 101st, ... unanswered request of a session


class SessionClosed(Exception):
    """The session ended while a request was outstanding."""


class _Request:
    """One of our requests awaiting its response: answered once, by `fut` (and then
    `on_done`) or by `callback`, with the response PDU or the exception it ended
    with."""

    __slots__ = ("callback", "deadline", "fut", "on_done", "pdu", "wait", "window")

    def __init__(
        self,
        pdu: Pdu,
        wait: float,
        deadline: float,
        window: Window | None,
        fut: asyncio.Future[Pdu] | None,
        on_done: Callable[[asyncio.Future[Pdu]], None] | None,
        callback: Callable[[Pdu | Exception], None] | None,
    ) -> None:
        self.pdu = pdu
        self.wait = wait
        self.deadline = deadline
        self.window = window
        self.fut = fut
        self.on_done = on_done
        self.callback = callback


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
        inbound_window: int | None = None,
        write_buffer_limit: int = WRITE_BUFFER_LIMIT,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        self.framer = Framer(max_command_length=max_pdu_size)
        self.set_window(window)
        self.response_timeout = response_timeout
        self.enquire_link_interval = enquire_link_interval
        self.inactivity_timeout = inactivity_timeout
        self._seq = 0
        self._pending: dict[int, _Request] = {}
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0  # when the sweep timer fires (while it is set)
        self.closed = asyncio.Event()
        self.last_rx = time.monotonic()
        self.unbinding = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_pdu = on_pdu  # metrics hook: (direction, command_id, status)
        self.inbound_window = max(inbound_window if inbound_window is not None else window, 1)
        self.write_buffer_limit = write_buffer_limit
        self.timeouts = 0  # our requests the peer did not answer in time
        self.task_failures = 0  # errors that escaped the tasks handling requests
        self.handling = 0  # tasks started by requests and not finished yet
        self.handling_peak = 0  # the most seen at once (tests and metrics)
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._in_request = False
        self.frame = b""  # the request being handled, as received (in handle_request)
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.peer_ip = str(peer[0]) if isinstance(peer, tuple) else ""

    # ------------------------------------------------------------ sending
    def set_window(self, window: int) -> None:
        """At most `window` of our requests awaiting their response (at least one)."""
        self.window = max(window, 1)
        self._window_sem = Window(self.window)

    def next_sequence(self) -> int:
        """The next sequence number (1 to 0x7FFFFFFF, then 1 again)."""
        self._seq = self._seq + 1 if self._seq < 0x7FFFFFFF else 1
        return self._seq

    def send(self, pdu: Pdu) -> None:
        """Queue one PDU for writing (a response, or a request whose answer is not
        awaited). Everything queued in one turn of the event loop goes out in one write:
        one system call for a whole batch of responses and receipts."""
        if self.writer.is_closing():
            return
        self._out.append(pdu.encode())
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)
        if self._on_pdu is not None:
            self._on_pdu("out", pdu.command_id, pdu.command_status)

    def _flush(self) -> None:
        self._flush_handle = None
        out, self._out = self._out, []
        if out and not self.writer.is_closing():
            self.writer.write(b"".join(out))

    async def request(self, pdu: Pdu, timeout: float | None = None) -> Pdu:
        """Send a request within the window and wait for its response."""
        fut = await self._send_request(pdu, timeout or self.response_timeout)
        if fut is None:
            raise SessionClosed(self.name)
        try:
            return await fut
        except asyncio.CancelledError:
            self._abandon(pdu.sequence_number, fut)
            raise

    async def request_all(
        self, pdus: Sequence[Pdu], timeout: float | None = None
    ) -> list[Pdu | Exception]:
        """Send requests in order within the window and wait for every response: each
        entry of the result is the response, or the exception its request ended with
        (TimeoutError, SessionClosed, a PduError). Like `request` for each, but one
        coroutine for the lot instead of a task and a window wait per request (the
        receipt pump sends thousands a second)."""
        wait = timeout or self.response_timeout
        futs: list[asyncio.Future[Pdu] | Exception] = []
        try:
            for pdu in pdus:
                fut = await self._send_request(pdu, wait)
                futs.append(fut if fut is not None else SessionClosed(self.name))
            results: list[Pdu | Exception] = []
            for f in futs:
                if isinstance(f, Exception):
                    results.append(f)
                    continue
                try:
                    results.append(await f)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    results.append(exc)
            return results
        except asyncio.CancelledError:
            for pdu, f in zip(pdus, futs, strict=False):
                if not isinstance(f, Exception):
                    f.cancel()
                    self._abandon(pdu.sequence_number, f)
            raise

    def try_request(
        self,
        pdu: Pdu,
        timeout: float | None = None,
        on_done: Callable[[asyncio.Future[Pdu]], None] | None = None,
    ) -> asyncio.Future[Pdu] | None:
        """Send a request now if the window has a free slot, without waiting: the
        future of its response (a response PDU, TimeoutError, SessionClosed), or None
        when the window is full or the session closed. `on_done` is called with the
        future once it is done (directly, not as a scheduled callback). For callers that
        keep their own queue and react to each answer (the receipt pump). A future
        cancelled by its holder keeps its slot until its response or its deadline."""
        window = self._window_sem
        if self.closed.is_set() or not window.try_acquire():
            return None
        fut: asyncio.Future[Pdu] = self._loop.create_future()
        self._issue(pdu, timeout or self.response_timeout, window, fut, on_done, None)
        return fut

    def request_cb(
        self,
        pdu: Pdu,
        callback: Callable[[Pdu | Exception], None],
        timeout: float | None = None,
        *,
        use_window: bool = True,
    ) -> bool:
        """Send a request now if the window has a free slot: True, and `callback` is
        called exactly once, from the event loop's thread, with the response PDU or
        the exception the request ended with (TimeoutError, SessionClosed, a
        PduError). False (and no callback) when the window is full or the session
        closed. No future and no task: the cheapest way to send a request. With
        `use_window` False the request takes no slot of the window (for a caller that
        keeps its own count, like the simulator)."""
        window = self._window_sem if use_window else None
        if self.closed.is_set() or (window is not None and not window.try_acquire()):
            return False
        self._issue(pdu, timeout or self.response_timeout, window, None, None, callback)
        return True

    @property
    def free(self) -> int:
        """Free slots of the send window now."""
        return self._window_sem.free

    async def _send_request(self, pdu: Pdu, wait: float) -> asyncio.Future[Pdu] | None:
        """Take a slot of the window, send `pdu` and return the future of its response
        (None when the session is closed). The slot and the pending entry go when the
        request is answered, times out or fails, or when its waiter gives up."""
        if self.closed.is_set():
            return None
        window = self._window_sem
        await window.acquire()
        if self.closed.is_set():
            window.release()
            return None
        fut: asyncio.Future[Pdu] = self._loop.create_future()
        self._issue(pdu, wait, window, fut, None, None)
        if self.writer.transport.get_write_buffer_size() > self.write_buffer_limit:
            try:
                await self.writer.drain()
            except BaseException:
                fut.cancel()  # not waited for: free its slot now
                self._abandon(pdu.sequence_number, fut)
                raise
        return fut

    def _issue(
        self,
        pdu: Pdu,
        wait: float,
        window: Window | None,
        fut: asyncio.Future[Pdu] | None,
        on_done: Callable[[asyncio.Future[Pdu]], None] | None,
        callback: Callable[[Pdu | Exception], None] | None,
    ) -> None:
        """Send `pdu` on a slot of `window` already taken, answered by `fut` (then
        `on_done`) or `callback`."""
        seq = self._seq + 1 if self._seq < 0x7FFFFFFF else 1
        self._seq = seq
        pdu.sequence_number = seq
        deadline = self._loop.time() + wait
        self._pending[seq] = _Request(pdu, wait, deadline, window, fut, on_done, callback)
        if self._sweep_handle is None or deadline < self._sweep_at:
            self._arm(deadline)
        self.send(pdu)

    def _arm(self, deadline: float) -> None:
        """Set the sweep timer for `deadline`."""
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_at = deadline
        self._sweep_handle = self._loop.call_at(deadline, self._sweep)

    def _sweep(self) -> None:
        """Expire the requests whose deadline has come; set the timer for the next."""
        self._sweep_handle = None
        pending = self._pending
        # The clock may read a hair short of the deadline the timer was set for.
        now = self._loop.time() + 0.001
        for seq in [seq for seq, r in pending.items() if r.deadline <= now]:
            req = pending.pop(seq, None)
            if req is not None:
                self._finish(req, TimeoutError())
        if pending and self._sweep_handle is None and not self.closed.is_set():
            self._arm(min(r.deadline for r in pending.values()))

    def _finish(self, req: _Request, result: Pdu | Exception) -> None:
        """Answer a request taken out of `_pending`, once: its slot comes back, then its
        future (and `on_done`) or its callback gets the response or the exception."""
        if req.window is not None:
            req.window.release()
        if isinstance(result, TimeoutError):
            self.timeouts += 1
            if self.timeouts % TIMEOUT_LOG_EVERY == 1:
                log.warning(
                    "%s: no answer to %s within %.1f s (%d unanswered so far)",
                    self.name,
                    type(req.pdu).__name__,
                    req.wait,
                    self.timeouts,
                )
        fut = req.fut
        if fut is None:
            if req.callback is not None:
                req.callback(result)
            return
        if not fut.done():  # its holder may have cancelled it
            if isinstance(result, Exception):
                fut.set_exception(result)
                fut.exception()  # retrieved: the waiter may be gone, nothing to log
            else:
                fut.set_result(result)
        if req.on_done is not None:
            req.on_done(fut)

    def _abandon(self, seq: int, fut: asyncio.Future[Pdu]) -> None:
        """The waiter of `fut` gave up: its request stops holding a slot."""
        req = self._pending.get(seq)
        if req is not None and req.fut is fut:
            del self._pending[seq]
            if req.window is not None:
                req.window.release()
            if req.on_done is not None:
                req.on_done(fut)

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------ receiving
    async def run(self) -> None:
        """Read and dispatch PDUs until the connection ends."""
        keeper = asyncio.create_task(self._keepalive())
        try:
            while not self.closed.is_set():
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                try:
                    frames = self.framer.feed(data)
                except PduError as exc:
                    log.warning("%s: %s; closing", self.name, exc)
                    self.send(generic_nack(nack_sequence(exc), exc.command_status))
                    break
                if frames:
                    self.last_rx = time.monotonic()
                # Responses (a deliver_sm_resp, say) never wait behind requests that
                # are held back by the inbound window; requests keep their order.
                deferred: deque[bytes] = deque()
                for i, frame in enumerate(frames, 1):
                    if self.closed.is_set():
                        break
                    if frame[4] & 0x80 or (not deferred and self.handling < self.inbound_window):
                        self._dispatch(frame)
                    else:
                        deferred.append(frame)
                    if i % YIELD_EVERY == 0:
                        # A read can hold thousands of small PDUs: let others run.
                        await asyncio.sleep(0)
                while deferred and not self.closed.is_set():
                    await self._wait_for_room()
                    while deferred and self.handling < self.inbound_window:
                        self._dispatch(deferred.popleft())
                if self.writer.transport.get_write_buffer_size() > self.write_buffer_limit:
                    await self.writer.drain()
                # The next read is often already buffered (no suspension): yield here too.
                await asyncio.sleep(0)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("%s: connection lost: %s", self.name, exc)
        finally:
            keeper.cancel()
            await self.close()

    async def _wait_for_room(self) -> None:
        """Backpressure: wait (not reading) until a request slot is free."""
        while self.handling >= self.inbound_window and not self.closed.is_set():
            self._room.clear()
            closed = asyncio.ensure_future(self.closed.wait())
            room = asyncio.ensure_future(self._room.wait())
            try:
                await asyncio.wait((closed, room), return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                room.cancel()

    def _dispatch(self, frame: bytes) -> None:
        try:
            pdu = decode(frame)
        except PduError as exc:
            self._answer_error(exc)
            return
        if self._on_pdu is not None:
            self._on_pdu("in", pdu.command_id, pdu.command_status)
        if pdu.command_id & 0x80000000:
            req = self._pending.pop(pdu.sequence_number, None)
            if req is not None:
                self._finish(req, pdu)
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
        self._in_request = True
        self.frame = frame
        try:
            self.handle_request(pdu)
        finally:
            self._in_request = False
            self.frame = b""

    def _answer_error(self, exc: PduError) -> None:
        log.info("%s: bad PDU: %s", self.name, exc)
        cid = exc.command_id
        seq = nack_sequence(exc)
        if not exc.in_sync:
            self.send(generic_nack(seq, exc.command_status))
            self.spawn(self._close_soon())
            return
        if cid is None or is_response(cid) or cid in NO_RESPONSE:
            if cid is not None and is_response(cid):
                req = self._pending.pop(seq, None)
                if req is not None:
                    self._finish(req, exc)
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
        """Run `coro` as a task of this session. Started while a request is being
        handled, it holds one slot of the inbound window until it finishes."""
        task: asyncio.Task[Any] = self._loop.create_task(coro)
        self._tasks.add(task)
        if self._in_request:
            self.handling += 1
            if self.handling > self.handling_peak:
                self.handling_peak = self.handling
            task.add_done_callback(self._request_task_done)  # one callback, not two
        else:
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """What escapes a request's task is logged here (rate-limited), never left as
        an unretrieved exception."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None or isinstance(exc, SessionClosed):
            return
        self.task_failures += 1
        if self.task_failures % TIMEOUT_LOG_EVERY == 1:
            log.error(
                "%s: handling a request failed (%d so far)",
                self.name,
                self.task_failures,
                exc_info=exc,
            )

    def _request_task_done(self, task: asyncio.Task[Any]) -> None:
        self._task_done(task)
        self._request_done(task)

    def _request_done(self, task: asyncio.Task[Any]) -> None:
        self.handling -= 1
        self.last_rx = time.monotonic()  # the idle clock restarts when we finish
        if self.handling < self.inbound_window:
            self._room.set()

    # ------------------------------------------------------------ keepalive
    async def _keepalive(self) -> None:
        try:
            while not self.closed.is_set():
                await asyncio.sleep(min(self.enquire_link_interval, self.inactivity_timeout) / 2)
                if self.handling:
                    continue  # the peer waits for us (backpressure), it is not idle
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
        self._flush()  # the unbind_resp or generic_nack goes out before we close
        with contextlib.suppress(Exception):
            await self.writer.drain()
        await self.close()

    async def close(self) -> None:
        if self.closed.is_set():
            return
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        self.closed.set()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        requests = list(self._pending.values())
        self._pending.clear()  # emptied in place: a sweep under way sees it too
        for req in requests:
            self._finish(req, SessionClosed(self.name))
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        self.on_closed()

    def on_closed(self) -> None:
        """Hook for subclasses: the connection is gone."""


class Window:
    """The send window: at most `size` requests awaiting their response, the others
    waiting in order. asyncio.Semaphore does the same but scans its waiters with a
    generator on every acquire; this is on the path of every request."""

    __slots__ = ("_waiters", "size", "used")

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return 0 if self._waiters else max(self.size - self.used, 0)

    def try_acquire(self) -> bool:
        """Take a slot if one is free now (and nobody waits for one)."""
        if self.used < self.size and not self._waiters:
            self.used += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.used < self.size and not self._waiters:
            self.used += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # release() hands its slot over: `used` stays counted
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot came with the cancellation: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.used -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def nack_sequence(exc: PduError) -> int:
    """The sequence_number of the answer to a PDU that could not be decoded: the one in
    its header when that was readable and is a valid sequence number (1 to
    0x7FFFFFFF), so the peer can tell which request failed; otherwise 0 (SMPP allows a
    generic_nack with a null sequence number when the offending PDU cannot be told)."""
    seq = exc.sequence_number
    return seq if seq is not None and 0 < seq <= 0x7FFFFFFF else 0


def _resp_table() -> dict[int, type[Pdu]]:
    from smppcodecs.pdu import PDU_CLASSES

    table: dict[int, type[Pdu]] = {}
    for cid in PDU_CLASSES:
        if not is_response(cid) and (cid | 0x80000000) in PDU_CLASSES:
            table[cid] = PDU_CLASSES[cid | 0x80000000]
    return table


_RESPONSES = _resp_table()
