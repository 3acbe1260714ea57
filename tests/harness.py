"""Shared pieces of the end-to-end tests: configs, a running proxy, a simulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from bounceback.config.settings import Config, load_config
from bounceback.gateway.shell import Gateway
from bounceback.smpp.simulator import CarrierSimulator, Scenario
from smpplib_peer import SmpplibSender

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# The environment the secrets of configs/example.toml are read from.
EXAMPLE_ENV = {
    "ACME_SMPP_PASSWORD": "acme-env-secret",
    "OPS_SMPP_PASSWORD": "ops-env-secret",
    "CARRIER_A_PASSWORD": "carrier-a-env-secret",
    "MQTT_PASSWORD": "mqtt-env-secret",
    "DASHBOARD_API_TOKEN": "dashboard-env-token-0123",
    "ONCALL_API_TOKEN": "oncall-env-token-0123456",
}


def retry_toml(
    *,
    max_attempts: int = 5,
    jitter: float | None = 0.0,
    max_age: float | None = None,
    **schedules: tuple[float, float, float],
) -> str:
    """A `[retry]` table with (initial, factor, max) schedules per soft reason."""
    lines = ["", "[retry]", f"max_attempts = {max_attempts}"]
    if max_age is not None:
        lines.append(f"max_age = {max_age}")
    if jitter is not None:
        lines.append(f"jitter = {jitter}")
    for reason, (initial, factor, cap) in schedules.items():
        lines += [
            f"[retry.schedules.{reason}]",
            f"initial = {initial}",
            f"factor = {factor}",
            f"max = {cap}",
        ]
    return "\n".join(lines) + "\n"


FAST_RETRY = retry_toml(
    max_age=7200.0,
    absent_subscriber=(0.3, 1.0, 0.3),
    memory_full=(0.3, 1.0, 0.3),
    throttled=(0.2, 2.0, 2.0),
    not_bound=(0.3, 1.0, 0.5),
    system_failure=(0.3, 1.0, 0.3),
    subscriber_busy=(0.3, 1.0, 0.3),
    timeout=(0.3, 1.0, 0.3),
)


# A soft bounce held until an operator acts: the first absent-subscriber retry is an
# hour away.
HELD_RETRY = retry_toml(max_age=7200.0, absent_subscriber=(3600.0, 1.0, 3600.0))


def admin_toml(
    read_token: str,
    admin_token: str | None = None,
    *,
    admin_token_env: str | None = None,
    metrics_port: int = 0,
    open_health: bool | None = None,
) -> str:
    """`[metrics]` and `[admin]` with two tokens: "viewer" (scope read) and "oncall"
    (scope admin, given as `admin_token` or read from the variable `admin_token_env`)."""
    oncall = (
        f'token = "{admin_token}"'
        if admin_token_env is None
        else f'token_env = "{admin_token_env}"'
    )
    health = "" if open_health is None else f"open_health = {str(open_health).lower()}\n"
    return f"""
[metrics]
port = {metrics_port}

[admin]
{health}
[[admin.tokens]]
name = "viewer"
scope = "read"
token = "{read_token}"

[[admin.tokens]]
name = "oncall"
scope = "admin"
{oncall}
"""


def self_signed(folder: Path, name: str = "self") -> tuple[Path, Path]:
    """A self-signed certificate and its unencrypted key (PEM), made with openssl."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port the kernel hands out for outgoing connections can be the very port a test
    later reconnects to while its server is down (a restarted broker, say): the
    connect then meets itself (TCP simultaneous open), and the server cannot bind
    its port again. Ports outside that range are never picked as a source port."""
    low, _ = _ephemeral_range()
    floor = max(low - 12000, 1024)
    for _ in range(200):
        port = random.randrange(floor, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the whole band busy: any free port then
        s.bind(("127.0.0.1", 0))
        any_port: int = s.getsockname()[1]
        return any_port


def write_config(
    tmp: Path,
    carrier_port: int,
    *,
    port: int = 0,
    account: str = "",
    carrier: str = "",
    retry: str = FAST_RETRY,
    extra: str = "",
    name: str = "proxy.toml",
) -> Path:
    text = f"""
[server]
host = "127.0.0.1"
port = {port}
enquire_link_interval = 5.0
response_timeout = 5.0
submit_wait = 3.0

[[accounts]]
system_id = "acme"
password = "acme-pw"
{account}

[[carriers]]
name = "sim"
host = "127.0.0.1"
port = {carrier_port}
system_id = "bounceback"
password = "sim-pw"
reconnect_min = 0.1
reconnect_max = 0.5
{carrier}

[classify.carriers.sim]
err_space = "map40"

[store]
path = "proxy.db"
batch_delay = 0.001
{retry}
{extra}
"""
    p = tmp / name
    p.write_text(text)
    return p


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(step)


@contextlib.asynccontextmanager
async def simulator(data: dict[str, Any] | None = None) -> AsyncIterator[CarrierSimulator]:
    sim = CarrierSimulator(Scenario.from_mapping(data or {"receipt_delay": 0.02}))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def gateway(cfg: Config | Path) -> AsyncIterator[Gateway]:
    if isinstance(cfg, Path):
        cfg = load_config(cfg)
    gw = Gateway(cfg)
    await gw.start()
    try:
        if gw.links:
            await wait_until(lambda: all(link.bound for link in gw.links.values()))
        yield gw
    finally:
        await gw.stop()


class ProxyProcess:
    """`bounceback run` as a real process (for kill -9 tests)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        self.log = self.config.with_suffix(".log")
        with self.log.open("ab") as out:
            out.write(b"\n--- started run ---\n")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bounceback", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )
        end = time.monotonic() + timeout
        while (
            "bounceback listening"
            not in self.log.read_text(errors="replace").split("started run")[-1]
        ):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"proxy did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


SenderT = TypeVar("SenderT", bound=SmpplibSender)


async def bind_sender(
    port: int, cls: type[SenderT], *, tries: int = 100, kind: str = "transceiver"
) -> SenderT:
    """An smpplib sender bound as `kind` (account acme), retried while the proxy is
    still starting (connection refused)."""
    for _ in range(tries):
        s = cls("127.0.0.1", port)
        try:
            status = await asyncio.to_thread(s.bind, kind, "acme", "acme-pw")
        except OSError:
            await asyncio.sleep(0.1)
            continue
        assert status == 0
        s.listen()
        return s
    raise AssertionError(f"could not bind to the proxy on port {port}")
