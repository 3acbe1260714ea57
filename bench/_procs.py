"""What the bench scripts share: free ports, the `bounceback` command, the proxy and
carrier simulator processes, the proxy's configuration, and the store's states after
a run.

The scripts run as `python bench/X.py`, so this folder is on `sys.path` and they
import this module as `_procs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
FINAL_STATES = ("delivered", "failed", "expired", "cancelled", "rejected")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def command() -> list[str]:
    """The `bounceback` command of the Python running this script."""
    exe = Path(sys.executable).parent / "bounceback"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bounceback"]


async def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection(HOST, port)
            w.close()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def proxy_config(
    *,
    port: int,
    carrier_port: int,
    store: Path,
    submit_wait: float | None = 5.0,
    server: str = "",
    account: str = "",
    carrier: str = "",
    reconnect: tuple[float, float] = (0.2, 1.0),
    tail: str = "",
) -> str:
    """The proxy's configuration: one account (acme), one carrier (sim) and a SQLite
    store; `server`, `account` and `carrier` are more keys of those tables, `tail`
    more tables after `[store]`."""
    wait = "" if submit_wait is None else f"submit_wait = {submit_wait}\n"
    return f"""
[server]
host = "{HOST}"
port = {port}
{wait}{server}
[[accounts]]
system_id = "acme"
password = "acme-pw"
{account}
[[carriers]]
name = "sim"
host = "{HOST}"
port = {carrier_port}
system_id = "bounceback"
password = "sim-pw"
reconnect_min = {reconnect[0]}
reconnect_max = {reconnect[1]}
{carrier}
[store]
path = "{store}"
{tail}"""


def start_proxy(config: Path, log: IO[str]) -> subprocess.Popen[bytes]:
    """`bounceback run` on `config`, its output in `log`."""
    return subprocess.Popen(
        [*command(), "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )


def start_simulator(
    port: int, scenario: Path | None = None, executable: str | None = None
) -> subprocess.Popen[bytes]:
    """`bounceback simulate` on `port` (of `executable` if given), its output dropped."""
    argv = [*([executable] if executable else command()), "simulate", "--port", str(port)]
    if scenario is not None:
        argv += ["--scenario", str(scenario)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_proxy(proxy: subprocess.Popen[bytes]) -> None:
    """A clean stop (SIGTERM), killed after 30 s."""
    proxy.send_signal(signal.SIGTERM)
    try:
        proxy.wait(30)
    except subprocess.TimeoutExpired:
        proxy.kill()


def stop_simulator(sim: subprocess.Popen[bytes]) -> None:
    sim.terminate()
    sim.wait(10)


def store_states(store: Path) -> dict[str, int]:
    """How many messages the store holds in each state."""
    with contextlib.closing(sqlite3.connect(store)) as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall())
