"""Held messages live in the store, not in memory: a benchmark with a million of them.

Steps, all on 127.0.0.1 and in a temporary folder:

1. A child process fills a fresh SQLite store with ``--messages`` held messages
   (state ``held``, one attempt made, soft verdict ``absent_subscriber``), due at
   random times spread over the next ``--days`` days, the earliest ten minutes from
   now. ``--fill api`` (the default) writes them through the store's own API
   (``SqliteStore.commit_many`` with ``Change(message=..., insert=True)``, batches of
   ``--batch``); ``--fill sql`` writes the same rows with one ``executemany`` per
   batch on the store's schema (``message_row()`` values), skipping the group commit.
2. A second child process runs the carrier simulator: it accepts every submission,
   answers ``DELIVRD`` 20 ms later, except for destinations under the prefix 4479,
   which get an ``absent`` receipt (the message is held again). It writes one JSON
   line per submission to a log, which this script counts.
3. This process reads its own RSS (``VmRSS`` in /proc/self/status), then starts a
   ``Gateway`` on the store with one carrier (the simulator) and lets the scheduler
   run a few cycles. Its RSS is read again.
4. The due query: the time of ``claim_due`` with N rows in the store (nothing due;
   and ``due()`` returning 1000 rows due), and ``EXPLAIN QUERY PLAN`` of the exact
   statement the store ran (captured with a trace callback on the store's own
   connections). Every other statement on ``messages`` the gateway ran while it
   started and idled is listed with its plan as well.
5. ``--due-now`` messages (the earliest held ones) are made due at once with one
   UPDATE from a separate connection, as another process could; the script waits
   until the simulator has taken that many submissions and their receipts are
   matched, and reads the RSS again.

Usage::

    python bench/bench_held.py [--messages 1000000] [--days 2] [--due-now 3000]
        [--soft-share 0.5] [--fill api|sql] [--batch 20000] [--cycles 8] [--keep DIR]

Figures depend on the machine; quote the command line with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _procs import free_port, proxy_config
from bounceback.config.settings import load_config
from bounceback.core.ids import IdGenerator
from bounceback.core.model import Message, State, Verdict
from bounceback.gateway.shell import Gateway
from bounceback.smpp.simulator import run_simulator
from bounceback.store.sqlite import MESSAGE_COLS, Change, SqliteStore, message_row
from smppcodecs.pdu import SubmitSm

DELIVER_PREFIX = "4477"
SOFT_PREFIX = "4479"  # the simulator answers these with an absent-subscriber receipt
FIRST_DUE = 600.0  # seconds from now to the earliest held message


# ---------------------------------------------------------------- measuring


def proc_status(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), in kB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f} MB"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


class TracedStore(SqliteStore):
    """The SQLite store, with every statement its connections run recorded and the
    duration of each `claim_due` call kept."""

    def __init__(self, path: str | Path, **kw: Any) -> None:
        super().__init__(path, **kw)
        self.statements: list[str] = []
        self.claims: list[tuple[float, int]] = []  # the scheduler's: (seconds, rows)
        self.ahead: list[tuple[float, int]] = []  # claims looking ahead (after a carrier bind)
        self.tracing = True

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.set_trace_callback(self._trace)
        return conn

    def _trace(self, sql: str) -> None:
        if self.tracing:
            self.statements.append(sql)

    async def claim_due(self, instance: str, now: float, limit: int, lease: float) -> list[Message]:
        started = time.perf_counter()
        got = await super().claim_due(instance, now, limit, lease)
        took = (time.perf_counter() - started, len(got))
        (self.ahead if now > time.time() + 1.0 else self.claims).append(took)
        return got


# ---------------------------------------------------------------- filling the store


def held_message(i: int, gen: IdGenerator, now: float, due: float, deadline: float) -> Message:
    prefix = SOFT_PREFIX if i % 2 else DELIVER_PREFIX
    number = f"{prefix}{i:08d}"
    created = now - 3600.0
    pdu = SubmitSm(
        sequence_number=(i % 0x7FFFFFFF) + 1,
        source_addr="Acme",
        destination_addr=number,
        registered_delivery=1,
        short_message=b"Your code is 123456",
    ).encode()
    return Message(
        id=gen.next(int(created * 1000)),
        account="acme",
        source_addr="Acme",
        destination_addr=number,
        pdu=pdu,
        registered_delivery=1,
        created_at=created,
        deadline=deadline,
        deadline_is_validity=False,
        submit_date=created,
        state=State.HELD,
        attempts=1,
        carrier="sim",
        carrier_message_id=f"{0xA0000000 + i:X}",
        next_attempt_at=due,
        retries_by_reason=(("absent_subscriber", 1),),
        verdict=Verdict(
            "soft", "absent_subscriber", "Absent subscriber", "006", "err:006", "default"
        ),
        final_err="006",
        text_head="Your code is 123456",
        updated_at=created,
    )


async def fill(path: str, n: int, days: float, batch: int, method: str, seed: int) -> float:
    """Write `n` held messages; returns the seconds it took."""
    rng = random.Random(seed)
    now = time.time()
    span = days * 86400.0
    deadline = now + span + 86400.0
    gen = IdGenerator(0)
    store = SqliteStore(path, batch_max=1, batch_delay=0.0)
    await store.open()
    started = time.perf_counter()
    try:
        if method == "api":
            for lo in range(0, n, batch):
                changes = [
                    Change(
                        message=held_message(
                            i, gen, now, now + FIRST_DUE + rng.random() * span, deadline
                        ),
                        insert=True,
                    )
                    for i in range(lo, min(n, lo + batch))
                ]
                await store.commit_many(changes)
        else:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                marks = ",".join("?" * len(MESSAGE_COLS.split(",")))
                for lo in range(0, n, batch):
                    rows = [
                        message_row(
                            held_message(
                                i, gen, now, now + FIRST_DUE + rng.random() * span, deadline
                            )
                        )
                        for i in range(lo, min(n, lo + batch))
                    ]
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(
                        f"INSERT INTO messages ({MESSAGE_COLS}) VALUES ({marks})", rows
                    )
                    conn.execute("COMMIT")
            finally:
                conn.close()
    finally:
        await store.close()
    return time.perf_counter() - started


# ---------------------------------------------------------------- children


def child(args: Sequence[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("the simulator did not start") from None
            time.sleep(0.05)


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def write_scenario(path: Path) -> None:
    path.write_text(
        "receipt_delay = 0.02\n"
        'id_format = "hex"\n'
        'receipt_id_format = "dec"\n'
        "window = 64\n"
        'default = ["deliver"]\n'
        "[[rules]]\n"
        f'prefix = "{SOFT_PREFIX}"\n'
        'outcomes = ["absent"]\n'
    )


def write_config(path: Path, db: Path, carrier_port: int) -> None:
    path.write_text(
        proxy_config(
            port=0,
            carrier_port=carrier_port,
            store=db,
            submit_wait=None,
            carrier="window = 64\n",
            reconnect=(0.1, 0.5),
            tail='\n[logging]\nlevel = "WARNING"\n',
        )
    )


# ---------------------------------------------------------------- the gateway part


async def wait_for(pred: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not pred():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def make_due(db: Path, count: int) -> tuple[int, float]:
    """Make the `count` earliest held messages due now (another connection, one UPDATE)."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=30.0)
    try:
        now = time.time()
        cur = conn.execute(
            "UPDATE messages SET next_attempt_at = ? WHERE id IN (SELECT id FROM messages"
            " WHERE next_attempt_at IS NOT NULL AND state = 'held'"
            " ORDER BY next_attempt_at LIMIT ?)",
            (now, count),
        )
        return int(cur.rowcount), now
    finally:
        conn.close()


async def run_gateway(
    cfg_path: Path, db: Path, sim_log: Path, args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cfg = load_config(cfg_path)
    store = TracedStore(str(db))
    out["rss_before_kb"] = proc_status("VmRSS")

    gw = Gateway(cfg, store=store)
    started = time.perf_counter()
    await gw.start()
    out["start_s"] = time.perf_counter() - started
    await wait_for(lambda: all(link.bound for link in gw.links.values()), 20.0, "carrier bind")
    out["bind_s"] = time.perf_counter() - started
    # A few scheduler cycles, and the first housekeeping round (one second after start).
    await wait_for(lambda: len(store.claims) >= args.cycles, 60.0, "scheduler cycles")
    await asyncio.sleep(max(0.0, 2.5 - (time.perf_counter() - started)))
    out["idle_claims"] = len(store.claims)
    out["rss_started_kb"] = proc_status("VmRSS")
    out["hwm_started_kb"] = proc_status("VmHWM")
    idle = [d for d, rows in store.claims]
    out["idle_claim_median_s"] = statistics.median(idle)
    out["idle_claim_max_s"] = max(idle)
    out["idle_claim_rows"] = sum(rows for _, rows in store.claims)
    out["ahead_claims"] = list(store.ahead)

    # The due query, directly: nothing due, then 1000 due rows (read, not leased).
    store.tracing = False
    probe: list[float] = []
    for _ in range(20):
        t0 = time.perf_counter()
        got = await store.claim_due("probe", time.time(), 1000, 30.0)
        probe.append(time.perf_counter() - t0)
        assert not got
    out["claim_due_none_median_s"] = statistics.median(probe)
    full: list[float] = []
    horizon = time.time() + 86400.0
    for _ in range(5):
        t0 = time.perf_counter()
        rows = await store.due(horizon, 1000)
        full.append(time.perf_counter() - t0)
        assert len(rows) == 1000
    del rows
    out["due_1000_median_s"] = statistics.median(full)

    # Plans: the due statement exactly as the store ran it, and every other statement on
    # the messages table the gateway ran while starting and idling.
    seen: dict[str, str] = {}
    for sql in store.statements:
        text = " ".join(sql.split())
        if " messages" not in text or text.startswith(("CREATE", "PRAGMA", "BEGIN", "COMMIT")):
            continue
        key = text.split(" WHERE ")[0][:60] + " WHERE " + text.split(" WHERE ")[-1][:80]
        seen.setdefault(key, text)
    plans: list[tuple[str, list[str], float]] = []
    for text in seen.values():
        rows2 = await store.query("EXPLAIN QUERY PLAN " + text)
        # How long the statement takes now (a DELETE timed as the SELECT of its rows).
        timed = text.replace("DELETE FROM", "SELECT COUNT(*) FROM", 1)
        t0 = time.perf_counter()
        await store.query(timed)
        plans.append((text, [str(r[-1]) for r in rows2], time.perf_counter() - t0))
    out["plans"] = plans
    out["due_plan"] = next((p for t, p, _ in plans if "next_attempt_at <=" in t), [])

    # A few thousand due now: resubmitted, their receipts matched, memory still bounded.
    submitted_before = count_lines(sim_log)
    made, _ = await asyncio.to_thread(make_due, db, args.due_now)
    out["made_due"] = made
    t0 = time.perf_counter()
    await wait_for(lambda: count_lines(sim_log) - submitted_before >= made, 300.0, "resubmissions")
    out["resubmit_s"] = time.perf_counter() - t0
    await wait_for(
        lambda: gw.counters.get("receipts_matched", 0) >= made, 300.0, "receipts matched"
    )
    out["receipts_s"] = time.perf_counter() - t0
    await asyncio.sleep(1.0)  # a few more scheduler cycles
    out["resubmitted"] = count_lines(sim_log) - submitted_before
    out["receipts_matched"] = gw.counters.get("receipts_matched", 0)
    out["rss_after_kb"] = proc_status("VmRSS")
    out["hwm_after_kb"] = proc_status("VmHWM")
    out["cached_messages"] = len(gw.path.cache)
    out["cached_keys"] = len(gw.receipts.keys)
    counts = await store.query(
        "SELECT state, COUNT(*) FROM messages WHERE id IN"
        " (SELECT message_id FROM carrier_ids) GROUP BY state"
    )
    out["states"] = {str(s): int(c) for s, c in counts}
    t0 = time.perf_counter()
    await gw.stop()
    out["stop_s"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------- main


def report(args: argparse.Namespace, fill_s: float, db: Path, r: dict[str, Any]) -> None:
    n = args.messages
    size = db.stat().st_size / 1e6
    print(f"held messages: {n:,} (due over {args.days:g} days), store file {size:.0f} MB")
    print(
        f"fill ({args.fill}, batches of {args.batch:,}): {fill_s:.1f} s ({n / fill_s:,.0f} rows/s)"
    )
    print(f"gateway start: {r['start_s']:.2f} s; carrier bound after {r['bind_s']:.2f} s")
    print(
        f"RSS: before start {mb(r['rss_before_kb'])}, after start + {r['idle_claims']} scheduler"
        f" cycles {mb(r['rss_started_kb'])} (+{mb(r['rss_started_kb'] - r['rss_before_kb'])}),"
        f" peak {mb(r['hwm_started_kb'])}"
    )
    print(
        f"claim_due in the scheduler, nothing due: median {ms(r['idle_claim_median_s'])},"
        f" max {ms(r['idle_claim_max_s'])} ({r['idle_claims']} calls, {r['idle_claim_rows']} rows)"
    )
    for took, rows in r["ahead_claims"]:
        print(f"claim_due one hour ahead after the carrier bind: {ms(took)}, {rows} rows")
    print(f"claim_due, nothing due (20 calls): median {ms(r['claim_due_none_median_s'])}")
    print(f"due(), 1000 rows returned (5 calls): median {ms(r['due_1000_median_s'])}")
    print("EXPLAIN QUERY PLAN of the due query as the store ran it:")
    for line in r["due_plan"]:
        print(f"  {line}")
    uses_index = any("USING INDEX messages_due" in line for line in r["due_plan"])
    scans = any(line.startswith("SCAN messages") for line in r["due_plan"])
    print(f"  -> uses messages_due: {uses_index}; full scan of messages: {scans}")
    print("other statements on messages while starting and idling:")
    for text, plan, took in r["plans"]:
        if "next_attempt_at <=" in text:
            continue
        short = text if len(text) < 150 else text[:147] + "..."
        print(f"  {short}  [{ms(took)}]")
        for line in plan:
            print(f"    {line}")
    print(
        f"made due now: {r['made_due']:,}; resubmitted {r['resubmitted']:,} in"
        f" {r['resubmit_s']:.2f} s, receipts matched {r['receipts_matched']:,} after"
        f" {r['receipts_s']:.2f} s"
    )
    print(f"states of the resubmitted messages: {r['states']}")
    print(
        f"RSS after: {mb(r['rss_after_kb'])} (+{mb(r['rss_after_kb'] - r['rss_before_kb'])} over"
        f" before start), peak {mb(r['hwm_after_kb'])}; gateway cache: {r['cached_messages']:,}"
        f" messages, {r['cached_keys']:,} carrier ids"
    )
    per = (r["rss_after_kb"] - r["rss_started_kb"]) / max(r["made_due"], 1)
    print(f"RSS growth per resubmitted message: {per:.2f} kB")
    print(f"gateway stop: {r['stop_s']:.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--messages", type=int, default=1_000_000, help="held messages (1,000,000)")
    p.add_argument("--days", type=float, default=2.0, help="due over the next D days (2)")
    p.add_argument("--due-now", type=int, default=3000, help="made due at once (3000)")
    p.add_argument("--fill", choices=("api", "sql"), default="api", help="how the store is filled")
    p.add_argument("--batch", type=int, default=20_000, help="rows per fill transaction")
    p.add_argument("--cycles", type=int, default=8, help="scheduler cycles before reading RSS")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    # internal: the child processes
    p.add_argument("--fill-into", help=argparse.SUPPRESS)
    p.add_argument("--serve-simulator", type=int, help=argparse.SUPPRESS)
    p.add_argument("--scenario", help=argparse.SUPPRESS)
    p.add_argument("--sim-log", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.fill_into:
        seconds = asyncio.run(
            fill(args.fill_into, args.messages, args.days, args.batch, args.fill, args.seed)
        )
        print(json.dumps({"fill_s": seconds}), flush=True)
        return 0
    if args.serve_simulator:
        asyncio.run(
            run_simulator("127.0.0.1", args.serve_simulator, args.scenario, log_path=args.sim_log)
        )
        return 0

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-held-"))
    work.mkdir(parents=True, exist_ok=True)
    db, scenario, sim_log, cfg = (
        work / "held.db",
        work / "scenario.toml",
        work / "sim.jsonl",
        work / "proxy.toml",
    )
    for f in (db, sim_log, Path(f"{db}-wal"), Path(f"{db}-shm")):
        f.unlink(missing_ok=True)
    filler = child(
        [
            "--fill-into", str(db), "--messages", str(args.messages), "--days", str(args.days),
            "--batch", str(args.batch), "--fill", args.fill, "--seed", str(args.seed),
        ]
    )  # fmt: skip
    out, _ = filler.communicate()
    if filler.returncode != 0:
        print("filling the store failed", file=sys.stderr)
        return 1
    fill_s = float(json.loads(out.strip().splitlines()[-1])["fill_s"])

    write_scenario(scenario)
    port = free_port()
    sim = child(
        ["--serve-simulator", str(port), "--scenario", str(scenario), "--sim-log", str(sim_log)]
    )
    try:
        wait_listening(port, sim)
        write_config(cfg, db, port)
        result = asyncio.run(run_gateway(cfg, db, sim_log, args))
    finally:
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(5)
    report(args, fill_s, db, result)
    if not args.keep:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
