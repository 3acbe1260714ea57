"""Run `mypy --strict` over the project under its import names.

The folders `codecs/` and `proxy/` import as `smppcodecs` and `bounceback`
(see pyproject.toml). mypy maps files to modules by folder name, so this script
lays out a folder of links with the import names and checks that, plus the
tests and benchmarks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINKS = {"smppcodecs": "codecs", "bounceback": "proxy"}


def main() -> int:
    base = ROOT / ".typecheck"
    base.mkdir(exist_ok=True)
    for name, folder in LINKS.items():
        link = base / name
        if not link.is_symlink():
            if link.exists():
                link.unlink()
            link.symlink_to(ROOT / folder, target_is_directory=True)
    env = dict(os.environ, MYPYPATH=str(base))
    cmd = [sys.executable, "-m", "mypy", "--strict", "-p", "smppcodecs", "-p", "bounceback"]
    rc = subprocess.call(cmd, cwd=base, env=env)
    targets = [
        str(ROOT / p)
        for p in ("tests", "bench", "tools")
        if (ROOT / p).is_dir() and any((ROOT / p).glob("*.py"))
    ]
    rc2 = subprocess.call([sys.executable, "-m", "mypy", "--strict", *targets], cwd=ROOT, env=env)
    return rc or rc2


if __name__ == "__main__":
    raise SystemExit(main())
