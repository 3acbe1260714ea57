"""Hardening: access control, hostile input, resource bounds, faults, retention, masking.

Hostile peers are raw blocking sockets driven from threads, their payload built
before memory is measured, so tracemalloc sees only what the proxy (and the
well-behaved sender) allocate. Every attack runs while a well-behaved smpplib
sender (`Steady`) keeps submitting, and the test checks it was answered during the
attack and got every receipt. Bounds are on octets, counts and traced memory,
never on elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import socket
import sqlite3
import struct
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from bounceback.config.settings import load_config
from bounceback.core import engine
from bounceback.core.access import ConnectionLimits, FailedBinds, address_key
from bounceback.core.model import State
from bounceback.gateway.shell import Gateway
from bounceback.smpp.server import EsmeSession
from bounceback.smpp.session import READ_SIZE, WRITE_BUFFER_LIMIT
from bounceback.store.sqlite import Change, SqliteStore
from harness import bind_sender, free_port, gateway, simulator, wait_until, write_config
from smppcodecs.constants import CommandId
from smppcodecs.constants import CommandStatus as S
from smppcodecs.framer import Framer
from smppcodecs.pdu import BindTransceiver, EnquireLink, SubmitSm, decode
from smpplib_peer import SmpplibSender, receipt_fields

SIM = {"receipt_delay": 0.02}
MIB = 1 << 20

# ================================================================ pure access logic


def test_address_keys() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    # One IPv6 host usually holds a whole /64: count it as one address.
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::5") != address_key("2001:db8:1:2::5")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("not-an-ip") == "not-an-ip"


def test_connection_limits() -> None:
    limits = ConnectionLimits(max_total=3, max_per_address=2)
    assert limits.open("10.0.0.1") is None
    assert limits.open("10.0.0.1") is None
    assert limits.open("10.0.0.1") == "per_address"
    assert limits.open("10.0.0.2") is None
    assert limits.open("10.0.0.3") == "total"
    assert limits.total == 3 and limits.count("10.0.0.1") == 2
    limits.close("10.0.0.1")
    assert limits.open("10.0.0.3") is None
    for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"):  # 10.0.0.9 was never open
        limits.close(a)
    assert limits.total == 0 and limits.count("10.0.0.1") == 0
    with pytest.raises(ValueError):
        ConnectionLimits(0, 1)


def test_failed_binds_slow_down_then_lock_out() -> None:
    fb = FailedBinds(limit=5, window=60.0, lockout=300.0, slow_after=2, delay_base=1.0)
    outcomes = [fb.failed("10.0.0.1", 100.0 + i) for i in range(5)]
    assert [o.delay for o in outcomes] == [0.0, 0.0, 1.0, 2.0, 4.0]
    assert [o.failures for o in outcomes] == [1, 2, 3, 4, 5]
    assert [o.lockout_started for o in outcomes] == [False, False, False, False, True]
    assert outcomes[-1].locked_for == 300.0
    assert fb.locked("10.0.0.1", 104.0) == 300.0
    assert fb.locked("10.0.0.1", 403.0) == 1.0
    assert fb.locked("10.0.0.1", 404.0) == 0.0
    assert fb.locked("10.0.0.2", 104.0) == 0.0  # other addresses are not affected
    # A failure during the lockout does not extend it or start another.
    again = fb.failed("10.0.0.1", 200.0)
    assert not again.lockout_started and again.locked_for == 204.0
    # After the lockout the count starts afresh.
    assert fb.failed("10.0.0.1", 405.0).failures == 1


def test_failed_binds_window_slides_and_success_clears() -> None:
    fb = FailedBinds(limit=3, window=10.0, lockout=60.0, slow_after=1, delay_base=0.5)
    assert fb.failed("a", 0.0).failures == 1
    assert fb.failed("a", 5.0).failures == 2
    assert fb.failed("a", 11.0).failures == 2  # the one at 0.0 left the window
    fb.succeeded("a")
    assert len(fb) == 0
    assert fb.failed("a", 12.0).failures == 1
    assert fb.delay_for(1) == 0.0 and fb.delay_for(2) == 0.5 and fb.delay_for(9) == 4.0


def test_failed_binds_table_is_bounded() -> None:
    fb = FailedBinds(limit=3, window=10.0, lockout=60.0, max_tracked=100)
    for _ in range(3):
        fb.failed("192.0.2.1", 0.0)
    assert fb.locked("192.0.2.1", 1.0) == 59.0
    for i in range(10_000):
        now = 1.0 + i / 1000
        fb.failed(f"10.0.{i // 256}.{i % 256}", now)
        if i % 50 == 0:
            assert fb.locked("192.0.2.1", now) > 0  # still knocking, still locked
        assert len(fb) <= 100
    assert len(fb) == 100
    assert fb.prune(100.0) == 100  # nothing locked or recent is left by then
    assert len(fb) == 0


# ================================================================ helpers


def hardening_config(
    tmp: Path, carrier_port: int, server: str = "", accounts: str = "", **kw: Any
) -> Path:
    """The harness config plus [server] keys and extra [[accounts]]."""
    path = write_config(tmp, carrier_port, **kw)
    text = path.read_text().replace("submit_wait = 3.0\n", f"submit_wait = 3.0\n{server}\n", 1)
    path.write_text(text + "\n" + accounts)
    return path


MALLORY = """
[[accounts]]
system_id = "mallory"
password = "m-pw"
window = 4
"""


class Steady:
    """A well-behaved smpplib sender submitting one message after another in a thread."""

    def __init__(self, port: int, prefix: str = "4477009100") -> None:
        self.sender = SmpplibSender("127.0.0.1", port)
        self.prefix = prefix
        self.answers: list[tuple[float, int, str]] = []  # (monotonic time, status, id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    async def start(self) -> None:
        assert await asyncio.to_thread(self.sender.bind, "transceiver", "acme", "acme-pw") == 0
        self.sender.listen()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        await wait_until(lambda: len(self.answers) >= 2)

    def _run(self) -> None:
        i = 0
        try:
            while not self._stop.is_set():
                seq = self.sender.submit(f"{self.prefix}{i:04d}", b"steady")
                status, mid = self.sender.wait_resp(seq, 15.0)
                self.answers.append((time.monotonic(), status, mid))
                i += 1
                self._stop.wait(0.02)
        except BaseException as exc:  # reported by check()
            self.error = exc

    def answered_between(self, start: float, end: float) -> int:
        return sum(1 for t, _, _ in self.answers if start <= t <= end)

    async def answered_since(self, start: float, n: int = 3) -> None:
        """Wait until `n` submits were answered after `start` (for short attacks)."""
        await wait_until(lambda: sum(1 for t, _, _ in self.answers if t >= start) >= n, 20.0)

    async def check(self) -> None:
        """Stop; every submit was accepted and every message got its DELIVRD receipt."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 20.0)
        assert self.error is None, self.error
        assert self.answers and all(st == 0 for _, st, _ in self.answers), self.answers
        ids = {mid for _, _, mid in self.answers}
        got = await asyncio.to_thread(self.sender.wait_delivered, len(ids), 20.0)
        fields = [receipt_fields(p) for p in got]
        assert {f["id"] for f in fields} == ids
        assert all(f["stat"] == "DELIVRD" for f in fields)
        await asyncio.to_thread(self.sender.close)


@contextlib.asynccontextmanager
async def steady(gw: Gateway) -> AsyncIterator[Steady]:
    s = Steady(gw.port)
    await s.start()
    try:
        yield s
    finally:
        if not s._stop.is_set():
            s._stop.set()
            await asyncio.to_thread(s.sender.close)


class RawPeer:
    """A blocking socket for hostile byte streams (used from threads)."""

    def __init__(self, port: int, *, rcvbuf: int = 0, sndbuf: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(10.0)
        self.sock.connect(("127.0.0.1", port))
        self.framer = Framer(max_command_length=1 << 20)
        self.port = self.sock.getsockname()[1]

    def send_some(self, data: bytes, timeout: float, chunk: int = 16384) -> int:
        """Send until done, an error, or no progress for `timeout`; returns octets sent."""
        self.sock.settimeout(timeout)
        sent = 0
        view = memoryview(data)
        try:
            while sent < len(data):
                sent += self.sock.send(view[sent : sent + chunk])
        except (TimeoutError, OSError):
            pass
        finally:
            self.sock.settimeout(10.0)
        return sent

    def read_frames(self, n: int, timeout: float = 20.0) -> list[bytes]:
        """Read until `n` whole PDUs arrived (or EOF / timeout)."""
        out: list[bytes] = []
        self.sock.settimeout(timeout)
        while len(out) < n:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not data:
                break
            out.extend(self.framer.feed(data))
        return out

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True when the proxy closed the connection (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except ConnectionError:
            return True
        except (TimeoutError, OSError):
            return False

    def bind(self, system_id: str, password: str) -> int:
        self.sock.sendall(
            BindTransceiver(sequence_number=1, system_id=system_id, password=password).encode()
        )
        # The bind_resp comes first; on a bound transceiver the account's pending
        # receipts may follow it in the same read, and are left unanswered here.
        frames = self.read_frames(1)
        assert frames, "no answer to bind_transceiver"
        resp = decode(frames[0])
        assert resp.command_id == CommandId.BIND_TRANSCEIVER_RESP
        return resp.command_status

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def session_of(gw: Gateway, peer: RawPeer) -> EsmeSession:
    for s in gw.intake.connections:
        if s.peer.endswith(f":{peer.port}"):
            return s
    raise AssertionError("no session for the peer")


def shrink_kernel_buffers(session: EsmeSession, size: int = 16384) -> None:
    """Make the kernel's share of the buffering on the proxy's side small and fixed, so
    what the proxy itself holds back shows in what the peer manages to send."""
    sock = session.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


@contextlib.contextmanager
def traced() -> Iterator[list[int]]:
    """Peak traced memory allocated inside the block, in octets (result in [0])."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    out: list[int] = []
    try:
        yield out
    finally:
        out.append(tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.stop()


def submit_bytes(n: int, prefix: str, start_seq: int = 2) -> bytes:
    return b"".join(
        SubmitSm(
            sequence_number=start_seq + i,
            source_addr="Mallory",
            destination_addr=f"{prefix}{i:06d}",
            short_message=b"flood",
            registered_delivery=1,
        ).encode()
        for i in range(n)
    )


# ================================================================ access over sockets


async def test_allowlist_refuses_other_addresses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    accounts = """
[[accounts]]
system_id = "office"
password = "o-pw"
allowed_ips = ["10.0.0.0/8", "2001:db8::/32"]

[[accounts]]
system_id = "local"
password = "l-pw"
allowed_ips = ["127.0.0.0/8"]
"""
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0, accounts=accounts)) as gw,
    ):
        office = SmpplibSender("127.0.0.1", gw.port)
        # Right password, wrong network: the account does not exist from here.
        assert await asyncio.to_thread(office.bind, "transceiver", "office", "o-pw") == (
            S.ESME_RINVSYSID
        )
        wrong_pw = SmpplibSender("127.0.0.1", gw.port)
        # No password oracle from outside the allowlist either.
        assert await asyncio.to_thread(wrong_pw.bind, "transceiver", "office", "nope") == (
            S.ESME_RINVSYSID
        )
        assert "'office' may not bind from this address (allowed_ips)" in caplog.text
        local = SmpplibSender("127.0.0.1", gw.port)
        assert await asyncio.to_thread(local.bind, "transceiver", "local", "l-pw") == 0
        assert gw.counters.get("binds_failed") == 2
        await asyncio.to_thread(local.close)
        for s in (office, wrong_pw):
            await asyncio.to_thread(s.close)


async def test_failed_binds_slow_down_then_lock_the_address_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    server = "failed_bind_limit = 4\nfailed_bind_window = 60.0\nlockout_seconds = 1.5"
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0, server=server)) as gw,
        steady(gw) as good,
    ):
        gw.access.binds.delay_base = 0.05  # keep the test quick; the schedule is unit-tested
        start = time.monotonic()
        statuses = []
        for pw in ("bad1", "bad2", "bad3", "bad4"):
            peer = await asyncio.to_thread(RawPeer, gw.port)
            statuses.append(await asyncio.to_thread(peer.bind, "acme", pw))
            peer.close()
        assert statuses == [S.ESME_RINVPASWD] * 4
        assert gw.counters.get("binds_delayed") == 2  # the 3rd and 4th were slowed down
        assert gw.counters.get("bind_lockouts") == 1
        assert "4 failed binds within 60 s: address locked out for 2 s" in caplog.text
        # Locked out: even the right password is refused, and the connection closed.
        peer = await asyncio.to_thread(RawPeer, gw.port)
        assert await asyncio.to_thread(peer.bind, "acme", "acme-pw") == S.ESME_RBINDFAIL
        assert await asyncio.to_thread(peer.closed_by_peer)
        peer.close()
        assert gw.counters.get("binds_refused_locked_out") == 1
        assert "address locked out for another" in caplog.text
        end = time.monotonic()
        # The sender bound before the lockout was never disturbed.
        assert good.answered_between(start, end) >= 1
        # After the lockout the address may bind again.
        await asyncio.sleep(1.6)
        peer = await asyncio.to_thread(RawPeer, gw.port)
        assert await asyncio.to_thread(peer.bind, "acme", "acme-pw") == 0
        peer.close()
        await good.check()


async def test_connection_limits_close_at_accept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    server = "max_connections = 4\nmax_connections_per_ip = 3"
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0, server=server)) as gw,
    ):
        peers = [await asyncio.to_thread(RawPeer, gw.port) for _ in range(3)]
        await wait_until(lambda: gw.access.connections.total == 3)
        extra = await asyncio.to_thread(RawPeer, gw.port)  # the 4th from one address
        assert await asyncio.to_thread(extra.closed_by_peer)
        assert gw.counters.get("connections_refused") == 1
        assert "max_connections_per_ip reached" in caplog.text
        # The admitted ones work (enquire_link answered before any bind).
        peers[0].sock.sendall(EnquireLink(sequence_number=5).encode())
        (frame,) = await asyncio.to_thread(peers[0].read_frames, 1)
        assert decode(frame).command_id == CommandId.ENQUIRE_LINK_RESP
        # Closing one frees its slot.
        peers.pop().close()
        await wait_until(lambda: gw.access.connections.total == 2)
        peers.append(await asyncio.to_thread(RawPeer, gw.port))
        await wait_until(lambda: gw.access.connections.total == 3)
        # The overall limit: lift the per-address one and fill up to max_connections.
        gw.access.connections.max_per_address = 100
        peers.append(await asyncio.to_thread(RawPeer, gw.port))
        await wait_until(lambda: gw.access.connections.total == 4)
        over = await asyncio.to_thread(RawPeer, gw.port)
        assert await asyncio.to_thread(over.closed_by_peer)
        assert gw.counters.get("connections_refused") == 2
        for p in [*peers, extra, over]:
            p.close()
        await wait_until(lambda: gw.access.connections.total == 0)


async def test_connection_that_never_binds_is_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0, server="bind_timeout = 0.5")) as gw,
    ):
        peer = await asyncio.to_thread(RawPeer, gw.port)
        assert await asyncio.to_thread(peer.closed_by_peer)
        assert "no bind within" in caplog.text
        await wait_until(lambda: gw.access.connections.total == 0)
        peer.close()


# ================================================================ hostile input


async def test_slowloris_before_bind_is_cut_by_the_bind_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0, server="bind_timeout = 1.0")) as gw,
        steady(gw) as good,
    ):
        bind = BindTransceiver(sequence_number=1, system_id="acme", password="acme-pw").encode()
        peer = await asyncio.to_thread(RawPeer, gw.port)

        def trickle() -> int:
            for i in range(len(bind)):
                peer.sock.sendall(bind[i : i + 1])
                if peer.closed_by_peer(0.15):
                    return i + 1
            return len(bind)

        start = time.monotonic()
        sent = await asyncio.to_thread(trickle)
        end = time.monotonic()
        assert sent < len(bind)  # closed before the bind was complete
        assert "no bind within 1 s; closing" in caplog.text
        assert good.answered_between(start, end) >= 1
        peer.close()
        await good.check()


async def test_slowloris_after_bind_is_cut_by_the_inactivity_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    server = "inactivity_timeout = 1.0"
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0, server=server, accounts=MALLORY)) as gw,
        steady(gw) as good,
    ):
        peer = await asyncio.to_thread(RawPeer, gw.port)
        assert await asyncio.to_thread(peer.bind, "mallory", "m-pw") == 0
        pdu = submit_bytes(1, "4477009200")

        def trickle() -> int:
            for i in range(len(pdu)):
                try:
                    peer.sock.sendall(pdu[i : i + 1])
                except OSError:
                    return i
                if peer.closed_by_peer(0.15):
                    return i + 1
            return len(pdu)

        start = time.monotonic()
        sent = await asyncio.to_thread(trickle)
        end = time.monotonic()
        assert sent < len(pdu)  # a byte at a time is not activity: closed mid-PDU
        assert "esme:mallory" in caplog.text and "; closing" in caplog.text
        assert good.answered_between(start, end) >= 1
        peer.close()
        await good.check()


async def test_huge_command_length_is_refused_without_buffering(tmp_path: Path) -> None:
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0)) as gw,
        steady(gw) as good,
    ):
        junk = bytes(8 * MIB)
        peer = await asyncio.to_thread(RawPeer, gw.port)
        start = time.monotonic()
        with traced() as peak:
            # A header announcing a 2 GiB submit_sm, then megabytes of "body".
            peer.sock.sendall(struct.pack(">IIII", 0x7FFFFFF0, CommandId.SUBMIT_SM, 0, 7))
            frames = await asyncio.to_thread(peer.read_frames, 1)
            sent = await asyncio.to_thread(peer.send_some, junk, 2.0)
            closed = await asyncio.to_thread(peer.closed_by_peer)
        end = time.monotonic()
        (frame,) = frames
        nack = decode(frame)
        assert nack.command_id == CommandId.GENERIC_NACK
        assert nack.command_status == S.ESME_RINVCMDLEN
        assert nack.sequence_number == 7
        assert closed
        assert sent < len(junk)  # the proxy stopped taking octets
        assert peak[0] < 2 * MIB, peak  # nowhere near the announced length
        await wait_until(lambda: gw.access.connections.total == 1)  # only the good sender
        assert end > start
        await good.answered_since(start)
        peer.close()
        await good.check()


def framed_garbage(n: int, seed: int) -> bytes:
    """`n` well-framed PDUs with random command ids (never a bind) and random bodies."""
    rng = random.Random(seed)
    # Never a bind (that would count towards a lockout) nor an unbind (that ends it).
    binds = {
        CommandId.BIND_RECEIVER,
        CommandId.BIND_TRANSMITTER,
        CommandId.BIND_TRANSCEIVER,
        CommandId.UNBIND,
    }
    ids = [int(c) for c in CommandId if c not in binds]
    out = bytearray()
    for i in range(n):
        body = rng.randbytes(rng.randrange(0, 48))
        cid = rng.choice(ids) if rng.random() < 0.5 else rng.getrandbits(32)
        if cid in binds:
            cid = 0x0000_0099
        out += struct.pack(">IIII", 16 + len(body), cid, rng.getrandbits(32), i + 1) + body
    return bytes(out)


async def test_garbage_streams(tmp_path: Path) -> None:
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0)) as gw,
        steady(gw) as good,
    ):
        # 1. Well-framed garbage: every PDU is answered or ignored, the stream stays in
        #    sync (a final enquire_link is answered), memory stays bounded.
        data = framed_garbage(20_000, seed=8)
        last = EnquireLink(sequence_number=0x7FFFFFF0).encode()
        peer = await asyncio.to_thread(RawPeer, gw.port)
        got: list[bytes] = []

        def reader() -> None:
            while True:
                frames = peer.read_frames(1, timeout=10.0)
                if not frames:
                    return
                got.extend(frames)
                if any(decode(f).sequence_number == 0x7FFFFFF0 for f in frames):
                    return

        start = time.monotonic()
        with traced() as peak:
            t = threading.Thread(target=reader)
            t.start()
            await asyncio.to_thread(peer.sock.sendall, data + last)
            await asyncio.to_thread(t.join, 30.0)
        end = time.monotonic()
        answers = [decode(f) for f in got]
        assert answers[-1].command_id == CommandId.ENQUIRE_LINK_RESP
        assert answers[-1].sequence_number == 0x7FFFFFF0
        assert 1000 < len(answers) <= 20_001
        assert all(a.command_status != 0 or a.command_id == CommandId.ENQUIRE_LINK_RESP
                   or a.command_id & 0x80000000 for a in answers)  # fmt: skip
        assert peak[0] < 8 * MIB, peak  # the stream itself was 0.6 MiB; nothing accumulates
        assert good.answered_between(start, end) >= 1
        peer.close()
        # 2. Unframed garbage: a length below the header is fatal: generic_nack, close.
        peer = await asyncio.to_thread(RawPeer, gw.port)
        noise = b"\x00\x00\x00\x03" + random.Random(9).randbytes(64 * 1024)
        await asyncio.to_thread(peer.send_some, noise, 2.0)
        frames = await asyncio.to_thread(peer.read_frames, 1)
        assert frames and decode(frames[0]).command_status == S.ESME_RINVCMDLEN
        assert await asyncio.to_thread(peer.closed_by_peer)
        peer.close()
        await good.check()


async def test_twenty_thousand_enquire_links_in_one_write(tmp_path: Path) -> None:
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0)) as gw,
        steady(gw) as good,
    ):
        n = 20_000
        data = b"".join(EnquireLink(sequence_number=i + 1).encode() for i in range(n))
        peer = await asyncio.to_thread(RawPeer, gw.port)
        start = time.monotonic()
        with traced() as peak:
            t = threading.Thread(target=peer.sock.sendall, args=(data,))
            t.start()
            frames = await asyncio.to_thread(peer.read_frames, n)
            await asyncio.to_thread(t.join, 10.0)
        end = time.monotonic()
        assert len(frames) == n
        assert all(f[4:8] == b"\x80\x00\x00\x15" for f in frames)  # enquire_link_resp
        assert [struct.unpack_from(">I", f, 12)[0] for f in frames] == list(range(1, n + 1))
        assert peak[0] < 4 * MIB, peak  # 320 KiB in and out; nothing per PDU is kept
        assert good.answered_between(start, end) >= 1
        peer.close()
        await good.check()


async def test_a_peer_that_does_not_read_stops_being_read(tmp_path: Path) -> None:
    async with (
        simulator(SIM) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0)) as gw,
        steady(gw) as good,
    ):
        n = 160_000  # 2.5 MiB of enquire_link; 2.5 MiB of answers nobody reads
        data = b"".join(EnquireLink(sequence_number=i + 1).encode() for i in range(n))
        peer = await asyncio.to_thread(RawPeer, gw.port, rcvbuf=8192, sndbuf=8192)
        await wait_until(
            lambda: any(s.peer.endswith(f":{peer.port}") for s in gw.intake.connections)
        )
        session = session_of(gw, peer)
        shrink_kernel_buffers(session)
        biggest = 0
        start = time.monotonic()
        with traced() as peak:
            sending = asyncio.ensure_future(asyncio.to_thread(peer.send_some, data, 1.0))
            while not sending.done():
                biggest = max(biggest, session.writer.transport.get_write_buffer_size())
                await asyncio.sleep(0.005)
            sent = sending.result()
        end = time.monotonic()
        # The proxy stopped reading once its answers piled up: the peer could not send
        # everything, and the proxy's unsent answers stayed near the limit.
        assert sent < len(data)
        assert WRITE_BUFFER_LIMIT // 2 < biggest <= WRITE_BUFFER_LIMIT + READ_SIZE, biggest
        assert peak[0] < 6 * MIB, peak
        assert good.answered_between(start, end) >= 1
        # Now read: everything sent is answered, in order.
        t = threading.Thread(target=peer.send_some, args=(data[sent:], 10.0))
        t.start()
        frames = await asyncio.to_thread(peer.read_frames, n, 30.0)
        await asyncio.to_thread(t.join, 10.0)
        assert len(frames) == n
        assert struct.unpack_from(">I", frames[-1], 12)[0] == n
        peer.close()
        await good.check()


async def test_window_flood_is_held_back_by_backpressure(tmp_path: Path) -> None:
    # The flood goes to numbers whose carrier never answers, so each accepted submit
    # holds its slot of mallory's window (4) for submit_wait.
    scen = dict(SIM, rules=[{"prefix": "4479", "outcomes": ["no_response"]}])
    carrier = "window = 50\nsubmit_timeout = 30.0"
    async with simulator(scen) as sim:
        cfg = hardening_config(tmp_path, sim.port or 0, accounts=MALLORY, carrier=carrier)
        cfg.write_text(cfg.read_text().replace("submit_wait = 3.0", "submit_wait = 20.0"))
        async with gateway(cfg) as gw, steady(gw) as good:
            n = 20_000
            flood = submit_bytes(n, "4479")  # 1.3 MiB of submit_sm, no answer read back
            peer = await asyncio.to_thread(RawPeer, gw.port, sndbuf=16384)
            assert await asyncio.to_thread(peer.bind, "mallory", "m-pw") == 0
            session = session_of(gw, peer)
            shrink_kernel_buffers(session)
            start = time.monotonic()
            with traced() as peak:
                sent = await asyncio.to_thread(peer.send_some, flood, 1.0)
                rows = await gw.store.query(
                    "SELECT COUNT(*) FROM messages WHERE account = 'mallory'"
                )
            end = time.monotonic()
            assert session.inbound_window == 4
            assert session.handling_peak == 4  # never more in progress than the window
            assert rows[0][0] == 4  # nothing beyond the window was taken in
            assert sent < len(flood) // 2  # the rest waits in the sender's own buffers
            assert peak[0] < 4 * MIB, peak
            assert good.answered_between(start, end) >= 3
            peer.close()
            await good.check()


# ================================================================ faults


@contextlib.asynccontextmanager
async def cutting_front(target_port: int) -> AsyncIterator[tuple[int, list[int]]]:
    """Forwards to the simulator; the first submit_sm_resp coming back is cut in half
    and both connections are closed (a carrier reset mid-PDU). Yields (port, cuts)."""
    cuts: list[int] = []
    tasks: set[asyncio.Future[Any]] = set()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", target_port)

        async def up() -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    uw.write(data)
            uw.close()

        async def down() -> None:
            framer = Framer()
            with contextlib.suppress(OSError):
                while data := await ur.read(65536):
                    for f in framer.feed(data):
                        if not cuts and f[4:8] == b"\x80\x00\x00\x04":
                            cuts.append(len(f))
                            w.write(f[: len(f) // 2])
                            await w.drain()
                            w.close()
                            uw.close()
                            return
                        w.write(f)
            w.close()

        both = asyncio.gather(up(), down())
        tasks.add(both)
        await both

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), cuts
    finally:
        server.close()
        for t in tasks:
            t.cancel()


async def test_carrier_reset_mid_pdu_holds_and_resubmits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    async with (
        simulator(SIM) as sim,
        cutting_front(sim.port or 0) as (port, cuts),
        gateway(hardening_config(tmp_path, port)) as gw,
    ):
        s = SmpplibSender("127.0.0.1", gw.port)
        assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
        s.listen()
        seq = await asyncio.to_thread(s.submit, "447700900950", b"cut")
        status, mid = await asyncio.to_thread(s.wait_resp, seq)
        assert cuts  # the carrier really did send half a submit_sm_resp
        assert status == 0 and mid  # held, not lost, not an error
        assert "sim: connection lost" in caplog.text
        got = await asyncio.to_thread(s.wait_delivered, 1, 20.0)
        assert receipt_fields(got[0])["id"] == mid
        assert receipt_fields(got[0])["stat"] == "DELIVRD"
        msg = await gw.store.get(mid)
        assert msg is not None and msg.state.value == "delivered" and msg.attempts == 2
        assert sim.count_for("447700900950") == 2
        await asyncio.to_thread(s.close)


async def test_carrier_that_never_answers_submits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    scen = dict(SIM, rules=[{"number": "447700900960", "outcomes": ["no_response"]}])
    async with simulator(scen) as sim:
        cfg = hardening_config(tmp_path, sim.port or 0, carrier="submit_timeout = 1.0")
        cfg.write_text(cfg.read_text().replace("submit_wait = 3.0", "submit_wait = 0.3"))
        async with gateway(cfg) as gw:
            s = SmpplibSender("127.0.0.1", gw.port)
            assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
            s.listen()
            seq = await asyncio.to_thread(s.submit, "447700900960", b"silent")
            status, mid = await asyncio.to_thread(s.wait_resp, seq)
            answered_at = time.time()
            assert status == 0 and mid  # answered after submit_wait, before the carrier
            for _ in range(200):
                msg = await gw.store.get(mid)
                if msg is not None and msg.verdict is not None:
                    break
                await asyncio.sleep(0.05)
            assert msg is not None and msg.verdict is not None
            assert msg.verdict.reason == "timeout"
            assert msg.state.value in ("held", "submitting")
            assert msg.updated_at > answered_at  # the carrier's silence ended after
            assert "no answer to SubmitSm within 1.0 s" in caplog.text
            # Other messages still flow.
            seq = await asyncio.to_thread(s.submit, "447700900961", b"fine")
            assert (await asyncio.to_thread(s.wait_resp, seq))[0] == 0
            assert len(await asyncio.to_thread(s.wait_delivered, 1, 10.0)) == 1
            await asyncio.to_thread(s.close)


class LockingStore(SqliteStore):
    """A SQLite store whose writes fail with `error` while `locked` is set."""

    def __init__(self, *args: Any, error: str = "database is locked", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.locked = threading.Event()
        self.error = error
        self.refused = 0

    def _write(self, changes: list[Change]) -> None:
        if self.locked.is_set():
            self.refused += 1
            raise sqlite3.OperationalError(self.error)
        super()._write(changes)

    async def _exec_write(self, sql: str, params: Sequence[Any]) -> int:
        if self.locked.is_set():
            self.refused += 1
            raise sqlite3.OperationalError(self.error)
        return await super()._exec_write(sql, params)


@pytest.mark.parametrize("error", ["database is locked", "database or disk is full"])
async def test_store_failure_degrades_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: str
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    kind = "locked" if "locked" in error else "full"
    problems: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: problems.append(ctx))
    scen = {"receipt_delay": 0.8}
    async with simulator(scen) as sim:
        cfg = load_config(hardening_config(tmp_path, sim.port or 0))
        store = LockingStore(cfg.store.path, batch_delay=0.001, error=error)
        gw = Gateway(cfg, store=store)
        await gw.start()
        try:
            await wait_until(lambda: all(link.bound for link in gw.links.values()))
            s = SmpplibSender("127.0.0.1", gw.port)
            assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
            s.listen()
            # A message whose receipt will arrive while the store is failing.
            seq = await asyncio.to_thread(s.submit, "447700900970", b"before")
            status, before = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0
            store.locked.set()
            # New messages cannot be stored: the sender is told to try again later
            # (a temporary error), nothing is half-taken.
            for i in range(3):
                seq = await asyncio.to_thread(s.submit, f"44770090098{i}", b"during")
                assert (await asyncio.to_thread(s.wait_resp, seq)) == (S.ESME_RMSGQFUL, "")
            # The receipt is refused with ESME_RX_T_APPN; the carrier will retry it.
            await wait_until(lambda: sim.receipts_sent >= 1 and store.refused >= 5)
            await wait_until(lambda: gw.counters.get("receipts_deferred", 0) >= 1)
            assert f"store cannot write ({kind}): {error}" in caplog.text
            assert "receipts answered ESME_RX_T_APPN" in caplog.text
            assert "cannot rollback" not in caplog.text
            store.locked.clear()
            # Recovered: the refused receipt comes again and reaches the sender once.
            got = await asyncio.to_thread(s.wait_delivered, 1, 15.0)
            assert receipt_fields(got[0])["id"] == before
            assert sim.receipts_sent >= 2  # the first try was refused
            seq = await asyncio.to_thread(s.submit, "447700900990", b"after")
            status, after = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0
            got = await asyncio.to_thread(s.wait_delivered, 2, 15.0)
            assert [receipt_fields(p)["id"] for p in got] == [before, after]
            msg = await gw.store.get(before)
            assert msg is not None and msg.state.value == "delivered"
            # Housekeeping survived the failure and writes again.
            floor = f"{gw.ids.last:016X}"
            for _ in range(60):
                if await store.meta_get(gw.ctx.floor_key) == floor:
                    break
                await asyncio.sleep(0.1)
            assert await store.meta_get(gw.ctx.floor_key) == floor
            await asyncio.to_thread(s.close)
        finally:
            await gw.stop()
    gc.collect()
    await asyncio.sleep(0)
    assert problems == [], problems  # no task died with an unhandled exception


# ================================================================ retention and masking


async def test_retention_removes_finished_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    scen = dict(SIM, rules=[{"number": "447700900999", "outcomes": ["no_receipt"]}])
    async with simulator(scen) as sim:
        cfg = hardening_config(tmp_path, sim.port or 0)
        cfg.write_text(cfg.read_text().replace("[store]\n", "[store]\nretention_days = 0.00002\n"))
        async with gateway(cfg) as gw:
            s = SmpplibSender("127.0.0.1", gw.port)
            assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
            s.listen()
            seq = await asyncio.to_thread(s.submit, "447700900998", b"done soon")
            _, done = await asyncio.to_thread(s.wait_resp, seq)
            seq = await asyncio.to_thread(s.submit, "447700900999", b"never final")
            _, open_ = await asyncio.to_thread(s.wait_resp, seq)
            assert len(await asyncio.to_thread(s.wait_delivered, 1, 10.0)) == 1
            msg = await gw.store.get(done)
            assert msg is not None and msg.state.value == "delivered"
            # History is kept at least as long as number flagging looks back (a day).
            await gw.store.unmatched_receipt("sim", "ancient", "repr", 1.0)
            await gw.store.unmatched_receipt("sim", "recent", "repr", time.time())
            for _ in range(100):  # retention is 1.7 s; housekeeping runs every second
                if await gw.store.get(done) is None and "unmatched_receipts" in caplog.text:
                    break
                await asyncio.sleep(0.1)
            assert await gw.store.get(done) is None
            ids = await gw.store.query("SELECT DISTINCT message_id FROM carrier_ids")
            assert ids == [(open_,)]  # the expired message's carrier id went with it
            assert gw.counters.get("messages_expired_retention", 0) >= 1
            assert "retention: removed 1 finished messages" in caplog.text
            assert "retention: removed 1 unmatched_receipts rows" in caplog.text
            rows = await gw.store.query("SELECT message_id FROM unmatched_receipts")
            assert rows == [("recent",)]
            kept = await gw.store.get(open_)  # not final: kept whatever its age
            assert kept is not None and not kept.state.final
            await asyncio.to_thread(s.close)


async def test_a_decision_on_a_copy_changed_elsewhere_is_taken_again(tmp_path: Path) -> None:
    """Another writer (a second instance, or a command on the same store) finishes a
    message the proxy holds in memory. An event the proxy then decides on its stale
    copy must not overwrite that: the store refuses it and the proxy decides again on
    the stored message (here: a cancel of a message that was delivered meanwhile does
    nothing)."""
    scen = dict(SIM, rules=[{"number": "447700900997", "outcomes": ["no_receipt"]}])
    async with simulator(scen) as sim:
        metrics = '[metrics]\nhost = "127.0.0.1"\nport = 0\n'
        # A feed whose broker is away: its events stay in the outbox to be read here.
        feed = f'[feed]\nhost = "127.0.0.1"\nport = {free_port()}\npublisher = "inline"\n'
        cfg = hardening_config(tmp_path, sim.port or 0, extra=metrics + feed)
        async with gateway(cfg) as gw:
            s = await bind_sender(gw.port, SmpplibSender)
            seq = await asyncio.to_thread(s.submit, "447700900997", b"in flight")
            status, mid = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0
            sent = await gw.store.get(mid)
            assert sent is not None and sent.state.value == "submitted"
            other = SqliteStore(tmp_path / "proxy.db")
            await other.open()
            try:
                delivered = attrs.evolve(
                    sent,
                    state=State.DELIVERED,
                    final_stat="DELIVRD",
                    done_at=time.time(),
                    version=sent.version + 1,
                )
                await other.commit(Change(message=delivered))
            finally:
                await other.close()
            got = await gw.process(mid, engine.Cancel(time.time()))
            assert got is not None and got.state == State.DELIVERED
            stored = await gw.store.get(mid)
            assert stored is not None
            assert stored.state == State.DELIVERED and stored.version == delivered.version
            assert gw.counters.get("stale_decisions") == 1
            # The refused decision's event was not written, nor kept for the next one.
            topics = [t for (t,) in await gw.store.query("SELECT topic FROM outbox")]
            assert [t.rsplit("/", 1)[1] for t in topics if mid in t] == ["accepted", "submitted"]
            assert gw.metrics is not None
            assert "bounceback_stale_decisions_total 1.0" in gw.metrics.render().decode()
            await asyncio.to_thread(s.close)


async def test_destination_numbers_do_not_reach_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With [logging] mask_destinations (the default), no log line carries a full
    destination number, through normal traffic, a soft bounce and a malformed PDU."""
    caplog.set_level(logging.DEBUG, logger="bounceback")
    numbers = ["447700912345", "447700954321"]
    scen = dict(SIM, rules=[{"number": numbers[1], "outcomes": ["absent", "deliver"]}])
    async with (
        simulator(scen) as sim,
        gateway(hardening_config(tmp_path, sim.port or 0)) as gw,
    ):
        assert gw.cfg.logging.mask_destinations
        s = SmpplibSender("127.0.0.1", gw.port)
        assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
        s.listen()
        for n in numbers:
            seq = await asyncio.to_thread(s.submit, n, b"private")
            assert (await asyncio.to_thread(s.wait_resp, seq))[0] == 0
        assert len(await asyncio.to_thread(s.wait_delivered, 2, 15.0)) == 2
        # A malformed submit_sm carrying a number: answered, logged, not leaked.
        peer = await asyncio.to_thread(RawPeer, gw.port)
        assert await asyncio.to_thread(peer.bind, "acme", "acme-pw") == 0
        bad = bytearray(submit_bytes(1, numbers[0][:-6]))
        bad[-6] = 0xFF  # a TLV-length mess after the body
        bad += b"\x00\x05\xff"
        bad[0:4] = struct.pack(">I", len(bad))
        peer.sock.sendall(bytes(bad))
        (frame,) = await asyncio.to_thread(peer.read_frames, 1)
        assert decode(frame).command_status != 0
        peer.close()
        await asyncio.to_thread(s.close)
    ours = [r for r in caplog.records if not r.name.startswith("bounceback.simulator")]
    assert ours  # the flows above did log
    for r in ours:
        text = r.getMessage()
        for n in numbers:
            assert n not in text, (r.name, text)
