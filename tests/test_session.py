"""SmppSession requests over a real socket: request_all (one coroutine sending many
requests within the window, each result in order, failures per request), request_cb
(answered by callback exactly once, whatever comes late), the deadline sweep and the
slot of a request whose waiter gives up."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from bounceback.smpp.session import SessionClosed, SmppSession
from harness import wait_until
from smppcodecs.constants import CommandId, CommandStatus
from smppcodecs.framer import Framer
from smppcodecs.pdu import GenericNack, Pdu, SubmitSm, SubmitSmResp, decode

HANG_GUARD = 20.0


class Peer:
    """An SMSC that answers submit_sm by destination: "ok…" with status 0, "err…"
    with 0x45, "silent…" never, "late…" only when `answer_late` is called, "close…" by
    dropping the connection. It records how many requests were unanswered at most
    (the sender's window as seen from here)."""

    def __init__(self) -> None:
        self.late: list[tuple[asyncio.StreamWriter, SubmitSm]] = []
        self.received: list[str] = []
        self.unanswered = 0
        self.most_unanswered = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = Framer()
        try:
            while data := await reader.read(65536):
                for frame in framer.feed(data):
                    pdu = decode(frame)
                    assert isinstance(pdu, SubmitSm)
                    dest = pdu.destination_addr
                    self.received.append(dest)
                    self.unanswered += 1
                    self.most_unanswered = max(self.most_unanswered, self.unanswered)
                    if dest.startswith("close"):
                        writer.close()
                        return
                    if dest.startswith("silent"):
                        continue
                    if dest.startswith("late"):
                        self.late.append((writer, pdu))
                        continue
                    # Answer a little later, so that requests pile up to the window.
                    asyncio.get_running_loop().call_later(0.01, self.answer, writer, pdu)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def answer_late(self) -> None:
        """Answer the "late…" requests now (with status 0)."""
        late, self.late = self.late, []
        for writer, pdu in late:
            self.answer(writer, pdu)

    def answer(self, writer: asyncio.StreamWriter, pdu: SubmitSm) -> None:
        self.unanswered -= 1
        status = 0 if pdu.destination_addr.startswith(("ok", "late")) else 0x45
        resp = SubmitSmResp(
            sequence_number=pdu.sequence_number,
            command_status=status,
            message_id=f"id-{pdu.destination_addr}" if status == 0 else "",
        )
        if not writer.is_closing():
            writer.write(resp.encode())


@asynccontextmanager
async def session_to(peer: Peer, **kw: float) -> AsyncIterator[SmppSession]:
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = SmppSession(reader, writer, name="test", **kw)  # type: ignore[arg-type]
    task = asyncio.create_task(session.run())
    try:
        yield session
    finally:
        await session.close()
        await asyncio.wait_for(task, HANG_GUARD)
        server.close()
        await server.wait_closed()


def submits(*dests: str) -> list[Pdu]:
    return [SubmitSm(sequence_number=0, destination_addr=d) for d in dests]


async def test_request_all_results_in_order_within_the_window() -> None:
    peer = Peer()
    dests = ["ok1", "err2", "ok3", "silent4", "ok5", "err6", "ok7"]
    async with session_to(peer, window=2, response_timeout=0.5) as s:
        results = await asyncio.wait_for(s.request_all(submits(*dests)), HANG_GUARD)
        assert peer.received == dests  # sent in order
        assert peer.most_unanswered == 2  # never more than the window outstanding
        assert len(results) == len(dests)
        for dest, got in zip(dests, results, strict=True):
            if dest.startswith("silent"):
                assert isinstance(got, TimeoutError)
            else:
                assert isinstance(got, SubmitSmResp)
                assert got.command_status == (0 if dest.startswith("ok") else 0x45)
                if got.command_status == 0:
                    assert got.message_id == f"id-{dest}"
        assert s.timeouts == 1
        assert s.outstanding == 0
        # Every slot came back: a full window's worth of requests goes at once.
        again = await asyncio.wait_for(s.request_all(submits("ok8", "ok9")), HANG_GUARD)
        assert [r.command_status for r in again if isinstance(r, Pdu)] == [0, 0]


async def test_request_all_when_the_peer_goes_away() -> None:
    peer = Peer()
    dests = ["ok1", "close2", "ok3", "ok4"]
    async with session_to(peer, window=1, response_timeout=30.0) as s:
        results = await asyncio.wait_for(s.request_all(submits(*dests)), HANG_GUARD)
        assert isinstance(results[0], SubmitSmResp)
        assert results[0].command_status == 0
        # The one in flight and the ones never sent each say the session closed.
        assert all(isinstance(r, SessionClosed) for r in results[1:])
        assert s.closed.is_set()
        assert s.outstanding == 0
        assert s.timeouts == 0


@pytest.mark.parametrize("window", [1, 3])
async def test_request_all_empty_and_after_close(window: int) -> None:
    peer = Peer()
    async with session_to(peer, window=window) as s:
        assert await s.request_all([]) == []
        await s.close()
        results = await s.request_all(submits("ok1", "ok2"))
        assert [type(r) for r in results] == [SessionClosed, SessionClosed]
        assert peer.received == []


class Answers:
    """What request_cb's callbacks got, per destination, in the order they came."""

    def __init__(self) -> None:
        self.got: dict[str, list[Pdu | Exception]] = {}
        self.order: list[str] = []
        self.event = asyncio.Event()

    def callback(self, dest: str) -> Callable[[Pdu | Exception], None]:
        def answered(result: Pdu | Exception) -> None:
            self.got.setdefault(dest, []).append(result)
            self.order.append(dest)
            self.event.set()

        return answered

    async def wait_for(self, *dests: str) -> None:
        while not all(d in self.got for d in dests):
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), HANG_GUARD)


async def test_request_cb_answers_every_request_once_and_ignores_late_responses() -> None:
    peer = Peer()
    answers = Answers()
    dests = ["ok1", "err2", "silent3", "late4", "ok5"]
    async with session_to(peer, window=5, response_timeout=0.2) as s:
        for dest in dests:
            assert s.request_cb(submits(dest)[0], answers.callback(dest))
        assert s.free == 0
        assert not s.request_cb(submits("ok6")[0], answers.callback("ok6"))  # window full
        await answers.wait_for(*dests)
        assert isinstance(answers.got["silent3"][0], TimeoutError)
        assert isinstance(answers.got["late4"][0], TimeoutError)
        # The late response arrives after its request timed out: it answers nothing.
        peer.answer_late()
        assert s.request_cb(submits("ok7")[0], answers.callback("ok7"))
        await answers.wait_for("ok7")  # sent after the late response: read after it
        assert {d: len(r) for d, r in answers.got.items()} == dict.fromkeys([*dests, "ok7"], 1)
        ok1, err2, ok5 = answers.got["ok1"][0], answers.got["err2"][0], answers.got["ok5"][0]
        assert isinstance(ok1, SubmitSmResp) and ok1.message_id == "id-ok1"
        assert isinstance(err2, SubmitSmResp) and err2.command_status == 0x45
        assert isinstance(ok5, SubmitSmResp) and ok5.command_status == 0
        assert "ok6" not in answers.got
        assert s.timeouts == 2
        assert s.outstanding == 0
        assert s.free == 5


async def test_the_sweep_expires_each_request_at_its_own_deadline() -> None:
    peer = Peer()
    answers = Answers()
    async with session_to(peer, window=3, response_timeout=30.0) as s:
        # The later request has the earlier deadline: it times out first.
        assert s.request_cb(submits("silent-long")[0], answers.callback("long"), 0.6)
        assert s.request_cb(submits("silent-short")[0], answers.callback("short"), 0.05)
        await answers.wait_for("short")
        assert answers.order == ["short"]
        assert s.outstanding == 1
        await answers.wait_for("long")
        assert answers.order == ["short", "long"]
        assert all(isinstance(r[0], TimeoutError) for r in answers.got.values())
        assert s.timeouts == 2


async def test_callbacks_and_futures_hear_the_session_close_once() -> None:
    peer = Peer()
    answers = Answers()
    async with session_to(peer, window=3, response_timeout=30.0) as s:
        assert s.request_cb(submits("silent1")[0], answers.callback("cb"))
        fut = s.try_request(submits("silent2")[0])
        assert fut is not None
        waiter = asyncio.create_task(s.request(submits("silent3")[0]))
        await wait_until(lambda: s.outstanding == 3, HANG_GUARD)
        await s.close()
        assert [type(r) for r in answers.got["cb"]] == [SessionClosed]
        assert isinstance(fut.exception(), SessionClosed)
        with pytest.raises(SessionClosed):
            await waiter
        assert s.outstanding == 0
        assert s.timeouts == 0
        assert not s.request_cb(submits("ok4")[0], answers.callback("after"))
        assert "after" not in answers.got


async def test_a_cancelled_request_gives_its_slot_back_at_once() -> None:
    peer = Peer()
    async with session_to(peer, window=1, response_timeout=30.0) as s:
        waiter = asyncio.create_task(s.request(submits("silent1")[0]))
        await wait_until(lambda: s.outstanding == 1, HANG_GUARD)
        assert s.free == 0
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert s.outstanding == 0
        assert s.free == 1
        resp = await asyncio.wait_for(s.request(submits("ok2")[0]), HANG_GUARD)
        assert resp.command_status == 0


async def nack_for(data: bytes) -> GenericNack:
    """What a session answers when its peer sends `data` (a PDU that does not frame)."""
    answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        try:
            answer.set_result(await reader.readexactly(16))
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        session = SmppSession(reader, writer, name="test")
        await asyncio.wait_for(session.run(), HANG_GUARD)  # it closes after the nack
        pdu = decode(await asyncio.wait_for(answer, HANG_GUARD))
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(pdu, GenericNack)
    assert pdu.command_status == CommandStatus.ESME_RINVCMDLEN
    return pdu


@pytest.mark.parametrize(
    ("header", "sequence"),
    [
        # Over the maximum: the header is read as sent and its sequence_number echoed.
        ((0x7FFFFFF0, CommandId.SUBMIT_SM, 0, 7), 7),
        # Below the 16-octet header: what follows is not its header; 0.
        ((3, CommandId.SUBMIT_SM, 0, 7), 0),
        # A sequence_number SMPP does not allow (above 0x7FFFFFFF) is not echoed.
        ((0x7FFFFFF0, CommandId.SUBMIT_SM, 0, 0x80000007), 0),
    ],
)
async def test_generic_nack_for_a_bad_command_length(
    header: tuple[int, int, int, int], sequence: int
) -> None:
    nack = await nack_for(struct.pack(">IIII", *header))
    assert nack.sequence_number == sequence
