"""Write the configuration reference table into README.md from the config model.

    python tools/config_reference.py          # rewrite the table between the markers
    python tools/config_reference.py --check  # exit 1 when the README's table differs

The table is `bounceback.configref.reference_table()`: every key of the model with its
default and its one-line meaning from `FIELD_DOCS` in proxy/config/settings.py. A key without
a meaning there is reported and nothing is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bounceback.config.reference import UndocumentedKeys, reference_table, replace_block

README = Path(__file__).resolve().parent.parent / "README.md"


def main(argv: list[str]) -> int:
    try:
        table = reference_table()
    except UndocumentedKeys as exc:
        print(exc, file=sys.stderr)
        return 1
    text = README.read_text(encoding="utf-8")
    new = replace_block(text, table)
    if "--check" in argv:
        if new != text:
            print(
                f"{README.name}: the configuration reference is out of date; run "
                "python tools/config_reference.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"updated the configuration reference in {README.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
