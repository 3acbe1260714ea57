"""Prometheus metrics, the health endpoints and what the logs may (not) contain.

The proxy runs with the carrier simulator and a real smpplib sender; /metrics is
scraped over HTTP with urllib and parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import bounceback
import pytest
from bounceback.config.settings import load_config
from bounceback.gateway.metrics import Metrics, command_label, status_label
from bounceback.gateway.shell import Gateway
from bounceback.ops.cli import main as cli_main
from bounceback.smpp.simulator import CarrierSimulator, Scenario
from harness import FAST_RETRY, ProxyProcess, free_port, gateway, wait_until, write_config
from prometheus_client.parser import text_string_to_metric_families
from smppcodecs.constants import CommandId
from smppcodecs.constants import CommandStatus as S
from smppcodecs.pdu import DeliverSm
from smpplib_peer import SmpplibSender, receipt_fields

SIM = {"receipt_delay": 0.02, "id_format": "hex", "receipt_id_format": "dec"}
METRICS = '[metrics]\nhost = "127.0.0.1"\nport = 0\n'

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------- helpers


def _get(url: str, method: str = "GET") -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


async def http(gw: Gateway, path: str, method: str = "GET") -> tuple[int, bytes, str]:
    assert gw.metrics is not None
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{gw.metrics.port}{path}", method)


async def scrape(gw: Gateway) -> Samples:
    status, body, ctype = await http(gw, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum over the series of `metric` that carry `labels` (they may carry more:
    messages_total also says the account and carrier); 0.0 when there is none (yet)."""
    want = frozenset(labels.items())
    return sum(v for (name, have), v in samples.items() if name == metric and want <= have)


def pdus(samples: Samples, direction: str, command: str, status: str = "ESME_ROK") -> float:
    return value(
        samples, "bounceback_pdus_total", direction=direction, command=command, status=status
    )


@contextlib.asynccontextmanager
async def sim_running(data: dict[str, object]) -> AsyncIterator[CarrierSimulator]:
    sim = CarrierSimulator(Scenario.from_mapping(data))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def bound(gw: Gateway, pw: str = "acme-pw") -> SmpplibSender:
    s = SmpplibSender("127.0.0.1", gw.port)
    assert await asyncio.to_thread(s.bind, "transceiver", "acme", pw) == 0
    s.listen()
    return s


async def submit(s: SmpplibSender, number: str) -> tuple[int, str]:
    seq = await asyncio.to_thread(s.submit, number)
    return await asyncio.to_thread(s.wait_resp, seq)


# ---------------------------------------------------------------- labels (no I/O)


def test_labels_are_names_and_bounded() -> None:
    assert command_label(CommandId.SUBMIT_SM) == "submit_sm"
    assert command_label(CommandId.DELIVER_SM_RESP) == "deliver_sm_resp"
    assert command_label(0x00000999) == "0x00000999"
    assert status_label(0) == "ESME_ROK"
    assert status_label(S.ESME_RTHROTTLED) == "ESME_RTHROTTLED"
    assert status_label(0x0401) == "VENDOR_0x0401"
    # Reserved codes collapse into one series whatever a peer sends.
    assert status_label(0x12345) == status_label(0x7777) == "RESERVED"
    m = Metrics()
    for st in range(0x1000, 0x1100):
        m.on_pdu("carrier", "sim", "in", CommandId.SUBMIT_SM_RESP, st)
    text = m.render().decode()
    series = [ln for ln in text.splitlines() if ln.startswith("bounceback_pdus_total{")]
    assert series == [
        'bounceback_pdus_total{command="submit_sm_resp",direction="in",name="sim",'
        'side="carrier",status="RESERVED"} 256.0'
    ]


# ---------------------------------------------------------------- end to end


async def test_counters_follow_traffic_and_readyz_follows_the_carrier(tmp_path: Path) -> None:
    n = 5
    async with sim_running(SIM) as sim:
        cfg = write_config(tmp_path, sim.port or 0, extra=METRICS)
        async with gateway(cfg) as gw:
            assert gw.metrics is not None and gw.metrics.port not in (0, gw.port)
            metrics_port = gw.metrics.port
            assert (await http(gw, "/healthz"))[:2] == (200, b"ok\n")
            status, body, _ = await http(gw, "/readyz")
            assert (status, body) == (200, b"ready\n")

            s = await bound(gw)
            ids = []
            for i in range(n):
                st, mid = await submit(s, f"4477009301{i:02d}")
                assert st == 0
                ids.append(mid)
            got = await asyncio.to_thread(s.wait_delivered, n, 10.0)
            assert sorted(receipt_fields(p)["id"] for p in got) == sorted(ids)
            # The sender's deliver_sm_resp are counted as they arrive.
            await wait_until(lambda: gw.counters.get("receipts_to_senders", 0) == n)

            m = await scrape(gw)
            # From the sender, on to the carrier, receipts back, receipts out.
            assert pdus(m, "in", "submit_sm") == n
            assert pdus(m, "out", "submit_sm_resp") == n
            assert pdus(m, "out", "submit_sm") == n
            assert pdus(m, "in", "submit_sm_resp") == n
            assert pdus(m, "in", "deliver_sm") == n
            assert pdus(m, "out", "deliver_sm_resp") == n
            assert pdus(m, "out", "deliver_sm") == n
            assert pdus(m, "in", "deliver_sm_resp") == n
            assert pdus(m, "in", "bind_transceiver") == 1
            assert pdus(m, "out", "bind_transceiver_resp") == 1

            msgs = "bounceback_messages_total"
            assert value(m, msgs, outcome="accepted") == n
            assert value(m, msgs, outcome="submitted") == n
            assert value(m, msgs, outcome="delivered") == n
            assert value(m, msgs, outcome="hard_bounce") == 0
            assert value(m, msgs, outcome="soft_bounce") == 0
            assert value(m, "bounceback_receipts_total", result="matched") == n
            assert value(m, "bounceback_retry_attempts_total") == 0

            binds = "bounceback_binds_total"
            assert value(m, binds, side="esme", name="acme", result="ok") == 1
            assert value(m, binds, side="carrier", name="sim", result="ok") == 1
            assert value(m, "bounceback_binds_current", side="esme", name="acme") == 1
            assert value(m, "bounceback_binds_current", side="carrier", name="sim") == 1
            assert value(m, "bounceback_carrier_flaps_total", carrier="sim") == 0
            assert value(m, "bounceback_carrier_healthy", carrier="sim") == 1
            assert value(m, "bounceback_held_messages") == 0
            assert value(m, "bounceback_outbox_backlog") == 0
            # Every submit to the carrier was timed; every accept and decision committed.
            assert value(m, "bounceback_carrier_submit_seconds_count", carrier="sim") == n
            assert value(m, "bounceback_store_commit_seconds_count") >= 3 * n

            await asyncio.to_thread(s.close)
            await wait_until(lambda: not gw.sessions.get("acme"))
            m = await scrape(gw)
            assert value(m, "bounceback_binds_current", side="esme", name="acme") == 0

            # The carrier goes away: still alive, no longer ready.
            await sim.stop()
            await wait_until(lambda: not gw.links["sim"].bound)
            status, body, _ = await http(gw, "/readyz")
            assert status == 503 and b"no carrier bound" in body
            assert (await http(gw, "/healthz"))[0] == 200
            await wait_until(lambda: gw.links["sim"].flaps_total == 1)
            m = await scrape(gw)
            assert value(m, "bounceback_binds_current", side="carrier", name="sim") == 0
            # Lost within stable_after of binding: short-lived, but one is no flapping.
            assert value(m, "bounceback_carrier_flaps_total", carrier="sim") == 1
            assert value(m, "bounceback_carrier_healthy", carrier="sim") == 1
        # After stop() the endpoint is gone.
        with pytest.raises(OSError):
            await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/healthz")


async def test_bounces_retries_held_and_suppression(tmp_path: Path) -> None:
    retry = FAST_RETRY.replace(
        "[retry.schedules.memory_full]\ninitial = 0.3\nfactor = 1.0\nmax = 0.3",
        "[retry.schedules.memory_full]\ninitial = 600.0\nfactor = 1.0\nmax = 600.0",
    )
    assert retry != FAST_RETRY
    scen = {
        **SIM,
        "rules": [
            {"number": "447700930201", "outcomes": ["absent", "deliver"]},
            {"number": "447700930202", "outcomes": ["memory_full", "deliver"]},
            {"number": "447700930203", "outcomes": ["unknown"]},
        ],
    }
    async with sim_running(scen) as sim:
        cfg = write_config(tmp_path, sim.port or 0, extra=METRICS, retry=retry)
        async with gateway(cfg) as gw:
            assert gw.metrics is not None
            gw.metrics.refresh_min = 0.0  # query the store on every scrape
            s = await bound(gw)
            for number in ("447700930201", "447700930202", "447700930203"):
                assert (await submit(s, number))[0] == 0
            # Retried and delivered, and the hard bounce's final receipt.
            await wait_until(lambda: gw.counters.get("receipts_matched", 0) == 4)
            got = await asyncio.to_thread(s.wait_delivered, 2, 10.0)
            stats = sorted(receipt_fields(p)["stat"] for p in got)
            assert stats == ["DELIVRD", "UNDELIV"]
            # The hard-bounced number is now refused.
            assert (await submit(s, "447700930203"))[0] == S.ESME_RINVDSTADR

            m = await scrape(gw)
            msgs = "bounceback_messages_total"
            assert value(m, msgs, outcome="accepted") == 3
            assert value(m, msgs, outcome="soft_bounce") == 2
            assert value(m, msgs, outcome="resubmitted") == 1
            assert value(m, msgs, outcome="delivered") == 1
            assert value(m, msgs, outcome="hard_bounce") == 1
            assert value(m, "bounceback_retry_attempts_total") == 1
            assert value(m, "bounceback_held_messages") == 1
            assert value(m, "bounceback_suppression_hits_total") == 1
            assert value(m, "bounceback_receipts_total", result="matched") == 4
            assert pdus(m, "out", "submit_sm_resp", "ESME_RINVDSTADR") == 1
            assert sim.count_for("447700930202") == 1  # held, not retried yet

            # Which account, which carrier, which reason, which stat.
            assert value(m, msgs, outcome="accepted", account="acme", carrier="") == 3
            assert value(m, msgs, outcome="delivered", account="acme", carrier="sim") == 1
            assert value(m, msgs, outcome="soft_bounce", account="acme", carrier="sim") == 2
            retries = "bounceback_retry_attempts_total"
            assert value(m, retries, carrier="sim", reason="absent_subscriber") == 1
            assert value(m, "bounceback_held_messages", reason="memory_full") == 1
            assert value(m, "bounceback_held_messages", reason="absent_subscriber") == 0
            by_stat = "bounceback_carrier_receipts_total"
            assert value(m, by_stat, carrier="sim", stat="DELIVRD") == 1
            assert value(m, by_stat, carrier="sim", stat="UNDELIV") == 3
            pdus_total = "bounceback_pdus_total"
            assert value(m, pdus_total, side="esme", name="acme", command="submit_sm") == 4
            assert value(m, pdus_total, side="carrier", name="sim", command="submit_sm") == 4
            assert value(m, "bounceback_sender_submit_seconds_count", account="acme") == 4
            assert value(m, "bounceback_suppressed_numbers") == 1
            assert value(m, "bounceback_build_info", version=bounceback.__version__) == 1
            assert value(m, "process_cpu_seconds_total") > 0
            assert value(m, "python_gc_collections_total") >= 0
            assert not [name for name, _ in m if name.endswith("_created")]
            await asyncio.to_thread(s.close)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (.ci/run installs it)")
async def test_promtool_finds_nothing_to_say(tmp_path: Path) -> None:
    """Prometheus' own linter on a scrape after traffic: names, units, help texts."""
    async with (
        sim_running(SIM) as sim,
        gateway(write_config(tmp_path, sim.port or 0, extra=METRICS)) as gw,
    ):
        s = await bound(gw)
        assert (await submit(s, "447700930301"))[0] == 0
        await wait_until(lambda: gw.counters.get("receipts_matched", 0) == 1)
        await asyncio.to_thread(s.close)
        _, body, _ = await http(gw, "/metrics")
    checked = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=body,
        capture_output=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == b"" and checked.stderr.strip() == b""


async def test_http_methods_and_paths(tmp_path: Path) -> None:
    async with (
        sim_running(SIM) as sim,
        gateway(write_config(tmp_path, sim.port or 0, extra=METRICS)) as gw,
    ):
        assert (await http(gw, "/nope"))[0] == 404
        assert (await http(gw, "/metrics", "POST"))[0] == 405
        status, body, _ = await http(gw, "/healthz", "HEAD")
        assert (status, body) == (200, b"")
        status, body, _ = await http(gw, "/metrics?name[]=x")
        assert status == 200 and b"# TYPE bounceback_pdus_total counter" in body


async def test_no_metrics_section_means_no_metrics(tmp_path: Path) -> None:
    async with sim_running(SIM) as sim, gateway(write_config(tmp_path, sim.port or 0)) as gw:
        assert gw.metrics is None
        assert gw.links["sim"]._on_pdu is None  # nothing counted on the hot path


# ---------------------------------------------------------------- logging


def _bb_text(caplog: pytest.LogCaptureFixture) -> str:
    """What the proxy logged (the simulator is a test peer with its own logs)."""
    return "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("bounceback") and not r.name.startswith("bounceback.simulator")
    )


async def test_logs_never_contain_passwords(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_sender_pw = "Wr0ng-sender-secret"
    wrong_carrier_pw = "Wq7-zr0n"  # SMPP passwords are at most 8 characters
    scen = {**SIM, "credentials": {"bounceback": "sim-pw"}}
    async with sim_running(scen) as sim:
        good = write_config(tmp_path, sim.port or 0, extra=METRICS)
        async with gateway(good) as gw:
            bad = SmpplibSender("127.0.0.1", gw.port)
            assert await asyncio.to_thread(bad.bind, "transceiver", "acme", wrong_sender_pw) == (
                S.ESME_RINVPASWD
            )
            ok = await bound(gw)
            await asyncio.to_thread(ok.close)
            await asyncio.to_thread(bad.close)
            m = await scrape(gw)
            binds = "bounceback_binds_total"
            assert value(m, binds, side="esme", name="acme", result="ESME_RINVPASWD") == 1
        # Our own password is wrong at the carrier.
        text = good.read_text().replace('password = "sim-pw"', f'password = "{wrong_carrier_pw}"')
        bad_cfg = tmp_path / "bad-carrier.toml"
        bad_cfg.write_text(text)
        gw2 = Gateway(load_config(bad_cfg))
        await gw2.start()
        try:
            await wait_until(lambda: gw2.links["sim"].bind_failures >= 2)
        finally:
            await gw2.stop()
        assert cli_main(["check", "--config", str(good)]) == 0
    logged = _bb_text(caplog)
    assert "refused" in logged and "cannot bind" in logged  # the failures were logged
    shown = logged + capsys.readouterr().out
    for secret in (wrong_sender_pw, wrong_carrier_pw, "acme-pw", "sim-pw"):
        assert secret not in shown


@pytest.mark.parametrize("mask", [True, False])
async def test_numbers_masked_in_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mask: bool
) -> None:
    caplog.set_level(logging.INFO, logger="bounceback")
    number, short_code = "447700930377", "447700930388"
    extra = f"[logging]\nmask_destinations = {'true' if mask else 'false'}\n"
    async with (
        sim_running(SIM) as sim,
        gateway(write_config(tmp_path, sim.port or 0, extra=extra)) as gw,
    ):
        assert await sim.send_alert(number) == 1
        await wait_until(lambda: "alert for" in _bb_text(caplog))
        # A mobile-originated message nobody takes (no mo_account configured).
        mo = DeliverSm(
            sequence_number=1,
            source_addr="447700930399",
            destination_addr=short_code,
            short_message=b"hi",
        )
        assert await gw.on_carrier_deliver("sim", mo) == 0
    logged = _bb_text(caplog)
    assert "has no account" in logged
    if mask:
        assert "********0377" in logged and "********0388" in logged
        assert number not in logged and short_code not in logged
    else:
        assert number in logged and short_code in logged


async def test_json_logs_from_the_running_process(tmp_path: Path) -> None:
    number = "447700930466"
    wrong_pw = "Wr0ng-json-secret"
    extra = "[logging]\njson = true\nmask_destinations = true\n"
    async with sim_running(SIM) as sim:
        port = free_port()
        proxy = ProxyProcess(write_config(tmp_path, sim.port or 0, port=port, extra=extra))
        await asyncio.to_thread(proxy.start)
        try:
            await wait_until(lambda: sim.bound_receivers("bounceback") == 1, timeout=15)
            bad = SmpplibSender("127.0.0.1", port)
            assert await asyncio.to_thread(bad.bind, "transceiver", "acme", wrong_pw) == (
                S.ESME_RINVPASWD
            )
            await asyncio.to_thread(bad.close)
            assert await sim.send_alert(number) == 1
            await wait_until(lambda: "alert for" in proxy.output(), timeout=10)
        finally:
            assert await asyncio.to_thread(proxy.terminate) == 0
    out = proxy.output()
    docs = []
    for line in out.splitlines():
        if not line or line.startswith(("--- started run", "bounceback listening on")):
            continue
        doc = json.loads(line)  # every log line is one JSON object
        assert isinstance(doc, dict) and {"at", "level", "logger", "message"} <= set(doc)
        docs.append(doc)
    messages = [d["message"] for d in docs]
    assert any("refused" in msg for msg in messages)
    assert any("alert for ********0466" in msg for msg in messages)
    assert wrong_pw not in out and "acme-pw" not in out and "sim-pw" not in out
    assert number not in out
