"""A small self-contained HTML page for a stats report (``bounceback stats --html``).

One file, nothing fetched: the style is inline and the charts are inline SVG (bars
with native tooltips), so the page opens offline and can be mailed as it is.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from bounceback.analysis.stats import (
    GROUP_HEADERS,
    MAX_BUCKETS,
    REASON_HEADERS,
    SHOW_NUMBERS,
    Counts,
    Report,
    Timeline,
    bucket_label,
    group_cells,
    pct,
    reason_rows,
    remove_number_rows,
    soft_number_rows,
)
from bounceback.feed.events import iso

HARD_COLOUR = "#b3261e"
SOFT_COLOUR = "#f29900"

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #202124; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .2em .7em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f1f3f4; } td.l, th.l { text-align: left; }
.note { color: #5f6368; }
.key span { display: inline-block; width: .9em; height: .9em; margin: 0 .3em 0 1em;
            vertical-align: -.1em; }
svg text { font: 11px system-ui, sans-serif; fill: #3c4043; }
svg text.tick { font-size: 10px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _nice_max(value: float) -> float:
    """A round upper bound for an axis of rates (0..1)."""
    if value <= 0:
        return 0.1
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0):
        if value <= step:
            return step
    return 1.0


def _parts(c: Counts) -> tuple[float, float]:
    """(hard rate, soft-only bounce rate): stacked, they make the bounce rate."""
    if not c.sent:
        return 0.0, 0.0
    hard = c.hard / c.sent
    return hard, max(c.bounced - c.hard, 0) / c.sent


def _tip(label: str, c: Counts) -> str:
    r = c.rates()
    return (
        f"{label}: {c.sent} sent, bounce {pct(r['bounce_rate'])}, hard {pct(r['hard_rate'])},"
        f" soft {pct(r['soft_rate'])}, recovered {c.recovered}"
    )


def _rate_grid(out: list[str], scale: float, left: int, top: int, plot_h: int, width: int) -> None:
    """The horizontal lines of a vertical rate axis, 0 to `scale` in quarters."""
    for i in range(5):
        v = scale * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#e0e0e0"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{v * 100:g}%</text>'
        )


def _stacked_bar(
    out: list[str],
    label: str,
    c: Counts,
    x: float,
    w: float,
    digits: int,
    base: float,
    plot_h: float,
    scale: float,
) -> None:
    """A vertical bar standing on `base`: hard bounces, soft-only bounces above them,
    with `label`'s tooltip; `x` and `w` written with `digits` decimals."""
    hard, soft = _parts(c)
    h_hard = plot_h * hard / scale
    h_soft = plot_h * soft / scale
    xs, ws = f"{x:.{digits}f}", f"{w:.{digits}f}"
    out.append(f"<g><title>{_e(_tip(label, c))}</title>")
    out.append(
        f'<rect x="{xs}" y="{base - h_hard:.1f}" width="{ws}"'
        f' height="{h_hard:.1f}" fill="{HARD_COLOUR}"/>'
    )
    out.append(
        f'<rect x="{xs}" y="{base - h_hard - h_soft:.1f}" width="{ws}"'
        f' height="{h_soft:.1f}" fill="{SOFT_COLOUR}"/>'
    )
    out.append("</g>")


def hour_chart(by_hour: Sequence[Counts]) -> str:
    """Vertical stacked bars: bounce rate (hard + soft-only) for each hour 0-23."""
    width, height, left, bottom, top = 720, 220, 40, 24, 10
    plot_h = height - bottom - top
    bar_w = (width - left - 10) / 24
    scale = _nice_max(max((sum(_parts(c)) for c in by_hour), default=0.0))
    out = [
        f'<svg role="img" aria-label="bounce rate by hour" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}">'
    ]
    _rate_grid(out, scale, left, top, plot_h, width)
    for hour, c in enumerate(by_hour):
        x = left + hour * bar_w + 2
        _stacked_bar(out, f"{hour:02d}:00", c, x, bar_w - 4, 1, top + plot_h, plot_h, scale)
        out.append(
            f'<text x="{x + (bar_w - 4) / 2:.1f}" y="{height - 8}"'
            f' text-anchor="middle">{hour:02d}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def timeline_chart(timeline: Timeline) -> str:
    """Vertical stacked bars: bounce rate (hard + soft-only) per timeline bucket, every
    bucket of the range (an empty one has no bar); a few start times under the axis."""
    width, height, left, bottom, top = 720, 220, 40, 24, 10
    plot_h = height - bottom - top
    n = max(len(timeline.items), 1)
    slot = (width - left - 10) / n
    gap = 1.0 if slot >= 4 else 0.0
    scale = _nice_max(max((sum(_parts(c)) for c in timeline.items), default=0.0))
    out = [
        f'<svg role="img" aria-label="bounce rate per {timeline.bucket}" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}">'
    ]
    _rate_grid(out, scale, left, top, plot_h, width)
    starts = timeline.starts()
    every = max(1, -(-len(starts) // 6))  # at most six labels
    for i, (start, c) in enumerate(zip(starts, timeline.items, strict=True)):
        x = left + i * slot
        if c.sent:
            label = bucket_label(start, timeline.bucket)
            w = max(slot - 2 * gap, 0.5)
            _stacked_bar(out, label, c, x + gap, w, 2, top + plot_h, plot_h, scale)
        if i % every == 0:
            out.append(
                f'<text x="{x:.1f}" y="{height - 8}" class="tick">'
                f"{_e(bucket_label(start, timeline.bucket))}</text>"
            )
    out.append("</svg>")
    return "".join(out)


def country_chart(by_country: Sequence[tuple[str, Counts]], limit: int = 15) -> str:
    """Horizontal stacked bars: bounce rate per country (the busiest `limit`)."""
    rows = list(by_country)[:limit]
    bar_h, gap, left, width = 18, 6, 90, 720
    height = max(len(rows), 1) * (bar_h + gap) + 30
    plot_w = width - left - 60
    scale = _nice_max(max((sum(_parts(c)) for _, c in rows), default=0.0))
    out = [
        f'<svg role="img" aria-label="bounce rate by country" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for i in range(5):
        x = left + plot_w * i / 4
        out.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 20}" stroke="#e0e0e0"/>'
            f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">'
            f"{scale * i / 4 * 100:g}%</text>"
        )
    for i, (country, c) in enumerate(rows):
        y = i * (bar_h + gap) + 4
        hard, soft = _parts(c)
        w_hard = plot_w * hard / scale
        w_soft = plot_w * soft / scale
        label = country or "(unknown)"
        out.append(f"<g><title>{_e(_tip(label, c))}</title>")
        out.append(f'<text x="{left - 6}" y="{y + bar_h - 5}" text-anchor="end">{_e(label)}</text>')
        out.append(
            f'<rect x="{left}" y="{y}" width="{w_hard:.1f}" height="{bar_h}" fill="{HARD_COLOUR}"/>'
        )
        out.append(
            f'<rect x="{left + w_hard:.1f}" y="{y}" width="{w_soft:.1f}" height="{bar_h}"'
            f' fill="{SOFT_COLOUR}"/>'
        )
        out.append(
            f'<text x="{left + w_hard + w_soft + 4:.1f}" y="{y + bar_h - 5}">'
            f"{_e(pct(c.rates()['bounce_rate']))}</text>"
        )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    if not rows:
        return '<p class="note">(none)</p>'
    head = "".join(
        f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="l">{_e(v)}</td>' if i < left else f"<td>{_e(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _more(n: int) -> str:
    if n <= 0:
        return ""
    return f'<p class="note">... and {n} more (bounceback stats --format csv lists them all)</p>'


# The group tables of `bounceback stats` (`GROUP_HEADERS`, `group_cells`) without the
# pending column: the HTML report is read after the fact.
_PENDING = GROUP_HEADERS.index("pending")
_GROUP = GROUP_HEADERS[:_PENDING] + GROUP_HEADERS[_PENDING + 1 :]


def _group(c: Counts) -> list[object]:
    cells = group_cells(c)
    del cells[_PENDING]
    return cells


def render_html(r: Report) -> str:
    """The whole page."""
    zone = "UTC" if r.hours == "utc" else "the destination's local time"
    t = r.totals
    tl = r.timeline
    coarser = f"; coarsened from {tl.requested}" if tl.requested not in (None, tl.bucket) else ""
    if tl.clipped:
        coarser += f"; the latest {MAX_BUCKETS} days"
    rates = t.rates()
    spm = f"{t.submissions / t.sent:.2f}" if t.sent else "-"
    summary = (
        f"{t.sent} messages; {t.delivered} delivered, of which {t.recovered} recovered by"
        f" retry ({pct(rates['recovery_rate'])} of the {t.soft_bounced} that soft-bounced);"
        f" {t.hard} hard bounces ({pct(rates['hard_rate'])}); {t.expired} expired;"
        f" {t.pending + t.cancelled} pending or cancelled; {spm} submissions per message."
    )
    key = (
        f'<p class="key"><span style="background:{HARD_COLOUR}"></span>hard'
        f'<span style="background:{SOFT_COLOUR}"></span>soft only</p>'
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Bounceback stats {_e(iso(r.since))} .. {_e(iso(r.until))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Bounceback stats</h1>",
        f'<p class="note">Messages accepted {_e(iso(r.since))} .. {_e(iso(r.until))};'
        f" generated {_e(iso(r.generated_at))}.</p>",
        f"<p>{_e(summary)}</p>",
        f"<h2>Bounce rate by hour of day ({_e(zone)})</h2>",
        key,
        hour_chart(r.by_hour),
        f"<h2>Bounce rate per {_e(tl.bucket)} (UTC{_e(coarser)})</h2>",
        key,
        timeline_chart(tl),
        "<h2>Bounce rate by country</h2>",
        key,
        country_chart(r.by_country),
        "<h2>By country</h2>",
        _table(
            ("country", *_GROUP),
            [[k or "(unknown)", *_group(c)] for k, c in r.by_country],
        ),
        "<h2>By operator</h2>",
        _table(
            ("country", "operator", *_GROUP),
            [[k or "(unknown)", op or "(unknown)", *_group(c)] for k, op, c in r.by_operator],
            left=2,
        ),
        "<h2>By carrier</h2>",
        '<p class="note">The carrier each message last went through.</p>',
        _table(("carrier", *_GROUP), [[k or "(none)", *_group(c)] for k, c in r.by_carrier]),
        "<h2>By account</h2>",
        _table(("account", *_GROUP), [[k or "(none)", *_group(c)] for k, c in r.by_account]),
        "<h2>By bounce reason</h2>",
        "<p class=\"note\">soft and link (the carrier's or the link's side) reasons from the"
        " retries; hard, the reason a message failed with. Recovered: delivered later;"
        " time to recover: from the message's first soft bounce for the reason to its"
        " delivery.</p>",
        _table(REASON_HEADERS, reason_rows(r), left=2),
        f"<h2>Timeline (per {_e(tl.bucket)}, UTC; {_e(tl.bucket)}s with messages)</h2>",
        _table(
            ("start", *_GROUP),
            [
                [bucket_label(ts, tl.bucket), *_group(c)]
                for ts, c in zip(tl.starts(), tl.items, strict=True)
                if c.sent
            ],
        ),
        f"<h2>Numbers that keep soft-bouncing (top {r.top})</h2>",
        _table(
            ("number", "country", "operator", "soft bounces", "reasons", "last"),
            soft_number_rows(r, iso),
            left=3,
        ),
        "<h2>Hard-bounced numbers to remove</h2>",
        _table(
            ("number", "country", "operator", "reason", "source", "last"),
            remove_number_rows(r, iso),
            left=6,
        ),
        _more(len(r.remove_numbers) - SHOW_NUMBERS),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


__all__ = ["country_chart", "hour_chart", "render_html", "timeline_chart"]
