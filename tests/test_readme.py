"""The README cannot drift from the CLI: every `bench ...` command in its code blocks names a
real subcommand, and every flag it shows is a flag of that subcommand."""

import argparse
import re
from pathlib import Path

from bench.cli import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", README.read_text(encoding="utf-8"),
                        flags=re.S)
    lines = [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln.removeprefix("$ ") for ln in lines if ln.removeprefix("$ ").startswith("bench ")]


def test_readme_commands_use_real_subcommands_and_flags():
    commands = _commands()
    assert len(commands) >= 8
    top = _subparsers(build_parser())
    for command in commands:
        words = command.split()
        sub = top.get(words[1])
        assert sub is not None, f"README: `{command}`: no subcommand {words[1]!r}"
        nested = _subparsers(sub)
        if nested and len(words) > 2 and not words[2].startswith(("-", "[")):
            sub = nested.get(words[2])
            assert sub is not None, f"README: `{command}`: no action {words[2]!r}"
        known = {o for a in sub._actions for o in a.option_strings}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command):
            assert flag in known, f"README: `{command}`: {flag} is not a flag of it"


def test_the_status_block_is_replaced_between_its_markers_only():
    from bench.core.leaderboard.index import (
        README_END,
        README_START,
        IndexView,
        with_status_block,
    )
    from bench.core.leaderboard.tables import Table

    index = IndexView((), Table(("Suite", "Method", "Model", "Mean", "Baseline", "Δ mean",
                                 "p", "Significant", "Implementation"),
                                (("lm", "ce", "m", "1.0", "(baseline)", "—", "—", "—", "full"),),
                                3),
                      Table(("a",), (), 0))
    text = f"intro\n{README_START}\nold table\n{README_END}\noutro\n"
    out = with_status_block(text, index, "leaderboards/")
    assert out.startswith("intro\n" + README_START) and out.endswith(README_END + "\noutro\n")
    assert "old table" not in out and "[lm](leaderboards/lm.md)" in out
    assert with_status_block(out, index, "leaderboards/") == out  # idempotent
    assert with_status_block("no markers here\n", index, "") is None


def test_the_readme_status_block_is_what_the_committed_results_generate(tmp_path):
    """The block is generated, never typed: regenerating the committed leaderboards into a
    scratch folder with a copy of the README gives the README as committed."""
    from bench.core.leaderboard import write_leaderboards
    from bench.suite import SUITES

    copy = tmp_path / "README.md"
    copy.write_text(README.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "leaderboards"
    out.mkdir()
    suites = {e.name: {**e.meta, "title": e.summary} for e in SUITES.entries()}
    write_leaderboards(README.parent / "leaderboards" / "results", out, suites=suites,
                       readme=copy)
    assert copy.read_text(encoding="utf-8") == README.read_text(encoding="utf-8")
