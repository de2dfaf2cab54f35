"""The ``bench`` command line: run, ls, evaluate, compare, leaderboard, assets, reproduce.

Usage errors (bad flags, unknown names, malformed files) print one line naming what is
wrong and what to do, and exit with status 2. Heavy libraries (torch, pyserini, lm-eval)
are imported only inside the subcommand that needs them, so ``bench --help`` and
``bench ls`` stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# The flags live in bench.cli_parser and the handlers in bench.cli_commands; build_parser
# is re-exported because bench.core.reproduce and scripts build argv through it.
from bench.cli_commands import (
    cmd_assets,
    cmd_compare,
    cmd_leaderboard,
    cmd_ls,
    cmd_reproduce,
    cmd_run,
)
from bench.cli_parser import build_parser  # noqa: F401
from bench.errors import UsageError
from bench.retrieval.evaluate import cmd_evaluate

COMMANDS = {"reproduce": cmd_reproduce, "run": cmd_run, "ls": cmd_ls, "compare": cmd_compare, "evaluate": cmd_evaluate,
            "leaderboard": cmd_leaderboard, "assets": cmd_assets}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        message = " ".join(str(exc).splitlines())  # one line, always
        print(f"bench: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from bench.core.signals import Terminated

        if isinstance(exc, Terminated):  # SIGTERM (e.g. a scheduler's time limit)
            print("bench: terminated (SIGTERM); finished results and checkpoints are kept, "
                  "rerun the same command to resume", file=sys.stderr)
            return exc.exit_code
        print("bench: interrupted; finished results and checkpoints are kept, rerun the same "
              "command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
