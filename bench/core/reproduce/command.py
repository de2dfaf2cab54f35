"""The ``bench run`` command that reproduces a result record (:func:`rebuild_argv`).

The argv is rebuilt from the record, preferring the command line recorded in
``provenance.command`` (a string, split with :func:`shlex.split`; a list is taken as is).
It is used when it parses as ``bench run`` and agrees with the record's suite, method,
seed, preset, ``--limit`` and dataset (a record written by ``bench compare --seeds`` names
the compare command, for instance, and does not). Otherwise the argv is rebuilt from the
record's fields: ``--suite``, ``--method`` (``--loss`` for ``custom-*``), ``--seed``,
``--preset``, ``--limit``, ``--dataset`` (only for an id the suite does not run by
default) and a ``--set KEY=VALUE`` for every setting whose recorded value differs from
what the current code resolves for that method and preset. ``--teacher``/``--student``/
``--judge`` cannot be recovered from fields (the report says so).

Either way the recorded ``--out``, ``--work-dir`` and ``--overwrite`` are dropped and the
rerun always gets ``--out SCRATCH`` and ``--work-dir SCRATCH/work`` (or the ``work_dir``
given); ``--overwrite`` is added only when asked for (by
:func:`~bench.core.reproduce.rerun.reproduce`, when the scratch folder already holds the
record).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.errors import UsageError

# Options of `bench run` the rerun always replaces (value-taking) or drops (flags).
_REPLACED = ("out", "work_dir")
_DROPPED = ("overwrite",)


def _limit_of(record: dict[str, Any]) -> int | None:
    limit = record["config"].get("limit")
    if isinstance(limit, int) and not isinstance(limit, bool):
        return limit
    match = re.search(r"@limit(\d+)$", record["dataset"]["id"])
    return int(match.group(1)) if match else None


def _base_dataset_id(record: dict[str, Any]) -> str:
    return re.sub(r"@limit\d+$", "", record["dataset"]["id"])


def _run_parser() -> Any:
    from bench.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return parser, sub.choices["run"]


def _namespace(argv: Sequence[str]) -> dict[str, Any] | None:
    """The parsed ``bench`` argv (without bookkeeping attributes), or None if it does not
    parse."""
    parser, _ = _run_parser()
    try:
        ns = parser.parse_args(list(argv))
    except (UsageError, SystemExit):
        return None
    return {k: v for k, v in vars(ns).items() if not k.startswith("_seen_")}


def _recorded_tokens(command: Any) -> list[str] | None:
    """The recorded command as bench arguments (program name removed), or None."""
    if isinstance(command, list) and all(isinstance(t, str) for t in command):
        tokens = list(command)
    elif isinstance(command, str) and command.strip():
        try:
            tokens = shlex.split(command)
        except ValueError:
            tokens = command.split()
    else:
        return None
    if tokens and Path(tokens[0]).name in ("bench", "bench.exe", "__main__.py"):
        tokens = tokens[1:]
    elif len(tokens) >= 3 and tokens[1] == "-m" and tokens[2] == "bench":
        tokens = tokens[3:]
    return tokens


def _runnable(method: str, suite: str) -> bool:
    """Whether ``bench run --method METHOD --suite SUITE`` exists (True when unsure)."""
    try:
        from bench.contracts import methods_for

        return method in {e.name for e in methods_for(suite)}
    except UsageError:
        return True


def _mismatches(ns: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """Where a parsed recorded command disagrees with the record it should have written."""
    if ns.get("command") != "run":
        return [f"it is `bench {ns.get('command')}`, not `bench run`"]
    wrong = []
    if ns["suite"] != record["suite"]:
        wrong.append(f"suite {ns['suite']!r} != {record['suite']!r}")
    if ns.get("loss"):
        if not record["method"].startswith("custom-"):
            wrong.append(f"--loss run but method is {record['method']!r}")
    elif ns.get("method") != record["method"] and _runnable(record["method"], ns["suite"]):
        # A row the command's method writes besides its own (DeAR's dear-p, dear-l and
        # dear-student-init) is not runnable by itself; a runnable one means another run.
        wrong.append(f"method {ns.get('method')!r} != {record['method']!r}")
    if ns["seed"] != record["seed"]:
        wrong.append(f"seed {ns['seed']} != {record['seed']}")
    if ns["preset"] != record["preset"]:
        wrong.append(f"preset {ns['preset']!r} != {record['preset']!r}")
    if ns.get("limit") != _limit_of(record):
        wrong.append(f"--limit {ns.get('limit')} != {_limit_of(record)}")
    if ns.get("dataset") not in (None, _base_dataset_id(record)):
        wrong.append(f"dataset {ns['dataset']!r} != {_base_dataset_id(record)!r}")
    return wrong


def _strip_output_options(tokens: list[str]) -> tuple[list[str], list[str]]:
    """``tokens`` without ``--out``/``--work-dir`` (and values) and ``--overwrite``
    (argparse's unique-prefix abbreviations included), and what was removed."""
    _, run = _run_parser()
    options = {s: a.dest for s, a in run._option_string_actions.items() if s.startswith("--")}
    kept: list[str] = []
    removed: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, _ = token.partition("=")
        dest = None
        if name.startswith("--"):
            dest = options.get(name)
            if dest is None:
                hits = {d for s, d in options.items() if s.startswith(name)}
                dest = hits.pop() if len(hits) == 1 else None
        if dest in _REPLACED:
            takes = 1 if eq else 2
            removed.append(" ".join(tokens[i:i + takes]))
            i += takes
            continue
        if dest in _DROPPED:
            removed.append(token)
            i += 1
            continue
        kept.append(token)
        i += 1
    return kept, removed


def _argv_from_fields(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A ``bench run`` argv from the record's fields, and notes on what it could not
    recover."""
    notes: list[str] = []
    config = record["config"]
    method, suite, preset = record["method"], record["suite"], record["preset"]
    loss = config.get("loss_source") if isinstance(config.get("loss_source"), dict) else None
    argv = ["run", "--suite", suite]
    argv += ["--loss", str(loss["spec"])] if method.startswith("custom-") and loss and \
        loss.get("spec") else ["--method", method]
    argv += ["--seed", str(record["seed"])]
    if preset != "default":
        argv += ["--preset", preset]
    limit = _limit_of(record)
    if limit is not None:
        argv += ["--limit", str(limit)]
    dataset = _base_dataset_id(record)
    try:
        from bench.contracts import recipe_option, resolve_recipe
        from bench.suite import SUITES, RunOptions

        suite_cls = SUITES.get(suite)
        meta = suite_cls.metadata
        if dataset not in {d.id for d in meta.datasets}:
            argv += ["--dataset", dataset]
        if "--loss" in argv:
            notes.append("settings of a --loss run are not compared with defaults")
            return argv, notes
        recipe = resolve_recipe(method, suite)
        defaults = suite_cls().resolve_settings(
            RunOptions(method=method, preset=preset, seed=record["seed"]), recipe)
        settable = {s.name for s in meta.settings if s.settable} | \
            set(recipe_option(recipe, "settings_keys"))
        for key in sorted(config):
            if key in defaults and config[key] == defaults[key]:
                continue
            if key in settable:
                argv += ["--set", f"{key}={json.dumps(config[key])}"]
            elif key in defaults:
                notes.append(f"setting {key}={config[key]!r} differs from today's default "
                             f"{defaults[key]!r} but cannot be --set")
    except UsageError as exc:
        notes.append(f"settings not compared with defaults: {exc}")
    notes.append("--teacher/--student/--judge cannot be recovered from the fields; the "
                 f"rerun uses the suite's defaults (committed model: {record['model']})")
    return argv, notes


def rebuild_argv(record: dict[str, Any], scratch: str | os.PathLike[str],
                 work_dir: str | os.PathLike[str] | None = None, *, overwrite: bool = False
                 ) -> tuple[list[str], str, list[str]]:
    """``(argv, source, notes)``: the ``bench run`` argv (without the program name) that
    reproduces ``record`` into ``scratch``; ``source`` says whether it is the recorded
    command or was rebuilt from the record's fields. See the module docstring."""
    notes: list[str] = []
    tokens = _recorded_tokens(record["provenance"].get("command"))
    argv: list[str] | None = None
    source = "rebuilt from record fields"
    if tokens is None:
        notes.append("no command recorded")
    else:
        recorded = _namespace(tokens)
        if recorded is None:
            notes.append(f"recorded command {shlex.join(tokens)!r} does not parse today")
        elif wrong := _mismatches(recorded, record):
            notes.append(f"recorded command {shlex.join(tokens)!r} does not match the "
                         f"record ({'; '.join(wrong)})")
        else:
            kept, removed = _strip_output_options(tokens)
            check = _namespace(kept)
            ignore = {*_REPLACED, *_DROPPED}
            if check is not None and {k: v for k, v in check.items() if k not in ignore} \
                    == {k: v for k, v in recorded.items() if k not in ignore}:
                argv, source = kept, "recorded command"
                if recorded.get("method") not in (None, record["method"]):
                    notes.append(f"method {record['method']!r} is a row that --method "
                                 f"{recorded['method']} writes")
                if removed:
                    notes.append(f"dropped {', '.join(removed)}")
            else:
                notes.append("could not separate --out from the recorded command")
    if argv is None:
        argv, more = _argv_from_fields(record)
        notes += more
    scratch = Path(scratch)
    argv = [*argv, "--out", str(scratch),
            "--work-dir", str(Path(work_dir) if work_dir is not None else scratch / "work")]
    if overwrite:
        argv.append("--overwrite")
    return argv, source, notes
