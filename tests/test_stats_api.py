"""GET /v1/stats over real HTTP against a running gateway with the carrier simulator:
the report's new dimensions (carrier, account, reason with time-to-recover, timeline)
for messages that really bounced and recovered, the bucket, format and section
parameters, CSV downloads, and the document against proxy/schema/report.schema.json."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import bounceback
import jsonschema
import pytest
from bounceback.analysis.stats import CSV_HEADER, REASON_FIELDS, SECTIONS
from bounceback.config.settings import load_config
from bounceback.gateway.shell import Gateway
from harness import bind_sender, simulator, wait_until, write_config
from smpplib_peer import SmpplibSender

READ = "read-token-0123456789"
ADMIN_TOML = f"""
[metrics]
port = 0

[admin]
open_health = true

[[admin.tokens]]
name = "viewer"
scope = "read"
token = "{READ}"
"""
HEADERS = {"Authorization": f"Bearer {READ}"}
REPORT_SCHEMA = json.loads(
    (Path(bounceback.__file__).parent / "schema" / "report.schema.json").read_text()
)

RECOVERS = "447700900501"  # absent subscriber once, then delivered
HARD = "447700900502"  # unknown subscriber: a hard bounce
PLAIN = "447700900503"  # delivered at once
THROTTLED = "447700900504"  # throttled by the carrier once (a link reason), then delivered
SCENARIO = {
    "receipt_delay": 0.02,
    "rules": [
        {"number": RECOVERS, "outcomes": ["absent", "deliver"]},
        {"number": HARD, "outcomes": ["unknown"]},
        {"number": THROTTLED, "outcomes": ["throttle", "deliver"]},
    ],
}


@contextlib.asynccontextmanager
async def running(tmp: Path) -> AsyncIterator[tuple[Gateway, str]]:
    async with simulator(SCENARIO) as sim:
        path = write_config(tmp, sim.port or 0, extra=ADMIN_TOML)
        gw = Gateway(load_config(path))
        await gw.start()
        try:
            await wait_until(lambda: all(link.bound for link in gw.links.values()))
            assert gw.admin_port
            yield gw, f"http://127.0.0.1:{gw.admin_port}"
        finally:
            await gw.stop()


async def get_json(http: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with http.get(url, params=params, headers=HEADERS) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def get_error(http: aiohttp.ClientSession, url: str, **params: str) -> str:
    async with http.get(url, params=params, headers=HEADERS) as r:
        assert r.status == 400, await r.text()
        body = await r.json()
        assert body["error"]["code"] == "bad_parameter"
        return str(body["error"]["message"])


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


async def test_stats_dimensions_params_and_csv(tmp_path: Path) -> None:
    async with running(tmp_path) as (gw, url), aiohttp.ClientSession() as http:
        s = await bind_sender(gw.port, SmpplibSender)
        try:
            for number in (RECOVERS, HARD, PLAIN, THROTTLED):
                seq = await asyncio.to_thread(s.submit, number)
                assert (await asyncio.to_thread(s.wait_resp, seq))[0] == 0
        finally:
            await asyncio.to_thread(s.close)

        async def ended() -> dict[str, Any]:
            doc: dict[str, Any] = await get_json(http, f"{url}/v1/stats")
            return doc

        end = time.monotonic() + 20
        doc = await ended()
        while doc["totals"]["delivered"] + doc["totals"]["hard"] < 4:
            assert time.monotonic() < end, doc["totals"]
            await asyncio.sleep(0.05)
            doc = await ended()

        jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(doc)
        totals = doc["totals"]
        assert (totals["sent"], totals["delivered"], totals["recovered"], totals["hard"]) == (
            4,
            3,
            2,
            1,
        )
        (carrier,) = doc["by_carrier"]
        assert carrier["carrier"] == "sim" and carrier["sent"] == 4
        assert {k: v for k, v in carrier.items() if k != "carrier"} == totals
        (account,) = doc["by_account"]
        assert account["account"] == "acme" and account["recovered"] == 2

        reasons = {(r["reason"], r["kind"]): r for r in doc["by_reason"]}
        assert set(reasons) == {
            ("absent_subscriber", "soft"),
            ("throttled", "link"),
            ("unknown_subscriber", "hard"),
        }
        absent = reasons[("absent_subscriber", "soft")]
        assert (absent["bounces"], absent["messages"], absent["recovered"]) == (1, 1, 1)
        assert absent["recovery_rate"] == 1.0 and absent["recover_samples"] == 1
        # One recovery: its median and p90 are that message's time from its soft
        # bounce to its delivery, as its own timeline has them.
        msgs = await get_json(http, f"{url}/v1/messages", destination=RECOVERS)
        (msg,) = msgs["items"]
        steps = {s["event"]: dt.datetime.fromisoformat(s["at"]) for s in msg["timeline"]}
        took = (steps["delivered"] - steps["soft_bounce"]).total_seconds()
        assert absent["recover_median_s"] == pytest.approx(took, abs=0.002)
        assert absent["recover_p90_s"] == absent["recover_median_s"]
        assert absent["recover_median_s"] >= 0.3  # the absent_subscriber retry waits 0.3 s
        link = reasons[("throttled", "link")]
        assert (link["messages"], link["recovered"], link["recover_samples"]) == (1, 1, 1)
        hard = reasons[("unknown_subscriber", "hard")]
        assert (hard["bounces"], hard["recovered"], hard["recovery_rate"]) == (1, 0, None)
        assert hard["recover_median_s"] is None

        # The default range is a day: hour buckets, every one listed, the messages in one.
        tl = doc["timeline"]
        assert tl["bucket"] == "hour" and tl["requested"] is None
        assert len(tl["items"]) in (24, 25)
        assert sum(i["sent"] for i in tl["items"]) == 4
        assert sum(i["recovered"] for i in tl["items"]) == 2

        # bucket=minute over the last hour: 60 or 61 minute buckets.
        now = time.time()
        minute = await get_json(
            http, f"{url}/v1/stats", bucket="minute", since=iso(now - 3600), until=iso(now)
        )
        assert minute["timeline"]["bucket"] == "minute"
        assert len(minute["timeline"]["items"]) in (60, 61)
        # Minutes over three days would be 4320 buckets: coarsened to hours, and said so.
        coarse = await get_json(
            http, f"{url}/v1/stats", bucket="minute", since=iso(now - 3 * 86400), until=iso(now)
        )
        assert coarse["timeline"]["bucket"] == "hour"
        assert coarse["timeline"]["requested"] == "minute"
        assert len(coarse["timeline"]["items"]) in (72, 73)
        # Past 2000 days the timeline keeps the latest 2000, and says so.
        long = await get_json(http, f"{url}/v1/stats", since="1990-01-01T00:00:00Z")
        assert long["timeline"]["bucket"] == "day" and long["timeline"]["clipped"] is True
        assert len(long["timeline"]["items"]) == 2000
        assert sum(i["sent"] for i in long["timeline"]["items"]) == 4
        assert long["totals"] == totals
        assert doc["timeline"]["clipped"] is False

        # CSV: the whole report in one table, and one section as its own table.
        async with http.get(f"{url}/v1/stats", params={"format": "csv"}, headers=HEADERS) as r:
            assert r.status == 200
            assert r.content_type == "text/csv"
            disposition = r.headers["Content-Disposition"]
            assert disposition.startswith('attachment; filename="bounceback-report-')
            assert disposition.endswith('.csv"')
            rows = list(csv.reader(io.StringIO(await r.text())))
        assert tuple(rows[0]) == CSV_HEADER
        sections = {row[0] for row in rows[1:]}
        assert {"total", "carrier", "account", "timeline", "reason", "remove_number"} <= sections
        async with http.get(
            f"{url}/v1/stats", params={"format": "csv", "section": "by_reason"}, headers=HEADERS
        ) as r:
            assert r.status == 200 and r.content_type == "text/csv"
            assert 'filename="bounceback-by_reason-' in r.headers["Content-Disposition"]
            table = list(csv.DictReader(io.StringIO(await r.text())))
        assert tuple(table[0]) == REASON_FIELDS
        by_reason = {(t["reason"], t["kind"]): t for t in table}
        assert by_reason[("absent_subscriber", "soft")]["recovery_rate"] == "1.0000"
        assert by_reason[("unknown_subscriber", "hard")]["recovery_rate"] == ""
        for section, columns in SECTIONS.items():
            async with http.get(
                f"{url}/v1/stats", params={"format": "csv", "section": section}, headers=HEADERS
            ) as r:
                assert r.status == 200, section
                lines = list(csv.reader(io.StringIO(await r.text())))
            assert tuple(lines[0]) == columns, section
        async with http.get(
            f"{url}/v1/stats",
            params={"format": "csv", "section": "numbers_to_remove"},
            headers=HEADERS,
        ) as r:
            remove = list(csv.DictReader(io.StringIO(await r.text())))
        assert [(n["number"], n["reason"]) for n in remove] == [(HARD, "unknown_subscriber")]

        # Refused parameters, each with its reason.
        assert "bucket" in await get_error(http, f"{url}/v1/stats", bucket="week")
        assert "format" in await get_error(http, f"{url}/v1/stats", format="xml")
        assert "section" in await get_error(
            http, f"{url}/v1/stats", format="csv", section="nothing"
        )
        # A section alone asks for CSV; format=json answers the whole document.
        async with http.get(
            f"{url}/v1/stats", params={"section": "by_carrier"}, headers=HEADERS
        ) as r:
            assert r.content_type == "text/csv"
            assert (await r.text()).splitlines()[1].startswith("sim,4,3,2,")
        whole = await get_json(http, f"{url}/v1/stats", section="by_carrier", format="json")
        assert whole["by_reason"] == doc["by_reason"]

        # The command line reads the same store into the same dimensions.
        out = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "bounceback",
                "stats",
                "--format",
                "json",
                "--config",
                str(tmp_path / "proxy.toml"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        cli = json.loads(out.stdout)
        assert cli["by_reason"] == doc["by_reason"]
        assert cli["by_carrier"] == doc["by_carrier"]
        assert cli["by_account"] == doc["by_account"]
