"""`python -m bounceback`: the `bounceback` command."""

from bounceback.ops.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
