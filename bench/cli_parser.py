"""The ``bench`` argument parser: every subcommand's flags, their value types, and the
parser class that makes a bad flag a one-line usage error (exit 2) and refuses a
single-value option given twice.

Only light modules are imported here, so ``bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.errors import UsageError
from bench.retrieval.evaluate import add_evaluate_parser
from bench.suite import CORRECTIONS, SCALE_FLAGS, TESTS

DEFAULT_RESULTS = Path(os.environ.get("DISTILLBENCH_RESULTS", "leaderboards/results"))
DEFAULT_LEADERBOARDS = Path(os.environ.get("DISTILLBENCH_LEADERBOARDS", "leaderboards"))


class _Once(argparse.Action):
    """Store a single-value option, refusing a second occurrence (argparse would silently
    keep the last one, e.g. start a long run of the second ``--method``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        if getattr(namespace, f"_seen_{self.dest}", False):
            raise UsageError(f"{option_string} given twice; give it once")
        setattr(namespace, f"_seen_{self.dest}", True)
        setattr(namespace, self.dest, values)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage block by default) and
    single-value options that may be given only once."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # The default action of every option (groups share this registry) is _Once.
        self.register("action", None, _Once)
        self.register("action", "store", _Once)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return items


def _key_value(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bench",
        description="distillbench: train distilled students with published methods and "
        "evaluate them on standardized suites.",
        epilog="Example: bench run --method dear --suite beir",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="train and/or evaluate a method on a suite",
                         description="Train and evaluate METHOD on SUITE; writes one result "
                         "JSON per dataset and seed. Rerunning an interrupted run resumes it.")
    what = run.add_mutually_exclusive_group(required=True)
    what.add_argument("--method", help="method name (see `bench ls`)")
    what.add_argument("--loss", metavar="FILE.py:FN",
                      help="train with your own token-level loss fn(student_logits, "
                      "teacher_logits, *, mask=None, temperature=1.0) on a suite that trains "
                      "generators (instruct); the result's method is custom-<FN>")
    run.add_argument("--suite", required=True, help="suite name (see `bench ls`)")
    run.add_argument("--dataset", help="dataset id within the suite (default: the suite's)")
    run.add_argument("--preset", default="default",
                     help="scale: smoke (minutes), default (CPU budget), full (paper scale, "
                     "GPUs); some suites add cpu-long, a resumable CPU run past the default "
                     "budget (`bench ls --suite S` lists a suite's presets)")
    run.add_argument("--seed", type=_non_negative_int, default=0)
    run.add_argument("--limit", type=_positive_int,
                     help="evaluate on at most N items (quick checks); recorded in the "
                     "result's dataset id (e.g. offline/boolq@limit3), so a limited run never "
                     "replaces or mixes with a full one")
    run.add_argument("--teacher", help="teacher model: asset name, HF id or local path")
    run.add_argument("--student", help="student model: asset name, HF id or local path")
    run.add_argument("--judge", help="judge model for suites that judge responses pairwise "
                     "(align): asset name, HF id or local path")
    run.add_argument("--set", dest="overrides", type=_key_value, action="append", default=[],
                     metavar="KEY=VALUE", help="override a hyperparameter (repeatable)")
    scale = run.add_argument_group(
        "scale", "shorthands for common --set keys; a suite or method that has no such "
        "setting rejects them")
    for key, (flag, text) in SCALE_FLAGS.items():
        scale.add_argument(flag, dest=f"scale_{key}", type=int, metavar="N", help=text)
    run.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                     help="where to run: auto picks this process's GPU when there is one, "
                     "else the CPU; recorded in each result's provenance")
    run.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results directory")
    run.add_argument("--work-dir", type=Path, help="checkpoints and caches (default: cache dir)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing result")
    run.add_argument("--allow-dirty", action="store_true",
                     help="let a checkout with uncommitted changes write into leaderboards/ "
                     "(its rows are marked +dirty)")

    ls = sub.add_parser("ls", help="list methods, suites, losses and assets with citations",
                        description="One line per registered entry, with its citation, and "
                        "the method x suite matrix.")
    ls.add_argument("what", nargs="?", choices=("methods", "suites", "losses", "assets"),
                    help="list only this kind")
    ls.add_argument("--suite", help="only this suite: its metadata, presets, settings and "
                    "the methods that run on it")

    cmp_ = sub.add_parser("compare", help="mean ± std over seeds and paired significance",
                          description="Collect results of several methods (and seeds) on one "
                          "suite: mean ± std and a paired test of each against a baseline.")
    cmp_.add_argument("--suite", required=True)
    cmp_.add_argument("--methods", type=_comma_list, required=True,
                      help="a,b,c; an entry FILE.py:FN is your own loss (as `bench run "
                      "--loss`), compared as custom-FN")
    cmp_.add_argument("--baseline",
                      help="method every other is tested against (default: the suite's)")
    cmp_.add_argument("--seeds", type=_positive_int,
                      help="use seeds 0..N-1 and run the missing ones first (`bench run` "
                      "with --preset; results go to --results)")
    cmp_.add_argument("--preset",
                      help="only results of this preset, and the preset of the runs --seeds "
                      "starts (default: every preset, rows named e.g. 'eagle [cpu-long]'; "
                      "with --seeds: default)")
    cmp_.add_argument("--teacher", help="--teacher of the runs --seeds starts")
    cmp_.add_argument("--student", help="--student of the runs --seeds starts")
    cmp_.add_argument("--judge", help="--judge of the runs --seeds starts (align)")
    cmp_.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                      help="--device of the runs --seeds starts")
    cmp_.add_argument("--allow-dirty", action="store_true",
                      help="--allow-dirty of the runs --seeds starts")
    cmp_.add_argument("--work-dir", type=Path,
                      help="--work-dir of the runs --seeds starts (checkpoints and caches)")
    cmp_.add_argument("--set", dest="overrides", type=_key_value, action="append", default=[],
                      metavar="KEY=VALUE", help="--set of the runs --seeds starts")
    cmp_.add_argument("--metric", help="metric (default: the suite's main score)")
    cmp_.add_argument("--dataset", help="only this dataset id")
    cmp_.add_argument("--models", type=_comma_list,
                      help="only rows of these models (exact names, a,b), e.g. to compare "
                      "two drafts decoded the same way when the baseline ran with several")
    cmp_.add_argument("--test", choices=TESTS, default="auto",
                      help="auto (default): Welch t on seed means when a side has several "
                      "seeds, else item-paired (exact sign-flip up to 16 items, paired t "
                      "beyond); or force ttest, permutation, bootstrap")
    cmp_.add_argument("--correction", choices=CORRECTIONS, default="holm",
                      help="multiple-comparison correction over the table (default holm; bh: "
                      "Benjamini-Hochberg)")
    cmp_.add_argument("--power", type=float, metavar="DELTA",
                      help="also say how many items and seeds would detect a difference of "
                      "DELTA (power 0.8) from the observed spread")
    cmp_.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    cmp_.add_argument("--json", action="store_true", help="print JSON only")

    add_evaluate_parser(sub)

    rep = sub.add_parser("reproduce", help="rerun the command a result records and compare",
                         description="Rerun the exact `bench run` command recorded in "
                         "RESULT.json into a scratch folder (never the committed results) and "
                         "print every metric beside the committed value with the tolerance "
                         "applied. Exit 0 when all are within tolerance, 1 when not.")
    rep.add_argument("result", type=Path, metavar="RESULT.json")
    rep.add_argument("--tolerance", type=float, metavar="X",
                     help="absolute tolerance for every non-timing metric (default: exact on "
                     "the same CPU and threads, 0.001 across thread counts, 0.01 across CPUs; "
                     "timing metrics within a factor of 1.5)")
    rep.add_argument("--scratch", type=Path,
                     help="results folder for the rerun (default: a new temp folder)")

    lb = sub.add_parser("leaderboard", help="regenerate leaderboard markdown and site from results",
                        description="Rewrite leaderboards/<suite>.md and README.md, and the "
                        "static web site leaderboards/site/ (index.html, one page per suite), "
                        "from the result files; deterministic, never edited by hand.")
    lb.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    lb.add_argument("--out", type=Path, default=DEFAULT_LEADERBOARDS)
    lb.add_argument("--test", choices=TESTS,
                    help="significance test (default: each suite's own, else auto)")
    lb.add_argument("--correction", choices=CORRECTIONS,
                    help="multiple-comparison correction per table (default: holm)")
    lb.add_argument("--allow-empty", action="store_true",
                    help="write the index even when the results folder holds no result")
    lb.add_argument("--serve", action="store_true",
                    help="after writing, serve the site on localhost (prints its URL; Ctrl-C "
                    "stops)")
    lb.add_argument("--port", type=int, default=8000,
                    help="port for --serve (default 8000; 0: any free port)")

    assets = sub.add_parser("assets", help="check or prepare the offline models and data",
                            description="Offline assets: models and data shipped in packages.")
    asub = assets.add_subparsers(dest="assets_command", metavar="ACTION", parser_class=_Parser)
    asub.required = True
    check = asub.add_parser("check", help="present/missing, version, size, sha256, source",
                            description="Report each offline asset; exit 1 if a required one "
                            "is missing or corrupted.")
    check.add_argument("--json", action="store_true")
    prep = asub.add_parser("prepare", help="convert and cache assets (idempotent)",
                           description="One-time conversions into the cache directory "
                           "($DISTILLBENCH_CACHE, default ~/.cache/distillbench).")
    prep.add_argument("names", nargs="*",
                      help="assets to prepare, or 'collections' for the offline retrieval "
                      "collections and their BM25 indexes (default: everything)")
    return parser
