"""``bounceback demo``: the carrier simulator, the proxy and a sample run in one process.

Nothing outside is needed: no MQTT broker, no database server. The demo

1. starts the carrier simulator with a scripted mix of outcomes: most numbers are
   delivered at once; some soft-bounce once or twice (absent subscriber, memory
   full, subscriber busy, carrier throttling) and are then delivered; some bounce
   hard (unknown subscriber, call barred); a few are never reachable and carry a
   short validity period, so they expire; for a few the carrier delivers but loses
   the receipt, and the proxy finds out by asking it with ``query_sm``;
2. starts the proxy in front of it, with its SQLite store in a temporary folder and
   retry schedules of seconds instead of minutes;
3. binds to the proxy as a transceiver and sends every message asking for a
   delivery receipt, then follows the store until every message has reached a final
   state and every receipt has come back, showing its progress: on a terminal a live
   display (a progress bar with the rate and an ETA, and the figures) redrawn in place
   within the terminal's width, otherwise one plain line every few seconds;
4. prints a summary: how many deliveries the retries recovered, the share of hard
   bounces, and carrier submissions per message.

`run_demo` returns 0 when every message reached a final state and the sender got
exactly one receipt for each, else 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import attrs
from bounceback.analysis.stats import message_outcome
from bounceback.smpp.client import EsmeClient
from bounceback.smpp.simulator import CarrierSimulator, Rule, Scenario
from bounceback.store.sqlite import Store
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Task, TaskID, TaskProgressColumn
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text
from smppcodecs.constants import ESM_CLASS_INTERMEDIATE
from smppcodecs.pdu import DeliverSm
from smppcodecs.receipt import ReceiptParseError, parse_receipt

ACCOUNT = ("demo", "demo-pw")
CARRIER_CREDENTIALS = ("bounceback", "sim-pw")
NUMBER_PREFIX = "4477009"  # UK numbers reserved for fiction: 07700 9xxxxx
MAX_MESSAGES = 100_000
NEVER_VALIDITY = 12  # seconds: how long the unreachable numbers are tried
RECEIPT_DELAY = 0.1  # the simulated carrier's receipt delay, seconds
RECEIPT_QUERY_AFTER = 3.0  # seconds: when the proxy asks about a receipt that did not come


@attrs.frozen
class Kind:
    """One scripted behaviour of the simulated carrier."""

    name: str
    share: float  # of all messages; "deliver" takes the rest
    outcomes: tuple[str, ...]
    expect: str  # delivered | recovered | hard | expired
    validity: int = 0  # seconds; 0 = the proxy's default


MIX: tuple[Kind, ...] = (
    Kind("deliver", 0.0, ("deliver",), "delivered"),
    Kind("absent once", 0.05, ("absent", "deliver"), "recovered"),
    Kind("absent twice", 0.04, ("absent", "absent", "deliver"), "recovered"),
    Kind("memory full", 0.03, ("memory_full", "deliver"), "recovered"),
    Kind("busy", 0.03, ("busy", "deliver"), "recovered"),
    Kind("throttled", 0.03, ("throttle", "deliver"), "recovered"),
    Kind("unknown subscriber", 0.04, ("unknown",), "hard"),
    Kind("call barred", 0.03, ("barred",), "hard"),
    Kind("never reachable", 0.03, ("absent",), "expired", validity=NEVER_VALIDITY),
    # Delivered, but the carrier never sends the receipt: query_sm finds it.
    Kind("receipt lost", 0.02, ("lost_receipt",), "delivered"),
)

# Retry schedules in seconds (initial, factor, max): the production defaults are
# minutes to hours; the demo wants to show a retry within a few seconds.
DEMO_SCHEDULES: dict[str, tuple[float, float, float]] = {
    "throttled": (0.5, 2.0, 4.0),
    "congestion": (1.0, 2.0, 5.0),
    "system_failure": (1.0, 2.0, 5.0),
    "network": (1.0, 2.0, 5.0),
    "routing": (1.0, 2.0, 5.0),
    "timeout": (2.0, 2.0, 10.0),
    "not_bound": (0.5, 2.0, 4.0),
    "subscriber_busy": (1.0, 2.0, 5.0),
    "absent_subscriber": (1.5, 2.0, 6.0),
    "memory_full": (3.0, 2.0, 10.0),
    "unknown_state": (2.0, 2.0, 10.0),
    "expired": (2.0, 2.0, 10.0),
}


@attrs.frozen
class Planned:
    number: str
    kind: Kind


def plan(messages: int, seed: int = 7) -> list[Planned]:
    """One destination number per message, each with its scripted behaviour.

    Every kind gets its share of the messages (at least one each from 20 messages
    up); the order is shuffled with `seed`, so runs are repeatable."""
    kinds: list[Kind] = []
    for kind in MIX[1:]:
        count = round(messages * kind.share)
        if messages >= 20:
            count = max(count, 1)
        kinds += [kind] * count
    kinds = kinds[:messages]
    kinds += [MIX[0]] * (messages - len(kinds))
    random.Random(seed).shuffle(kinds)
    return [Planned(f"{NUMBER_PREFIX}{i:05d}", k) for i, k in enumerate(kinds)]


def scenario_for(planned: Sequence[Planned]) -> Scenario:
    """The simulator's scenario: one rule per number that does not simply deliver."""
    return Scenario(
        id_format="hex",
        receipt_id_format="dec",  # like many carriers: hex ids in responses, decimal in receipts
        receipt_delay=RECEIPT_DELAY,
        default=("deliver",),
        rules=tuple(
            Rule(number=p.number, outcomes=p.kind.outcomes)
            for p in planned
            if p.kind.outcomes != ("deliver",)
        ),
        credentials={CARRIER_CREDENTIALS[0]: CARRIER_CREDENTIALS[1]},
    )


def config_text(
    carrier_port: int, store: str = "demo.db", *, console_port: int = 0, token: str = ""
) -> str:
    """The proxy's configuration for the demo (TOML); with `token`, the HTTP listener on
    127.0.0.1:`console_port` (0: a free port) serves the web console and the admin API,
    and `token` (admin scope) logs in."""
    lines = [
        "# Written by `bounceback demo`: the proxy in front of the demo's carrier simulator.",
        "[server]",
        'host = "127.0.0.1"',
        "port = 0",
        "submit_wait = 5.0",
        "",
        "[[accounts]]",
        f'system_id = "{ACCOUNT[0]}"',
        f'password = "{ACCOUNT[1]}"',
        "",
        "[[carriers]]",
        'name = "sim"',
        'host = "127.0.0.1"',
        f"port = {carrier_port}",
        f'system_id = "{CARRIER_CREDENTIALS[0]}"',
        f'password = "{CARRIER_CREDENTIALS[1]}"',
        "reconnect_min = 0.2",
        "reconnect_max = 2.0",
        f"receipt_query_after = {RECEIPT_QUERY_AFTER}",
        "",
        "[retry]",
        "max_attempts = 6",
        "max_age = 300.0",
        "jitter = 0.1",
    ]
    for reason, (initial, factor, cap) in DEMO_SCHEDULES.items():
        lines += [
            f"[retry.schedules.{reason}]",
            f"initial = {initial}",
            f"factor = {factor}",
            f"max = {cap}",
        ]
    # The simulator reports memory full as err:040 (40 + SM delivery failure cause).
    lines += ["", "[classify.carriers.sim]", 'err_space = "map40"']
    lines += ["", "[store]", f"path = {json.dumps(store)}", "batch_delay = 0.002", ""]
    if token:
        lines += [
            "# The web console and the admin API (this run's token; the demo made it up).",
            "[metrics]",
            'host = "127.0.0.1"',
            f"port = {console_port}",
            "",
            "[admin]",
            "[[admin.tokens]]",
            'name = "demo"',
            'scope = "admin"',
            f"token = {json.dumps(token)}",
            "",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------- progress


@attrs.define
class Progress:
    """What the demo has seen so far."""

    total: int
    answered: int = 0  # submit_sm answered by the proxy
    refused: int = 0  # submit_sm refused (no message id)
    stored: int = 0
    delivered: int = 0
    recovered: int = 0
    soft_bounced: int = 0  # soft-bounced at least once
    held: int = 0  # held for a retry now
    hard: int = 0
    expired: int = 0
    cancelled: int = 0
    attempts: int = 0
    receipts: int = 0  # messages with their final receipt
    duplicate_receipts: int = 0
    queried: int = 0  # messages whose final state came from the carrier's query_sm answer
    submissions: int = 0  # submissions the carrier saw (throttled ones included)
    elapsed: float = 0.0

    @property
    def final(self) -> int:
        return self.delivered + self.hard + self.expired + self.cancelled

    @property
    def accepted(self) -> int:
        return self.answered - self.refused

    @property
    def in_flight(self) -> int:
        return self.stored - self.final - self.held

    @property
    def done(self) -> bool:
        return (
            self.answered == self.total
            and self.final == self.accepted
            and self.receipts >= self.accepted
        )


async def read_store(store: Store, p: Progress) -> None:
    """Fill `p` with the states in the proxy's store (the demo's store is SQLite: its
    JSON functions let the database do the counting, away from the event loop)."""
    rows = await store.query(
        "SELECT state, attempts > 1, json_extract(data, '$.verdict.kind'),"
        " json_array_length(data, '$.retries') > 0, COUNT(*), SUM(attempts)"
        " FROM messages GROUP BY 1, 2, 3, 4",
        (),
    )
    counts = dict.fromkeys(("delivered", "hard", "expired", "cancelled", "pending"), 0)
    stored = recovered = soft = held = attempts = 0
    for state, several, kind, retried, n, total_attempts in rows:
        data = {"verdict": {"kind": kind or ""}, "retries": [1] if retried else []}
        o = message_outcome(str(state), 2 if several else 1, data)
        n = int(n)
        stored += n
        counts[o.result] += n
        recovered += n * o.recovered
        soft += n * o.soft_bounced
        held += n * (state == "held")
        attempts += int(total_attempts)
    p.stored = stored
    p.delivered = counts["delivered"]
    p.hard = counts["hard"]
    p.expired = counts["expired"]
    p.cancelled = counts["cancelled"]
    p.recovered = recovered
    p.soft_bounced = soft
    p.held = held
    p.attempts = attempts


def plain_line(p: Progress) -> str:
    """One line for a log or a pipe."""
    return (
        f"[{p.elapsed:6.1f} s] final {p.final}/{p.total} | delivered {p.delivered}"
        f" (recovered {p.recovered}) | held {p.held} | hard {p.hard} | expired {p.expired}"
        f" | receipts {p.receipts}"
    )


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def status_text(p: Progress, task: Task | None) -> Text:
    """The line under the bar: final count, rate, ETA and elapsed time (words that a
    narrow terminal wraps between, never inside)."""
    speed = None if task is None else task.speed
    eta = None if task is None or p.final >= p.total else task.time_remaining
    rate = "-- msg/s" if not speed else f"{speed:.1f} msg/s"
    out = Text()
    out.append(f"{p.final}/{p.total}", "bold")
    out.append(" final  ")
    out.append(rate, "cyan")
    out.append("  ETA ")
    out.append(_clock(0.0 if p.final >= p.total else eta), "cyan")
    out.append(f"  elapsed {_clock(p.elapsed)}", "dim")
    return out


def figures(p: Progress) -> Table:
    """The live view's table: label/value pairs that fold into fewer columns (rich
    wraps the cells) when the terminal is narrow."""
    grid = Table.grid(padding=(0, 2), expand=False)
    grid.add_column(no_wrap=False)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(no_wrap=False)
    grid.add_column(justify="right", no_wrap=True)
    rows = [
        ("delivered", p.delivered, "green", "recovered by retry", p.recovered, "green"),
        ("soft-bounced", p.soft_bounced, "yellow", "held now", p.held, "yellow"),
        ("hard bounces", p.hard, "red", "expired", p.expired, "yellow"),
        ("in flight", max(p.in_flight, 0), "", "receipts to sender", p.receipts, ""),
    ]
    for label, value, style, label2, value2, style2 in rows:
        grid.add_row(label, Text(str(value), style), label2, Text(str(value2), style2))
    return grid


class LiveView:
    """The demo's progress: on a terminal a rich live display (a progress bar with the
    rate and an ETA, and the figures), redrawn in place within the terminal's width;
    otherwise one plain line every `plain_every` seconds."""

    def __init__(
        self,
        out: TextIO,
        live: bool,
        plain_every: float = 2.0,
        *,
        console: Console | None = None,
    ) -> None:
        self.out = out
        self.live = live
        self.plain_every = plain_every
        self._last_plain = -1e9
        self._console = console
        self._live: Live | None = None
        # Used for its bar and its rate estimate (over the recent updates) only.
        self._bar = RichProgress(BarColumn(bar_width=None), TaskProgressColumn(), expand=True)
        self._task: TaskID | None = None

    def _renderable(self, p: Progress) -> Group:
        if self._task is None:
            self._task = self._bar.add_task("final", total=p.total)
        self._bar.update(self._task, completed=p.final, total=p.total)
        task = self._bar.tasks[0]
        return Group(self._bar, status_text(p, task), figures(p))

    def draw(self, p: Progress, *, force: bool = False) -> None:
        if self.live:
            renderable = self._renderable(p)
            if self._live is None:
                con = self._console or Console(file=self.out, force_terminal=True)
                self._live = Live(
                    renderable,
                    console=con,
                    auto_refresh=False,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                self._live.start(refresh=True)
            else:
                self._live.update(renderable, refresh=True)
            return
        if force or p.elapsed - self._last_plain >= self.plain_every:
            self.out.write(plain_line(p) + "\n")
            self._last_plain = p.elapsed
        self.out.flush()

    def close(self) -> None:
        """Leave the last drawing on the screen and show the cursor again."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def summary_lines(p: Progress, planned: Sequence[Planned]) -> list[str]:
    """The final summary."""

    def share(n: int, of: int) -> str:
        return f"{n * 100 / of:.1f}%" if of else "-"

    scripted = {k: sum(1 for x in planned if x.kind.expect == k) for k in ("recovered", "hard")}
    never = sum(1 for x in planned if x.kind.expect == "expired")
    lost = sum(1 for x in planned if x.kind.outcomes == ("lost_receipt",))
    first = p.delivered - p.recovered
    per_msg = f"{p.submissions / p.accepted:.2f}" if p.accepted else "-"
    lines = [
        f"Summary after {p.elapsed:.1f} s",
        f"  messages                    {p.total:>6}",
        f"  delivered                   {p.delivered:>6}  ({share(p.delivered, p.accepted)})",
        f"    at the first attempt      {first:>6}",
        f"    recovered by retry        {p.recovered:>6}  ({p.recovered} of the"
        f" {p.soft_bounced} messages that soft-bounced:"
        f" {share(p.recovered, p.soft_bounced)})",
        f"  hard bounces                {p.hard:>6}  ({share(p.hard, p.accepted)} of messages)",
        f"  expired (never recovered)   {p.expired:>6}  ({share(p.expired, p.accepted)})",
        f"  submissions to the carrier  {p.submissions:>6}  ({per_msg} per message)",
        f"  receipts to the sender      {p.receipts:>6}  of {p.accepted}",
        f"    found with query_sm       {p.queried:>6}  (no receipt after"
        f" {RECEIPT_QUERY_AFTER:.0f} s: the proxy asked the carrier)",
        f"  (the carrier was scripted for {scripted['recovered']} soft bounces that recover,"
        f" {scripted['hard']} hard bounces, {never} numbers that never answer and"
        f" {lost} receipts it loses)",
    ]
    if p.recovered:
        lines.append(
            f"Retries recovered {p.recovered} deliveries that a gateway without them would"
            " have reported as failed."
        )
    return lines


# ---------------------------------------------------------------- the run


async def run_demo(
    messages: int = 300,
    *,
    out: TextIO,
    live: bool = False,
    keep: Path | None = None,
    timeout: float = 120.0,
    seed: int = 7,
    console: Console | None = None,
    console_port: int | None = 0,
    stay: bool = False,
) -> int:
    """Run the whole demo; returns the exit status (0 complete, 1 otherwise).

    With `console_port` (not None; 0: a free port) the web console is served while the
    demo runs, and its address and a token to log in with are printed first; with
    `stay`, the proxy and the console stay up after the summary until SIGINT/SIGTERM."""
    from bounceback.config.settings import load_config
    from bounceback.gateway.shell import Gateway

    planned = plan(messages, seed)
    scenario = scenario_for(planned)
    folder = keep if keep is not None else Path(tempfile.mkdtemp(prefix="bounceback-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    sim = CarrierSimulator(scenario)
    gw: Gateway | None = None
    client: EsmeClient | None = None
    view = LiveView(out, live, console=console)
    p = Progress(total=messages)
    receipts: dict[str, int] = {}
    try:
        await sim.start()
        assert sim.port is not None
        config_path = folder / "demo.toml"
        token = secrets.token_urlsafe(18) if console_port is not None else ""
        config_path.write_text(
            config_text(sim.port, console_port=console_port or 0, token=token), encoding="utf-8"
        )
        gw = Gateway(load_config(config_path))
        await gw.start()
        deadline = time.monotonic() + 10.0
        while not all(link.bound for link in gw.links.values()):
            if time.monotonic() > deadline:
                out.write("the proxy could not bind to the carrier simulator\n")
                return 1
            await asyncio.sleep(0.02)
        out.write(
            f"Carrier simulator on 127.0.0.1:{sim.port}, proxy on 127.0.0.1:{gw.port}"
            f" (store {folder / 'demo.db'})\n"
            f"Sending {messages} messages as {ACCOUNT[0]!r}, bound as a transceiver,"
            " each asking for a delivery receipt.\n"
        )
        if token and gw.admin_port:
            out.write(
                f"Web console: http://127.0.0.1:{gw.admin_port}/  (log in with the token"
                f" {token}){'' if stay else '; add --stay to keep it up after the run'}\n"
            )
        out.flush()

        def on_deliver(pdu: DeliverSm) -> int:
            try:
                receipt = parse_receipt(pdu)
            except ReceiptParseError:
                return 0
            if receipt is None or pdu.esm_class & 0x3C == ESM_CLASS_INTERMEDIATE:
                return 0
            mid = receipt.message_id or ""
            receipts[mid] = receipts.get(mid, 0) + 1
            return 0

        client = await EsmeClient.connect(
            "127.0.0.1", gw.port, ACCOUNT[0], ACCOUNT[1], bind="transceiver", window=50
        )
        client.on_deliver = on_deliver
        started = time.monotonic()
        ids: set[str] = set()
        sender = asyncio.ensure_future(_send_all(client, planned, p, ids))
        end = started + timeout
        while True:
            await asyncio.sleep(0.25 if live else 0.5)
            p.elapsed = time.monotonic() - started
            await read_store(gw.store, p)
            p.receipts = sum(1 for mid in ids if receipts.get(mid, 0) >= 1)
            p.duplicate_receipts = sum(n - 1 for n in receipts.values() if n > 1)
            p.queried = gw.counters.get("receipt_queries_final", 0)
            if p.done or time.monotonic() > end:
                break
            view.draw(p)
        if not sender.done():
            sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        p.submissions = sum(sim.count_for(x.number) for x in planned)
        view.draw(p, force=True)
        view.close()
        out.write("\n" + "\n".join(summary_lines(p, planned)) + "\n")
        problems = _problems(p)
        for line in problems:
            out.write(f"incomplete: {line}\n")
        if keep is not None:
            out.write(
                f"The store and config are kept in {folder}; try:\n"
                f"  bounceback stats --config {config_path} --hours 1\n"
            )
        out.flush()
        if stay and gw.admin_port:
            out.write(
                f"The proxy and the web console (http://127.0.0.1:{gw.admin_port}/) stay up:"
                " Ctrl-C ends the demo.\n"
            )
            out.flush()
            await _until_signalled()
        return 1 if problems else 0
    finally:
        view.close()
        if client is not None:
            await client.unbind(timeout=2.0)
        if gw is not None:
            await gw.stop()
        await sim.stop()
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


async def _until_signalled() -> None:
    """Wait for SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _problems(p: Progress) -> list[str]:
    out = []
    if p.refused:
        out.append(f"{p.refused} submissions were refused by the proxy")
    if p.answered < p.total:
        out.append(f"{p.total - p.answered} submissions got no answer")
    if p.final < p.accepted:
        out.append(f"{p.accepted - p.final} messages did not reach a final state in time")
    if p.receipts < p.accepted:
        out.append(f"{p.accepted - p.receipts} receipts did not arrive")
    if p.duplicate_receipts:
        out.append(f"{p.duplicate_receipts} receipts arrived more than once")
    return out


async def _send_all(
    client: EsmeClient, planned: Sequence[Planned], p: Progress, ids: set[str]
) -> None:
    """Submit every message (the client's window bounds how many are in flight); the
    proxy's message ids go into `ids` as the answers arrive."""

    async def one(x: Planned) -> None:
        validity = f"0000000000{x.kind.validity:02d}000R" if x.kind.validity else ""
        try:
            resp = await client.submit(
                x.number,
                f"Bounceback demo: {x.kind.name}".encode(),
                source="Demo",
                validity_period=validity,
            )
        except Exception:
            p.answered += 1
            p.refused += 1
            return
        p.answered += 1
        mid = str(getattr(resp, "message_id", "") or "")
        if resp.command_status != 0 or not mid:
            p.refused += 1
            return
        ids.add(mid)

    await asyncio.gather(*(one(x) for x in planned))
