"""`bounceback stats` on a terminal: the report of `bounceback.analysis.stats` drawn
with rich tables, styled headings and the bounce and hard rates in colour."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bounceback.analysis.stats import (
    ESTIMATE_HEADERS,
    ESTIMATES_TITLE,
    GROUP_HEADERS,
    SHOW_NUMBERS,
    Report,
    estimate_cells,
    group_cells,
    remove_number_rows,
    soft_number_rows,
    when_utc,
)
from bounceback.feed.events import iso

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["print_report"]


def print_report(con: Console, r: Report) -> None:
    """The report as `render_text` has it, drawn for a terminal: rich tables, styled
    headings, the bounce and hard rates in colour (see `bounceback.term`)."""
    from bounceback.ops.term import BAD, GOOD, HEADING, MUTED, WARN, table
    from rich.text import Text

    zone = "UTC" if r.hours == "utc" else "destination local time"
    t = r.totals
    # The columns of GROUP_HEADERS that say how it went, by index.
    group = {1: GOOD, 2: GOOD, 3: WARN, 4: BAD, 5: WARN, 7: WARN, 8: BAD}

    def shifted(by: int) -> dict[int, str]:
        return {i + by: style for i, style in group.items()}

    con.print(
        Text(f"Bounceback stats for messages accepted {iso(r.since)} .. {iso(r.until)}", HEADING)
    )
    con.print(
        Text(
            f"(pending includes cancelled; rates are shares of sent, recovery = recovered / "
            f"soft-bounced; hours in {zone})",
            MUTED,
        )
    )
    spm = f"{t.submissions / t.sent:.2f}" if t.sent else "-"
    con.print()
    con.print(
        table(
            (*GROUP_HEADERS, "submissions/msg"),
            [[*group_cells(t), spm]],
            "r",
            title="Totals",
            styles=group,
        )
    )
    con.print()
    con.print(
        table(
            ("country", *GROUP_HEADERS),
            [[k or "(unknown)", *group_cells(c)] for k, c in r.by_country],
            title="By country",
            styles=shifted(1),
        )
    )
    con.print()
    con.print(
        table(
            ("country", "operator", *GROUP_HEADERS),
            [[k or "(unknown)", op or "(unknown)", *group_cells(c)] for k, op, c in r.by_operator],
            "ll",
            title="By operator",
            styles=shifted(2),
        )
    )
    con.print()
    con.print(
        table(
            ("hour", *GROUP_HEADERS),
            [[f"{h:02d}", *group_cells(c)] for h, c in enumerate(r.by_hour) if c.sent],
            title=f"By hour of day ({zone}; hours with messages)",
            styles=shifted(1),
        )
    )
    title = f"Numbers that keep soft-bouncing (top {r.top}; carrier-side reasons left out)"
    con.print()
    if r.soft_numbers:
        con.print(
            table(
                ("number", "country", "operator", "soft bounces", "reasons", "last (UTC)"),
                soft_number_rows(r, when_utc),
                "lllrll",
                title=title,
                styles={3: WARN},
            )
        )
    else:
        con.print(Text(title, HEADING))
        con.print(Text("  (none)", MUTED))
    title = "Hard-bounced numbers to remove (suppression list + number-level hard bounces)"
    con.print()
    if r.remove_numbers:
        con.print(
            table(
                ("number", "country", "operator", "reason", "source", "last (UTC)"),
                remove_number_rows(r, when_utc),
                "llllll",
                title=title,
                styles={3: BAD},
            )
        )
        more = len(r.remove_numbers) - SHOW_NUMBERS
        if more > 0:
            con.print(Text(f"... and {more} more (--format csv or json lists them all)", MUTED))
    else:
        con.print(Text(title, HEADING))
        con.print(Text("  (none)", MUTED))
    # Recovery-time estimates ([retry] mode = "learned").
    con.print()
    if r.estimates:
        con.print(table(ESTIMATE_HEADERS, estimate_cells(r), "lllrrrrr", title=ESTIMATES_TITLE))
    else:
        con.print(Text(ESTIMATES_TITLE, HEADING))
        con.print(Text("  (none)", MUTED))
