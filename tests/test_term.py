"""Terminal output: the demo's live view in a narrow terminal (a real pseudo-terminal
read back through a terminal emulator), colour only on a terminal, NO_COLOR, and
the plain lines (no escape code at all) when the output is piped."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest
from bounceback.analysis.stats import Counts, Report
from bounceback.config.settings import explain, load_config
from bounceback.ops.demo import LiveView, Progress
from bounceback.ops.stats import print_report
from bounceback.ops.term import console, explain_text, table
from harness import CONFIGS
from rich.console import Console

SGR = re.compile(r"\x1b\[([0-9;]*)m")


def colour_codes(text: str) -> list[str]:
    """The SGR sequences in `text` that set a colour (foreground or background)."""
    found = []
    for params in SGR.findall(text):
        codes = [int(c) for c in params.split(";") if c]
        if any(30 <= c <= 38 or 40 <= c <= 48 or 90 <= c <= 97 or 100 <= c <= 107 for c in codes):
            found.append(params)
    return found


def screen_of(text: str, columns: int, rows: int) -> list[str]:
    """What a terminal of that size shows after `text` (newline as the tty sends it)."""
    screen = pyte.Screen(columns, rows)
    pyte.Stream(screen).feed(text)
    return [line.rstrip() for line in screen.display]


def run_in_pty(
    argv: list[str], columns: int, rows: int, env: dict[str, str], timeout: float = 120.0
) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal of that size; its
    exit code and everything it wrote, escape codes included."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bounceback", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError as exc:  # EIO: the child closed its side
                if exc.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            chunks.append(data)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def tty_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    env.update(TERM="xterm-256color", **extra)
    return env


# ---------------------------------------------------------------- the demo's live view


def test_demo_in_a_narrow_pseudo_terminal_redraws_in_place() -> None:
    """40 columns: the old view's 70-column lines wrapped and each redraw left stray
    lines behind. The terminal's final screen must show the live view once."""
    columns, rows = 40, 200
    rc, text = run_in_pty(["demo", "--messages", "16"], columns, rows, tty_env())
    assert rc == 0, text
    assert colour_codes(text)  # a terminal gets colour
    assert "\x1b[?25l" in text and text.rfind("\x1b[?25h") > text.rfind("\x1b[?25l")
    shown = screen_of(text, columns, rows)
    status = [line for line in shown if re.fullmatch(r"\d+/16 final .*", line)]
    assert status == [status[-1]] and status[0].startswith("16/16 final"), "\n".join(shown)
    assert "msg/s" in "\n".join(shown) and "ETA" in "\n".join(shown)
    figures = [line for line in shown if re.match(r"delivered +\d+ +recovered by retry", line)]
    assert len(figures) == 1, "\n".join(shown)
    bars = [line for line in shown if "━" in line]
    assert len(bars) == 1 and bars[0].endswith("100%")
    assert any(line.startswith("Summary after") for line in shown)
    # rich drew every line within the width: nothing the terminal had to wrap.
    live = text[text.index("\x1b[?25l") : text.rindex("\x1b[?25h")]
    for line in re.split(r"\r?\n|\r|\x1b\[[?0-9;]*[A-Za-z]", SGR.sub("", live)):
        assert len(line) <= columns, line


def live_view_text(columns: int, draws: int = 6) -> str:
    out = io.StringIO()
    con = Console(file=out, force_terminal=True, width=columns, height=50)
    view = LiveView(out, live=True, console=con)
    p = Progress(total=300, answered=300, stored=300, held=2, hard=1, receipts=5)
    for n in range(draws):
        p.delivered = 20 * n
        p.elapsed = float(n)
        view.draw(p)
    view.close()
    return out.getvalue()


@pytest.mark.parametrize("columns", [30, 40, 80])
def test_live_view_stays_within_the_width_and_leaves_one_copy(columns: int) -> None:
    text = live_view_text(columns)
    shown = screen_of(text.replace("\n", "\r\n"), columns, 50)
    assert sum(1 for line in shown if re.match(r"\d+/300 final", line)) == 1, "\n".join(shown)
    assert sum(1 for line in shown if line.startswith("in flight")) <= 1
    assert any(line.startswith("101/300 final") for line in shown)  # the last draw
    drawn = [line for line in shown if line]
    # 1 bar, the status and 4 figure rows; rich wraps them within a narrow width.
    assert 6 <= len(drawn) <= 12, "\n".join(shown)
    assert len(drawn) == 6 or columns < 60


def test_no_color_on_a_terminal_draws_without_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert colour_codes(live_view_text(60))
    monkeypatch.setenv("NO_COLOR", "1")
    text = live_view_text(60)
    assert "\x1b[" in text  # still a live view (cursor moves) ...
    assert colour_codes(text) == []  # ... without colour


def test_plain_view_when_not_live() -> None:
    out = io.StringIO()
    view = LiveView(out, live=False, plain_every=2.0)
    p = Progress(total=10, answered=10, stored=10, delivered=4, held=2, hard=1, receipts=5)
    for t in (0.5, 1.0, 2.6, 3.0):
        p.elapsed = t
        view.draw(p)
    view.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in out.getvalue()
    assert lines[0].startswith("[   0.5 s] final 5/10 | delivered 4")


# ---------------------------------------------------------------- check, stats, tables


def test_check_on_a_terminal_colour_and_no_color() -> None:
    argv = ["check", "--config", str(CONFIGS / "demo.toml")]
    rc, text = run_in_pty(argv, 80, 100, tty_env())
    assert rc == 0 and colour_codes(text), text
    rc, text = run_in_pty(argv, 80, 100, tty_env(NO_COLOR="1"))
    assert rc == 0 and colour_codes(text) == [], text
    # The same words as the plain explanation (long lines wrapped by the terminal).
    plain = explain(load_config(CONFIGS / "demo.toml"))
    assert "".join(SGR.sub("", text).split()) == "".join((plain + "configuration is valid").split())


def test_check_piped_prints_the_plain_explanation(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bounceback", "check", "--config", str(CONFIGS / "demo.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=tty_env(),
    )
    assert done.returncode == 0
    assert "\x1b" not in done.stdout and "\x1b" not in done.stderr
    plain = explain(load_config(CONFIGS / "demo.toml"))
    assert done.stdout == plain + "\nconfiguration is valid\n"


def test_explain_text_styles_without_changing_the_text() -> None:
    plain = explain(load_config(CONFIGS / "demo.toml"))
    styled = explain_text(plain)
    assert styled.plain == plain
    assert any(span.style == "bold" for span in styled.spans)


def test_console_is_plain_on_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert not console(io.StringIO()).is_terminal


def test_tables_on_a_terminal_keep_values_verbatim() -> None:
    out = io.StringIO()
    con = Console(file=out, force_terminal=True, width=60)
    con.print(table(("number", "reason"), [["447700900001", "[bold]x[/]"]], "ll"))
    text = SGR.sub("", out.getvalue())
    assert "[bold]x[/]" in text and "447700900001" in text


def test_stats_report_on_a_terminal_fits_the_width() -> None:
    by_hour = [Counts() for _ in range(24)]
    by_hour[9] = Counts(sent=10, delivered=8, recovered=2, soft_bounced=3, bounced=4, hard=1)
    report = Report(
        since=0.0,
        until=86400.0,
        generated_at=86400.0,
        hours="utc",
        top=10,
        totals=by_hour[9],
        by_country=(("GB", by_hour[9]),),
        by_operator=(("GB", "EE", by_hour[9]),),
        by_hour=tuple(by_hour),
        soft_numbers=(),
        remove_numbers=(),
    )
    for width in (60, 160):
        out = io.StringIO()
        print_report(Console(file=out, force_terminal=True, width=width), report)
        text = SGR.sub("", out.getvalue())
        assert all(len(line) <= width for line in text.splitlines())
        for heading in ("Totals", "By country", "By operator", "By hour of day (UTC"):
            assert heading in text
        assert colour_codes(out.getvalue())
