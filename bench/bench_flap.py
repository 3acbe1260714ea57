"""A flapping carrier under a steady load, as an operator would meet it.

The proxy (`bounceback run`) runs as its own process; this process is the sender and
plays the carrier. For `--flap-seconds` the carrier accepts every bind and closes the
connection on every `submit_sm` (unanswered); the sender submits `--messages`
messages spread over that time (registered_delivery = 1). Then the flapping carrier
goes away and the carrier simulator (`bounceback simulate`) takes over its port and
delivers everything. The link-failure schedules (`not_bound`, `timeout`) are
`--schedule INITIAL,FACTOR,MAX`.

It prints what the sender saw (answers, final receipts by stat, intermediate
notifications), what the carrier saw (binds, dropped submits), how long after the
flap ended the last final receipt came, and the messages left unfinished in the store
after a clean stop (stranded). Not a test: the figures are for reading.

    python bench/bench_flap.py                       # 50 messages, a 30 s flap, 1 s x2 max 5 s
    python bench/bench_flap.py --schedule 0.3,2,1.5 --flap-seconds 45 --messages 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
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
    store_states,
    wait_port,
)
from bounceback.smpp.client import EsmeClient
from bounceback.smpp.flapping import FlappingCarrier
from smppcodecs.pdu import DeliverSm
from smppcodecs.receipt import parse_receipt


class Run:
    def __init__(self) -> None:
        self.answers: list[tuple[int, str]] = []
        self.finals: dict[str, list[str]] = {}  # message id -> stats of its final receipts
        self.intermediate = 0
        self.last_final = 0.0
        self.expect: set[str] = set()
        self.all_in = asyncio.Event()

    def on_deliver(self, pdu: DeliverSm) -> int:
        r = parse_receipt(pdu)
        if r is None or not r.message_id:
            return 0
        if r.intermediate:
            self.intermediate += 1
            return 0
        self.finals.setdefault(r.message_id, []).append(r.stat or "?")
        self.last_final = time.monotonic()
        if self.expect and self.expect <= set(self.finals):
            self.all_in.set()
        return 0


def main(args: argparse.Namespace) -> int:
    initial, factor, cap = (float(x) for x in args.schedule.split(","))
    folder = Path(tempfile.mkdtemp(prefix="bb-flap-"))
    carrier_port, port = free_port(), free_port()
    store = folder / "bounceback.db"
    config = folder / "proxy.toml"
    schedules = "".join(
        f"\n[retry.schedules.{reason}]\ninitial = {initial}\nfactor = {factor}\nmax = {cap}\n"
        for reason in ("not_bound", "timeout")
    )
    config.write_text(
        proxy_config(
            port=port,
            carrier_port=carrier_port,
            store=store,
            reconnect=(args.reconnect_min, args.reconnect_max),
            tail=f"\n[retry]\nmax_age = {args.max_age}\n{schedules}\n",
        )
    )
    log = (folder / "proxy.log").open("w")
    proxy = start_proxy(config, log)
    sim: list[subprocess.Popen[bytes]] = []
    run = Run()
    carrier = FlappingCarrier()
    try:
        times = asyncio.run(drive(args, run, carrier, carrier_port, port, sim))
    finally:
        stop_proxy(proxy)
        for p in sim:
            stop_simulator(p)
        log.close()
    rows = store_states(store)
    report(args, run, carrier, rows, times, folder)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


async def drive(
    args: argparse.Namespace,
    run: Run,
    carrier: FlappingCarrier,
    carrier_port: int,
    port: int,
    sim: list[subprocess.Popen[bytes]],
) -> tuple[float, float]:
    await carrier.start(carrier_port)
    await wait_port(port)
    client = await EsmeClient.connect("127.0.0.1", port, "acme", "acme-pw", window=100)
    client.response_timeout = 60.0
    client.on_deliver = run.on_deliver
    started = time.monotonic()
    gap = args.flap_seconds / args.messages / 2  # every message sent during the flap

    async def one(number: str) -> None:
        resp = await client.submit(number, b"flap bench")
        run.answers.append((resp.command_status, getattr(resp, "message_id", "") or ""))

    sending = []
    for i in range(args.messages):  # at a steady rate, each answer awaited on its own
        sending.append(asyncio.create_task(one(f"4477009400{i:02d}")))
        await asyncio.sleep(gap)
    await asyncio.gather(*sending)
    await asyncio.sleep(max(started + args.flap_seconds - time.monotonic(), 0.0))
    await carrier.stop()
    flap_end = time.monotonic()
    sim.append(await asyncio.to_thread(start_simulator, carrier_port))
    run.expect = {mid for st, mid in run.answers if st == 0}
    if run.expect <= set(run.finals):
        run.all_in.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.all_in.wait(), args.drain_seconds)
    await asyncio.sleep(1.0)  # a duplicate would come now
    await client.close()
    return flap_end - started, flap_end


def report(
    args: argparse.Namespace,
    run: Run,
    carrier: FlappingCarrier,
    rows: dict[str, int],
    times: tuple[float, float],
    folder: Path,
) -> None:
    flapped, flap_end = times
    ok = [mid for st, mid in run.answers if st == 0]
    stats = Counter(s for mid in ok for s in run.finals.get(mid, [])[:1])
    once = sum(1 for m in ok if len(run.finals.get(m, [])) == 1)
    missing = sum(1 for m in ok if m not in run.finals)
    dupes = sum(1 for m in ok if len(run.finals.get(m, [])) > 1)
    last = run.last_final - flap_end if run.finals else float("nan")
    statuses = Counter(st for st, _ in run.answers)
    unfinished = {st: n for st, n in rows.items() if st not in FINAL_STATES}
    print(
        f"flapping carrier for {flapped:.1f} s, {args.messages} messages, link schedule "
        f"{args.schedule} (initial,factor,max)"
    )
    print("  answers: " + ", ".join(f"0x{st:02X}: {n}" for st, n in sorted(statuses.items())))
    print(f"  carrier saw {carrier.binds} binds, dropped the link on {carrier.submits} submit_sm")
    print(
        f"  accepted (ESME_ROK) {len(ok)}: exactly one final receipt {once}, none {missing}, "
        f"more than one {dupes}; final stats {dict(stats)}; "
        f"intermediate notifications {run.intermediate}"
    )
    print(f"  last final receipt {last:.1f} s after the flap ended")
    print(f"  store after a clean stop: {rows}; stranded (not final): {sum(unfinished.values())}")
    print(f"  proxy log: {folder / 'proxy.log'}")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=50)
    p.add_argument("--flap-seconds", type=float, default=30.0)
    p.add_argument(
        "--schedule",
        default="1,2,5",
        help="the not_bound and timeout schedules: INITIAL,FACTOR,MAX seconds",
    )
    p.add_argument("--reconnect-min", type=float, default=0.2)
    p.add_argument("--reconnect-max", type=float, default=1.0)
    p.add_argument("--max-age", type=float, default=7200.0, help="[retry] max_age")
    p.add_argument("--drain-seconds", type=float, default=60.0)
    p.add_argument("--keep", action="store_true", help="keep the run's folder (logs, store)")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(main(parse()))
