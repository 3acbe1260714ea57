"""Where the proxy's CPU goes, by component: py-spy's collapsed stacks grouped by room.

    python bench/profile_groups.py PROFILE.pyspy.txt [--us-per-message N] [--json]

``PROFILE`` is what ``bench_e2e.py --profile DIR --py-spy BIN`` writes (py-spy's
collapsed "raw" format). Each sample goes to one component: a sample whose innermost
frame is in the event loop or the standard library's stream/transport code is "event
loop and transport"; otherwise the innermost frame of the project decides (the SQLite
driver's C code shows as the store's own frame, since py-spy samples Python frames).
With ``--us-per-message`` (the proxy's CPU per message that ``bench_e2e.py`` prints)
each share is also given in µs per message.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# (component, test on a frame's file) in the order they are tried on each frame. Each
# names the room and, for profiles of the code before the rooms, the flat module.
COMPONENTS: list[tuple[str, re.Pattern[str]]] = [
    ("store", re.compile(r"proxy/store/|proxy/(store|pgstore)\.py|bounceback\.store")),
    ("receipt parse and rebuild", re.compile(r"codecs/receipt\.py")),
    ("codec decode+encode", re.compile(r"codecs/|<smppcodecs\.")),
    (
        "attrs construction/evolve",
        re.compile(r"<attrs generated|proxy/core/model\.py|proxy/model\.py"),
    ),
    ("engine", re.compile(r"proxy/core/|proxy/(engine|ids|localtime|ratelimit|access)\.py")),
    (
        "SMPP session machinery",
        re.compile(r"proxy/smpp/|proxy/(session|server|carrier|client|simulator)\.py"),
    ),
    ("feed", re.compile(r"proxy/feed/|proxy/(feed|events|mqtt|mqttclient|mqttlib)\.py")),
    ("gateway orchestration", re.compile(r"proxy/gateway/|proxy/(gateway|pump|metrics)\.py")),
    ("admin API", re.compile(r"proxy/admin/")),
    (
        "configuration, logging, CLI",
        re.compile(r"proxy/(config|ops)/|proxy/[a-z]+\.py"),
    ),
]
LOOP = "event loop and transport"
# Innermost frames that are the loop and its transports whoever called them.
LOOP_LEAF = re.compile(r"\((asyncio|uvloop|selectors|socket|ssl)[/.]")
FILE = re.compile(r"\(([^()]*)\)\s*$")


def component(frames: list[str]) -> str:
    """The component one sample (its frames, outermost first) is charged to."""
    if frames and LOOP_LEAF.search(frames[-1]):
        return LOOP
    for frame in reversed(frames):
        where = FILE.search(frame)
        name = where.group(1) if where else frame
        for comp, test in COMPONENTS:
            if test.search(name):
                return comp
    return LOOP


def group(text: str) -> dict[str, int]:
    """Samples per component, from py-spy's collapsed stacks."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        comp = component(stack.split(";")[1:])  # the first entry names the process
        counts[comp] = counts.get(comp, 0) + int(n)
    return counts


def render(counts: dict[str, int], us_per_message: float | None = None) -> str:
    total = sum(counts.values())
    if not total:
        return "(no samples)"
    lines = ["component                          share   µs/msg" if us_per_message else ""]
    for comp, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        share = n / total
        us = f"{share * us_per_message:8.0f}" if us_per_message else ""
        lines.append(f"{comp:<32} {100 * share:6.1f}% {us}")
    lines.append(f"({total} samples)")
    return "\n".join(line for line in lines if line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", type=Path, help="py-spy collapsed stacks (bench_e2e --py-spy)")
    p.add_argument("--us-per-message", type=float, help="the proxy's CPU µs per message")
    p.add_argument("--json", action="store_true", help="print samples per component as JSON")
    a = p.parse_args(argv)
    counts = group(a.profile.read_text(errors="replace"))
    if a.json:
        total = sum(counts.values()) or 1
        out = {
            c: {
                "samples": n,
                "share": n / total,
                **({"us_per_message": n / total * a.us_per_message} if a.us_per_message else {}),
            }
            for c, n in counts.items()
        }
        print(json.dumps(out, indent=2))
    else:
        print(render(counts, a.us_per_message))
    return 0


if __name__ == "__main__":
    sys.exit(main())
