"""Terminal output: rich tables and colour on a terminal, the plain lines elsewhere.

Every command that prints for people (``check``'s explanation, ``stats``, ``held
list``, ``suppression list``, ``demo``'s progress) asks `console()` for a rich
Console on its stream. On a terminal it draws tables with styles and colour; when
the stream is a pipe or a file (``console.is_terminal`` is false) the command
prints the same plain, aligned lines as ever, without a single escape code, so
scripts that parse them keep working. Colour follows the usual conventions: none
when ``NO_COLOR`` is set (to anything but ""), none when ``TERM=dumb``; rich reads
both, and ``FORCE_COLOR`` to draw as on a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["console", "explain_text", "print_lines", "table"]

# Styles by meaning, shared by the commands.
HEADING = "bold"
GOOD = "green"
BAD = "red"
WARN = "yellow"
MUTED = "dim"


def console(file: TextIO | None = None) -> Console:
    """A Console on `file` (default: the current ``sys.stdout``). Its ``is_terminal``
    says whether to draw for a terminal or to print plain lines."""
    return Console(file=file if file is not None else sys.stdout, highlight=False)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    align: str = "",
    *,
    title: str | None = None,
    styles: dict[int, str] | None = None,
) -> Table:
    """A rich table with the same columns and alignment as `stats.format_table`
    (`align`: one letter per column, "l" or "r"; the first column left, others right
    by default). `styles` maps a column index to its style."""
    n = len(headers)
    modes = (align or "l").ljust(n, "r")
    out = Table(
        title=None if title is None else Text(title, HEADING),
        title_justify="left",
        title_style=HEADING,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style=HEADING,
        padding=(0, 1, 0, 0),  # with the box's own space: two between columns
        pad_edge=False,
    )
    for i, header in enumerate(headers):
        out.add_column(
            header,
            justify="left" if modes[i] == "l" else "right",
            style=(styles or {}).get(i),
            overflow="fold",
        )
    for row in rows:
        out.add_row(*(Text(str(value)) for value in row))  # values, never markup
    return out


def print_lines(con: Console, lines: Iterable[str]) -> None:
    """Plain lines, exactly as given (the output for a pipe)."""
    for line in lines:
        con.file.write(line + "\n")
    con.file.flush()


def explain_text(explanation: str) -> Text:
    """`config.explain()`'s text with its section names in bold (the text is unchanged:
    long lines are left to the terminal to wrap)."""
    out = Text()
    for number, line in enumerate(explanation.splitlines()):
        if number:
            out.append("\n")
        start = len(out)
        out.append(line)
        if not line.startswith(" "):
            head, sep, _ = line.partition(":")
            if sep:
                out.stylize(HEADING, start, start + len(head) + 1)
            if line.endswith(": valid"):
                out.stylize(GOOD, start + len(line) - len("valid"), start + len(line))
        else:
            head, sep, _ = line.strip().partition(":")
            indent = len(line) - len(line.lstrip())
            if sep and len(head) <= 32:
                out.stylize("cyan", start + indent, start + indent + len(head))
    return out
