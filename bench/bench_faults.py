"""Store faults under a steady load, as an operator would meet them.

The carrier simulator and the proxy run as their own processes (`bounceback
simulate`, `bounceback run`); this process is the sender: it submits at a fixed rate
(registered_delivery = 1), answers every receipt, and injects one fault in the middle:

* `--fault lock`: another process holds `BEGIN EXCLUSIVE` on the SQLite file for
  `--fault-seconds`;
* `--fault full`: the store lives on a tmpfs of `--tmpfs-mb` MB (needs root, for the
  mount) and a file fills the disk for `--fault-seconds`, then is deleted.

It prints what the sender saw (answers by status, the slowest answer, unanswered
submits), what the operator saw (/readyz while the fault lasted, the WAL's size, the
proxy log's ERROR lines and unretrieved task exceptions), how long the proxy took to
accept again after the fault ended and whether it still refused submits sent 5 s
after, whether every message answered ESME_ROK got exactly one final receipt, and
the messages left unfinished in the store after a clean stop (stranded). Not a test:
the figures are for reading (bench/README.md has some).

    python bench/bench_faults.py --fault lock
    sudo .venv/bin/python bench/bench_faults.py --fault full
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from _procs import (
    FINAL_STATES,
    free_port,
    proxy_config,
    start_proxy,
    start_simulator,
    stop_proxy,
    stop_simulator,
    wait_port,
)
from bounceback.smpp.client import EsmeClient
from smppcodecs.pdu import DeliverSm
from smppcodecs.receipt import parse_receipt


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


HOLD_LOCK = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("ROLLBACK")
"""


def fill_disk(folder: Path) -> Path | None:
    """Write a file until the disk is full: its path (None: the disk was full already)."""
    path = folder / "filler"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError:
        return None
    try:
        for size in (1 << 20, 1 << 12):  # megabytes, then the last pages
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    return path


class Run:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.sent = 0
        self.answers: list[tuple[float, float, int, str]] = []  # (sent, answered, status, id)
        self.receipts: Counter[str] = Counter()
        self.ready: list[tuple[float, int]] = []
        self.wal_peak = 0
        self.fault_start = 0.0
        self.fault_end = 0.0
        self.expect: set[str] | None = None  # once sending stopped: the ids answered ESME_ROK
        self.all_in = asyncio.Event()

    async def sender(self, client: EsmeClient, stop: asyncio.Event) -> None:
        interval = 1.0 / self.args.rate
        tasks: set[asyncio.Task[None]] = set()
        n = 0
        next_at = time.monotonic()
        while not stop.is_set():
            n += 1
            t = asyncio.create_task(self.one(client, f"4477009{n:05d}"))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if tasks:
            await asyncio.wait(tasks, timeout=60)

    async def one(self, client: EsmeClient, number: str) -> None:
        self.sent += 1
        started = time.monotonic()
        try:
            resp = await client.submit(number, b"fault bench")
        except Exception:
            return  # unanswered: counted as sent without an answer
        mid = getattr(resp, "message_id", "") or ""
        self.answers.append((started, time.monotonic(), resp.command_status, mid))

    def on_deliver(self, pdu: DeliverSm) -> int:
        r = parse_receipt(pdu)
        if r is not None and r.message_id and not r.intermediate:
            self.receipts[r.message_id] += 1
            if self.expect is not None and self.expect <= set(self.receipts):
                self.all_in.set()
        return 0

    async def watch(self, metrics_port: int, wal: Path, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.ready.append((time.monotonic(), await asyncio.to_thread(readyz, metrics_port)))
            with contextlib.suppress(OSError):
                size = await asyncio.to_thread(os.path.getsize, wal)
                self.wal_peak = max(self.wal_peak, size)
            await asyncio.sleep(0.5)

    async def fault(self, store: Path) -> None:
        a = self.args
        await asyncio.sleep(a.before_seconds)
        self.fault_start = time.monotonic()
        if a.fault == "lock":
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                HOLD_LOCK,
                str(store),
                str(a.fault_seconds),
                stdout=subprocess.PIPE,
            )
            assert proc.stdout is not None
            await proc.stdout.readline()
            self.fault_start = time.monotonic()
            await proc.wait()
        else:
            filler = await asyncio.to_thread(fill_disk, store.parent)
            self.fault_start = time.monotonic()
            if filler is None:
                print(f"  the disk was full before the fault, after {a.before_seconds:.0f} s")
            await asyncio.sleep(a.fault_seconds)
            if filler is not None:
                filler.unlink()
        self.fault_end = time.monotonic()


def main(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="bb-faults-"))
    store_dir = folder / "store"
    store_dir.mkdir()
    mounted = False
    if args.fault == "full":
        if os.geteuid() != 0:
            print("--fault full mounts a tmpfs: run it as root", file=sys.stderr)
            return 2
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_mb}m", "tmpfs", str(store_dir)],
            check=True,
        )
        mounted = True
    sim_port, port, mport = free_port(), free_port(), free_port()
    store = store_dir / "bounceback.db"
    config = folder / "proxy.toml"
    query = (
        ""
        if args.receipt_query_after is None
        else f"receipt_query_after = {args.receipt_query_after}"
    )
    config.write_text(
        proxy_config(
            port=port,
            carrier_port=sim_port,
            store=store,
            carrier=f"{query}\n",
            tail=f'\n[metrics]\nhost = "127.0.0.1"\nport = {mport}\n',
        )
    )
    log = (folder / "proxy.log").open("w")
    sim = start_simulator(sim_port)
    proxy = start_proxy(config, log)
    run = Run(args, folder)
    try:
        asyncio.run(drive(run, store, sim_port, port, mport))
    finally:
        stop_proxy(proxy)
        stop_simulator(sim)
        log.close()
    rows: list[tuple[str, int, int]] = []
    with contextlib.closing(sqlite3.connect(store)) as db:
        rows = db.execute(
            "SELECT state, COUNT(*), SUM(carrier_message_id = '') FROM messages GROUP BY state"
        ).fetchall()
    report(run, rows, folder)
    if mounted:
        subprocess.run(["umount", str(store_dir)], check=False)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


async def drive(run: Run, store: Path, sim_port: int, port: int, mport: int) -> None:
    args = run.args
    await wait_port(sim_port)
    await wait_port(port)
    for _ in range(100):
        if readyz(mport) == 200:
            break
        await asyncio.sleep(0.1)
    client = await EsmeClient.connect("127.0.0.1", port, "acme", "acme-pw", window=1000)
    client.response_timeout = 60.0
    client.on_deliver = run.on_deliver
    stop_sending, stop_watch = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(run.watch(mport, Path(str(store) + "-wal"), stop_watch))
    sending = asyncio.create_task(run.sender(client, stop_sending))
    await run.fault(store)
    await asyncio.sleep(args.after_seconds)
    stop_sending.set()
    await sending
    run.expect = {mid for _, _, st, mid in run.answers if st == 0}
    if run.expect <= set(run.receipts):
        run.all_in.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.all_in.wait(), args.drain_seconds)
    await asyncio.sleep(1.0)  # a duplicate would come now
    stop_watch.set()
    await watcher
    await client.close()


def report(run: Run, rows: list[tuple[str, int, int]], folder: Path) -> None:
    a = run.args
    statuses = Counter(st for _, _, st, _ in run.answers)
    slowest = max((done - sent for sent, done, _, _ in run.answers), default=0.0)
    ok = [mid for _, _, st, mid in run.answers if st == 0]
    once = sum(1 for m in ok if run.receipts.get(m) == 1)
    missing = sum(1 for m in ok if m not in run.receipts)
    dupes = sum(1 for m in ok if run.receipts.get(m, 0) > 1)
    after = [s for s, _, st, _ in run.answers if st == 0 and s >= run.fault_end]
    recover = (min(after) - run.fault_end) if after else float("nan")
    # Recovered for good: submits sent from 5 s after the fault ended that were refused.
    late = [(s, st) for s, _, st, _ in run.answers if st != 0 and s >= run.fault_end + 5.0]
    last_refusal = max((s for s, _ in late), default=None)
    log_text = (folder / "proxy.log").read_text(errors="replace")
    log_errors = sum(1 for line in log_text.splitlines() if " ERROR " in line)
    unretrieved = log_text.count("Task exception was never retrieved")
    during = [code for t, code in run.ready if run.fault_start <= t <= run.fault_end]
    unfinished = {st: n for st, n, _ in rows if st not in FINAL_STATES}
    no_carrier_id = sum(int(blank or 0) for st, _, blank in rows if st == "submitting")
    print(f"fault: {a.fault} for {a.fault_seconds:.0f} s at {a.rate:.0f} msg/s")
    print(
        f"  submits sent {run.sent}, answered {len(run.answers)}, unanswered "
        f"{run.sent - len(run.answers)}"
    )
    print("  answers: " + ", ".join(f"0x{st:02X}: {n}" for st, n in sorted(statuses.items())))
    print(f"  slowest answer {slowest:.2f} s (submit_wait 5 s)")
    print(
        f"  accepted (ESME_ROK) {len(ok)}: exactly one final receipt {once}, "
        f"none {missing}, more than one {dupes}"
    )
    print(f"  first ESME_ROK after the fault ended: {recover:.2f} s later")
    print(
        f"  refused among the submits sent from 5 s after the fault ended: {len(late)} of "
        f"{sum(1 for s, _, _, _ in run.answers if s >= run.fault_end + 5.0)}"
        + (
            ""
            if last_refusal is None
            else f" (the last sent {last_refusal - run.fault_end:.1f} s after the fault ended)"
        )
    )
    print(f"  /readyz during the fault: {during.count(503)} of {len(during)} samples 503")
    print(f"  WAL peak {run.wal_peak / 1e6:.1f} MB")
    print(
        f"  store after a clean stop: {dict((st, n) for st, n, _ in rows)}; "
        f"stranded (not final): {sum(unfinished.values())} "
        f"({no_carrier_id} in submitting without a carrier id)"
    )
    print(
        f"  proxy log: {log_errors} lines at ERROR, {unretrieved} 'Task exception was never "
        f"retrieved': {folder / 'proxy.log'}"
    )


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fault", choices=("lock", "full"), required=True)
    p.add_argument("--rate", type=float, default=50.0, help="submits per second")
    p.add_argument("--before-seconds", type=float, default=5.0)
    p.add_argument("--fault-seconds", type=float, default=20.0)
    p.add_argument("--after-seconds", type=float, default=20.0)
    p.add_argument("--drain-seconds", type=float, default=30.0)
    p.add_argument("--tmpfs-mb", type=int, default=32)
    p.add_argument(
        "--receipt-query-after",
        type=float,
        default=None,
        help="the carrier's receipt_query_after (default: the proxy's): receipts the "
        "simulator gave up sending while the store refused them are then asked for",
    )
    p.add_argument("--keep", action="store_true", help="keep the run's folder (logs, store)")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(main(parse()))
