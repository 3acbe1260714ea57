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
from typing import Any

import bounceback
import bounceback.analysis.stats as stats_module
import jsonschema
import pytest
from bounceback.analysis.stats import (
    BUCKETS,
    COUNT_COLUMNS,
    CSV_HEADER,
    MAX_BUCKETS,
    SECTIONS,
    Counts,
    bucket_count,
    choose_bucket,
    default_bucket,
    format_table,
    message_outcome,
    quantile,
    report_json,
)
from bounceback.core.model import Message, State, Step, Verdict
from bounceback.ops.cli import STATS_SECTIONS, main
from bounceback.ops.report import hour_chart
from bounceback.store.sqlite import Change, SqliteStore, Suppression
from smppcodecs.pdu import SubmitSm

DAY = dt.datetime(2024, 5, 1, tzinfo=dt.UTC).timestamp()
SINCE, UNTIL = "2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp()
REPORT_SCHEMA = json.loads(
    (Path(bounceback.__file__).parent / "schema" / "report.schema.json").read_text()
)


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
    account: str = "acme",
    carrier: str = "",
    done_at: float | None = None,
    history: tuple[Step, ...] = (),
) -> Message:
    pdu = SubmitSm(sequence_number=1, source_addr="Shop", destination_addr=number)
    return Message(
        id=f"{n:016X}",
        account=account,
        carrier=carrier,
        history=history,
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
        done_at=done_at if done_at is not None else created + 60 if state.final else None,
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
    return stats_config(folder, "sim", "stats.db")


def stats_config(folder: Path, carrier: str, db: str) -> Path:
    """A proxy.toml in `folder` for `bounceback stats` on the store `db` (relative)."""
    cfg = folder / "proxy.toml"
    cfg.write_text(
        '[[accounts]]\nsystem_id = "acme"\npassword = "pw"\n'
        f'[[carriers]]\nname = "{carrier}"\nhost = "127.0.0.1"\nsystem_id = "bb"\npassword = "pw"\n'
        f'[store]\npath = "{db}"\n',
        encoding="utf-8",
    )
    return cfg


def run_stats(
    cfg: Path, capsys: pytest.CaptureFixture[str], since: str, until: str, *extra: str
) -> str:
    """What `bounceback stats` prints for the window [since, until) (it must exit 0)."""
    rc = main(["stats", "--config", str(cfg), "--since", since, "--until", until, *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    return out


def stats(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    return run_stats(config, capsys, SINCE, UNTIL, *extra)


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
    assert len(svgs) == 3  # by hour, the timeline, by country
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    hour_labels = re.findall(r">(\d\d)</text>", svgs[0])
    assert hour_labels == [f"{h:02d}" for h in range(24)]
    assert ">GB</text>" in svgs[2] and ">US</text>" in svgs[2]
    # The day's timeline in hours: 24 buckets, bars for the five hours with messages.
    assert 'aria-label="bounce rate per hour"' in svgs[1]
    assert len(re.findall(r"<g><title>", svgs[1])) == 5
    # Every group table (country, operator, carrier, account, timeline) keeps the hard
    # and recovery rates; the reason table has its recovery rate too.
    assert text.count("<th>bounce %</th>") == text.count("<th>hard %</th>") == 5
    assert text.count("<th>recovery %</th>") == 6
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


# ---------------------------------------------------------------- carriers, accounts,
# reasons and the timeline: a three-hour window of messages with known histories


def sb(t: float, reason: str) -> Step:
    """A soft bounce on a message's timeline."""
    return Step(t, "soft_bounce", {"reason": reason, "classification": "soft"})


def recovered(
    n: int,
    created: float,
    account: str,
    carrier: str,
    bounces: list[tuple[float, str]],
    took: float,
) -> Message:
    """Delivered `took` seconds after `created`, after soft bounces at (offset, reason)."""
    counts: dict[str, int] = {}
    for _, reason in bounces:
        counts[reason] = counts.get(reason, 0) + 1
    return message(
        n,
        f"4477009007{n:02d}",
        State.DELIVERED,
        created,
        attempts=len(bounces) + 1,
        retries=tuple(sorted(counts.items())),
        v=DELIVERED,
        account=account,
        carrier=carrier,
        done_at=created + took,
        history=tuple(sb(created + off, reason) for off, reason in bounces),
    )


ABSENT, THROTTLED = "absent_subscriber", "throttled"
PATTERNS = [
    # absent_subscriber recoveries of 60, 120, 300 and 600 s from the first bounce
    recovered(1, at(0), "acme", "alpha", [(10, ABSENT)], 70),
    recovered(2, at(0) + 30, "acme", "alpha", [(5, ABSENT), (50, ABSENT)], 125),
    recovered(3, at(0, 5), "shop", "beta", [(0, ABSENT)], 300),
    # ... and a throttled one of 590 s (first throttled at +30, delivered at +620)
    recovered(4, at(1), "shop", "beta", [(20, ABSENT), (30, THROTTLED)], 620),
    message(
        5,
        "447700900705",
        State.EXPIRED,
        at(1) + 59,
        attempts=4,
        retries=((ABSENT, 3),),
        v=verdict("soft", ABSENT),
        account="shop",
        carrier="alpha",
    ),
    message(
        6,
        "447700900706",
        State.FAILED,
        at(2, 59),
        attempts=2,
        retries=(("memory_full", 1),),
        v=verdict("hard", "unknown_subscriber"),
        carrier="beta",
    ),
    message(7, "447700900707", State.ACCEPTED, at(2, 59) + 59.9),  # never sent to a carrier
    # Recovered, but its timeline lost the first of its two bounces: not timed.
    message(
        8,
        "447700900708",
        State.DELIVERED,
        at(0, 2),
        attempts=3,
        retries=((ABSENT, 2),),
        v=DELIVERED,
        carrier="alpha",
        done_at=at(0, 2) + 9000,
        history=(sb(at(0, 2) + 100, ABSENT),),
    ),
    message(
        9,
        "447700900709",
        State.REJECTED,
        at(0, 2),
        v=verdict("hard", "invalid_address"),
        carrier="alpha",
    ),
    message(10, "447700900710", State.DELIVERED, at(3), v=DELIVERED, carrier="alpha"),  # after
]
P_SINCE, P_UNTIL = "2024-05-01T00:00:00Z", "2024-05-01T03:00:00Z"


@pytest.fixture(scope="module")
def patterns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("patterns")

    async def fill() -> None:
        store = SqliteStore(folder / "patterns.db", batch_delay=0.0)
        await store.open()
        await store.commit_many([Change(message=m, insert=True) for m in PATTERNS])
        await store.close()

    asyncio.run(fill())
    return stats_config(folder, "alpha", "patterns.db")


def pattern_stats(cfg: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    return run_stats(cfg, capsys, P_SINCE, P_UNTIL, *extra)


def pattern_doc(cfg: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(pattern_stats(cfg, capsys, "--format", "json", *extra))
    return doc


def test_report_document_matches_its_schema(
    config: Path, patterns: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    validator = jsonschema.Draft202012Validator(REPORT_SCHEMA)
    validator.validate(json.loads(stats(config, capsys, "--format", "json")))
    doc = pattern_doc(patterns, capsys)
    validator.validate(doc)
    broken = json.loads(json.dumps(doc))
    broken["by_reason"][0]["kind"] = "maybe"
    assert not validator.is_valid(broken)
    del broken["by_reason"][0]["kind"]
    broken["timeline"]["items"][0].pop("sent")
    problems = {e.message for e in validator.iter_errors(broken)}
    assert problems == {"'kind' is a required property", "'sent' is a required property"}


def test_by_carrier_and_account(patterns: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = pattern_doc(patterns, capsys)
    assert doc["totals"]["sent"] == 9  # the tenth was accepted at the window's end
    carriers = {c["carrier"]: c for c in doc["by_carrier"]}
    assert [c["carrier"] for c in doc["by_carrier"]] == ["alpha", "beta", None]  # by sent
    alpha, beta = carriers["alpha"], carriers["beta"]
    assert (alpha["sent"], alpha["delivered"], alpha["recovered"], alpha["hard"]) == (5, 3, 3, 1)
    assert (alpha["expired"], alpha["soft_bounced"], alpha["submissions"]) == (1, 4, 13)
    assert alpha["recovery_rate"] == 0.75 and alpha["hard_rate"] == 0.2
    assert (beta["sent"], beta["recovered"], beta["hard"], beta["soft_bounced"]) == (3, 2, 1, 3)
    assert beta["recovery_rate"] == 0.6667
    assert carriers[None]["sent"] == 1 and carriers[None]["pending"] == 1
    accounts = {a["account"]: a for a in doc["by_account"]}
    assert [a["account"] for a in doc["by_account"]] == ["acme", "shop"]
    acme, shop = accounts["acme"], accounts["shop"]
    assert (acme["sent"], acme["delivered"], acme["hard"], acme["pending"]) == (6, 3, 2, 1)
    assert (shop["sent"], shop["recovered"], shop["expired"]) == (3, 2, 1)
    assert set(acme) == {"account", *COUNT_COLUMNS}  # the same counts and rates as by_country
    for group in ("by_carrier", "by_account"):
        assert sum(g["sent"] for g in doc[group]) == doc["totals"]["sent"]


def test_by_reason_recovery_and_time_to_recover(
    patterns: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = pattern_doc(patterns, capsys)
    assert [(r["reason"], r["kind"]) for r in doc["by_reason"]] == [
        ("absent_subscriber", "soft"),  # most bounces first, then soft, link, hard
        ("memory_full", "soft"),
        ("throttled", "link"),
        ("invalid_address", "hard"),
        ("unknown_subscriber", "hard"),
    ]
    reasons = {r["reason"]: r for r in doc["by_reason"]}
    assert reasons["absent_subscriber"] == {
        "reason": "absent_subscriber",
        "kind": "soft",
        "bounces": 10,  # 1 + 2 + 1 + 1 + 3 + 2
        "messages": 6,
        "recovered": 5,
        "recovery_rate": 0.8333,
        # 60, 120, 300, 600 s (the fifth recovery lost its first bounce: not timed)
        "recover_median_s": 210.0,
        "recover_p90_s": 510.0,  # 300 + 0.7 * (600 - 300)
        "recover_samples": 4,
    }
    throttled = reasons["throttled"]
    assert (throttled["bounces"], throttled["messages"], throttled["recovered"]) == (1, 1, 1)
    assert throttled["recover_median_s"] == throttled["recover_p90_s"] == 590.0
    memory = reasons["memory_full"]
    assert (memory["recovered"], memory["recovery_rate"], memory["recover_median_s"]) == (
        0,
        0.0,
        None,
    )
    for hard in ("invalid_address", "unknown_subscriber"):
        assert reasons[hard]["bounces"] == reasons[hard]["messages"] == 1
        assert reasons[hard]["recovery_rate"] is None and reasons[hard]["recovered"] == 0


def test_quantiles_interpolate_between_ranks() -> None:
    assert quantile([], 0.5) is None
    assert quantile([7.0], 0.9) == 7.0
    assert quantile([40.0, 10.0, 30.0, 20.0], 0.5) == 25.0
    assert quantile([10.0, 20.0, 30.0, 40.0], 0.9) == pytest.approx(37.0)
    assert quantile([1.0, 2.0, 3.0], 0.5) == 2.0


def test_timeline_has_every_bucket(patterns: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = pattern_doc(patterns, capsys)
    tl = doc["timeline"]
    # Three hours: minute buckets by default, all 180 of them, empty ones too.
    assert (tl["bucket"], tl["requested"], tl["clipped"]) == ("minute", None, False)
    assert len(tl["items"]) == 180
    assert tl["items"][0]["start"] == "2024-05-01T00:00:00.000Z"
    assert tl["items"][179]["start"] == "2024-05-01T02:59:00.000Z"
    busy = {i: item["sent"] for i, item in enumerate(tl["items"]) if item["sent"]}
    assert busy == {0: 2, 2: 2, 5: 1, 60: 2, 179: 2}
    assert tl["items"][1] == {"start": "2024-05-01T00:01:00.000Z", **Counts().as_dict()}
    assert tl["items"][2]["hard"] == 1 and tl["items"][2]["recovered"] == 1
    hours = pattern_doc(patterns, capsys, "--bucket", "hour")["timeline"]
    assert (hours["bucket"], hours["requested"]) == ("hour", "hour")
    assert [i["sent"] for i in hours["items"]] == [5, 2, 2]
    # A window starting mid-hour: its first bucket starts on the hour, holding only
    # what the window holds.
    out = main(
        [
            *("stats", "--config", str(patterns), "--format", "json", "--bucket", "hour"),
            *("--since", "2024-05-01T00:30:00Z", "--until", P_UNTIL),
        ]
    )
    assert out == 0
    half = json.loads(capsys.readouterr().out)["timeline"]
    assert [(i["start"][11:16], i["sent"]) for i in half["items"]] == [
        ("00:00", 0),
        ("01:00", 2),
        ("02:00", 2),
    ]


async def test_timeline_buckets_are_bounded(patterns: Path) -> None:
    store = SqliteStore(patterns.parent / "patterns.db", batch_delay=0.0)
    await store.open()
    try:
        # Minutes over two days would be 2880 buckets: hours instead, and it says so.
        r = await stats_module.build_report(store, DAY, DAY + 2 * 86400, now=DAY, bucket="minute")
        assert (r.timeline.bucket, r.timeline.requested, len(r.timeline.items)) == (
            "hour",
            "minute",
            48,
        )
        assert not r.timeline.clipped
        doc: dict[str, Any] = report_json(r)
        assert doc["timeline"]["bucket"] == "hour"
        # 2000 minutes fit; one more does not.
        r = await stats_module.build_report(store, DAY, DAY + MAX_BUCKETS * 60, now=DAY)
        assert r.timeline.bucket == "hour"  # the default for a day and a half
        r = await stats_module.build_report(
            store, DAY, DAY + MAX_BUCKETS * 60, now=DAY, bucket="minute"
        )
        assert (r.timeline.bucket, len(r.timeline.items)) == ("minute", MAX_BUCKETS)
        r = await stats_module.build_report(
            store, DAY, DAY + MAX_BUCKETS * 60 + 1, now=DAY, bucket="minute"
        )
        assert r.timeline.bucket == "hour"
        # More than 2000 days: the latest 2000, ending with the window's last day.
        since = DAY - 3000 * 86400
        r = await stats_module.build_report(store, since, DAY + 3 * 3600, now=DAY)
        assert (r.timeline.bucket, r.timeline.clipped, len(r.timeline.items)) == (
            "day",
            True,
            MAX_BUCKETS,
        )
        assert r.timeline.starts()[-1] == DAY
        assert r.timeline.starts()[0] == DAY - (MAX_BUCKETS - 1) * 86400
        assert r.timeline.items[-1].sent == 9 and r.totals.sent == 9
    finally:
        await store.close()


def test_default_buckets_follow_the_range() -> None:
    h, d = 3600.0, 86400.0
    assert default_bucket(0, 3 * h) == "minute"
    assert default_bucket(0, 3 * h + 1) == "hour"
    assert default_bucket(0, 3 * d) == "hour"
    assert default_bucket(0, 3 * d + 1) == "day"
    assert bucket_count(0, 0, "minute") == 0
    assert bucket_count(30, 90, "minute") == 2  # 00:00 and 01:00
    assert choose_bucket(0, 10 * d, "minute") == "hour"  # 14400 minutes, 240 hours


def test_csv_sections(patterns: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for section, columns in SECTIONS.items():
        text = pattern_stats(patterns, capsys, "--format", "csv", "--section", section)
        rows = list(csv.reader(io.StringIO(text)))
        assert tuple(rows[0]) == columns, section
    reasons = list(
        csv.DictReader(
            io.StringIO(
                pattern_stats(patterns, capsys, "--format", "csv", "--section", "by_reason")
            )
        )
    )
    assert reasons[0] == {
        "reason": "absent_subscriber",
        "kind": "soft",
        "bounces": "10",
        "messages": "6",
        "recovered": "5",
        "recovery_rate": "0.8333",
        "recover_median_s": "210.0",
        "recover_p90_s": "510.0",
        "recover_samples": "4",
    }
    assert reasons[-1]["recovery_rate"] == "" and reasons[-1]["recover_median_s"] == ""
    timeline = list(
        csv.DictReader(
            io.StringIO(pattern_stats(patterns, capsys, "--format", "csv", "--section", "timeline"))
        )
    )
    assert len(timeline) == 180 and timeline[1]["sent"] == "0"
    assert timeline[1]["delivery_rate"] == "" and timeline[0]["delivery_rate"] == "1.0000"
    carriers = list(
        csv.DictReader(
            io.StringIO(
                pattern_stats(patterns, capsys, "--format", "csv", "--section", "by_carrier")
            )
        )
    )
    assert [(c["carrier"], c["sent"], c["recovery_rate"]) for c in carriers] == [
        ("alpha", "5", "0.7500"),
        ("beta", "3", "0.6667"),
        ("", "1", ""),
    ]
    # The whole report in one table: the new sections with their own columns.
    table = list(csv.DictReader(io.StringIO(pattern_stats(patterns, capsys, "--format", "csv"))))
    assert tuple(table[0]) == CSV_HEADER
    assert [r["carrier"] for r in table if r["section"] == "carrier"] == ["alpha", "beta", ""]
    assert [r["account"] for r in table if r["section"] == "account"] == ["acme", "shop"]
    assert len([r for r in table if r["section"] == "timeline"]) == 180
    absent = next(r for r in table if r["section"] == "reason")
    assert (absent["reason"], absent["kind"], absent["bounces"], absent["recovered"]) == (
        "absent_subscriber",
        "soft",
        "10",
        "5",
    )
    assert (absent["recover_median_s"], absent["recovery_rate"]) == ("210.0", "0.8333")


def test_terminal_sections(patterns: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = pattern_stats(patterns, capsys)
    for heading in ("By carrier", "By account", "By bounce reason", "Timeline (per minute, UTC"):
        assert heading in out
    block = out.split("By bounce reason")[1].split("\n\n")[0].splitlines()[1:]
    rows = {line.split()[0]: line.split() for line in block[1:]}
    # reason, kind, bounces, messages, recovered, recovery %, median, p90
    assert rows["absent_subscriber"] == [
        *("absent_subscriber", "soft", "10", "6", "5", "83.3%", "3m30s", "8m30s")
    ]
    assert rows["throttled"][1] == "link" and rows["throttled"][6:] == ["9m50s", "9m50s"]
    assert rows["unknown_subscriber"][5:] == ["-", "-", "-"]
    timeline = out.split("Timeline (per minute")[1].split("\n\n")[0].splitlines()[2:]
    assert [line[:16] for line in timeline] == [
        "2024-05-01 00:00",
        "2024-05-01 00:02",
        "2024-05-01 00:05",
        "2024-05-01 01:00",
        "2024-05-01 02:59",
    ]
    carriers = out.split("By carrier")[1].split("\n\n")[0].splitlines()[2:]
    assert [line.split()[0] for line in carriers] == ["alpha", "beta", "(none)"]
    # One section alone, and in JSON that part of the document.
    only = pattern_stats(patterns, capsys, "--section", "by_account")
    assert "By account" in only and "By country" not in only and "Totals" not in only
    part = json.loads(pattern_stats(patterns, capsys, "--format", "json", "--section", "timeline"))
    assert part["bucket"] == "minute" and len(part["items"]) == 180


def test_html_has_the_new_tables(
    patterns: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = tmp_path / "patterns.html"
    pattern_stats(patterns, capsys, "--html", str(page))
    text = page.read_text(encoding="utf-8")
    for heading in ("By carrier", "By account", "By bounce reason", "Timeline (per minute"):
        assert f"<h2>{heading}" in text
    svgs = re.findall(r"<svg.*?</svg>", text, re.DOTALL)
    timeline = svgs[1]
    ET.fromstring(timeline)
    assert len(re.findall(r"<g><title>", timeline)) == 5  # bars for the busy minutes only
    assert '<td class="l">absent_subscriber</td><td class="l">soft</td><td>10</td>' in text
    assert "<td>83.3%</td><td>3m30s</td><td>8m30s</td>" in text


def test_cli_names_the_analysis_sections() -> None:
    assert tuple(SECTIONS) == STATS_SECTIONS
    assert tuple(BUCKETS) == ("minute", "hour", "day")


async def test_rich_tables_have_the_new_sections(patterns: Path) -> None:
    from bounceback.ops.stats import print_report
    from rich.console import Console

    store = SqliteStore(patterns.parent / "patterns.db", batch_delay=0.0)
    await store.open()
    try:
        r = await stats_module.build_report(store, DAY, DAY + 3 * 3600, now=DAY)
    finally:
        await store.close()
    for width in (70, 160):
        out = io.StringIO()
        print_report(Console(file=out, force_terminal=True, width=width), r)
        text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
        assert all(len(line) <= width for line in text.splitlines())
        for heading in ("By carrier", "By account", "By bounce reason", "Timeline (per minute"):
            assert heading in text
        assert "\x1b[" in out.getvalue()  # styled
    out = io.StringIO()
    print_report(Console(file=out, force_terminal=True, width=160), r, {"by_reason"})
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    assert "absent_subscriber" in text and "3m30s" in text
    assert "By carrier" not in text and "Totals" not in text
