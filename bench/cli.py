"""The ``bench`` command line: run, ls, evaluate, compare, leaderboard, assets, reproduce.

Usage errors (bad flags, unknown names, malformed files) print one line naming what is
wrong and what to do, and exit with status 2. Heavy libraries (torch, pyserini, lm-eval)
are imported only inside the subcommand that needs them, so ``bench --help`` and
``bench ls`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.errors import UsageError
from bench.retrieval.evaluate import add_evaluate_parser, cmd_evaluate
from bench.suite import CORRECTIONS, SCALE_FLAGS, TESTS, SuiteMetadata, limited_id

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


def _scale_overrides(args: argparse.Namespace) -> dict[str, object]:
    """``--set`` pairs plus the scale flags; a flag and a ``--set`` of one key must agree."""
    overrides = dict(args.overrides)
    for key, (flag, _) in SCALE_FLAGS.items():
        value = getattr(args, f"scale_{key}", None)
        if value is None:
            continue
        if value < 1:
            raise UsageError(f"{flag} must be a positive integer")
        if key in overrides and overrides[key] != value:
            raise UsageError(f"{flag} {value} and --set {key}={overrides[key]} disagree; "
                             "give one of them")
        overrides[key] = value
    return overrides


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
    cmp_.add_argument("--preset", default="default",
                      help="preset of the runs --seeds starts, and of the results compared")
    cmp_.add_argument("--teacher", help="--teacher of the runs --seeds starts")
    cmp_.add_argument("--student", help="--student of the runs --seeds starts")
    cmp_.add_argument("--judge", help="--judge of the runs --seeds starts (align)")
    cmp_.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                      help="--device of the runs --seeds starts")
    cmp_.add_argument("--allow-dirty", action="store_true",
                      help="--allow-dirty of the runs --seeds starts")
    cmp_.add_argument("--set", dest="overrides", type=_key_value, action="append", default=[],
                      metavar="KEY=VALUE", help="--set of the runs --seeds starts")
    cmp_.add_argument("--metric", help="metric (default: the suite's main score)")
    cmp_.add_argument("--dataset", help="only this dataset id")
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


def cmd_ls(args: argparse.Namespace) -> int:
    from bench.contracts import check_declarations
    from bench.core.assets import ASSETS
    from bench.suite import SUITES
    from methods import METHODS
    from methods.losses import LOSSES

    check_declarations()
    if args.suite:
        from bench.listing import print_suite

        print_suite(SUITES.entry(args.suite).meta["metadata"])
        return 0
    sections = {"methods": METHODS, "suites": SUITES, "losses": LOSSES, "assets": ASSETS}
    for kind, registry in sections.items():
        if args.what and args.what != kind:
            continue
        print(f"{kind}:")
        entries = registry.entries()
        if not entries:
            print("  (none yet)")
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            cite = f"  [{e.citation}]" if e.citation else ""
            scope = f" ({', '.join(e.meta['suites'])})" if kind == "methods" else ""
            print(f"  {e.name:<{width}}  {e.summary}{scope}{cite}")
    if args.what in (None, "methods", "suites"):
        from bench.listing import print_matrix

        print_matrix()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench.contracts import check_declarations, resolve_recipe
    from bench.core.results import ResultStore, git_state_at_start
    from bench.suite import SUITES, RunOptions

    metadata = SUITES.entry(args.suite).meta["metadata"]
    _check_preset(args.preset, metadata)
    check_declarations()
    loss_fn = loss_name = loss_sha = None
    if args.loss is not None:
        if not metadata.user_loss:
            users = [e.name for e in SUITES.entries() if e.meta["metadata"].user_loss]
            raise UsageError(f"--loss: suite {args.suite!r} does not train with token-level "
                             f"losses; use a suite that does ({', '.join(users)})")
        from bench.core.user_loss import load_user_loss

        loss_fn, loss_name, loss_sha = load_user_loss(args.loss)
        args.method = f"custom-{loss_name}"
    suite_cls = SUITES.get(args.suite)
    options = RunOptions(
        method=args.method, dataset=args.dataset, preset=args.preset, seed=args.seed,
        limit=args.limit, out=args.out, work_dir=args.work_dir, overwrite=args.overwrite,
        teacher=args.teacher, student=args.student, judge=args.judge,
        overrides=_scale_overrides(args),
        loss_fn=loss_fn, loss_name=loss_name,
        loss_source={"spec": args.loss, "sha256": loss_sha} if args.loss else None,
    )
    # Before any work: the device exists, the method runs on this suite and provides its
    # hook, and every --set value has the type and range its setting declares.
    from bench.core.device import set_current
    from bench.core.distributed import check_launch, is_main

    check_launch()
    set_current(args.device)
    suite = suite_cls()
    recipe = (suite.user_loss_recipe(options) if loss_fn is not None
              else resolve_recipe(args.method, args.suite))
    suite.resolve_settings(options, recipe)
    from bench.core.assets import cache_dir
    from bench.core.io import writable_dir

    writable_dir(args.work_dir or cache_dir(), "--work-dir" if args.work_dir
                 else "DISTILLBENCH_CACHE")
    _refuse_dirty_committed_results(args.out, args.allow_dirty)
    writable_dir(args.out, "--out")
    store = ResultStore(args.out)
    git_state_at_start()
    start = time.perf_counter()
    records = suite.run(options)
    for record in records:
        if args.limit is not None:  # a partial evaluation is its own dataset, never the full
            record["dataset"]["id"] = limited_id(record["dataset"]["id"], args.limit)
            record["config"]["limit"] = args.limit
        if not is_main():  # every process holds the same gathered records
            continue
        path = store.write(record, overwrite=args.overwrite)
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
        print(f"{record['dataset']['id']}: {metrics}  -> {path}")
    if is_main():
        print(f"done in {time.perf_counter() - start:.1f}s; `bench leaderboard` regenerates "
              "tables")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.core.compare import compare, compare_data
    from bench.core.results import ResultStore
    from bench.suite import SUITES

    metadata = SUITES.entry(args.suite).meta["metadata"]
    _check_preset(args.preset, metadata)
    if args.power is not None and not (math.isfinite(args.power) and args.power > 0):
        raise UsageError(f"--power {args.power}: expected a positive difference, e.g. 0.01")
    baseline = args.baseline or metadata.baseline
    if args.seeds is None:  # these only shape the runs --seeds starts
        given = [f for f, v in (("--teacher", args.teacher), ("--student", args.student),
                                ("--judge", args.judge), ("--set", args.overrides)) if v]
        if given:
            raise UsageError(f"{given[0]} only applies with --seeds N (it is passed to the "
                             "runs --seeds starts); add --seeds or drop it")
    losses = _user_loss_methods(args.methods, metadata)
    args.methods = [losses.get(m, m) for m in args.methods]
    if args.seeds is not None:
        _run_missing_seeds(args, [baseline, *args.methods],
                           {name: spec for spec, name in losses.items()})
    records = ResultStore(args.results).load(args.suite)
    if args.seeds is not None:
        records = [r for r in records if r["seed"] < args.seeds and r["preset"] == args.preset]
    if not records:
        raise UsageError(f"no results for suite {args.suite!r} under {args.results}; "
                         f"run `bench run --suite {args.suite} ...` first")
    kwargs = dict(methods=args.methods, baseline=baseline, metric=args.metric,
                  dataset=args.dataset, test=args.test, correction=args.correction,
                  power_delta=args.power)
    if args.json:
        print(json.dumps(compare_data(records, **kwargs), indent=2, sort_keys=True))
    else:
        print(compare(records, **kwargs))
    return 0


def _refuse_dirty_committed_results(out: Path, allow_dirty: bool) -> None:
    """Committed rows must be rebuildable from a commit: a run from a tree with uncommitted
    changes may not write into the repository's leaderboards/ unless --allow-dirty (the
    leaderboard then shows '+dirty' beside its commit)."""
    from bench.core.results import git_state

    repo = Path(__file__).resolve().parents[1]
    try:
        Path(out).resolve().relative_to((repo / "leaderboards").resolve())
    except ValueError:
        return  # runs/, a temp folder, ...: anything goes
    if git_state()[1] and not allow_dirty:
        raise UsageError(f"--out {out}: the checkout has uncommitted changes, so these rows "
                         "could not be rebuilt from a commit; commit first, write elsewhere "
                         "(e.g. --out runs/results), or pass --allow-dirty")


def _check_preset(preset: str, metadata: SuiteMetadata) -> None:
    if preset not in metadata.presets:
        raise UsageError(f"--preset {preset}: suite {metadata.name!r} has presets "
                         f"{', '.join(metadata.preset_names)}")


def _user_loss_methods(methods: list[str], metadata: SuiteMetadata) -> dict[str, str]:
    """``{"FILE.py:FN": "custom-FN"}`` for the ``--methods`` entries that are user losses,
    each loaded and checked before any run (as ``bench run --loss`` does)."""
    specs = [m for m in methods if re.fullmatch(r".+\.py:\w+", m)]
    if not specs:
        return {}
    if not metadata.user_loss:
        raise UsageError(f"--methods {specs[0]}: suite {metadata.name!r} does not train with "
                         "token-level losses, so it cannot compare your own loss")
    from bench.core.user_loss import load_user_loss

    return {spec: f"custom-{load_user_loss(spec)[1]}" for spec in specs}


def _run_missing_seeds(args: argparse.Namespace, methods: list[str],
                       losses: dict[str, str] | None = None) -> None:
    """``bench run`` each (method, seed) of ``bench compare --seeds`` without a result;
    ``losses`` maps a ``custom-FN`` method to the ``FILE.py:FN`` it is run with."""
    from bench.core.results import ResultStore

    have = {(r["method"], r["seed"]) for r in ResultStore(args.results).load(args.suite)
            if r["preset"] == args.preset}
    for method in dict.fromkeys(methods):
        for seed in range(args.seeds):
            if (method, seed) in have:
                continue
            print(f"bench compare: running {method} seed {seed} ({args.preset})", flush=True)
            what = ["--loss", losses[method]] if losses and method in losses \
                else ["--method", method]
            argv = ["run", *what, "--suite", args.suite, "--seed", str(seed),
                    "--preset", args.preset, "--out", str(args.results),
                    "--device", args.device] + (["--allow-dirty"] if args.allow_dirty else [])
            if args.dataset:
                argv += ["--dataset", args.dataset]
            for flag in ("teacher", "student", "judge"):
                if getattr(args, flag):
                    argv += [f"--{flag}", getattr(args, flag)]
            for key, value in args.overrides:
                argv += ["--set", f"{key}={json.dumps(value)}"]
            cmd_run(build_parser().parse_args(argv))


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.core.io import writable_dir
    from bench.core.leaderboard import write_leaderboards
    from bench.suite import SUITES

    if not args.results.is_dir():
        raise UsageError(f"{args.results}: no such results directory; pass --results DIR")
    writable_dir(args.out, "--out")
    override = {k: v for k, v in (("test", args.test), ("correction", args.correction)) if v}
    suites = {e.name: {**e.meta, "title": e.summary, **override} for e in SUITES.entries()}
    # The committed leaderboards also refresh the README's generated status block; a
    # leaderboard of one's own runs (runs/leaderboards) leaves the README alone.
    repo = Path(__file__).resolve().parents[1]
    readme = repo / "README.md" if Path(args.out).resolve() == (repo / "leaderboards").resolve() \
        else None
    for path in write_leaderboards(args.results, args.out, suites=suites,
                                   allow_empty=args.allow_empty, site=True, readme=readme):
        print(path)
    if args.serve:
        from bench.core.site import serve

        return serve(args.out / "site", args.results, args.port)
    return 0


def cmd_assets(args: argparse.Namespace) -> int:
    from bench.core import assets
    from bench.core.io import writable_dir

    if args.assets_command == "prepare":
        writable_dir(assets.cache_dir(), "DISTILLBENCH_CACHE")
        asset_names = [n for n in args.names if n != "collections"]
        if asset_names or not args.names:
            assets.prepare(asset_names or None)
        if not args.names or "collections" in args.names:
            from bench.retrieval.bm25 import build_index
            from bench.retrieval.collections import prepare_offline_collections

            for folder in prepare_offline_collections():
                build_index(folder / "corpus.jsonl")
        return 0
    statuses = assets.check_all()
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
    else:
        print(assets.format_status(statuses))
    try:  # conversions and runs write there: an unusable cache fails the check
        writable_dir(assets.cache_dir(), "DISTILLBENCH_CACHE", create=False)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    return 0 if all(s.ok or s.optional for s in statuses) else 1


def cmd_reproduce(args: argparse.Namespace) -> int:
    from bench.core.reproduce import format_report, reproduce

    report = reproduce(args.result, tolerance=args.tolerance, scratch=args.scratch)
    print(format_report(report))
    return 0 if report.ok else 1


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
