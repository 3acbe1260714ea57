"""End-to-end throughput benchmark: a load generator, the proxy and a carrier simulator.

Separate processes on 127.0.0.1:

* the carrier simulator (``bounceback simulate``) answering every submission at once
  and sending a ``DELIVRD`` receipt ``--receipt-delay`` seconds later;
* the proxy (``bounceback run``) with a generated config: one account, one carrier
  (the simulator), and the store under test: SQLite (WAL, group commit) in a temp
  folder, or PostgreSQL (a fresh database in a throwaway cluster the script starts);
  with PostgreSQL and two instances, two ``bounceback run`` processes share one
  database, each with its own port and ``instance_id``, both bound to the simulator;
* the load generator, in this process: ``--binds`` transceiver binds with ``--window``
  submissions outstanding on each (one worker per window slot, so a request never
  waits for a window slot and its latency is the wire round trip). With two proxy
  instances the binds are split between them; receipts are counted across every
  bind, since with one account a receipt may arrive on either instance's bind.

For each phase it sends ``--messages`` messages after a short warm-up and reports the
elapsed time until every ``submit_sm_resp`` AND every receipt is back, messages per
second over that time, and the submit latency (``submit_sm`` to ``submit_sm_resp``)
at p50 and p99. Phases, all in one run and against the same simulator process:

* ``direct``: the load straight to the simulator, no proxy;
* ``proxy STORE xN ack=MODE``: through fresh proxies, for every store in ``--stores``
  (``sqlite``, ``postgres``), every instance count in ``--instances`` (1, 2; SQLite
  only with 1) and every ack mode in ``--ack``; ``--scaling`` is the shortcut for
  ``--stores sqlite,postgres --instances 1,2``;
* with ``--feed``: each of those again with the MQTT feed on, publishing to a
  Mosquitto broker the script starts on a free port; the feed's outbox is then
  watched (in the store) until it has drained.

Printed ratios: proxy / direct (goal >= 0.6), feed-on / feed-off (goal >= 0.9),
postgres / sqlite and two instances / one instance (no goal: figures to read); with
``--gc-compare``, the proxy on its garbage collector settings / on Python's.

Usage::

    python bench/bench_e2e.py [--messages 20000] [--binds 4] [--window 64]
        [--ack carrier|stored|both] [--feed [--feed-client builtin|aiomqtt]]
        [--stores sqlite,postgres]
        [--instances 1,2] [--scaling] [--pg-synchronous-commit on|off] [--json]
        [--batch-delay S] [--rounds N] [--gc-compare]
        [--profile DIR [--py-spy BIN]] [--keep]

``--profile DIR`` runs each proxy under cProfile, writes ``DIR/proxy-<label>.prof``
and prints its hottest functions. With ``--py-spy BIN`` (the py-spy executable) the
proxy runs unprofiled and py-spy samples it instead (less overhead, every thread):
``DIR/proxy-<label>.pyspy.txt`` holds the collapsed stacks and a summary is printed.

Every process the script starts (and the PostgreSQL cluster) is stopped on the way
out (also on an error, Ctrl-C or the ``--max-seconds`` watchdog), and its temp folder
is removed unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import json
import math
import os
import pstats
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import profile_groups
from _procs import free_port
from bounceback.smpp.client import EsmeClient
from smppcodecs.constants import ESM_CLASS_SMSC_RECEIPT, Tag
from smppcodecs.pdu import DeliverSm, Pdu, SubmitSmResp

if TYPE_CHECKING:
    from pg_fixture import PgCluster

HOST = "127.0.0.1"  # the only address this script ever talks to
PROXY_ACCOUNT = ("bench", "bench-pw")
DIRECT_ACCOUNT = ("bench-direct", "direct")
RECEIPT_ID = int(Tag.receipted_message_id)
TEXT = b"Bounceback bench message"
_ID_IN_TEXT = re.compile(rb"id:(\S+)")
TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"  # holds the cluster helper
STORES = ("sqlite", "postgres")
INSTANCE_COUNTS = (1, 2)
PG_TEMPLATE = "bb_bench_template"


class BenchError(Exception):
    """The benchmark could not run (a process would not start, a phase timed out...)."""


class _Stop:
    """Set by SIGTERM/SIGINT: every wait loop checks it and the run winds down."""

    signum = 0

    @classmethod
    def check(cls) -> None:
        if cls.signum:
            raise BenchError(f"stopped by signal {cls.signum}")


# ---------------------------------------------------------------------------- results


@dataclass(slots=True)
class Result:
    """One measured phase."""

    phase: str
    messages: int
    store: str = ""  # "sqlite" or "postgres"; "" for the direct phase
    instances: int = 0  # proxy instances (0 for the direct phase)
    ack: str = ""
    feed: bool = False
    gc: str = ""  # "python": the proxy ran with gc_threshold = 0 (--gc-compare)
    round: int = 1  # with --rounds: which repetition of the phase sequence
    complete: bool = False
    elapsed: float = 0.0  # first submit to the last response and receipt
    submit_elapsed: float = 0.0  # first submit to the last submit_sm_resp
    rate: float = 0.0  # messages / elapsed (with receipts)
    submit_rate: float = 0.0  # messages / submit_elapsed
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    responses: int = 0
    errors: int = 0  # submit_sm_resp with a non-zero command_status
    receipts: int = 0  # receipts matched to an accepted message id
    stray_receipts: int = 0  # receipts for ids this phase never saw accepted
    # With several instances: the share of receipts that came back on a bind of another
    # instance than the one the message was submitted on.
    crossed: float | None = None
    # PostgreSQL: transactions committed in the database per measured message.
    db_commits: float | None = None
    feed_drain: float | None = None  # seconds after the last receipt until the outbox was empty
    # CPU time (user + system) per measured message, in microseconds, per process.
    cpu_us: dict[str, float] = field(default_factory=dict)
    store_states: dict[str, int] = field(default_factory=dict)
    note: str = ""


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a server and its children (PostgreSQL's postmaster and its
    backends): its own time, its reaped children's, and its live children's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = stat.rpartition(")")[2].split()
    total = sum(int(x) for x in f[11:15]) / _TICK  # utime, stime, cutime, cstime
    return total + sum(cpu_seconds(k) or 0.0 for k in child_pids(pid))


def child_pids(pid: int) -> list[int]:
    """The live children of `pid` (the proxy's feed publisher), from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def proc_label(p: subprocess.Popen[bytes]) -> str:
    """A short name for a child process, from its command line."""
    argv = [str(a) for a in p.args] if isinstance(p.args, list) else [str(p.args)]
    if "simulate" in argv:
        return "simulator"
    if "run" in argv:
        return "proxy"  # several instances: summed
    if any("mosquitto" in a for a in argv):
        return "broker"
    return Path(argv[0]).name


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(math.ceil(p / 100.0 * len(sorted_values)), 1)
    return sorted_values[min(rank, len(sorted_values)) - 1]


# ---------------------------------------------------------------------------- load generator


class LoadGen:
    """Binds ``binds`` transceivers and drives ``window`` workers on each.

    With several ``ports`` (proxy instances) the binds go to them in turn.
    """

    def __init__(
        self,
        ports: Sequence[int],
        account: tuple[str, str],
        binds: int,
        window: int,
        rate: float = 0.0,
    ) -> None:
        if not ports:
            raise ValueError("no port to bind to")
        self.rate = rate  # > 0: submits at this fixed rate (msg/s) instead of saturating
        self.ports = list(ports)
        self.account = account
        self.binds = binds
        self.window = window
        self.clients: list[EsmeClient] = []
        self.client_ports: list[int] = []  # the instance port of each client
        # Per-run state, reset by run().
        self._accepted: set[str] = set()
        self._receipted: set[str] = set()
        self._submitted_on: dict[str, int] = {}  # message id -> port it was accepted on
        self._receipt_on: dict[str, int] = {}  # message id -> port its receipt came on
        self._matched = 0
        self._responses = 0
        self._errors = 0
        self.db_pid: int | None = None  # PostgreSQL's postmaster: its CPU is counted too
        self._n = 0
        self._next = 0
        self._latencies: list[float] = []
        self._done = asyncio.Event()
        self._done_at = 0.0
        self._last_resp_at = 0.0

    async def connect(self) -> None:
        system_id, password = self.account
        for i in range(self.binds):
            port = self.ports[i % len(self.ports)]
            c = await EsmeClient.connect(
                HOST, port, system_id, password, bind="transceiver", window=self.window
            )
            c.on_deliver = functools.partial(self._on_deliver, port=port)
            self.clients.append(c)
            self.client_ports.append(port)

    async def close(self) -> None:
        for c in self.clients:
            with contextlib.suppress(Exception):
                await c.unbind(timeout=2.0)
        self.clients.clear()
        self.client_ports.clear()

    # ------------------------------------------------------------ callbacks
    def _check_done(self) -> None:
        done = self._responses >= self._n and self._matched >= len(self._accepted)
        if done and not self._done.is_set():
            self._done_at = time.perf_counter()
            self._done.set()

    def _on_deliver(self, pdu: DeliverSm, port: int = 0) -> int:
        if not pdu.esm_class & ESM_CLASS_SMSC_RECEIPT:
            return 0
        rid = pdu.tlvs.get(RECEIPT_ID)
        if not isinstance(rid, str):
            m = _ID_IN_TEXT.search(pdu.short_message)
            rid = m.group(1).decode("ascii", "replace") if m else ""
        if rid in self._receipted:
            return 0
        self._receipted.add(rid)
        self._receipt_on[rid] = port
        if rid in self._accepted:
            self._matched += 1
            self._check_done()
        return 0

    async def _worker(self, c: EsmeClient, port: int) -> None:
        perf = time.perf_counter
        lat = self._latencies
        while self._next < self._n:
            i = self._next
            self._next += 1
            t0 = perf()
            resp = await c.submit(f"4477009{i % 100000:05d}", TEXT)
            t1 = perf()
            lat.append(t1 - t0)
            self._answered(resp, port, t1)

    def _answered(self, resp: Pdu, port: int, at: float) -> None:
        """Count one submit_sm_resp (`at`: its perf_counter time)."""
        self._responses += 1
        self._last_resp_at = at
        if resp.command_status != 0 or not isinstance(resp, SubmitSmResp):
            self._errors += 1
        else:
            mid = resp.message_id
            self._accepted.add(mid)
            self._submitted_on[mid] = port
            if mid in self._receipted:
                self._matched += 1
        self._check_done()

    async def _paced(self) -> None:
        """Submits at `rate` msg/s over the binds in turn, each on its own task, so a
        slow answer delays no later submit. A latency runs from the submit's scheduled
        time (not from when it went out): a stall shows in the figures instead of
        slowing the load down (no coordinated omission)."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        pairs = list(zip(self.clients, self.client_ports, strict=True))
        start = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        k = 0
        while self._next < self._n:
            wait = start + k * interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time()
            while self._next < self._n and start + k * interval <= now:
                i = self._next
                self._next += 1
                c, port = pairs[i % len(pairs)]
                t = loop.create_task(self._one(c, port, i, start + k * interval))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                k += 1
        if tasks:
            await asyncio.gather(*tasks)

    async def _one(self, c: EsmeClient, port: int, i: int, scheduled: float) -> None:
        loop = asyncio.get_running_loop()
        resp = await c.submit(f"4477009{i % 100000:05d}", TEXT)
        self._latencies.append(loop.time() - scheduled)
        self._answered(resp, port, time.perf_counter())

    # ------------------------------------------------------------ one run
    async def run(
        self, phase: str, n: int, timeout: float, alive: list[subprocess.Popen[bytes]]
    ) -> Result:
        """Send ``n`` messages and wait for every response and receipt (or ``timeout``)."""
        self._accepted, self._receipted = set(), set()
        self._submitted_on, self._receipt_on = {}, {}
        self._matched = self._responses = self._errors = 0
        self._n, self._next = n, 0
        self._latencies = []
        self._done = asyncio.Event()
        cpu0 = {p.pid: cpu_seconds(p.pid) for p in alive}
        kids = {p.pid: child_pids(p.pid) for p in alive if proc_label(p) == "proxy"}
        kids0 = {k: cpu_seconds(k) for ks in kids.values() for k in ks}
        db0 = tree_cpu_seconds(self.db_pid) if self.db_pid else None
        own0 = time.process_time()
        start = time.perf_counter()
        workers = (
            [asyncio.ensure_future(self._paced())]
            if self.rate > 0
            else [
                asyncio.ensure_future(self._worker(c, port))
                for c, port in zip(self.clients, self.client_ports, strict=True)
                for _ in range(self.window)
            ]
        )
        note = ""
        try:
            end = start + timeout
            while not self._done.is_set():
                dead = [p for p in alive if p.poll() is not None]
                if dead:
                    note = f"a process exited with code {dead[0].returncode} during the phase"
                    break
                if _Stop.signum:
                    note = f"stopped by signal {_Stop.signum}"
                    break
                if time.perf_counter() > end:
                    note = f"timed out after {timeout:.0f} s"
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._done.wait(), 0.25)
            for w in workers:
                if w.done() and not w.cancelled() and w.exception() is not None:
                    note = note or f"worker failed: {w.exception()!r}"
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        cpu: dict[str, float] = {"load generator": time.process_time() - own0}
        for p in alive:
            before, after = cpu0.get(p.pid), cpu_seconds(p.pid)
            if before is not None and after is not None:
                label = proc_label(p)
                cpu[label] = cpu.get(label, 0.0) + after - before
            for k in kids.get(p.pid, []):  # the feed publisher process
                before, after = kids0.get(k), cpu_seconds(k)
                if before is not None and after is not None:
                    cpu["feed publisher"] = cpu.get("feed publisher", 0.0) + after - before
        if db0 is not None and self.db_pid:
            db1 = tree_cpu_seconds(self.db_pid)
            if db1 is not None:
                cpu["postgres"] = db1 - db0
        lat = sorted(self._latencies)
        r = Result(
            phase=phase,
            messages=n,
            complete=self._done.is_set(),
            responses=self._responses,
            errors=self._errors,
            receipts=self._matched,
            stray_receipts=len(self._receipted) - self._matched,
            p50_ms=percentile(lat, 50) * 1000,
            p99_ms=percentile(lat, 99) * 1000,
            max_ms=(lat[-1] * 1000) if lat else 0.0,
            note=note,
            cpu_us={k: v * 1e6 / max(n, 1) for k, v in cpu.items()},
        )
        if len(self.ports) > 1 and self._matched:
            crossed = sum(
                1
                for mid, port in self._submitted_on.items()
                if self._receipt_on.get(mid, port) != port
            )
            r.crossed = crossed / self._matched
        if r.complete:
            r.elapsed = self._done_at - start
            r.rate = n / r.elapsed
            r.submit_elapsed = self._last_resp_at - start
            r.submit_rate = n / r.submit_elapsed
        return r


# ---------------------------------------------------------------------------- processes


class Proc:
    """A child process with its output in a log file, stopped by its own pid."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        return self.popen

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the output matches ``pattern``; raise if the process ends first."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.output())
            if m is not None:
                return m
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise BenchError(
                    f"{self.name} exited ({self.popen.returncode}) before {pattern!r}:\n"
                    + self.tail()
                )
            if time.monotonic() > end:
                raise BenchError(
                    f"{self.name}: no {pattern!r} within {timeout:.0f} s\n" + self.tail()
                )
            _Stop.check()
            time.sleep(0.05)

    def send(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` if the process is still running (no wait)."""
        p = self.popen
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)

    def stop(self, grace: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """``sig`` (SIGTERM: a graceful stop for the proxy), then SIGKILL after ``grace``."""
        p = self.popen
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait(5)


class Procs:
    """Every process started, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self.items: list[Proc] = []

    def add(self, p: Proc) -> Proc:
        self.items.append(p)
        return p

    def stop_all(self, grace: float = 20.0) -> None:
        for p in reversed(self.items):
            with contextlib.suppress(Exception):
                p.stop(grace)


def wait_tcp(port: int, timeout: float, proc: Proc) -> None:
    end = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        if proc.popen is not None and proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited:\n{proc.tail()}")
        if time.monotonic() > end:
            raise BenchError(f"{proc.name}: port {port} not open within {timeout:.0f} s")
        _Stop.check()
        time.sleep(0.05)


# ---------------------------------------------------------------------------- configs


def scenario_text(args: argparse.Namespace) -> str:
    window = max(args.binds * args.window, 10)
    records = max(100_000, args.messages * 5)
    return (
        f"receipt_delay = {args.receipt_delay}\n"
        'default = ["deliver"]\n'
        'id_format = "hex"\n'
        'receipt_id_format = "same"\n'
        'receipt_style = "text+tlv"\n'
        f"window = {window}\n"
        f"max_records = {records}\n"
    )


def proxy_config_text(
    args: argparse.Namespace,
    sim_port: int,
    ack: str,
    feed_port: int | None,
    store_url: str | None = None,
    instance_id: str | None = None,
    gc: str = "",
) -> str:
    """The proxy's config: SQLite in its folder, or PostgreSQL at ``store_url``; with
    `gc` "python", Python's own garbage collector settings (gc_threshold = 0)."""
    carrier_window = args.carrier_window or args.binds * args.window
    server_extra = f'instance_id = "{instance_id}"\n' if instance_id else ""
    if gc == "python":
        server_extra += "gc_threshold = 0\n"
    store = f'url = "{store_url}"' if store_url else 'path = "proxy.db"'
    if args.batch_delay is not None:
        store += f"\nbatch_delay = {args.batch_delay}"
    text = f"""
[server]
{server_extra}host = "{HOST}"
port = 0
response_timeout = 30.0
submit_wait = 10.0
max_connections_per_ip = {args.binds + 10}

[[accounts]]
system_id = "{PROXY_ACCOUNT[0]}"
password = "{PROXY_ACCOUNT[1]}"
ack = "{ack}"
window = {args.window}
max_binds = {args.binds}

[[carriers]]
name = "sim"
host = "{HOST}"
port = {sim_port}
system_id = "bounceback"
password = "sim-pw"
window = {carrier_window}
submit_timeout = 30.0
reconnect_min = 0.1
reconnect_max = 1.0

[store]
{store}

[logging]
level = "INFO"
"""
    if feed_port is not None:
        text += f"""
[feed]
host = "{HOST}"
port = {feed_port}
client_id = "bounceback-bench-{instance_id or "1"}"
client = "{args.feed_client}"
"""
    return text


# ---------------------------------------------------------------------------- store checks

# What is left in a store after a graceful stop (shown when not zero).
_BOOKKEEPING = (
    ("unmatched_receipts", "SELECT COUNT(*) FROM unmatched_receipts"),
    ("receipts_pending", "SELECT COUNT(*) FROM sender_receipts"),
    ("outbox", "SELECT COUNT(*) FROM outbox"),
)


class StoreProbe:
    """Reads a phase's store from outside the proxy: its feed outbox and its states."""

    def outbox_count(self) -> int:
        raise NotImplementedError

    def states(self) -> dict[str, int]:
        """Messages per state, plus the receipt and outbox bookkeeping when not empty."""
        raise NotImplementedError

    def wait_feed_drained(self, timeout: float, interval: float = 0.05) -> float | None:
        """Seconds until the feed outbox is empty (None if not within ``timeout``)."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            with contextlib.suppress(sqlite3.Error, RuntimeError, subprocess.SubprocessError):
                if self.outbox_count() == 0:
                    return time.perf_counter() - start
            _Stop.check()
            time.sleep(interval)
        return None


class SqliteProbe(StoreProbe):
    def __init__(self, db: Path) -> None:
        self.db = db

    @contextlib.contextmanager
    def _read_only(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5.0)
        try:
            yield conn
        finally:
            conn.close()

    def outbox_count(self) -> int:
        with self._read_only() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def states(self) -> dict[str, int]:
        with self._read_only() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
            out = {str(s): int(n) for s, n in rows}
            for key, sql in _BOOKKEEPING:
                with contextlib.suppress(sqlite3.Error):
                    n = int(conn.execute(sql).fetchone()[0])
                    if n:
                        out[key] = n
            return out


class PgProbe(StoreProbe):
    """The same reads through ``psql`` on the bench's cluster."""

    def __init__(self, cluster: PgCluster, database: str) -> None:
        self.cluster = cluster
        self.database = database

    def _rows(self, sql: str) -> list[list[str]]:
        text = self.cluster.psql(sql, self.database)
        return [line.split("|") for line in text.splitlines() if line]

    def outbox_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM outbox")[0][0])

    def commits(self) -> int:
        """Transactions committed in this database so far (pg_stat_database)."""
        sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        return int(self._rows(sql)[0][0])

    def postmaster_pid(self) -> int | None:
        """The cluster's server process (first line of postmaster.pid)."""
        try:
            return int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def states(self) -> dict[str, int]:
        rows = self._rows("SELECT state, COUNT(*) FROM messages GROUP BY state")
        out = {s: int(n) for s, n in rows}
        for key, sql in _BOOKKEEPING:
            n = int(self._rows(sql)[0][0])
            if n:
                out[key] = n
        return out


# ---------------------------------------------------------------------------- phases


def phase_name(store: str, instances: int, ack: str, feed: bool, gc: str = "") -> str:
    return (
        f"proxy {store} x{instances} ack={ack}"
        + (" feed=on" if feed else "")
        + (f" gc={gc}" if gc else "")
    )


def stop_together(procs: Sequence[Proc], grace: float = 20.0) -> None:
    """A graceful stop of several processes at once: signal each, then wait for each."""
    for p in procs:
        p.send()
    for p in procs:
        with contextlib.suppress(Exception):
            p.stop(grace)  # a second SIGTERM only repeats the stop request


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.procs = Procs()
        self.deadline: float = time.monotonic() + float(args.max_seconds)
        self.sim: Proc | None = None
        self.broker: Proc | None = None
        self.sim_port = 0
        self.broker_port: int | None = None
        self.profiles: list[Path] = []
        self.cluster: PgCluster | None = None

    def remaining(self) -> float:
        _Stop.check()
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"the run exceeded --max-seconds {self.args.max_seconds:.0f}")
        return left

    def phase_timeout(self) -> float:
        return min(float(self.args.phase_timeout), self.remaining())

    def py(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "bounceback", *argv]

    def start_simulator(self) -> None:
        scenario = self.tmp / "scenario.toml"
        scenario.write_text(scenario_text(self.args))
        sim = self.procs.add(
            Proc(
                "simulator",
                self.py(
                    "simulate",
                    "--host",
                    HOST,
                    "--port",
                    "0",
                    "--scenario",
                    str(scenario),
                    "--log-level",
                    "INFO",
                ),
                self.tmp / "simulator.log",
                self.tmp,
            )
        )
        self.sim = sim
        sim.start()
        m = sim.wait_for(r"listening on 127\.0\.0\.1:(\d+)", min(30.0, self.remaining()))
        self.sim_port = int(m.group(1))

    def start_broker(self) -> None:
        binary = next(
            (b for b in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(b).exists()),
            "mosquitto",
        )
        port = free_port()
        conf = self.tmp / "mosquitto.conf"
        conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\npersistence false\n")
        broker = self.procs.add(
            Proc("mosquitto", [binary, "-c", str(conf)], self.tmp / "mosquitto.log", self.tmp)
        )
        self.broker = broker
        try:
            broker.start()
        except OSError as exc:
            raise BenchError(f"cannot start mosquitto ({binary}): {exc}") from exc
        wait_tcp(port, min(15.0, self.remaining()), broker)
        self.broker_port = port

    def start_cluster(self) -> PgCluster:
        """The throwaway PostgreSQL cluster (started once), with a migrated template."""
        if self.cluster is not None:
            return self.cluster
        if str(TESTS_DIR) not in sys.path:
            sys.path.insert(0, str(TESTS_DIR))
        from bounceback.store.postgres import migrate

        try:
            from pg_fixture import PgCluster as Cluster  # the tests' throwaway cluster
        except ImportError as exc:
            raise BenchError(f"cannot load the cluster helper from {TESTS_DIR}: {exc}") from exc
        try:
            cluster = Cluster()
            self.cluster = cluster  # stop_cluster() removes its folder whatever happens
            cluster.start()
            cluster.psql(f'CREATE DATABASE "{PG_TEMPLATE}" TEMPLATE template0')
            asyncio.run(asyncio.wait_for(migrate(cluster.url(PG_TEMPLATE)), 60.0))
        except (RuntimeError, subprocess.SubprocessError) as exc:
            raise BenchError(f"PostgreSQL: {exc}") from exc
        return cluster

    def stop_cluster(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.stop()

    def new_pg_database(self) -> tuple[str, PgProbe]:
        """A fresh migrated database for one phase: its URL and a probe on it."""
        cluster = self.start_cluster()
        try:
            name = cluster.create_database(PG_TEMPLATE)
            # The cluster runs with fsync off; per database, synchronous_commit decides
            # whether a commit waits for its WAL write.
            sync = self.args.pg_synchronous_commit
            cluster.psql(f'ALTER DATABASE "{name}" SET synchronous_commit = {sync}')
        except (RuntimeError, subprocess.SubprocessError) as exc:
            raise BenchError(f"PostgreSQL: {exc}") from exc
        return cluster.url(name), PgProbe(cluster, name)

    def start_proxy(
        self,
        label: str,
        ack: str,
        feed: bool,
        store_url: str | None = None,
        instance_id: str | None = None,
        gc: str = "",
    ) -> tuple[Proc, int]:
        """Start a proxy in a new folder ``label``; returns it and its port."""
        folder = self.tmp / label
        folder.mkdir()
        cfg = folder / "proxy.toml"
        cfg.write_text(
            proxy_config_text(
                self.args,
                self.sim_port,
                ack,
                self.broker_port if feed else None,
                store_url=store_url,
                instance_id=instance_id,
                gc=gc,
            )
        )
        if self.args.profile is not None and self.args.py_spy is None:
            prof = Path(self.args.profile).resolve() / f"proxy-{label}.prof"
            prof.parent.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "bounceback"]
            argv += ["run", "--config", str(cfg)]
            self.profiles.append(prof)
        else:
            argv = self.py("run", "--config", str(cfg))
        proxy = self.procs.add(Proc(f"proxy[{label}]", argv, folder / "proxy.log", folder))
        proxy.start()
        m = proxy.wait_for(
            r"bounceback listening on 127\.0\.0\.1:(\d+)", min(30.0, self.remaining())
        )
        proxy.wait_for(r"sim: bound", min(30.0, self.remaining()))
        if feed:
            proxy.wait_for(r"feed: connected", min(30.0, self.remaining()))
        return proxy, int(m.group(1))

    async def measure(
        self,
        phase: str,
        ports: Sequence[int],
        account: tuple[str, str],
        alive: list[subprocess.Popen[bytes]],
        db: PgProbe | None = None,
    ) -> Result:
        a = self.args
        gen = LoadGen(ports, account, a.binds, a.window, a.rate)
        if db is not None:
            gen.db_pid = db.postmaster_pid()
        try:
            await asyncio.wait_for(gen.connect(), min(30.0, self.remaining()))
            warm = await gen.run(phase + " (warm-up)", a.warmup, self.phase_timeout(), alive)
            if not warm.complete:
                raise BenchError(f"{phase}: warm-up did not complete: {warm.note}")
            commits0 = db.commits() if db is not None else 0
            result = await gen.run(phase, a.messages, self.phase_timeout(), alive)
            if db is not None:
                await asyncio.sleep(1.2)  # backends report their counts at most once a second
                result.db_commits = (db.commits() - commits0) / max(a.messages, 1)
            return result
        finally:
            await gen.close()

    def start_py_spy(self, label: str, proxy: Proc) -> Proc | None:
        if self.args.py_spy is None or proxy.popen is None:
            return None
        out = Path(self.args.profile).resolve() / f"proxy-{label}.pyspy.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [self.args.py_spy, "record", "--pid", str(proxy.popen.pid), "--rate", "200"]
        argv += ["--subprocesses"]  # the feed publisher process too
        argv += ["--format", "raw", "--nolineno", "--nonblocking", "--output", str(out)]
        spy = self.procs.add(Proc("py-spy", argv, proxy.log.with_name("py-spy.log"), proxy.cwd))
        spy.start()
        spy.wait_for(r"Sampling process", min(15.0, self.remaining()))
        self.profiles.append(out)
        return spy

    def _alive(self, *extra: Proc) -> list[subprocess.Popen[bytes]]:
        """The processes a phase needs; the phase stops early if one of them exits."""
        procs = [self.sim, self.broker, *extra]
        return [p.popen for p in procs if p is not None and p.popen is not None]

    def run_direct(self) -> Result:
        return asyncio.run(self.measure("direct", [self.sim_port], DIRECT_ACCOUNT, self._alive()))

    def run_proxy(
        self, store: str, instances: int, ack: str, feed: bool, round_no: int = 1, gc: str = ""
    ) -> Result:
        """One phase through ``instances`` fresh proxies on a fresh store."""
        label = f"{store}-x{instances}-ack-{ack}" + ("-feed" if feed else "")
        if gc:
            label += f"-gc-{gc}"
        if round_no > 1:
            label += f"-r{round_no}"
        phase = phase_name(store, instances, ack, feed, gc)
        store_url: str | None = None
        probe: StoreProbe
        if store == "postgres":
            store_url, probe = self.new_pg_database()
        else:
            probe = SqliteProbe(self.tmp / label / "proxy.db")
        proxies: list[Proc] = []
        try:
            ports: list[int] = []
            names: list[str] = []
            for i in range(instances):
                letter = "abcdefgh"[i]
                name = label if instances == 1 else f"{label}-{letter}"
                iid = f"bench-{letter}" if store == "postgres" else None
                proxy, port = self.start_proxy(name, ack, feed, store_url, iid, gc)
                proxies.append(proxy)
                ports.append(port)
                names.append(name)
            alive = self._alive(*proxies)
            spies = [
                s for n, p in zip(names, proxies, strict=True) if (s := self.start_py_spy(n, p))
            ]
            try:
                db = probe if isinstance(probe, PgProbe) else None
                result = asyncio.run(self.measure(phase, ports, PROXY_ACCOUNT, alive, db))
            finally:
                for spy in spies:
                    spy.stop(sig=signal.SIGINT)  # py-spy writes its output on SIGINT
            result.store, result.instances, result.ack, result.feed = store, instances, ack, feed
            result.gc = gc
            if feed and result.complete:
                interval = 0.05 if store == "sqlite" else 0.1  # psql per poll costs more
                result.feed_drain = probe.wait_feed_drained(min(120.0, self.remaining()), interval)
        finally:
            stop_together(proxies)
        # After a graceful stop nothing is in flight: read the final states.
        with contextlib.suppress(
            sqlite3.Error, RuntimeError, subprocess.SubprocessError, IndexError, ValueError
        ):
            result.store_states = probe.states()
        codes = [p.popen.returncode for p in proxies if p.popen is not None]
        bad = [c for c in codes if c not in (0, None)]
        if bad:
            result.note = (result.note + "; " if result.note else "") + (
                f"proxy exited with {', '.join(map(str, bad))}"
            )
        return result


# ---------------------------------------------------------------------------- output


# The goals: proxy throughput with receipts, proxy/direct, feed-on/feed-off.
GOAL_RATE = 5000.0
GOAL_RATIO = 0.6
GOAL_FEED_RATIO = 0.9


def goal_for(name: str) -> float | None:
    """The goal of a ratio, by its name; None for the store and scaling ratios."""
    if name.endswith("/ feed=off"):
        return GOAL_FEED_RATIO
    if name.endswith("/ direct"):
        return GOAL_RATIO
    return None


def summarize_rounds(results: list[Result]) -> dict[str, tuple[float, float, float, int]]:
    """Each ratio's (median, lowest, highest, rounds) over the rounds, each round's
    ratio taken between phases of that round: the machine's speed drifts over a run,
    and pairs measured a few seconds apart share most of that drift."""
    by_round: dict[str, list[float]] = {}
    for rnd in sorted({r.round for r in results}):
        for name, value in ratios([r for r in results if r.round == rnd]).items():
            by_round.setdefault(name, []).append(value)
    return {
        name: (statistics.median(vs), min(vs), max(vs), len(vs)) for name, vs in by_round.items()
    }


def ratios(results: list[Result]) -> dict[str, float]:
    """proxy / direct, feed=on / feed=off, postgres / sqlite x1 and x2 / x1 (same store)."""
    done = [r for r in results if r.complete and r.rate > 0]
    by = {(r.store, r.instances, r.ack, r.feed): r for r in done if r.store and not r.gc}
    direct = next((r for r in done if r.phase == "direct"), None)
    out: dict[str, float] = {}
    for r in done:
        if r.gc:
            tuned = by.get((r.store, r.instances, r.ack, r.feed))
            if tuned is not None:
                out[f"{tuned.phase} / gc={r.gc}"] = tuned.rate / r.rate
            continue
        if not r.store:
            continue
        if direct is not None and not r.feed:
            out[f"{r.phase} / direct"] = r.rate / direct.rate
        off = by.get((r.store, r.instances, r.ack, False)) if r.feed else None
        if off is not None:
            out[f"{r.phase} / feed=off"] = r.rate / off.rate
        lite = by.get(("sqlite", 1, r.ack, r.feed)) if r.store != "sqlite" else None
        if lite is not None:
            out[f"{r.phase} / sqlite x1"] = r.rate / lite.rate
        one = by.get((r.store, 1, r.ack, r.feed)) if r.instances > 1 else None
        if one is not None:
            out[f"{r.phase} / x1"] = r.rate / one.rate
    return out


def print_table(
    args: argparse.Namespace,
    results: list[Result],
    rs: dict[str, tuple[float, float, float, int]],
) -> None:
    print(
        f"messages={args.messages} binds={args.binds} window={args.window} "
        f"receipt_delay={args.receipt_delay}s warm-up={args.warmup} "
        f"cpus={os.cpu_count()}"
        + (f" rate={args.rate:.0f} msg/s" if args.rate > 0 else "")
        + (
            f" pg synchronous_commit={args.pg_synchronous_commit}"
            if "postgres" in args.stores
            else ""
        )
    )
    rounds = max(r.round for r in results)

    def shown(r: Result) -> str:
        return f"{r.phase} #{r.round}" if rounds > 1 else r.phase

    width = max([len(shown(r)) for r in results] + [26])
    head = (
        f"{'phase':<{width}} {'N':>7} {'elapsed s':>9} {'msg/s':>8} {'submit/s':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'receipts':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{shown(r):<{width}} {r.messages:>7} {r.elapsed:>9.2f} {r.rate:>8.0f} "
            f"{r.submit_rate:>9.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.errors:>6} "
            f"{r.receipts:>8}"
        )
        extras = []
        if not r.complete:
            extras.append(f"INCOMPLETE: {r.note}")
        elif r.note:
            extras.append(r.note)
        if r.stray_receipts and r.complete:
            extras.append(f"{r.stray_receipts} receipts for unknown ids")
        if r.feed_drain is not None:
            extras.append(f"feed outbox drained {r.feed_drain:.2f} s after the last receipt")
        elif r.feed and r.complete:
            extras.append("feed outbox NOT drained")
        if r.crossed is not None:
            extras.append(f"receipts back on the other instance's bind: {r.crossed:.0%}")
        if r.db_commits is not None:
            extras.append(f"PostgreSQL commits per message: {r.db_commits:.2f}")
        if r.cpu_us:
            extras.append("cpu µs/msg: " + ", ".join(f"{k} {v:.0f}" for k, v in r.cpu_us.items()))
        if r.store_states:
            extras.append(
                "store: " + ", ".join(f"{k} {v}" for k, v in sorted(r.store_states.items()))
            )
        for e in extras:
            print(f"{'':<{width + 2}}{e}")
    if args.rate > 0:
        # At a fixed rate every phase runs at that rate: throughput ratios and goals
        # say nothing; the latency each phase adds is the figure.
        print_added_latency(results)
        return
    for name, (value, low, high, n) in rs.items():
        goal = goal_for(name)
        verdict = (
            "" if goal is None else f" (goal >= {goal}: {'met' if value >= goal else 'NOT met'})"
        )
        spread = f" (median of {n} rounds, {low:.2f}-{high:.2f})" if n > 1 else ""
        print(f"ratio {name}: {value:.2f}{spread}{verdict}")
    by_phase: dict[str, list[float]] = {}
    for r in results:
        if r.complete and r.store and not r.feed and not r.gc:
            by_phase.setdefault(r.phase, []).append(r.rate)
    for phase, rates in by_phase.items():
        rate = statistics.median(rates)
        met = "met" if rate >= GOAL_RATE else "NOT met"
        spread = f" (median of {len(rates)} rounds)" if len(rates) > 1 else ""
        print(f"{phase}: {rate:.0f} msg/s with receipts{spread} (goal >= {GOAL_RATE:.0f}: {met})")


def print_added_latency(results: list[Result]) -> None:
    """At a fixed rate: the submit latency each proxy phase adds to the direct one of its
    round (p50 and p99), with ranges over the rounds."""
    added: dict[str, list[tuple[float, float]]] = {}
    for rnd in sorted({r.round for r in results}):
        this = [r for r in results if r.round == rnd and r.complete]
        direct = next((r for r in this if r.phase == "direct"), None)
        if direct is None:
            continue
        for r in this:
            if r is not direct:
                added.setdefault(r.phase, []).append(
                    (r.p50_ms - direct.p50_ms, r.p99_ms - direct.p99_ms)
                )
    for phase, pairs in added.items():
        p50s = [p for p, _ in pairs]
        p99s = [q for _, q in pairs]
        print(
            f"added latency {phase} vs direct: p50 +{statistics.median(p50s):.2f} ms "
            f"({min(p50s):.2f}-{max(p50s):.2f}), p99 +{statistics.median(p99s):.2f} ms "
            f"({min(p99s):.2f}-{max(p99s):.2f}) over {len(pairs)} round(s)"
        )


def summarize_collapsed(text: str, limit: int = 30) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    total = 0
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    roots: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        roots[frames[0]] = roots.get(frames[0], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return "(no samples)"
    out = [f"{total} samples (all threads, idle excluded)", "", "by thread root:"]
    for f, n in sorted(roots.items(), key=lambda kv: -kv[1])[:5]:
        out.append(f"  {100 * n / total:5.1f}%  {f}")
    out += ["", "self (top functions):"]
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:limit]:
        out.append(f"  {100 * n / total:5.1f}%  {f}")
    out += ["", "inclusive (top functions):"]
    for f, n in sorted(incl.items(), key=lambda kv: -kv[1])[:limit]:
        out.append(f"  {100 * n / total:5.1f}%  {f}")
    return "\n".join(out)


def print_profile(path: Path, limit: int = 25) -> None:
    if not path.exists():
        print(f"(no profile written at {path})", file=sys.stderr)
        return
    if path.suffix == ".txt":
        print(f"== py-spy {path}", file=sys.stderr)
        text = path.read_text(errors="replace")
        print(summarize_collapsed(text), file=sys.stderr)
        print(
            "\nby component (python bench/profile_groups.py FILE --us-per-message N",
            file=sys.stderr,
        )
        print("gives µs per message from the proxy's CPU per message above):", file=sys.stderr)
        print(profile_groups.render(profile_groups.group(text)), file=sys.stderr)
        return
    buf = io.StringIO()
    st = pstats.Stats(str(path), stream=buf)
    st.strip_dirs().sort_stats("tottime").print_stats(limit)
    st.sort_stats("cumulative").print_stats(limit)
    print(f"== profile {path}", file=sys.stderr)
    print(buf.getvalue(), file=sys.stderr)


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="End-to-end throughput: load generator -> proxy -> carrier simulator, "
        "with receipts, against the same load sent straight to the simulator."
    )
    p.add_argument("--messages", type=int, default=20000, help="messages per phase")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="submit at this fixed rate (msg/s) over the binds instead of as fast as the "
        "windows allow: latency (from each submit's scheduled time) and CPU per message "
        "at that load, and the latency the proxy adds to the direct path",
    )
    p.add_argument("--binds", type=int, default=4, help="concurrent sender binds")
    p.add_argument("--window", type=int, default=64, help="outstanding submits per bind")
    p.add_argument(
        "--ack",
        choices=("carrier", "stored", "both"),
        default="carrier",
        help="the proxy account's ack mode (both: measure each)",
    )
    p.add_argument("--feed", action="store_true", help="also measure with the MQTT feed on")
    p.add_argument(
        "--feed-client",
        choices=["builtin", "aiomqtt"],
        default="builtin",
        help="the feed's MQTT client ([feed] client; default builtin)",
    )
    p.add_argument(
        "--stores",
        default="sqlite",
        help="comma-separated stores to measure: sqlite, postgres (default sqlite)",
    )
    p.add_argument(
        "--instances",
        default="1",
        help="comma-separated proxy instance counts: 1, 2 (2 only with postgres; default 1)",
    )
    p.add_argument(
        "--scaling",
        action="store_true",
        help="shortcut for --stores sqlite,postgres --instances 1,2",
    )
    p.add_argument(
        "--pg-synchronous-commit",
        choices=("on", "off"),
        default="on",
        help="PostgreSQL synchronous_commit for the bench databases (the cluster runs "
        "with fsync off either way; default on)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the whole phase sequence; ratios are taken within each round and "
        "their median printed (default 1)",
    )
    p.add_argument("--warmup", type=int, default=1000, help="unmeasured messages per phase")
    p.add_argument("--receipt-delay", type=float, default=0.005, help="simulator receipt delay")
    p.add_argument(
        "--carrier-window",
        type=int,
        default=0,
        help="the proxy's window towards the simulator (default binds x window)",
    )
    p.add_argument("--phase-timeout", type=float, default=180.0, help="seconds per phase")
    p.add_argument("--max-seconds", type=float, default=900.0, help="bound on the whole run")
    p.add_argument(
        "--batch-delay",
        type=float,
        default=None,
        help="the proxy's [store] batch_delay (default: the store's default)",
    )
    p.add_argument(
        "--gc-compare",
        action="store_true",
        help="also measure the first setup with [server] gc_threshold = 0 (Python's own"
        " collector settings) and print tuned / python",
    )
    p.add_argument("--profile", metavar="DIR", help="run the proxy under cProfile into DIR")
    p.add_argument("--py-spy", metavar="BIN", help="sample the proxy with py-spy (needs --profile)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (configs, logs)")
    a = p.parse_args(argv)
    for name in ("messages", "binds", "window"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1")
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    if a.py_spy is not None and a.profile is None:
        p.error("--py-spy needs --profile DIR for its output")
    if a.warmup < 1:
        p.error("--warmup must be at least 1")
    if a.scaling:
        a.stores, a.instances = "sqlite,postgres", "1,2"
    stores = [x.strip() for x in a.stores.split(",") if x.strip()]
    bad = [x for x in stores if x not in STORES]
    if bad or not stores:
        p.error(f"--stores: expected a list of {', '.join(STORES)}, got {a.stores!r}")
    try:
        counts = [int(x) for x in a.instances.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or any(n not in INSTANCE_COUNTS for n in counts):
        p.error(f"--instances: expected a list of 1 and 2, got {a.instances!r}")
    a.stores = list(dict.fromkeys(stores))
    a.instances = sorted(set(counts))
    a.setups = setups(a.stores, a.instances)
    if not a.setups:
        p.error("nothing to measure: two instances need --stores postgres")
    return a


def setups(stores: Sequence[str], counts: Sequence[int]) -> list[tuple[str, int]]:
    """(store, instances) pairs to measure; SQLite is one instance's store."""
    return [(s, n) for s in stores for n in counts if not (s == "sqlite" and n > 1)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    acks = ("carrier", "stored") if args.ack == "both" else (args.ack,)
    tmp = Path(tempfile.mkdtemp(prefix="bounceback-bench-"))
    bench = Bench(args, tmp)

    def hard_exit(signum: int, _frame: FrameType | None) -> None:
        # The watchdog, or a second stop signal: clean up and leave at once.
        bench.procs.stop_all(grace=2.0)
        bench.stop_cluster()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"bench aborted by signal {signum}", file=sys.stderr)
        os._exit(3)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        if _Stop.signum:
            hard_exit(signum, frame)
        _Stop.signum = signum

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGALRM, hard_exit)
    signal.alarm(int(args.max_seconds) + 60)  # watchdog beyond the cooperative deadline
    results: list[Result] = []
    rc = 0
    try:
        bench.start_simulator()
        if args.feed:
            bench.start_broker()
        for rnd in range(1, args.rounds + 1):
            results.append(bench.run_direct())
            results[-1].round = rnd
            for ack in acks:
                for store, n in args.setups:
                    # With the feed, every other round measures feed=on first: a drift
                    # in the machine's speed then favours neither side of the ratio.
                    feeds = (False, True) if rnd % 2 else (True, False)
                    for feed in feeds if args.feed else (False,):
                        results.append(bench.run_proxy(store, n, ack, feed=feed, round_no=rnd))
                        results[-1].round = rnd
            if args.gc_compare:
                # The first setup again on Python's own collector settings.
                store, n = args.setups[0]
                results.append(bench.run_proxy(store, n, acks[0], False, rnd, gc="python"))
                results[-1].round = rnd
    except (BenchError, OSError, TimeoutError) as exc:
        print(
            f"bench failed: {exc!r}" if not isinstance(exc, BenchError) else f"bench failed: {exc}",
            file=sys.stderr,
        )
        rc = 1
    finally:
        signal.alarm(0)
        bench.procs.stop_all()
        bench.stop_cluster()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if any(not r.complete for r in results):
        rc = 1
    rs = summarize_rounds(results)
    if args.json:
        doc = {
            "config": {
                k: getattr(args, k)
                for k in (
                    "messages",
                    "binds",
                    "window",
                    "ack",
                    "feed",
                    "stores",
                    "instances",
                    "pg_synchronous_commit",
                    "warmup",
                    "receipt_delay",
                    "rounds",
                    "gc_compare",
                )
            },
            "cpus": os.cpu_count(),
            "results": [asdict(r) for r in results],
            "ratios": {k: v[0] for k, v in rs.items()},  # the median over the rounds
            "ratio_ranges": {
                k: {"median": v[0], "low": v[1], "high": v[2], "rounds": v[3]}
                for k, v in rs.items()
            },
            "goals": {
                "proxy_rate": GOAL_RATE,
                "proxy_over_direct": GOAL_RATIO,
                "feed_on_over_off": GOAL_FEED_RATIO,
            },
        }
        print(json.dumps(doc, indent=2))
    elif results:
        print_table(args, results, rs)
    for prof in bench.profiles:
        print_profile(prof)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
