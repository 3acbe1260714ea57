"""Real MQTT brokers for tests, a collecting subscriber and a TCP gate.

`MosquittoBroker` runs its own `mosquitto` process on a free port with a config
file of its own (anonymous, no persistence) and can stop and start again on the
same port. A missing binary is an error, never a skip.

`RabbitMQBroker` runs a throwaway RabbitMQ node with its MQTT plugin, a second
broker implementation for the feed tests (the `rabbitmq` session fixture).

`Collector` is an aiomqtt subscriber running in the test's event loop: it
subscribes (QoS 1) to its filters, records every message, and reconnects and
subscribes again after the broker comes back.

`Gate` is a TCP relay between the proxy and the broker that the test can hold
shut. A broker restarted without persistence forgets every subscription, so a
test that must see every event holds the proxy out until the collector has
subscribed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
from harness import free_port

MOSQUITTO_DEFAULT = "/usr/sbin/mosquitto"


def mosquitto_binary() -> str:
    """The mosquitto executable; raises when it is not installed."""
    found = os.environ.get("MOSQUITTO") or shutil.which("mosquitto")
    if found is None and os.access(MOSQUITTO_DEFAULT, os.X_OK):
        found = MOSQUITTO_DEFAULT
    if found is None:
        raise RuntimeError("the mosquitto broker is not installed (needed by the MQTT tests)")
    return found


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1; `stop()` and `start()` keep the port."""

    def __init__(self, workdir: Path, port: int = 0) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.log = workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        binary = mosquitto_binary()
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1
        end = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"mosquitto did not start:\n{self.output()}")
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); every client connection drops."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


RABBITMQ_SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_scripts() -> Path | None:
    """The directory of RabbitMQ's own start scripts (not the /usr/sbin wrappers,
    which switch to the rabbitmq user), None when RabbitMQ is not installed."""
    found = Path(os.environ.get("RABBITMQ_SCRIPTS", RABBITMQ_SCRIPTS))
    return found if os.access(found / "rabbitmq-server", os.X_OK) else None


class RabbitMQBroker:
    """A throwaway RabbitMQ node with the MQTT plugin, on free ports on 127.0.0.1.

    Everything the node writes (Mnesia database, logs, Erlang cookie via HOME,
    config) lives under `workdir`; its name is unique, so it neither joins nor
    disturbs a RabbitMQ service running on the machine. Anonymous MQTT clients log
    in as guest (allowed from loopback) on the default vhost. Starting the node
    takes seconds, so one node serves a whole test session: `stop()` and `start()`
    stop and start the RabbitMQ application inside it (every client connection
    drops, the MQTT port refuses connections, retained messages stay), `shutdown()`
    ends the node. The node uses the machine's epmd (the start script starts one if
    none runs, as any Erlang node does; it holds no state of the node's).
    """

    def __init__(self, workdir: Path, scripts: Path) -> None:
        self.workdir = workdir
        self.scripts = scripts
        self.port = free_port()
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.node = f"bbtest{os.getpid()}x{self.port}@localhost"
        self.log = workdir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.app_running = False
        self.starts = 0
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "mqtt.allow_anonymous = true\n"
            "mqtt.default_user = guest\n"
            "mqtt.default_pass = guest\n"
            "mqtt.vhost = /\n"
            "mqtt.exchange = amq.topic\n"
        )
        (workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        self.env = os.environ | {
            "HOME": str(workdir),  # the Erlang cookie is created here
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(workdir / "node.pid"),
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),  # none: no defaults
        }

    @property
    def running(self) -> bool:
        return self.app_running and self.node_running

    @property
    def node_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def boot(self, timeout: float = 120.0) -> float:
        """Start the node; returns how long it took until the MQTT port accepted."""
        began = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.scripts / "rabbitmq-server")],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the script's Erlang VM with it, for shutdown()
            )
        self.app_running = True
        self.starts += 1
        self._wait_port(began + timeout, "the RabbitMQ node did not start")
        return time.monotonic() - began

    def _wait_port(self, deadline: float, what: str) -> None:
        while not _accepts(self.port):
            if not self.node_running or time.monotonic() > deadline:
                out = self.output()
                self.shutdown()
                raise RuntimeError(f"{what} (MQTT port {self.port}):\n{out[-6000:]}")
            time.sleep(0.05)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [str(self.scripts / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode(errors="replace")

    def stop(self) -> None:
        """Stop the RabbitMQ application (every client connection drops)."""
        if self.running:
            self.ctl("stop_app")
            self.app_running = False

    def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        if not self.node_running:
            self.boot()
            return
        self.ctl("start_app")
        self.app_running = True
        self.starts += 1
        self._wait_port(time.monotonic() + timeout, "RabbitMQ did not start again")

    def restart(self) -> None:
        self.stop()
        self.start()

    def shutdown(self) -> None:
        """End the node: `rabbitmqctl stop`, then SIGTERM and SIGKILL to its group."""
        proc, self.proc = self.proc, None
        self.app_running = False
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("stop", timeout=30)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                proc.wait(15)
                return
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
        proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


Broker = MosquittoBroker | RabbitMQBroker


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """Subscribes to `filters` (QoS 1 unless told) and keeps every message it receives."""

    def __init__(
        self, port: int, filters: Iterable[str], *, host: str = "127.0.0.1", qos: int = 1
    ) -> None:
        self.host = host
        self.qos = qos
        self.port = port
        self.filters = tuple(filters)
        self.messages: list[Received] = []
        self.subscribed = asyncio.Event()
        self.subscriptions = 0  # how many times the filters were (re)subscribed
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run(), name="mqtt-collector")
        await self.wait_subscribed(0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, timeout=2, keepalive=10, clean_session=True
                ) as client:
                    for f in self.filters:
                        await client.subscribe(f, qos=self.qos)
                    self.subscriptions += 1
                    self.subscribed.set()
                    async for m in client.messages:
                        payload = m.payload
                        data = payload if isinstance(payload, bytes) else str(payload).encode()
                        self.messages.append(Received(str(m.topic), data, m.retain, m.qos))
            except aiomqtt.MqttError:
                pass
            self.subscribed.clear()
            await asyncio.sleep(0.05)

    async def wait_subscribed(self, after: int, timeout: float = 10.0) -> None:
        """Wait until the filters have been subscribed more than `after` times."""
        await self.wait(lambda: self.subscriptions > after, timeout, what="subscription")

    async def wait(
        self, pred: Callable[[], bool], timeout: float = 15.0, *, what: str = "condition"
    ) -> None:
        end = time.monotonic() + timeout
        while not pred():
            if self._task is not None and self._task.done():
                self._task.result()
            if time.monotonic() > end:
                raise TimeoutError(f"MQTT collector: {what} not reached")
            await asyncio.sleep(0.02)

    def matching(self, middle: str) -> list[Received]:
        """Messages whose topic contains `/{middle}/`."""
        return [m for m in self.messages if f"/{middle}/" in m.topic]

    def events(self) -> list[dict[str, Any]]:
        """Every event payload received, duplicates included, in arrival order."""
        return [m.json() for m in self.matching("events")]


class Gate:
    """A TCP relay to 127.0.0.1:`target` that can be held shut.

    While held, the gate does not listen: connecting is refused, as it is when
    the broker is down, and the connections it relayed are cut. Releasing it
    listens again on the same port.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.held = False
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.held = False

    async def stop(self) -> None:
        self.hold()
        for t in list(self._tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def hold(self) -> None:
        """Stop listening and cut every relayed connection (no await: takes effect at once)."""
        self.held = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def release(self) -> None:
        await self.start()

    async def __aenter__(self) -> Gate:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.held:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        if self.held:
            writer.close()
            up_writer.close()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            t = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(dst)
            dst.close()
