"""Feed publisher benchmark: CPU per event of the MQTT publishing path, against a
baseline in the same run.

Starts a Mosquitto broker on a free port on 127.0.0.1 and publishes N feed events
(a real event payload, QoS 1, one topic per event as the feed does) three ways:

* ``aiomqtt publish``: a general client's own API, one ``await client.publish(...)``
  per event, `--concurrency` at a time (a coroutine, a future and a wait per
  publish) — the baseline;
* ``feed on aiomqtt``: the feed's `FeedPublisher._publish_batch` with ``[feed]
  client = "aiomqtt"``: the whole batch handed to paho (under aiomqtt), then one
  wait for every PUBACK;
* ``feed client``: the same with the default ``client = "builtin"``, the feed's own
  client (`bounceback.mqttclient`): the batch written as one buffer, PUBACKs read as
  four octets each.

For each it prints the CPU time of this process per event (user + system, the
publisher's whole cost apart from the store), events per second, and the ratio of
CPU per event to the baseline. Every event is acknowledged by the broker before a
run counts as done.

Usage: ``python bench/bench_feed.py [--events 30000] [--batch 500]
[--concurrency 64] [--protocol 3.1.1|5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
from bounceback.config.settings import FeedConfig
from bounceback.feed.publisher import FeedPublisher
from bounceback.store.sqlite import OutboxEvent

PAYLOAD = (
    '{"schema":"bounceback.event/1","event_id":"0558087487000000:1:soft_bounce",'
    '"event":"soft_bounce","at":"2026-11-28T13:59:01.123Z","instance":"bb-1",'
    '"account":"acme","message_id":"0558087487000000","carrier":"sim",'
    '"carrier_message_id":"3B9ACA01","source_addr":"Acme","destination":"********0001",'
    '"country":"GB","operator":null,"attempt":1,"state":"held",'
    '"classification":"soft","reason":"absent_subscriber","description":"absent subscriber",'
    '"code":"network_error_code:3/6","rule":"map-error 6","rule_source":"default",'
    '"next_attempt_at":"2026-11-28T14:09:01.123Z","err":"006"}'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def mosquitto() -> Iterator[int]:
    binary = shutil.which("mosquitto") or next(
        (b for b in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(b).exists()), None
    )
    if binary is None:
        raise SystemExit("mosquitto is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            end = time.monotonic() + 10
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > end or proc.poll() is not None:
                    raise SystemExit("mosquitto did not start")
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait(5)


def events(n: int) -> list[OutboxEvent]:
    return [
        OutboxEvent(i, f"bounceback/v1/events/acme/{i:016X}/soft_bounce", PAYLOAD) for i in range(n)
    ]


def general_client(port: int, protocol: str, inflight: int) -> aiomqtt.Client:
    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="bench-general",
        protocol=aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311,
        max_inflight_messages=inflight,
    )
    client.pending_calls_threshold = 1000
    return client


async def measure(run: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    """(CPU microseconds per event, events per second) of `run` publishing n events."""
    cpu, wall = time.process_time(), time.perf_counter()
    await run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu * 1e6 / n, n / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1")
    args = parser.parse_args(argv)
    n = args.events - args.events % args.batch
    batch = events(args.batch)

    rounds = n // args.batch

    async def aiomqtt_publish(port: int) -> tuple[float, float]:
        todo = iter(batch * rounds)

        async def worker(client: aiomqtt.Client) -> None:
            for e in todo:
                await client.publish(e.topic, e.payload, qos=1)

        async with general_client(port, args.protocol, 20) as client:  # aiomqtt's default
            return await measure(
                lambda: asyncio.gather(*(worker(client) for _ in range(args.concurrency))), n
            )

    async def feed_on(port: int, client: str) -> tuple[float, float]:
        cfg = FeedConfig(host="127.0.0.1", port=port, protocol=args.protocol, client=client)
        pub = FeedPublisher(cfg, None, "bench")  # type: ignore[arg-type]
        async with pub._client_for() as conn:

            async def run() -> None:
                for _ in range(rounds):
                    await pub._publish_batch(conn, batch)

            return await measure(run, n)

    runs: list[tuple[str, Callable[[int], Coroutine[Any, Any, tuple[float, float]]]]] = [
        ("aiomqtt publish", aiomqtt_publish),
        ("feed on aiomqtt", lambda port: feed_on(port, "aiomqtt")),
        ("feed client", lambda port: feed_on(port, "builtin")),
    ]
    print(
        f"events={n} batch={args.batch} concurrency={args.concurrency} "
        f"(QoS 1, MQTT {args.protocol})"
    )
    print(f"{'path':<22} {'cpu us/event':>12} {'events/s':>9} {'cpu vs baseline':>15}")
    base: float | None = None
    with mosquitto() as port:
        for name, run in runs:
            us, rate = asyncio.run(run(port))
            base = base or us
            print(f"{name:<22} {us:>12.1f} {rate:>9.0f} {us / base:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
