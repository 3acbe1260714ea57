"""Receipts to senders when something on the way misbehaves, as an operator would meet it.

The carrier simulator (`bounceback simulate`) and the proxy (`bounceback run`) run as
their own processes; this process is the sender, one transceiver bind, every message
with registered_delivery = 1:

* `--case stall`: the sender misses one `deliver_sm` (the first receipt it is sent:
  it never answers it) and answers every other one at once. `--messages` messages go
  out at `--rate`; the account's `window` is 10 and `[server] response_timeout` 10 s.
  What matters: do the other receipts flow while that one is unanswered, and does it
  come again after the timeout?
* `--case overdue`: half of the messages are delivered but their receipt is never
  sent (the simulator's `lost_receipt` outcome: `query_sm` then says DELIVERED).
  With `--receipt-query-after S` the proxy asks the carrier with `query_sm` after S
  seconds; without it the carrier's default (600 s) applies. What matters: does every
  message get its final receipt, and how soon?

It prints what the sender saw (answers, final receipts: exactly one, none, more than
one; the receipts that came while the missed one was unanswered), how long the last
receipt took, and the messages left unfinished in the store after a clean stop
(stranded). Not a test: the figures are for reading.

    python bench/bench_receipts.py --case stall
    python bench/bench_receipts.py --case overdue --receipt-query-after 5

`--simulator PATH` runs another `bounceback` executable as the carrier (to measure an
older proxy against the same carrier).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
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
from smppcodecs.pdu import DeliverSm, Pdu
from smppcodecs.receipt import parse_receipt


class Sender(EsmeClient):
    """Answers every deliver_sm but the first receipt (with `miss_first`)."""

    miss_first = False
    missed: str | None = None  # the id of the receipt left unanswered
    missed_at = 0.0

    def handle_request(self, pdu: Pdu) -> None:
        if self.miss_first and self.missed is None and isinstance(pdu, DeliverSm):
            r = parse_receipt(pdu)
            if r is not None and r.message_id and not r.intermediate:
                self.missed = r.message_id
                self.missed_at = time.monotonic()
                return  # never answered
        super().handle_request(pdu)


class Run:
    def __init__(self) -> None:
        self.answers: list[tuple[int, str]] = []
        self.finals: dict[str, list[float]] = {}  # message id -> when each final receipt came
        self.expect: set[str] = set()
        self.all_in = asyncio.Event()
        self.started = 0.0
        self.sent_all = 0.0

    def on_deliver(self, pdu: DeliverSm) -> int:
        r = parse_receipt(pdu)
        if r is not None and r.message_id and not r.intermediate:
            self.finals.setdefault(r.message_id, []).append(time.monotonic())
            if self.expect and self.expect <= set(self.finals):
                self.all_in.set()
        return 0


def main(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="bb-receipts-"))
    sim_port, port = free_port(), free_port()
    store = folder / "bounceback.db"
    scenario = folder / "carrier.toml"
    lost = [f"4477009300{i:02d}" for i in range(args.messages) if i % 2 == 1]
    rules = (
        "".join(f'\n[[rules]]\nnumber = "{n}"\noutcomes = ["lost_receipt"]\n' for n in lost)
        if args.case == "overdue"
        else ""
    )
    scenario.write_text(
        f'receipt_delay = 0.05\ndefault = ["deliver"]\n\n[credentials]\nbounceback = "sim-pw"\n'
        f"{rules}"
    )
    query = (
        ""
        if args.receipt_query_after is None
        else f"receipt_query_after = {args.receipt_query_after}"
    )
    config = folder / "proxy.toml"
    config.write_text(
        proxy_config(
            port=port,
            carrier_port=sim_port,
            store=store,
            server="response_timeout = 10.0\n",
            account="window = 10\n",
            carrier=f"{query}\n",
        )
    )
    log = (folder / "proxy.log").open("w")
    sim = start_simulator(sim_port, scenario, args.simulator)
    proxy = start_proxy(config, log)
    run = Run()
    try:
        sender = asyncio.run(drive(args, run, sim_port, port))
    finally:
        stop_proxy(proxy)
        stop_simulator(sim)
        log.close()
    rows = store_states(store)
    report(args, run, sender, rows, folder)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


async def drive(args: argparse.Namespace, run: Run, sim_port: int, port: int) -> Sender:
    await wait_port(sim_port)
    await wait_port(port)
    await asyncio.sleep(1.0)  # the proxy binds to the carrier
    client = await Sender.connect("127.0.0.1", port, "acme", "acme-pw", window=100)
    assert isinstance(client, Sender)
    client.miss_first = args.case == "stall"
    client.response_timeout = 60.0
    client.on_deliver = run.on_deliver

    async def one(number: str) -> None:
        resp = await client.submit(number, b"receipt bench")
        run.answers.append((resp.command_status, getattr(resp, "message_id", "") or ""))

    run.started = time.monotonic()
    sending = []
    for i in range(args.messages):
        sending.append(asyncio.create_task(one(f"4477009300{i:02d}")))
        await asyncio.sleep(1.0 / args.rate)
    await asyncio.gather(*sending)
    run.sent_all = time.monotonic()
    run.expect = {mid for st, mid in run.answers if st == 0}
    if run.expect <= set(run.finals):
        run.all_in.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.all_in.wait(), args.drain_seconds)
    await asyncio.sleep(1.0)  # a duplicate would come now
    await client.close()
    return client


def report(
    args: argparse.Namespace, run: Run, sender: Sender, rows: dict[str, int], folder: Path
) -> None:
    ok = [mid for st, mid in run.answers if st == 0]
    once = sum(1 for m in ok if len(run.finals.get(m, [])) == 1)
    missing = sum(1 for m in ok if m not in run.finals)
    dupes = sum(1 for m in ok if len(run.finals.get(m, [])) > 1)
    statuses = Counter(st for st, _ in run.answers)
    firsts = [t[0] for m, t in run.finals.items() if m in set(ok)]
    last = max(firsts) - run.started if firsts else float("nan")
    unfinished = {st: n for st, n in rows.items() if st not in FINAL_STATES}
    print(f"{args.case}: {args.messages} messages at {args.rate:.0f} msg/s")
    print("  answers: " + ", ".join(f"0x{st:02X}: {n}" for st, n in sorted(statuses.items())))
    print(
        f"  accepted (ESME_ROK) {len(ok)}: a final receipt {len(ok) - missing} "
        f"(exactly one {once}, more than one {dupes}), none {missing}"
    )
    if args.case == "stall" and sender.missed is not None:
        t0 = sender.missed_at
        others = sum(
            1 for m, t in run.finals.items() if m != sender.missed and t0 <= t[0] < t0 + 10.0
        )
        again = run.finals.get(sender.missed, [])
        print(
            f"  receipts received in the 10 s after the missed one (window 10): {others} "
            f"of {len(ok) - 1}"
        )
        print(
            "  the missed receipt came again "
            + (f"{again[0] - t0:.1f} s later" if again else "never")
        )
    print(f"  last first-receipt {last:.1f} s after the first submit")
    print(f"  store after a clean stop: {rows}; stranded (not final): {sum(unfinished.values())}")
    print(f"  proxy log: {folder / 'proxy.log'}")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=("stall", "overdue"), required=True)
    p.add_argument("--messages", type=int, default=30)
    p.add_argument("--rate", type=float, default=10.0, help="submits per second")
    p.add_argument("--receipt-query-after", type=float, default=None)
    p.add_argument("--drain-seconds", type=float, default=40.0)
    p.add_argument("--simulator", default=None, help="the bounceback executable for the carrier")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (logs, store)")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(main(parse()))
