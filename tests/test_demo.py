"""`bounceback demo` end to end, its scripted mix and its live view; then `stats` on
the store the demo kept."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from bounceback.ops.cli import main
from bounceback.ops.demo import LiveView, Progress, plan, summary_lines
from rich.console import Console


def figure(text: str, label: str) -> int:
    found = re.search(rf"^\s*{re.escape(label)}\s+(\d+)", text, re.MULTILINE)
    assert found is not None, f"{label!r} not in:\n{text}"
    return int(found.group(1))


def test_demo_60_messages_end_to_end_then_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "run"
    rc = main(["demo", "--messages", "60", "--no-live", "--keep", str(keep)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "\x1b[" not in out  # --no-live: plain lines only
    assert re.search(r"^\[\s*\d+\.\d s\] final \d+/60", out, re.MULTILINE)  # periodic lines
    scripted = Counter(p.kind.expect for p in plan(60))
    recovered = figure(out, "recovered by retry")
    hard = figure(out, "hard bounces")
    assert recovered >= scripted["recovered"] > 0
    assert hard == scripted["hard"] > 0
    assert figure(out, "expired (never recovered)") == scripted["expired"]
    assert figure(out, "delivered") == scripted["delivered"] + scripted["recovered"]
    assert figure(out, "receipts to the sender") == 60
    # The receipts the carrier lost came from its answers to query_sm.
    lost = sum(1 for p in plan(60) if p.kind.name == "receipt lost")
    assert lost > 0 and figure(out, "found with query_sm") >= lost
    assert figure(out, "submissions to the carrier") > 60  # the retries
    assert "incomplete" not in out

    # The kept store answers `bounceback stats` with the same figures.
    assert main(["stats", "--config", str(keep / "demo.toml"), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    t = doc["totals"]
    assert (t["sent"], t["recovered"], t["hard"], t["pending"]) == (60, recovered, hard, 0)
    assert [c["country"] for c in doc["by_country"]] == ["GB"]
    assert len(doc["numbers_to_remove"]) == sum(
        1 for p in plan(60) if p.kind.name == "unknown subscriber"
    )
    # A second demo into the same folder would mix two runs: refused.
    assert main(["demo", "--messages", "5", "--keep", str(keep)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_plan_gives_every_kind_its_share() -> None:
    p = plan(300)
    assert len(p) == 300 and len({x.number for x in p}) == 300
    kinds = Counter(x.kind.name for x in p)
    assert kinds["absent once"] == 15 and kinds["unknown subscriber"] == 12
    assert kinds["never reachable"] == 9 and kinds["receipt lost"] == 6
    assert kinds["deliver"] == 300 - 90
    assert plan(300) == p  # repeatable
    assert plan(300, seed=8) != p
    small = Counter(x.kind.name for x in plan(20))
    assert all(small[k] >= 1 for k in ("absent once", "unknown subscriber", "never reachable"))
    assert len(plan(3)) == 3
    assert all(re.fullmatch(r"4477009\d{5}", x.number) for x in p)


def test_live_view_redraws_in_place_and_plain_view_prints_lines() -> None:
    p = Progress(total=10, answered=10, stored=10, delivered=4, held=2, hard=1, receipts=5)
    out = io.StringIO()
    con = Console(file=out, force_terminal=True, width=80, height=40)
    view = LiveView(out, live=True, console=con)
    view.draw(p)
    view.draw(p)
    view.close()
    text = out.getvalue()
    assert text.startswith("\x1b[?25l")  # cursor hidden
    assert "\x1b[1A" in text  # the second draw goes back up over the first
    assert text.endswith("\x1b[?25h")  # and the cursor comes back
    assert "5/10" in text and "50%" in text  # 5 of 10 final
    assert re.search(r"delivered(\x1b\[[0-9;]*m| )+4\b", text)  # the figures

    plain = io.StringIO()
    view = LiveView(plain, live=False, plain_every=2.0)
    for t in (0.5, 1.0, 2.6, 3.0):
        p.elapsed = t
        view.draw(p)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in plain.getvalue()
    assert lines[0].startswith("[   0.5 s] final 5/10 | delivered 4")


def test_summary_names_the_recovered_share() -> None:
    p = Progress(
        total=100,
        answered=100,
        delivered=90,
        recovered=12,
        soft_bounced=15,
        hard=7,
        expired=3,
        receipts=100,
        submissions=131,
    )
    text = "\n".join(summary_lines(p, plan(100)))
    assert "recovered by retry            12  (12 of the 15" in text
    assert "80.0%" in text  # 12 / 15
    assert "(7.0% of messages)" in text and "1.31 per message" in text
