"""Log lines: JSON objects with their context (account, carrier, session, message_id)
as fields of their own, taken from the task that logs them; plain lines unchanged."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from bounceback import logs
from harness import gateway, simulator, wait_until, write_config
from smpplib_peer import SmpplibSender


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def parsed(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


async def test_a_task_context_is_on_its_lines_and_its_childrens_only(
    json_lines: io.StringIO,
) -> None:
    log = logging.getLogger("bounceback.test")

    async def session() -> None:
        logs.bind(session="esme:acme:1.2.3.4:5", account="acme")
        log.info("bound")
        await asyncio.get_running_loop().create_task(child())

    async def child() -> None:
        log.info("handled", extra=logs.context(message_id="0000000000000001"))

    await asyncio.get_running_loop().create_task(session())
    log.info("outside")
    lines = parsed(json_lines)
    assert lines[0]["message"] == "bound"
    assert (lines[0]["session"], lines[0]["account"]) == ("esme:acme:1.2.3.4:5", "acme")
    assert lines[1]["message_id"] == "0000000000000001" and lines[1]["account"] == "acme"
    assert "account" not in lines[2] and "session" not in lines[2]
    for line in lines:
        assert set(line) <= {"at", "level", "logger", "message", *logs.CONTEXT_FIELDS}
        assert str(line["at"]).endswith("+00:00")


def test_a_failure_has_its_traceback(json_lines: io.StringIO) -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("bounceback.test").exception("it failed")
    (line,) = parsed(json_lines)
    assert line["level"] == "ERROR" and "ValueError: bad" in str(line["exception"])


async def test_the_proxy_names_sessions_accounts_and_carriers(
    tmp_path: Path, json_lines: io.StringIO
) -> None:
    async with (
        simulator({"receipt_delay": 0.01}) as sim,
        gateway(write_config(tmp_path, sim.port or 0)) as gw,
    ):
        s = SmpplibSender("127.0.0.1", gw.port)
        assert await asyncio.to_thread(s.bind, "transceiver", "acme", "acme-pw") == 0
        await wait_until(lambda: "bound as transceiver" in json_lines.getvalue())
        await asyncio.to_thread(s.close)
    lines = parsed(json_lines)
    bound = next(x for x in lines if "bound as transceiver" in str(x["message"]))
    assert bound["account"] == "acme" and str(bound["session"]).startswith("esme:acme:")
    carrier = next(x for x in lines if x["logger"] == "bounceback.carrier")
    assert carrier["carrier"] == "sim"
