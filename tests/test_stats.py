"""`bounceback stats` on a store with known contents: exact numbers in JSON, the CSV
table, the terminal tables and a self-contained HTML page with charts."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import bounceback.analysis.stats as stats_module
import pytest
from bounceback.analysis.stats import CSV_HEADER, Counts, format_table, message_outcome
from bounceback.core.model import Message, State, Verdict
from bounceback.ops.cli import main
from bounceback.ops.report import hour_chart
from bounceback.store.sqlite import Change, SqliteStore, Suppression
from smppcodecs.pdu import SubmitSm

DAY = dt.datetime(2024, 5, 1, tzinfo=dt.UTC).timestamp()
SINCE, UNTIL = "2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp()


def at(hour: int, minute: int = 0) -> float:
    return DAY + hour * 3600 + minute * 60


def verdict(kind: str, reason: str) -> Verdict:
    return Verdict(kind, reason, reason.replace("_", " "), "", "", "default")


def message(
    n: int,
    number: str,
    state: State,
    created: float,
    *,
    attempts: int = 1,
    retries: tuple[tuple[str, int], ...] = (),
    v: Verdict | None = None,
) -> Message:
    pdu = SubmitSm(sequence_number=1, source_addr="Shop", destination_addr=number)
    return Message(
        id=f"{n:016X}",
        account="acme",
        source_addr="Shop",
        destination_addr=number,
        pdu=pdu.encode(),
        registered_delivery=1,
        created_at=created,
        deadline=created + 86400,
        deadline_is_validity=False,
        submit_date=created,
        state=state,
        attempts=attempts,
        retries_by_reason=retries,
        verdict=v,
        done_at=created + 60 if state.final else None,
        next_attempt_at=created + 600 if state == State.HELD else None,
        updated_at=created,
    )


DELIVERED = verdict("delivered", "delivered")
MESSAGES = [
    message(1, "447700900001", State.DELIVERED, at(8, 10), v=DELIVERED),
    message(
        2,
        "447700900002",
        State.DELIVERED,
        at(8, 20),
        attempts=3,
        retries=(("absent_subscriber", 2),),
        v=DELIVERED,
    ),
    message(3, "447700900003", State.FAILED, at(9), v=verdict("hard", "unknown_subscriber")),
    message(
        4,
        "4915112345678",
        State.DELIVERED,
        at(9, 30),
        attempts=2,
        retries=(("throttled", 1),),
        v=DELIVERED,
    ),
    message(
        5,
        "4915112345679",
        State.EXPIRED,
        at(22),
        attempts=4,
        retries=(("absent_subscriber", 3),),
        v=verdict("soft", "absent_subscriber"),
    ),
    message(6, "33612345678", State.REJECTED, at(22, 15), v=verdict("hard", "invalid_address")),
    message(
        7,
        "33612345679",
        State.HELD,
        at(22, 30),
        attempts=2,
        retries=(("memory_full", 1),),
        v=verdict("soft", "memory_full"),
    ),
    message(
        8,
        "33612345680",
        State.FAILED,
        at(23),
        attempts=6,
        retries=(("absent_subscriber", 6),),
        v=verdict("soft", "absent_subscriber"),
    ),
    # Accepted a minute before the window: not counted.
    message(9, "447700900009", State.DELIVERED, DAY - 60, v=DELIVERED),
    message(10, "12025550123", State.CANCELLED, at(10)),
    message(11, "447700900011", State.FAILED, at(10, 30), v=verdict("hard", "barred")),
]

SOFT_BOUNCES = [
    ("447700900002", at(8, 21), "absent_subscriber"),
    ("447700900002", at(8, 25), "absent_subscriber"),
    ("4915112345678", at(9, 31), "throttled"),  # carrier-side: left out of the number list
    ("4915112345679", at(22, 1), "absent_subscriber"),
    ("4915112345679", at(22, 5), "absent_subscriber"),
    ("4915112345679", at(22, 10), "absent_subscriber"),
    ("33612345679", at(22, 31), "memory_full"),
    *[("33612345680", at(23, m), "absent_subscriber") for m in (1, 5, 10, 20, 40)],
    ("33612345680", at(24, 30), "absent_subscriber"),  # after the window
    ("447700900009", DAY - 30, "absent_subscriber"),  # before the window
]

SUPPRESSIONS = [
    Suppression("447700900003", "unknown_subscriber", at(9, 1), FAR, "acme"),
    Suppression("447700900099", "complaint", at(12), FAR, ""),
    Suppression("447700900098", "unknown_subscriber", at(1), at(2), ""),  # expired
]


async def _fill(path: Path) -> None:
    store = SqliteStore(path, batch_delay=0.0)
    await store.open()
    await store.commit_many(
        [Change(message=m, insert=True) for m in MESSAGES] + [Change(soft_bounce=SOFT_BOUNCES)]
    )
    for s in SUPPRESSIONS:
        await store.suppression_add(s)
    await store.close()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stats")
    asyncio.run(_fill(folder / "stats.db"))
    cfg = folder / "proxy.toml"
    cfg.write_text(
        '[[accounts]]\nsystem_id = "acme"\npassword = "pw"\n'
        '[[carriers]]\nname = "sim"\nhost = "127.0.0.1"\nsystem_id = "bb"\npassword = "pw"\n'
        '[store]\npath = "stats.db"\n',
        encoding="utf-8",
    )
    return cfg


def stats(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    rc = main(["stats", "--config", str(config), "--since", SINCE, "--until", UNTIL, *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    return out


def test_json_has_the_exact_numbers(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(stats(config, capsys, "--format", "json", "--top", "3"))
    assert doc["schema"] == "bounceback.report/1"
    assert doc["since"] == "2024-05-01T00:00:00.000Z" and doc["until"] == "2024-05-02T00:00:00.000Z"
    assert doc["hours"] == "utc"
    assert doc["totals"] == {
        "sent": 10,
        "delivered": 3,
        "recovered": 2,
        "soft_bounced": 5,
        "bounced": 8,
        "hard": 3,
        "expired": 2,
        "cancelled": 1,
        "pending": 1,
        "submissions": 22,
        "delivery_rate": 0.3,
        "bounce_rate": 0.8,
        "soft_rate": 0.5,
        "hard_rate": 0.3,
        "recovery_rate": 0.4,
        "submissions_per_message": 2.2,
    }
    by_country = {c["country"]: c for c in doc["by_country"]}
    assert [c["country"] for c in doc["by_country"]] == ["GB", "FR", "DE", "US"]  # by sent
    gb = by_country["GB"]
    assert (gb["sent"], gb["delivered"], gb["recovered"], gb["hard"], gb["soft_bounced"]) == (
        4,
        2,
        1,
        2,
        1,
    )
    assert gb["hard_rate"] == 0.5 and gb["recovery_rate"] == 1.0
    de = by_country["DE"]
    assert (de["sent"], de["delivered"], de["recovered"], de["expired"]) == (2, 1, 1, 1)
    fr = by_country["FR"]
    assert (fr["sent"], fr["hard"], fr["pending"], fr["expired"], fr["soft_bounced"]) == (
        3,
        1,
        1,
        1,
        2,
    )
    assert by_country["US"]["cancelled"] == 1 and by_country["US"]["recovery_rate"] is None
    ops = {(o["country"], o["operator"]): o["sent"] for o in doc["by_operator"]}
    assert ops[("DE", "T-Mobile")] == 2 and ops[("FR", "SFR")] == 3
    assert ops[("GB", None)] == 4  # a range phonenumbers has no operator for
    hours = {h["hour"]: h["sent"] for h in doc["by_hour"] if h["sent"]}
    assert len(doc["by_hour"]) == 24
    assert hours == {8: 2, 9: 2, 10: 2, 22: 3, 23: 1}
    assert doc["by_hour"][22]["hard"] == 1 and doc["by_hour"][22]["bounce_rate"] == 1.0

    soft = doc["soft_bouncing_numbers"]
    assert [(s["number"], s["soft_bounces"]) for s in soft] == [
        ("33612345680", 5),
        ("4915112345679", 3),
        ("447700900002", 2),
    ]
    assert soft[0]["reasons"] == {"absent_subscriber": 5}
    assert soft[0]["last_at"] == "2024-05-01T23:40:00.000Z"
    assert soft[1]["country"] == "DE" and soft[1]["operator"] == "T-Mobile"

    remove = doc["numbers_to_remove"]
    assert [(n["number"], n["reason"], n["sources"]) for n in remove] == [
        ("33612345678", "invalid_address", ["hard_bounce"]),
        ("447700900003", "unknown_subscriber", ["suppression", "hard_bounce"]),
        ("447700900099", "complaint", ["suppression"]),
    ]
    assert remove[1]["suppressed_until"] == "2100-01-01T00:00:00.000Z"
    assert remove[0]["suppressed_until"] is None and remove[0]["hard_bounces"] == 1


def test_top_limits_the_soft_list(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(stats(config, capsys, "--format", "json"))
    numbers = [s["number"] for s in doc["soft_bouncing_numbers"]]
    # Default top 10: all four numbers; the throttled one is not a number problem.
    assert numbers == ["33612345680", "4915112345679", "447700900002", "33612345679"]
    assert "4915112345678" not in numbers


def test_local_hours_use_the_destination_zone(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(stats(config, capsys, "--format", "json", "--local-hours"))
    assert doc["hours"] == "local"
    hours = {h["hour"]: h["sent"] for h in doc["by_hour"] if h["sent"]}
    # May: London +1, Berlin and Paris +2, Washington -4.
    assert hours == {0: 3, 1: 1, 6: 1, 9: 2, 10: 1, 11: 2}


def test_csv_header_and_rows(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.reader(io.StringIO(stats(config, capsys, "--format", "csv", "--top", "2"))))
    assert tuple(rows[0]) == CSV_HEADER
    table = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    total = [r for r in table if r["section"] == "total"]
    assert len(total) == 1
    assert (total[0]["sent"], total[0]["recovered"], total[0]["hard"]) == ("10", "2", "3")
    assert total[0]["hard_rate"] == "0.3000" and total[0]["recovery_rate"] == "0.4000"
    countries = {r["country"]: r for r in table if r["section"] == "country"}
    assert set(countries) == {"GB", "DE", "FR", "US"}
    assert countries["US"]["recovery_rate"] == ""  # nothing soft-bounced there
    assert [r["hour"] for r in table if r["section"] == "hour"] == ["8", "9", "10", "22", "23"]
    soft = [(r["number"], r["soft_bounces"]) for r in table if r["section"] == "soft_number"]
    assert soft == [("33612345680", "5"), ("4915112345679", "3")]
    remove = [r["number"] for r in table if r["section"] == "remove_number"]
    assert remove == ["33612345678", "447700900003", "447700900099"]


def test_terminal_tables(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = stats(config, capsys)
    assert "\x1b" not in out  # piped: plain lines, no escape codes
    for heading in ("By country", "By operator", "By hour of day (UTC", "soft-bouncing"):
        assert heading in out
    country_rows = {
        line.split()[0]: line.split()
        for line in out.split("By country\n")[1].split("\n\n")[0].splitlines()[1:]
    }
    assert set(country_rows) == {"GB", "DE", "FR", "US"}
    assert country_rows["GB"][1:4] == ["4", "2", "1"]  # sent, delivered, recovered
    assert "447700900003" in out and "suppression+hard_bounce" in out
    # Aligned: every row of the country table has the same width as its header.
    block = out.split("By country\n")[1].split("\n\n")[0].splitlines()
    assert len({len(line) for line in block}) == 1


def test_html_is_self_contained_with_charts(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    stats(config, capsys, "--html", str(page))
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text and "src=" not in text
    svgs = re.findall(r"<svg.*?</svg>", text, re.DOTALL)
    assert len(svgs) == 2
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    hour_labels = re.findall(r">(\d\d)</text>", svgs[0])
    assert hour_labels == [f"{h:02d}" for h in range(24)]
    assert ">GB</text>" in svgs[1] and ">US</text>" in svgs[1]
    assert "447700900099" in text and "T-Mobile" in text


def test_hour_chart_bars_are_proportional() -> None:
    hours = [Counts() for _ in range(24)]
    hours[3] = Counts(sent=10, hard=1, soft_bounced=3, bounced=4)  # 10 % hard, 30 % soft only
    hours[4] = Counts(sent=10, hard=2, bounced=2)
    svg = hour_chart(hours)
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert len(heights) == 48  # a hard and a soft bar per hour
    hard3, soft3, hard4, soft4 = heights[6], heights[7], heights[8], heights[9]
    assert hard3 > 0 and soft3 == pytest.approx(3 * hard3) and hard4 == pytest.approx(2 * hard3)
    assert soft4 == 0.0 and sum(heights) == pytest.approx(hard3 + soft3 + hard4)


def test_message_outcomes() -> None:
    o = message_outcome("delivered", 2, {"retries": [["absent_subscriber", 1]]})
    assert (o.result, o.recovered, o.soft_bounced) == ("delivered", True, True)
    o = message_outcome("failed", 3, {"verdict": {"kind": "soft"}, "retries": [["x", 3]]})
    assert (o.result, o.recovered, o.soft_bounced) == ("expired", False, True)
    assert message_outcome("failed", 1, {"verdict": {"kind": "hard"}}).result == "hard"
    assert message_outcome("rejected", 1, {}).result == "hard"
    assert message_outcome("held", 1, {}).soft_bounced
    assert message_outcome("submitted", 1, {}).result == "pending"


def test_format_table_aligns() -> None:
    lines = format_table(("name", "n"), [["a", 1], ["longer", 100]], "lr")
    assert lines == ["name      n", "a         1", "longer  100"]


def test_missing_store_and_empty_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["stats", "--config", str(cfg)]) == 1
    assert "no store at" in capsys.readouterr().err
    assert main(["stats", "--config", str(config), "--since", UNTIL, "--until", SINCE]) == 2
    assert "time range is empty" in capsys.readouterr().err
    assert main(["stats", "--config", str(config), "--since", "yesterday"]) == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err


async def test_report_reads_the_window_a_page_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_module, "PAGE", 3)
    store = SqliteStore(tmp_path / "paged.db", batch_delay=0.0)
    await store.open()
    try:
        same = [
            message(100 + i, f"4477009001{i:02d}", State.DELIVERED, at(5), v=DELIVERED)
            for i in range(7)
        ]
        later = [message(200 + i, f"4477009002{i:02d}", State.HELD, at(6, i)) for i in range(3)]
        outside = [message(300, "447700900300", State.DELIVERED, at(25), v=DELIVERED)]
        await store.commit_many([Change(message=m, insert=True) for m in same + later + outside])
        report = await stats_module.build_report(store, DAY, DAY + 86400, now=DAY + 86400)
    finally:
        await store.close()
    t = report.totals
    assert (t.sent, t.delivered, t.pending, t.soft_bounced) == (10, 7, 3, 3)
    assert report.by_hour[5].sent == 7 and report.by_hour[6].sent == 3
