"""The handlers of the ``bench`` subcommands (run, ls, compare, leaderboard, assets,
reproduce; ``evaluate``'s lives in :mod:`bench.retrieval.evaluate`) and the checks each
makes before any work.

Each takes the parsed arguments and returns the exit status; a usage error is raised as
:class:`UsageError` for :func:`bench.cli.main` to print. Heavy libraries are imported
inside the handler that needs them.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from bench.cli_parser import build_parser
from bench.errors import ResultExistsError, UsageError
from bench.suite import SCALE_FLAGS, SuiteMetadata, limited_id


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
    from bench.core.io import missing_dirs, remove_empty, writable_dir

    work_dir = args.work_dir or cache_dir()
    made_work, made_out = missing_dirs(work_dir), missing_dirs(args.out)
    writable_dir(work_dir, "--work-dir" if args.work_dir else "DISTILLBENCH_CACHE")
    _refuse_dirty_committed_results(args.out, args.allow_dirty)
    writable_dir(args.out, "--out")
    store = ResultStore(args.out)
    git_state_at_start()
    start = time.perf_counter()
    try:  # a suite's own checks (datasets, flags it refuses) run inside run()
        records = suite.run(options)
    except BaseException:
        remove_empty(made_out)  # first: the out folder may lie inside the work dir
        remove_empty(made_work)
        raise
    kept: list[tuple[Path, Path]] = []  # (existing result, where this run's record went)
    for record in records:
        if args.limit is not None:  # a partial evaluation is its own dataset, never the full
            record["dataset"]["id"] = limited_id(record["dataset"]["id"], args.limit)
            record["config"]["limit"] = args.limit
        if not is_main():  # every process holds the same gathered records
            continue
        try:
            path = store.write(record, overwrite=args.overwrite)
        except ResultExistsError:
            kept.append(_keep_aside(store, record, args.work_dir))
            continue
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
        print(f"{record['dataset']['id']}: {metrics}  -> {path}")
    if kept:
        # A row's file name is known only once the suite has named its model and dataset,
        # i.e. after the work; so the work is kept rather than refused up front.
        raise ResultExistsError(
            f"{kept[0][0]}: a result already exists ({len(kept)} of this run's "
            f"{len(records)} records collide); this run's records were kept under "
            f"{kept[0][1].parents[2]}: move them there, or rerun with --overwrite or "
            "another --out (trained models and scores are cached, so that repeats little)")
    if is_main():
        print(f"done in {time.perf_counter() - start:.1f}s; `bench leaderboard` regenerates "
              "tables")
    return 0


def _keep_aside(store: Any, record: dict[str, Any], work_dir: str | None) -> tuple[Path,
                                                                                   Path]:
    """Write ``record`` under ``<work dir>/kept-results/<time>/`` instead of over an existing
    result: (the existing path, the kept one)."""
    from bench.core.assets import cache_dir
    from bench.core.results import ResultStore

    existing = store.path_for(record)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = ResultStore(Path(work_dir or cache_dir()) / "kept-results" / stamp)
    return existing, aside.write(record, overwrite=True)


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.core.compare import compare, compare_data
    from bench.core.results import ResultStore
    from bench.suite import SUITES

    metadata = SUITES.entry(args.suite).meta["metadata"]
    if args.preset is not None:
        _check_preset(args.preset, metadata)
    elif args.seeds is not None:  # the runs --seeds starts need one
        args.preset = "default"
    if args.power is not None and not (math.isfinite(args.power) and args.power > 0):
        raise UsageError(f"--power {args.power}: expected a positive difference, e.g. 0.01")
    baseline = args.baseline or metadata.baseline
    if args.seeds is None:  # these only shape the runs --seeds starts
        given = [f for f, v in (("--teacher", args.teacher), ("--student", args.student),
                                ("--judge", args.judge), ("--set", args.overrides),
                                ("--work-dir", args.work_dir)) if v]
        if given:
            raise UsageError(f"{given[0]} only applies with --seeds N (it is passed to the "
                             "runs --seeds starts); add --seeds or drop it")
    losses = _user_loss_methods(args.methods, metadata)
    args.methods = [losses.get(m, m) for m in args.methods]
    if args.seeds is not None:
        if args.work_dir is not None:  # checked before the first run starts
            from bench.core.io import writable_dir

            writable_dir(args.work_dir, "--work-dir")
        _run_missing_seeds(args, [baseline, *args.methods],
                           {name: spec for spec, name in losses.items()})
    records = ResultStore(args.results).load(args.suite)
    if args.seeds is not None:
        records = [r for r in records if r["seed"] < args.seeds]
    if args.preset is not None:
        presets = sorted({r["preset"] for r in records})
        records = [r for r in records if r["preset"] == args.preset]
        if not records and presets:
            raise UsageError(f"--preset {args.preset}: no results of suite {args.suite!r} "
                             f"at this preset under {args.results} (presets with results: "
                             f"{', '.join(presets)})")
    if not records:
        raise UsageError(f"no results for suite {args.suite!r} under {args.results}; "
                         f"run `bench run --suite {args.suite} ...` first")
    from bench.core.leaderboard.write import paired_model

    kwargs = dict(methods=args.methods, baseline=baseline, metric=args.metric,
                  dataset=args.dataset, models=args.models, test=args.test,
                  correction=args.correction, power_delta=args.power,
                  paired_model=paired_model(args.suite, SUITES.entry(args.suite).meta))
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
            if args.work_dir is not None:
                argv += ["--work-dir", str(args.work_dir)]
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
