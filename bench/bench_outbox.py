"""Outbox benchmark: what the MQTT feed costs the proxy's store writes, per message.

Writes N messages' lives through a fresh SQLite store the way the gateway does, in
three group-commit transactions per batch of messages (accepted; submitted with its
carrier id; delivered with the sender's receipt), three ways, alternating, in one run:

* ``feed off``: no events (the baseline);
* ``documents``: each transition also writes its event as the whole JSON document
  (``build_event``);
* ``records``: each transition writes the compact record (``event_record``) the
  gateway writes, which the publisher renders into the document.

For each it prints the CPU time of this process per message (the event loop's writes
and the checkpoint thread), and the ratio to the baseline; the bytes per event that
each form puts in the outbox; and the CPU per event it takes the publisher to render
a record. The median over ``--rounds`` rounds is printed.

Usage: ``python bench/bench_outbox.py [--messages 20000] [--batch 60] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bounceback.core.model import Message, State, evolve
from bounceback.feed.events import build_event, event_record, render
from bounceback.store.sqlite import Change, ReceiptRow, SqliteStore

Builder = Callable[..., tuple[str, str]]


def message(i: int, now: float) -> Message:
    return Message(
        id=f"{i:016X}",
        account="acme",
        source_addr="ACME",
        destination_addr=f"4477009{i % 100000:05d}",
        pdu=b"\x00" * 60,
        registered_delivery=1,
        created_at=now,
        deadline=now + 3600,
        deadline_is_validity=False,
        submit_date=now,
        text_head="hello",
    )


async def lives(path: Path, n: int, batch: int, build: Builder | None) -> float:
    """CPU µs per message to write `n` message lives (3 transactions per batch)."""
    store = SqliteStore(path, batch_delay=0)
    await store.open()
    now = time.time()

    def events(m: Message, name: str, fields: dict[str, object]) -> list[tuple[str, str]]:
        if build is None:
            return []
        kw = dict(now=now, instance="bb-1", prefix="bounceback/v1", mask=True, mask_keep=4)
        return [build(m, name, fields, **kw)]

    started = time.process_time()
    try:
        for first in range(0, n, batch):
            msgs = [message(i, now) for i in range(first, min(first + batch, n))]
            await store.commit_many(
                [
                    Change(message=m, insert=True, events=events(m, "accepted", {"ack": "carrier"}))
                    for m in msgs
                ]
            )
            sent = [
                evolve(
                    m,
                    state=State.SUBMITTED,
                    attempts=1,
                    carrier="sim",
                    carrier_message_id=f"{i:x}",
                    version=1,
                )
                for i, m in enumerate(msgs, first)
            ]
            await store.commit_many(
                [
                    Change(
                        message=m,
                        carrier_keys=[("sim", m.carrier_message_id, m.id, 1)],
                        events=events(m, "submitted", {"carrier": "sim"}),
                    )
                    for m in sent
                ]
            )
            done = [
                evolve(m, state=State.DELIVERED, final_stat="DELIVRD", done_at=now, version=2)
                for m in sent
            ]
            await store.commit_many(
                [
                    Change(
                        message=m,
                        receipts=[ReceiptRow.for_message(m, "DELIVRD", "000", now, False)],
                        events=events(m, "delivered", {"recovered": False, "attempts": 1}),
                    )
                    for m in done
                ]
            )
    finally:
        await store.close()
    return (time.process_time() - started) / n * 1e6


def sizes_and_render(n: int = 20000) -> tuple[float, float, float]:
    """Bytes per event of a document and of a record; render µs per record."""
    now = time.time()
    m = evolve(message(1, now), state=State.SUBMITTED, attempts=1, carrier="sim")
    kw: dict[str, Any] = dict(
        now=now, instance="bb-1", prefix="bounceback/v1", mask=True, mask_keep=4
    )
    doc = build_event(m, "submitted", {"carrier": "sim"}, **kw)
    rec = event_record(m, "submitted", {"carrier": "sim"}, **kw)
    started = time.process_time()
    for _ in range(n):
        render(rec[1])
    took = (time.process_time() - started) / n * 1e6
    return len(doc[0]) + len(doc[1]), len(rec[0]) + len(rec[1]), took


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--batch", type=int, default=60, help="messages per transaction")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    ways: list[tuple[str, Builder | None]] = [
        ("feed off", None),
        ("documents", build_event),
        ("records", event_record),
    ]
    got: dict[str, list[float]] = {name: [] for name, _ in ways}
    with tempfile.TemporaryDirectory(prefix="bounceback-outbox-") as tmp:
        for r in range(a.rounds):
            for name, build in ways:
                got[name].append(
                    await lives(Path(tmp) / f"{r}-{name}.db", a.messages, a.batch, build)
                )
    base = statistics.median(got["feed off"])
    print(f"messages={a.messages} batch={a.batch} rounds={a.rounds} (medians)")
    print(f"{'events written as':<18} {'cpu us/msg':>10} {'vs feed off':>11}")
    for name, _ in ways:
        v = statistics.median(got[name])
        print(f"{name:<18} {v:>10.1f} {v / base:>11.2f}")
    doc, rec, took = sizes_and_render()
    print(f"bytes per event in the outbox: document {doc:.0f}, record {rec:.0f}")
    print(f"publisher: rendering a record takes {took:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
