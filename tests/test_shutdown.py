"""SIGTERM shutdown leaves no accepted message unrecorded.

`bounceback run` runs as a real process against the carrier simulator. Receipts take
a second to come back and every fourth number soft-bounces once, so when SIGTERM
arrives the proxy holds messages for a retry, waits for receipts and is still taking
submissions. It must unbind the sender, exit 0 within `shutdown_grace`, leave every
accepted message in its SQLite store, and after a restart finish every message and
hand every receipt to the re-bound sender exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import smpplib.exceptions
import smpplib.smpp
from harness import (
    ProxyProcess,
    bind_sender,
    free_port,
    retry_toml,
    simulator,
    wait_until,
    write_config,
)
from smpplib_peer import SmpplibSender, receipt_fields

GRACE = 5.0  # [server] shutdown_grace of the proxy under test
MARGIN = 5.0  # process start-up aside, what the exit may take beyond the grace
NUMBERS = [f"4477009300{i:02d}" for i in range(100)]
SOFT = {n for i, n in enumerate(NUMBERS) if i % 4 == 1}  # absent once, then delivered
FINAL = ("delivered", "failed", "expired", "cancelled", "rejected")

RETRY = retry_toml(
    absent_subscriber=(1.0, 1.0, 1.0),
    timeout=(0.3, 1.0, 0.3),
    not_bound=(0.3, 1.0, 0.3),
)


class PoliteSender(SmpplibSender):
    """An smpplib sender that answers the proxy's unbind with unbind_resp (as an ESME
    must), records it, stops submitting once it arrived, and notices the close."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.unbinds = 0
        self.closed = threading.Event()
        self.closed_after_unbind = False
        self._send_lock = threading.Lock()  # the listener and the traffic thread both send
        read_pdu = self.client.read_pdu
        send_pdu = self.client.send_pdu

        def locked_send(pdu: Any) -> bool:
            with self._send_lock:
                return bool(send_pdu(pdu))

        def read_and_answer_unbind() -> Any:
            pdu = read_pdu()
            if pdu.command == "unbind":
                self.unbinds += 1
                resp = smpplib.smpp.make_pdu("unbind_resp", client=self.client)
                resp.sequence = pdu.sequence
                self.client.send_pdu(resp)
            return pdu

        self.client.send_pdu = locked_send
        self.client.read_pdu = read_and_answer_unbind

    def listen(self) -> None:
        def loop() -> None:
            try:
                while not self._stop:
                    try:
                        self.client.read_once(auto_send_enquire_link=True)
                    except (OSError, smpplib.exceptions.ConnectionError):
                        self.closed_after_unbind = self.unbinds > 0
                        return
                    except smpplib.exceptions.PDUError:
                        continue
            finally:
                self.closed.set()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def traffic(self, numbers: list[str], stop: threading.Event) -> list[int]:
        """Submit one message every 30 ms until told to stop, unbound or cut off;
        returns the sequence numbers sent."""
        seqs: list[int] = []
        for n in numbers:
            if stop.is_set() or self.unbinds or self.closed.is_set():
                break
            try:
                seqs.append(self.submit(n))
            except (OSError, smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError):
                break
            time.sleep(0.03)
        return seqs


def read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def states(db: Path) -> dict[str, str]:
    """Message id -> state, read from the store without writing to it."""
    with read_only(db) as conn:
        return dict(conn.execute("SELECT id, state FROM messages"))


def pending_receipts(db: Path) -> list[str]:
    with read_only(db) as conn:
        return [r[0] for r in conn.execute("SELECT message_id FROM sender_receipts")]


async def test_sigterm_with_traffic_in_flight_loses_nothing(tmp_path: Path) -> None:
    scenario = {
        "receipt_delay": 1.0,
        "rules": [{"number": n, "outcomes": ["absent", "deliver"]} for n in sorted(SOFT)],
    }
    async with simulator(scenario) as sim:
        port = free_port()
        cfg = write_config(tmp_path, sim.port or 0, port=port, retry=RETRY)
        text = cfg.read_text()
        cfg.write_text(
            text.replace("submit_wait = 3.0", f"submit_wait = 3.0\nshutdown_grace = {GRACE}")
        )
        assert f"shutdown_grace = {GRACE}" in cfg.read_text()
        db = tmp_path / "proxy.db"
        proxy = ProxyProcess(cfg)
        senders: list[SmpplibSender] = []
        await asyncio.to_thread(proxy.start)
        try:
            s = await bind_sender(port, PoliteSender)
            senders.append(s)
            stop_traffic = threading.Event()
            traffic = asyncio.ensure_future(asyncio.to_thread(s.traffic, NUMBERS, stop_traffic))
            # Receipts flow (so some soft bounces are held by now) and traffic goes on.
            await wait_until(lambda: len(s.delivered) >= 15, timeout=20)
            assert not traffic.done()

            assert proxy.proc is not None
            proxy.proc.send_signal(signal.SIGTERM)
            rc = await asyncio.to_thread(proxy.proc.wait, GRACE + MARGIN)
            stop_traffic.set()
            seqs = await traffic
            assert rc == 0, proxy.output()
            # The sender was unbound, answered, and then the proxy closed the connection.
            await asyncio.to_thread(s.closed.wait, 5.0)
            assert s.unbinds == 1
            assert s.closed_after_unbind
            log = proxy.output().split("started run")[-1]
            assert "shutting down" in log
            assert "Traceback" not in log and " ERROR " not in log, log
            stopping = log.split("shutting down", 1)[1]

            accepted = [mid for st, mid in (s.resps[q] for q in seqs if q in s.resps) if st == 0]
            assert len(accepted) >= 30
            first = [receipt_fields(p) for p in s.delivered]

            # Every accepted message is in the store; the store was flushed and closed
            # (a clean close checkpoints the write-ahead log and removes it).
            assert not (tmp_path / "proxy.db-wal").exists()
            at_stop = states(db)
            assert set(accepted) <= set(at_stop)
            kinds = collections.Counter(at_stop.values())
            # SIGTERM came with soft bounces held and receipts still on their way.
            assert kinds["held"] >= 1 and kinds["submitted"] >= 1, kinds
            # A message finished before the stop has its receipt delivered or stored.
            given = {f["id"] for f in first}
            stored = set(pending_receipts(db))
            for mid, state in at_stop.items():
                if state in FINAL:
                    assert mid in given | stored, (mid, state)

            # Restart: every message reaches a final state and every receipt reaches the
            # re-bound sender, each exactly once.
            await asyncio.to_thread(proxy.start)
            s2 = await bind_sender(port, SmpplibSender)
            senders.append(s2)
            await asyncio.to_thread(s2.wait_delivered, len(at_stop) - len(first), 30.0)
            await wait_until(
                lambda: all(st in FINAL for st in states(db).values()) and not pending_receipts(db),
                timeout=20,
            )
            await asyncio.sleep(0.3)  # room for a duplicate receipt to show up
            second = [receipt_fields(p) for p in s2.delivered]
            ids = collections.Counter(f["id"] for f in first + second)
            assert set(ids) == set(at_stop)
            assert all(n == 1 for n in ids.values()), [m for m, n in ids.items() if n > 1]
            assert all(f["stat"] == "DELIVRD" for f in first + second)
            assert set(states(db).values()) == {"delivered"}
            # Every soft-bouncing number that was accepted went to the carrier again.
            with read_only(db) as conn:
                soft = [r[0] for r in conn.execute("SELECT destination_addr FROM messages")]
            soft = [n for n in soft if n in SOFT]
            assert soft and all(sim.count_for(n) >= 2 for n in soft)
            # A clean stop warns about nothing: unbinding the carrier is not a lost link.
            assert " WARNING " not in stopping, stopping
        finally:
            for sender in senders:
                sender.close()
            await asyncio.to_thread(proxy.terminate)
        assert proxy.proc is not None and proxy.proc.returncode == 0


async def test_sigterm_repeated_during_the_stop_still_exits_0(tmp_path: Path) -> None:
    """A supervisor that sends SIGTERM again while the proxy stops (or a second
    `kill`) neither cuts the stop short nor kills the process after its event loop
    closed: the exit is the graceful one, 0."""
    async with simulator({"receipt_delay": 0.05}) as sim:
        port = free_port()
        cfg = write_config(tmp_path, sim.port or 0, port=port, retry=RETRY)
        proxy = ProxyProcess(cfg)
        await asyncio.to_thread(proxy.start)
        s = await bind_sender(port, SmpplibSender)
        try:
            seq = await asyncio.to_thread(s.submit, NUMBERS[0])
            status, _ = await asyncio.to_thread(s.wait_resp, seq)
            assert status == 0
        finally:
            await asyncio.to_thread(s.close)
        proc = proxy.proc
        assert proc is not None
        sent = 0
        while proc.poll() is None:  # SIGTERM again and again until the process is gone
            proc.send_signal(signal.SIGTERM)
            sent += 1
            await asyncio.sleep(0.002)
        assert sent > 1
        assert proc.returncode == 0, (proc.returncode, proxy.output()[-2000:])
        log = proxy.output().split("started run")[-1]
        assert "shutting down" in log and "Traceback" not in log, log
