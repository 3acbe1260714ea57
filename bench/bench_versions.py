"""Two versions of the proxy on the same load, alternating: is the change faster?

    python bench/bench_versions.py --base DIR [--rounds 3] -- [bench_e2e.py options]

``DIR`` is another checkout of the project (the code before the change) with its own
``.venv``. Each round runs ``bench/bench_e2e.py OPTIONS --json`` of the base, then of
this checkout (the next round the other way round, so neither always runs on a
warmer or cooler machine), and the figures of each proxy phase are printed as
ranges over the rounds: messages per second, proxy CPU per message, p50/p99 submit
latency, and with ``--rate`` the latency each adds to the direct path of its own run.
Machines are noisy: read the ranges, not one round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def run(checkout: Path, options: list[str]) -> dict[str, Any]:
    python = checkout / ".venv" / "bin" / "python"
    cmd = [str(python), str(checkout / "bench" / "bench_e2e.py"), *options, "--json"]
    done = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, check=False)
    if done.returncode != 0 and not done.stdout.strip().startswith("{"):
        raise SystemExit(f"{checkout}: bench_e2e failed:\n{done.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def figures(doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """phase -> figure -> value, for the proxy phases of one run."""
    results = doc["results"]
    direct = next((r for r in results if r["phase"] == "direct"), None)
    out: dict[str, dict[str, float]] = {}
    for r in results:
        if r["phase"] == "direct" or not r["complete"]:
            continue
        f = {
            "msg/s": r["rate"],
            "proxy CPU µs/msg": float(r["cpu_us"].get("proxy", 0.0)),
            "p50 ms": r["p50_ms"],
            "p99 ms": r["p99_ms"],
        }
        if "postgres" in r["cpu_us"]:  # the database's own CPU (its server processes)
            f["postgres CPU µs/msg"] = float(r["cpu_us"]["postgres"])
        if r.get("db_commits") is not None:
            f["db commits/msg"] = float(r["db_commits"])
        if direct is not None:
            f["added p50 ms"] = r["p50_ms"] - direct["p50_ms"]
            f["added p99 ms"] = r["p99_ms"] - direct["p99_ms"]
        out[r["phase"]] = f
    return out


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:9.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="checkout of the code before")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("options", nargs=argparse.REMAINDER, help="-- then bench_e2e.py options")
    a = p.parse_args(argv)
    options = [o for o in a.options if o != "--"]
    base = a.base.resolve()
    seen: dict[str, dict[str, dict[str, list[float]]]] = {"base": {}, "this": {}}
    for i in range(a.rounds):
        order = [("base", base), ("this", HERE)]
        if i % 2:
            order.reverse()
        for label, checkout in order:
            for phase, f in figures(run(checkout, options)).items():
                for name, v in f.items():
                    seen[label].setdefault(phase, {}).setdefault(name, []).append(v)
            print(f"round {i + 1}: {label} done", file=sys.stderr, flush=True)
    print(f"bench_e2e.py {' '.join(options)}; median (range) over {a.rounds} rounds")
    for phase in sorted(set(seen["base"]) | set(seen["this"])):
        print(f"\n{phase}")
        names = list(seen["this"].get(phase) or seen["base"].get(phase) or {})
        print(f"  {'':20} {'before':>24} {'after':>24}")
        for name in names:
            before = seen["base"].get(phase, {}).get(name, [])
            after = seen["this"].get(phase, {}).get(name, [])
            print(f"  {name:20} {spread(before):>24} {spread(after):>24}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
