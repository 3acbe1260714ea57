"""`bounceback stats` on a terminal: the report of `bounceback.analysis.stats` drawn
with rich tables, styled headings and the bounce and hard rates in colour."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from bounceback.analysis.stats import Report, report_heading, report_tables

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["print_report"]


def print_report(con: Console, r: Report, sections: Collection[str] | None = None) -> None:
    """The report as `render_text` has it, drawn for a terminal: rich tables, styled
    headings, the bounce and hard rates in colour (see `bounceback.term`)."""
    from bounceback.ops.term import BAD, GOOD, HEADING, MUTED, WARN, table
    from rich.text import Text

    tone = {"good": GOOD, "warn": WARN, "bad": BAD}
    title, note = report_heading(r)
    con.print(Text(title, HEADING))
    con.print(Text(note, MUTED))
    for tab in report_tables(r):
        if sections is not None and tab.section not in sections:
            continue
        con.print()
        if not tab.rows:
            con.print(Text(tab.title, HEADING))
            con.print(Text("  (none)", MUTED))
            continue
        con.print(
            table(
                tab.headers,
                tab.rows,
                tab.align,
                title=tab.title,
                styles={i: tone[t] for i, t in tab.tones.items()},
            )
        )
        if tab.footer:
            con.print(Text(tab.footer, MUTED))
