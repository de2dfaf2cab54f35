"""The rerun itself (:func:`reproduce`): read and check the committed record, run the
rebuilt command (:mod:`~bench.core.reproduce.command`) into a scratch folder, find the
record it wrote and compare its metrics (:mod:`~bench.core.reproduce.tolerance`).

The scratch folder is a new temporary folder unless one is given, and never the committed
results folder (refused, as is any argument of the rerun that names it); the rerun's
``--work-dir`` is ``SCRATCH/work`` (fresh, so nothing is resumed from checkpoints or
generations cached by earlier runs; pass ``work_dir`` to reuse a cache). ``--overwrite`` is
added only when a given scratch folder already holds the record. The new record is the one
for the same suite, dataset, method, model, seed and preset in the scratch folder (if the
model name changed, the single record that matches all else, with a warning).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.core.reproduce.command import rebuild_argv
from bench.core.reproduce.report import ReproReport
from bench.core.reproduce.tolerance import (
    TIMING_RATIO,
    compare_metrics,
    machine_of,
    this_machine,
    tolerance_basis,
)
from bench.core.results import ResultStore
from bench.errors import UsageError

RunFn = Callable[[Sequence[str]], int]


def read_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The schema-checked record at ``path``, or a one-line :class:`UsageError`."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such result file; pass a result JSON (e.g. one under "
                         "leaderboards/results/<suite>/<dataset>/)")
    if not path.is_file():
        raise UsageError(f"{path}: not a file; pass one result JSON")
    try:
        return ResultStore.read(path)
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file; pass a result JSON") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None


def _committed_roots(path: Path, record: dict[str, Any]) -> list[Path]:
    """Results folders the rerun must never write into."""
    from bench.core.results import slug

    repo = Path(__file__).resolve().parents[3]  # bench/core/reproduce/rerun.py
    roots = [repo / "leaderboards" / "results",
             Path(os.environ.get("DISTILLBENCH_RESULTS", "leaderboards/results")).resolve()]
    resolved = path.resolve()
    if len(resolved.parents) >= 3 and resolved.parents[1].name == slug(record["suite"]):
        roots.append(resolved.parents[2])  # root/<suite>/<dataset>/<file>
    return list(dict.fromkeys(roots))


def _inside(path: Path, root: Path) -> bool:
    path = path.resolve()
    return path == root or root in path.parents


def _check_argv(argv: Sequence[str], roots: Sequence[Path]) -> None:
    """Refuse an argv that names a committed results folder anywhere."""
    for token in argv:
        value = token.partition("=")[2] if token.startswith("--") else token
        if not value or value.startswith("-"):
            continue
        for root in roots:
            if _inside(Path(value), root):
                raise UsageError(f"the rerun's argument {token!r} names the committed "
                                 f"results folder {root}; refusing to write there")


def _find_new_record(scratch: Path, committed: dict[str, Any]
                     ) -> tuple[Path | None, dict[str, Any] | None, str | None]:
    """The rerun's record for the committed one, and a warning if only the model differs."""
    store = ResultStore(scratch)
    expected = store.path_for(committed)
    if expected.is_file():
        return expected, ResultStore.read(expected), None
    key = (committed["suite"], committed["dataset"]["id"], committed["method"],
           committed["seed"], committed["preset"])
    matches = [(p, r) for p, r in store.items(committed["suite"])
               if (r["suite"], r["dataset"]["id"], r["method"], r["seed"], r["preset"]) == key]
    if len(matches) == 1:
        path, record = matches[0]
        return path, record, (f"the rerun's model is {record['model']!r}, the committed "
                              f"one {committed['model']!r}")
    return None, None, None


def _compare_environment(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Warnings on what else differs between the committed record and the rerun's: data,
    suite version, packages, python, config."""
    warnings = []
    if old["dataset"]["checksum"] != new["dataset"]["checksum"]:
        warnings.append(f"dataset checksum differs ({old['dataset']['checksum']} -> "
                        f"{new['dataset']['checksum']}): the data changed")
    if old["dataset"].get("num_items") != new["dataset"].get("num_items"):
        warnings.append(f"dataset has {new['dataset'].get('num_items')} items, committed "
                        f"{old['dataset'].get('num_items')}")
    if old["suite_version"] != new["suite_version"]:
        warnings.append(f"suite version {old['suite_version']} -> {new['suite_version']}")
    a, b = old["provenance"].get("package_versions", {}), new["provenance"].get(
        "package_versions", {})
    changed = [f"{k} {a.get(k, '-')} -> {b.get(k, '-')}" for k in sorted({*a, *b})
               if a.get(k) != b.get(k)]
    if changed:
        warnings.append("package versions differ: " + ", ".join(changed))
    if old["provenance"].get("python") != new["provenance"].get("python"):
        warnings.append(f"python {old['provenance'].get('python')} -> "
                        f"{new['provenance'].get('python')}")
    scalar = (str, int, float, bool, type(None))
    absent = object()

    def shown(value: Any) -> str:
        return "(absent)" if value is absent else repr(value)

    diffs = []
    for k in sorted({*old["config"], *new["config"]}):
        a, b = old["config"].get(k, absent), new["config"].get(k, absent)
        if k.endswith(("_dir", "_path")) or k == "torch_threads" or a == b:
            continue
        if (a is absent or isinstance(a, scalar)) and (b is absent or isinstance(b, scalar)):
            diffs.append(f"{k}={shown(a)} -> {shown(b)}")
    if diffs:
        warnings.append("config differs: " + ", ".join(diffs))
    return warnings


def _default_run(argv: Sequence[str]) -> int:
    from bench.cli import main

    return main(list(argv))


def reproduce(path: str | os.PathLike[str], *, tolerance: float | None = None,
              scratch: str | os.PathLike[str] | None = None, run: RunFn | None = None,
              work_dir: str | os.PathLike[str] | None = None,
              timing_ratio: float = TIMING_RATIO) -> ReproReport:
    """Rerun the command recorded in the result at ``path`` into ``scratch`` (a new temp
    folder by default) and compare every metric with the committed value.

    ``run`` runs a ``bench`` argv (without the program name) and returns its exit code; it
    defaults to :func:`bench.cli.main`. ``work_dir`` defaults to ``SCRATCH/work`` (a fresh
    cache: nothing is resumed). Raises :class:`UsageError` for an unreadable or invalid
    result file, a negative tolerance or a scratch folder inside a committed results folder.
    """
    path = Path(path)
    record = read_result(path)
    if tolerance is not None and (not math.isfinite(tolerance) or tolerance < 0):
        raise UsageError(f"--tolerance {tolerance}: must be a finite number >= 0")
    if not (math.isfinite(timing_ratio) and timing_ratio >= 1):
        raise UsageError(f"timing ratio {timing_ratio}: must be a finite number >= 1")
    roots = _committed_roots(path, record)
    if scratch is None:
        scratch = Path(tempfile.mkdtemp(prefix="bench-reproduce-"))
    scratch = Path(scratch)
    for candidate, what in ((scratch, "scratch folder"),
                            *(((Path(work_dir), "--work-dir"),) if work_dir else ())):
        for root in roots:
            if _inside(candidate, root):
                raise UsageError(f"{what} {candidate} is inside the committed results folder "
                                 f"{root}; pass a folder outside it")
    expected = ResultStore(scratch).path_for(record)
    existed = expected.stat().st_mtime_ns if expected.exists() else None
    argv, source, notes = rebuild_argv(record, scratch, work_dir, overwrite=existed is not None)
    _check_argv(argv, roots)

    committed = machine_of(record)
    start = time.perf_counter()
    error: str | None = None
    try:
        code = (run or _default_run)(argv)
    except UsageError as exc:  # a run callable that raises instead of returning 2
        code, error = exc.exit_code, f"the rerun failed: {exc}"
    wall = time.perf_counter() - start
    new_path = new = None
    warnings: list[str] = []
    if code != 0 and error is None:
        error = f"the rerun exited with status {code}"
    if error is None:
        try:
            new_path, new, warn = _find_new_record(scratch, record)
        except UsageError as exc:
            error = f"the rerun's results are unreadable: {exc}"
        else:
            if warn:
                warnings.append(warn)
            if new_path is None:
                error = (f"the rerun wrote no record for {record['suite']}/"
                         f"{record['dataset']['id']}/{record['method']}/{record['model']}/"
                         f"seed {record['seed']}/{record['preset']} in {scratch}")
            elif existed is not None and new_path == expected and \
                    expected.stat().st_mtime_ns == existed:
                error = f"the rerun did not rewrite {expected}"
                new_path = new = None
    reproduced = machine_of(new) if new else this_machine()
    same_cpu, same_threads, basis = tolerance_basis(committed, reproduced)
    if tolerance is not None:
        basis += f"; tolerance {tolerance:g} given"
    rows = compare_metrics(record, new, same_cpu=same_cpu, same_threads=same_threads,
                           tolerance=tolerance, timing_ratio=timing_ratio)

    if committed.commit != reproduced.commit:
        warnings.insert(0, f"current HEAD {reproduced.commit[:12]} differs from the recorded "
                        f"commit {committed.commit[:12]}: code changes since may explain "
                        "differences")
    if committed.dirty:
        warnings.insert(0, "the committed result was produced from a dirty tree (uncommitted "
                        f"edits on top of {committed.commit[:12]}): its exact code is unknown")
    if reproduced.dirty:
        warnings.append("this checkout has uncommitted changes")
    if new:
        warnings += _compare_environment(record, new)
    return ReproReport(
        record_path=path, record=record, argv=argv, argv_source=source, argv_notes=notes,
        scratch=scratch, committed=committed, reproduced=reproduced, tolerance_basis=basis,
        rows=rows, warnings=warnings, exit_code=code, new_record_path=new_path, wall_s=wall,
        committed_wall_s=record["provenance"].get("wall_time_s"), error=error)
