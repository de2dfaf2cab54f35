"""``python -m bench.core.assets [check|prepare|pin] [NAME ...]``: the asset layer without the CLI.

``check`` prints one line per asset (exit 1 if a required one is missing or wrong),
``prepare`` runs the one-time conversions, ``pin`` rewrites manifest.json from what is
installed (maintainers only, after a deliberate upgrade).
"""

from __future__ import annotations

import sys
import time

from bench.core.assets import check_all, format_status, prepare
from bench.core.assets.status import write_manifest
from bench.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command, names = (args[0], args[1:]) if args else ("check", [])
    try:
        if command == "check":
            statuses = check_all(names or None)
            print(format_status(statuses))
            return 0 if all(s.ok or s.optional for s in statuses) else 1
        if command == "prepare":
            t0 = time.perf_counter()
            for name, path in prepare(names or None).items():
                print(f"{name}: {path}")
            print(f"prepare: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            return 0
        if command == "pin":
            write_manifest()
            print(format_status(check_all()))
            return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"error: unknown command {command!r}; use check, prepare or pin", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
