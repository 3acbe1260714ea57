"""The `bounceback` command line: check, help, decode, simulate's scenario errors, and
the suppression and held-message commands against a store a real proxy wrote."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bounceback.core.model import Message, State, Verdict
from bounceback.ops.cli import build_parser, main
from bounceback.store.sqlite import Change, SqliteStore
from harness import (
    CONFIGS,
    EXAMPLE_ENV,
    ProxyProcess,
    bind_sender,
    free_port,
    gateway,
    retry_toml,
    simulator,
    write_config,
)
from smppcodecs.constants import CommandStatus as S
from smppcodecs.pdu import SubmitSm
from smppcodecs.receipt import build_receipt_pdu
from smpplib_peer import SmpplibSender, receipt_fields

BASE = """
[[accounts]]
system_id = "acme"
password = "acme-pw"

[[carriers]]
name = "a"
host = "127.0.0.1"
system_id = "gw"
password = "a-pw"
"""


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bounceback", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- check


def test_check_good_configs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["check", "--config", str(CONFIGS / "demo.toml")]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("configuration is valid")
    assert "\x1b" not in out  # piped: plain lines
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "--config", str(CONFIGS / "example.toml")]) == 0
    out = capsys.readouterr().out
    assert "configuration is valid" in out
    assert "carrier-a-env-secret" not in out  # secrets are never explained


BAD_CONFIGS = [
    pytest.param(
        BASE + '[server]\nport = "abc"\n',
        ['c.toml: server.port: expected an integer from 0 to 65535, got "abc"'],
        id="wrong-type",
    ),
    pytest.param(
        BASE + "[server]\nprot = 2776\n",
        ['c.toml: server.prot: unknown key (did you mean "port"?)'],
        id="unknown-key",
    ),
    pytest.param(
        BASE + '[[carriers]]\nname = "b"\npassword = "p"\n',
        [
            "c.toml: carriers[1].host: missing required key",
            "c.toml: carriers[1].system_id: missing required key",
        ],
        id="missing-keys",
    ),
    pytest.param(
        BASE.replace('password = "acme-pw"', 'password = "acme-pw"\nack = "later"'),
        ['c.toml: accounts[0].ack: expected "carrier" or "stored", got "later"'],
        id="bad-choice",
    ),
    pytest.param(
        BASE + '[server]\nevent_loop = "trio"\n',
        ['c.toml: server.event_loop: expected "auto", "uvloop" or "asyncio", got "trio"'],
        id="bad-event-loop",
    ),
    pytest.param(
        BASE + "[retry]\njitter = 1.5\n",
        ["c.toml: retry.jitter: expected a number from 0 to 1, got 1.5"],
        id="out-of-range",
    ),
    pytest.param(
        BASE + "[server]\nport = \n",
        ["c.toml: line 12, column 8: invalid TOML: Invalid value"],
        id="toml-syntax",
    ),
    pytest.param(
        BASE + "[metrics]\nport = 2775\n",
        ["c.toml: metrics.port: the same as server.port (2775): the SMPP listener's port"],
        id="metrics-on-the-smpp-port",
    ),
    pytest.param(
        BASE.replace('password = "a-pw"', 'password = ""'),
        [
            "c.toml: carriers[0].password: empty: set the password (or password_env), "
            "or allow_empty_password = true when the peer really has none"
        ],
        id="empty-password",
    ),
    pytest.param(
        "",
        [
            "c.toml: accounts: at least one [[accounts]] entry is required",
            "c.toml: carriers: at least one [[carriers]] entry is required",
        ],
        id="empty",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_check_bad_config_prints_every_problem_and_exits_2(
    here: Path, capsys: pytest.CaptureFixture[str], text: str, expected: list[str]
) -> None:
    (here / "c.toml").write_text(text, encoding="utf-8")
    assert main(["check", "--config", "c.toml"]) == 2
    err = capsys.readouterr().err.splitlines()
    n = len(expected)
    assert err == [*expected, f"configuration is invalid: {n} problem{'s' if n > 1 else ''}"]


def test_check_missing_file(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", "nope.toml"]) == 2
    assert capsys.readouterr().err.startswith("nope.toml: file not found\n")


def test_check_as_a_real_process(here: Path) -> None:
    (here / "c.toml").write_text(BASE + "[retry]\njitter = 2\nmax_attempts = 0\n", "utf-8")
    done = run_cli("check", "--config", "c.toml")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "c.toml: retry.max_attempts: expected an integer of at least 1, got 0",
        "c.toml: retry.jitter: expected a number from 0 to 1, got 2",
        "configuration is invalid: 2 problems",
    ]
    assert "Traceback" not in done.stderr
    done = run_cli("check", "--config", str(CONFIGS / "demo.toml"))
    assert done.returncode == 0 and "configuration is valid" in done.stdout


def test_usage_errors_and_help_as_a_real_process() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    assert "exit codes: 0 ok, 1 runtime failure, 2 usage error" in done.stdout
    for command in ("run", "check", "simulate", "demo", "stats", "suppression", "held"):
        assert command in done.stdout
    done = run_cli("frobnicate")
    assert done.returncode == 2 and "invalid choice" in done.stderr
    done = run_cli("check")
    assert done.returncode == 2 and "--config" in done.stderr


# ---------------------------------------------------------------- help


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    commands = list(_commands(build_parser()))
    for expected in [("demo",), ("stats",), ("suppression", "add"), ("held", "cancel")]:
        assert expected in commands
    assert len(commands) >= 14
    for command in commands:
        assert main([*command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "example: bounceback" in out, command
        assert "exit codes:" in out, command


# ---------------------------------------------------------------- decode


def test_decode_enquire_link_and_a_receipt(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "00000010 00000015 00000000 0000002a"]) == 0
    out = capsys.readouterr().out
    assert "EnquireLink" in out and "42" in out
    receipt = build_receipt_pdu(
        sequence_number=7,
        source_addr="447700900001",
        destination_addr="Shop",
        message_id="0190A1B2C3D4E5F6",
        stat="UNDELIV",
        err="001",
        submit_date=dt.datetime(2024, 5, 1, 8, 0),
        done_date=dt.datetime(2024, 5, 1, 8, 1),
    )
    assert main(["decode", receipt.encode().hex()]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("DeliverSm(")
    assert "0190A1B2C3D4E5F6" in lines[1] and "UNDELIV" in lines[1]
    assert "unknown_subscriber" in lines[2]  # classified: MAP 1 is a hard bounce


def test_decode_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "zz"]) == 2
    assert "not hex" in capsys.readouterr().err
    assert main(["decode", "00000008"]) == 1
    assert "cannot decode" in capsys.readouterr().err


# ---------------------------------------------------------------- simulate


def test_simulate_reports_a_bad_scenario(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "s.toml").write_text('[[rules]]\nnumber = "1"\noutcomes = ["teleport"]\n', "utf-8")
    assert main(["simulate", "--port", "0", "--scenario", "s.toml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("invalid scenario: s.toml: rules[0].outcomes[0]: unknown outcome")
    assert main(["simulate", "--scenario", "missing.toml"]) == 2
    assert "missing.toml: cannot read" in capsys.readouterr().err
    done = run_cli("simulate", "--scenario", "s.toml")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_simulate_on_a_taken_port_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("simulate", "--port", str(port))
    assert done.returncode == 1
    assert f"bounceback simulate: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- run: the event loop


def with_event_loop(config: Path, value: str) -> Path:
    """The config with ``[server] event_loop = value``."""
    text = config.read_text()
    config.write_text(
        text.replace("submit_wait = 3.0\n", f'submit_wait = 3.0\nevent_loop = "{value}"\n', 1)
    )
    assert f'event_loop = "{value}"' in config.read_text()
    return config


def block_uvloop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import uvloop` fail in the processes the test starts (a shadowing package
    first on their PYTHONPATH)."""
    shim = tmp_path / "no-uvloop" / "uvloop"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("blocked by the test")\n')
    paths = [str(shim.parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))


@pytest.mark.parametrize(
    ("value", "importable", "expected"),
    [
        ("uvloop", True, "uvloop"),
        ("asyncio", True, "asyncio"),
        ("auto", True, "uvloop"),
        ("auto", False, "asyncio"),
    ],
)
async def test_run_serves_under_the_configured_event_loop(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    importable: bool,
    expected: str,
) -> None:
    if not importable:
        block_uvloop(tmp_path, monkeypatch)
    n = "447700950100"
    async with simulator() as sim:
        port = free_port()
        config = with_event_loop(write_config(tmp_path, sim.port or 0, port=port), value)
        proxy = ProxyProcess(config)
        await asyncio.to_thread(proxy.start)
        try:
            s = await bind_sender(port, SmpplibSender)
            status, mid = await send(s, n)
            assert status == 0 and mid
            (receipt,) = await asyncio.to_thread(s.wait_delivered, 1)
            assert receipt_fields(receipt)["id"] == mid
            assert receipt_fields(receipt)["stat"] == "DELIVRD"
            assert sim.count_for(n) == 1
            await asyncio.to_thread(s.close)
        finally:
            rc = await asyncio.to_thread(proxy.terminate)
    assert rc == 0
    out = proxy.output()
    # Logged once, from inside the running loop: the name of the loop's own library.
    assert re.findall(r"INFO bounceback: event loop: (\S+)", out) == [expected]
    assert "INFO bounceback: garbage collector threshold 20000, startup objects frozen" in out
    assert "Traceback" not in out


def test_tune_gc_sets_the_young_threshold_and_freezes() -> None:
    from bounceback.ops.cli import tune_gc

    before = gc.get_threshold()
    # Not 0 everywhere: CPython 3.12 starts with a few hundred objects in the
    # permanent generation.
    frozen = gc.get_freeze_count()
    try:
        tune_gc(0)  # left alone
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == frozen
        tune_gc(12345)
        assert gc.get_threshold() == (12345, before[1], before[2])
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_run_refuses_uvloop_when_it_cannot_be_imported(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block_uvloop(here, monkeypatch)
    (here / "c.toml").write_text('[server]\nport = 0\nevent_loop = "uvloop"\n' + BASE, "utf-8")
    done = run_cli("run", "--config", "c.toml")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        'bounceback run: cannot start: c.toml: server.event_loop: "uvloop" is set but uvloop '
        'cannot be imported (blocked by the test); install uvloop, or set "auto" or "asyncio"'
    ]
    assert done.stdout == ""


# ---------------------------------------------------------------- run: start-up failures


def test_run_on_a_taken_port_exits_with_one_line(here: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (here / "c.toml").write_text(f"[server]\nport = {port}\n" + BASE, "utf-8")
        done = run_cli("run", "--config", "c.toml")  # bounded by run_cli's timeout
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "bounceback run: cannot start: the listeners: error while attempting to bind on "
        f"address ('127.0.0.1', {port}): address already in use"
    )
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_run_with_the_metrics_port_taken_exits_with_one_line(here: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (here / "c.toml").write_text(
            "[server]\nport = 0\n" + BASE + f"[metrics]\nport = {port}\n", "utf-8"
        )
        done = run_cli("run", "--config", "c.toml")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(
        f"bounceback run: cannot start: the HTTP listener on 127.0.0.1:{port}: "
    )
    assert "Traceback" not in done.stderr


def test_run_when_the_store_cannot_be_opened(here: Path) -> None:
    (here / "c.toml").write_text(
        "[server]\nport = 0\n" + BASE + '[store]\npath = "no-such-folder/b.db"\n', "utf-8"
    )
    done = run_cli("run", "--config", "c.toml")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "bounceback run: cannot start: the store: unable to open database file"
    )


async def test_a_failed_start_stops_what_it_had_started(here: Path) -> None:
    from bounceback.config.settings import load_config
    from bounceback.gateway.shell import Gateway, StartError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(here, free_port(), extra=f"[metrics]\nport = {port}\n")
        gw = Gateway(load_config(path))
        expected = re.escape(f"the HTTP listener on 127.0.0.1:{port}: ")
        with pytest.raises(StartError, match=expected):
            await gw.start()
    assert gw.port  # the listener had started...
    with socket.socket() as again:  # ...and is closed again
        again.bind(("127.0.0.1", gw.port))
    tasks = [link._task for link in gw.links.values()]
    assert tasks and all(t is not None and t.done() for t in tasks)  # links stopped
    assert not gw.ctx.tasks


# ---------------------------------------------------------------- suppression


async def cli(*argv: str) -> int:
    """The CLI from an async test (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


async def send(s: SmpplibSender, number: str) -> tuple[int, str]:
    seq = await asyncio.to_thread(s.submit, number, b"admin test")
    return await asyncio.to_thread(s.wait_resp, seq)


async def test_suppression_add_list_remove_with_a_real_proxy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n, other = "447700950001", "447700950002"
    async with simulator() as sim:
        config = write_config(tmp_path, sim.port or 0)
        c = str(config)
        assert await cli("suppression", "list", "--config", c) == 1  # no store yet
        assert "no store at" in capsys.readouterr().err
        assert await cli("suppression", "add", n, "--reason", "complaint", "--config", c) == 0
        assert f"suppressed {n} until" in capsys.readouterr().out
        assert await cli("suppression", "add", "12ab", "--config", c) == 2
        assert "not a phone number" in capsys.readouterr().err

        assert await cli("suppression", "list", "--config", c) == 0
        text = capsys.readouterr().out
        assert "\x1b" not in text  # piped: the plain table
        out = text.splitlines()
        assert out[0].split() == ["number", "reason", "account", "added", "expires"]
        assert out[1].split()[:3] == [n, "complaint", "-"]
        assert out[-1] == "1 suppressed number"

        async with gateway(config) as gw:  # reads the list at start
            s = await bind_sender(gw.port, SmpplibSender)
            assert (await send(s, n))[0] == S.ESME_RINVDSTADR
            assert (await send(s, other))[0] == 0
            await asyncio.to_thread(s.close)
        assert sim.count_for(n) == 0

        assert await cli("suppression", "list", "--format", "json", "--config", c) == 0
        doc = json.loads(capsys.readouterr().out)
        assert [(e["number"], e["reason"]) for e in doc] == [(n, "complaint")]
        assert await cli("suppression", "remove", n, "--config", c) == 0
        assert f"removed {n}" in capsys.readouterr().out
        assert await cli("suppression", "remove", n, "--config", c) == 1
        assert "not on the suppression list" in capsys.readouterr().err
        assert await cli("suppression", "list", "--config", c) == 0
        assert capsys.readouterr().out == "the suppression list is empty\n"

        async with gateway(config) as gw:
            s = await bind_sender(gw.port, SmpplibSender)
            assert (await send(s, n))[0] == 0
            await asyncio.to_thread(s.close)
        assert sim.count_for(n) == 1


# ---------------------------------------------------------------- held

NEVER_RETRY = retry_toml(jitter=None, absent_subscriber=(3600.0, 1.0, 3600.0))


async def test_held_list_and_cancel_with_a_real_proxy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = "447700950010"
    data = {"receipt_delay": 0.02, "rules": [{"number": n, "outcomes": ["absent"]}]}
    async with simulator(data) as sim:
        config = write_config(tmp_path, sim.port or 0, retry=NEVER_RETRY)
        c = str(config)
        async with gateway(config) as gw:
            s = await bind_sender(gw.port, SmpplibSender)
            status, mid = await send(s, n)
            assert status == 0
            for _ in range(200):
                m = await gw.store.get(mid)
                if m is not None and m.state == State.HELD:
                    break
                await asyncio.sleep(0.02)
            assert m is not None and m.state == State.HELD
            await asyncio.to_thread(s.close)

        assert await cli("held", "list", "--config", c) == 0
        text = capsys.readouterr().out
        assert "\x1b" not in text  # piped: the plain table
        out = text.splitlines()
        assert out[0].split()[:5] == ["id", "account", "destination", "attempts", "reason"]
        assert out[1].split()[:5] == [mid, "acme", n, "1", "absent_subscriber"]
        assert out[-1] == "1 held message (showing 1)"
        assert await cli("held", "list", "--format", "json", "--config", c) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["held"] == 1 and doc["messages"][0]["id"] == mid

        assert await cli("held", "cancel", mid, "--config", c) == 0
        assert "a DELETED receipt is queued" in capsys.readouterr().out
        assert await cli("held", "cancel", mid, "--config", c) == 1
        assert f"message {mid} is cancelled, not held" in capsys.readouterr().err
        assert await cli("held", "cancel", "0000000000000000", "--config", c) == 1
        assert await cli("held", "list", "--config", c) == 0
        assert capsys.readouterr().out == "no held messages\n"

        # The proxy delivers the stored DELETED receipt when the sender binds again,
        # and never submits the cancelled message again.
        async with gateway(config) as gw:
            msg = await gw.store.get(mid)
            assert msg is not None and msg.state == State.CANCELLED
            s = await bind_sender(gw.port, SmpplibSender)
            got = await asyncio.to_thread(s.wait_delivered, 1, 10.0)
            assert len(got) == 1
            f = receipt_fields(got[0])
            assert f["stat"] == "DELETED" and f["id"] == mid
            await asyncio.to_thread(s.close)
        assert sim.count_for(n) == 1


async def test_cancel_writes_the_feed_event_and_no_receipt_when_none_was_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path, 2776, extra='[feed]\nhost = "127.0.0.1"\nport = 1883\nprefix = "bb/test"\n'
    )
    now = time.time()
    pdu = SubmitSm(sequence_number=1, source_addr="Shop", destination_addr="447700950020")
    held = Message(
        id="0190000000000001",
        account="acme",
        source_addr="Shop",
        destination_addr="447700950020",
        pdu=pdu.encode(),
        registered_delivery=0,
        created_at=now,
        deadline=now + 3600,
        deadline_is_validity=False,
        submit_date=now,
        state=State.HELD,
        attempts=2,
        next_attempt_at=now + 600,
        retries_by_reason=(("absent_subscriber", 2),),
        verdict=Verdict("soft", "absent_subscriber", "absent", "006", "", "default"),
        updated_at=now,
    )
    store = SqliteStore(tmp_path / "proxy.db", batch_delay=0.0)
    await store.open()
    await store.commit(Change(message=held, insert=True))
    await store.close()

    assert await cli("held", "cancel", held.id, "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert "no receipt: the sender did not ask for one" in out
    assert "'cancelled' event is queued" in out

    store = SqliteStore(tmp_path / "proxy.db", batch_delay=0.0)
    await store.open()
    try:
        msg = await store.get(held.id)
        assert msg is not None and msg.state == State.CANCELLED and msg.next_attempt_at is None
        events = await store.outbox(10)
        assert [e.topic for e in events] == [f"bb/test/events/acme/{held.id}/cancelled"]
        payload = json.loads(events[0].payload)
        assert payload["event"] == "cancelled" and payload["state"] == "cancelled"
        assert payload["destination"] == "********0020"  # masked by default
        assert await store.pending_receipts("acme", 10) == []
    finally:
        await store.close()
