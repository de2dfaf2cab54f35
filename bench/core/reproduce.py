"""``bench reproduce RESULT.json``: rerun the command a result records and compare metrics.

What is rerun
-------------
The ``bench run`` argv is rebuilt from the record, preferring the command line recorded in
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
rerun always gets ``--out SCRATCH`` (a new temporary folder unless one is given; never the
committed results folder, which is refused) and ``--work-dir SCRATCH/work`` (fresh, so
nothing is resumed from checkpoints or generations cached by earlier runs; pass
``work_dir`` to reuse a cache). ``--overwrite`` is added only when a given scratch folder
already holds the record. The new record is the one for the same suite, dataset, method,
model, seed and preset in the scratch folder (if the model name changed, the single record
that matches all else, with a warning).

Tolerances
----------
Metrics whose name has one of the words ``latency``, ``seconds``, ``s``, ``speedup``,
``throughput`` (words split on ``_``/``-``/``@``/``.``/``/``; so ``latency_s``,
``tokens_per_s``, ``speedup_sampling`` and ``wall_time_s`` are timing metrics but
``draft_fraction_sampling`` is not) are **timing metrics**: within tolerance when the
reproduced value is within a factor of :data:`TIMING_RATIO` (1.5) of the committed one,
either way (one quiet series measured the same teacher at 6.34 s and 8.35 s). Both values
must be positive unless they are equal.

Every other metric is compared with an absolute tolerance chosen from the two machines:

- the same CPU model string and the same torch thread count: **exact** (difference 0);
- the same CPU, a different thread count: :data:`THREADS_TOLERANCE` (0.001);
- a different (or unrecorded) CPU: :data:`CPU_TOLERANCE` (0.01; BoolQ nDCG@10 was 0.826 on
  an AMD EPYC and 0.816 on an Intel Xeon with AMX for the same command). Accelerators
  that both records name (not ``not checked``) and that differ count as a different CPU.

These are absolute for scores in [0, 1]; for a metric whose committed magnitude exceeds 1
(token counts, tau, KL) they scale with it, ``tol * |committed|``, i.e. become relative.
The thread count is ``torch_threads`` from the provenance, its hardware block, the config,
or a config sub-block (e.g. ``config.eval_protocol``); where either record lacks it, the
machines' ``cpu_count`` stands in (torch's default thread count follows the core count).
``tolerance=X`` replaces this choice with the plain absolute tolerance X (not scaled) for
every non-timing metric; timing metrics keep the ratio. Differences within a relative
``1e-9`` of a nonzero tolerance count as within (so 0.826 vs 0.816 passes 0.01).

A committed metric the rerun does not report is not within tolerance; a metric only the
rerun reports is listed and not judged. :attr:`ReproReport.ok` is true when the rerun
exited 0, its record was found and every committed metric is within tolerance. The CLI
exits 0 when ``ok``, 1 when not, and 2 on usage errors (an unreadable or invalid result
file, a bad tolerance, a scratch folder inside the committed results folder), which raise
:class:`bench.errors.UsageError` with one line.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.results import ResultStore
from bench.errors import UsageError

TIMING_RATIO = 1.5
CPU_TOLERANCE = 0.01
THREADS_TOLERANCE = 0.001
TIMING_WORDS = frozenset({"latency", "seconds", "s", "speedup", "throughput"})

# Options of `bench run` the rerun always replaces (value-taking) or drops (flags).
_REPLACED = ("out", "work_dir")
_DROPPED = ("overwrite",)

RunFn = Callable[[Sequence[str]], int]


def is_timing_metric(name: str) -> bool:
    """True for metrics measured in time or speed (compared by ratio, not difference)."""
    words = set(re.split(r"[_\-@./ ]+", name.lower()))
    return bool(words & TIMING_WORDS) or "tokens_per_s" in name or "throughput" in name


@dataclass(frozen=True)
class Tolerance:
    """How one metric is judged: ``kind`` is ``"ratio"`` or ``"abs"``."""

    kind: str
    value: float
    label: str

    def within(self, committed: float, reproduced: float) -> bool:
        if committed == reproduced:
            return True
        if self.kind == "ratio":
            if committed <= 0 or reproduced <= 0:
                return False
            return max(committed, reproduced) / min(committed, reproduced) <= self.value * (
                1 + 1e-12)
        if self.value == 0:
            return False
        return abs(reproduced - committed) <= self.value * (1 + 1e-9)


def tolerance_for(name: str, committed: float, *, same_cpu: bool, same_threads: bool,
                  tolerance: float | None = None, timing_ratio: float = TIMING_RATIO
                  ) -> Tolerance:
    """The tolerance of metric ``name`` (committed value ``committed``) under the rules in
    the module docstring."""
    if is_timing_metric(name):
        return Tolerance("ratio", timing_ratio, f"x{timing_ratio:g}")
    if tolerance is not None:
        return Tolerance("abs", float(tolerance), f"±{tolerance:g}")
    if same_cpu and same_threads:
        return Tolerance("abs", 0.0, "exact")
    base = THREADS_TOLERANCE if same_cpu else CPU_TOLERANCE
    value = base * max(1.0, abs(committed))
    return Tolerance("abs", value, f"±{value:.4g}")


@dataclass
class MetricRow:
    name: str
    committed: float | None
    reproduced: float | None
    tolerance: Tolerance | None
    within: bool | None  # None: a metric only the rerun reports (not judged)
    main: bool = False

    @property
    def difference(self) -> float | None:
        if self.committed is None or self.reproduced is None:
            return None
        return self.reproduced - self.committed

    @property
    def ratio(self) -> float | None:
        if self.committed in (None, 0) or self.reproduced is None:
            return None
        return self.reproduced / self.committed


@dataclass
class Machine:
    """One side of the comparison: hardware, torch threads, commit."""

    hardware: dict[str, Any]
    threads: int | None
    threads_source: str
    commit: str
    dirty: bool | None
    python: str | None = None
    packages: dict[str, str] = field(default_factory=dict)

    @property
    def cpu(self) -> str | None:
        cpu = self.hardware.get("cpu")
        return str(cpu) if cpu else None

    def hardware_line(self) -> str:
        hw = self.hardware
        threads = (f"torch threads {self.threads} ({self.threads_source})"
                   if self.threads is not None else "torch threads not recorded")
        parts = [self.cpu or "CPU unknown", f"{hw.get('cpu_count', '?')} CPUs", threads]
        if hw.get("memory_gib") is not None:
            parts.append(f"{hw['memory_gib']} GiB")
        parts.append(f"accelerator {hw.get('accelerator', '?')}")
        if hw.get("platform"):
            parts.append(str(hw["platform"]))
        return ", ".join(parts)

    def commit_line(self) -> str:
        state = {True: "dirty tree", False: "clean tree", None: "tree state unknown"}[self.dirty]
        return f"{self.commit} ({state})"


@dataclass
class ReproReport:
    record_path: Path
    record: dict[str, Any]
    argv: list[str]
    argv_source: str  # "recorded command" or "rebuilt from record fields"
    argv_notes: list[str]
    scratch: Path
    committed: Machine
    reproduced: Machine
    tolerance_basis: str
    rows: list[MetricRow]
    warnings: list[str]
    exit_code: int | None
    new_record_path: Path | None
    wall_s: float
    committed_wall_s: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        judged = [r for r in self.rows if r.committed is not None]
        return (self.error is None and self.exit_code == 0 and self.new_record_path is not None
                and bool(judged) and all(r.within for r in judged))

    @property
    def command(self) -> str:
        return shlex.join(["bench", *self.argv])

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (for a ``--json`` flag)."""
        return {
            "ok": self.ok, "result": str(self.record_path), "command": self.command,
            "argv": self.argv, "argv_source": self.argv_source, "argv_notes": self.argv_notes,
            "scratch": str(self.scratch), "exit_code": self.exit_code, "error": self.error,
            "new_record": str(self.new_record_path) if self.new_record_path else None,
            "hardware": {"committed": self.committed.hardware_line(),
                         "reproduced": self.reproduced.hardware_line()},
            "commit": {"committed": self.committed.commit, "committed_dirty":
                       self.committed.dirty, "current": self.reproduced.commit,
                       "current_dirty": self.reproduced.dirty},
            "tolerance_basis": self.tolerance_basis, "warnings": self.warnings,
            "metrics": [{"metric": r.name, "committed": r.committed,
                         "reproduced": r.reproduced, "difference": r.difference,
                         "tolerance": r.tolerance.label if r.tolerance else None,
                         "within": r.within} for r in self.rows],
            "wall_s": round(self.wall_s, 3), "committed_wall_s": self.committed_wall_s,
        }


# --------------------------------------------------------------------------- reading


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


def torch_threads(record: dict[str, Any]) -> tuple[int | None, str]:
    """``(thread count, where it was recorded)``, or ``(None, "not recorded")``."""
    prov, config = record["provenance"], record["config"]
    holders = [("provenance", prov), ("provenance.hardware", prov.get("hardware") or {}),
               ("config", config)]
    holders += [(f"config.{k}", v) for k, v in sorted(config.items()) if isinstance(v, dict)]
    for where, holder in holders:
        value = holder.get("torch_threads") if isinstance(holder, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value, where
    return None, "not recorded"


def _machine(record: dict[str, Any]) -> Machine:
    prov = record["provenance"]
    threads, source = torch_threads(record)
    return Machine(hardware=dict(prov.get("hardware") or {}), threads=threads,
                   threads_source=source, commit=str(prov.get("git_commit", "unknown")),
                   dirty=prov.get("git_dirty"), python=prov.get("python"),
                   packages=dict(prov.get("package_versions") or {}))


def _this_machine() -> Machine:
    from bench.core.results import git_state, hardware_info

    commit, dirty = git_state()
    return Machine(hardware=hardware_info(), threads=None, threads_source="not recorded",
                   commit=commit, dirty=dirty)


def _limit_of(record: dict[str, Any]) -> int | None:
    limit = record["config"].get("limit")
    if isinstance(limit, int) and not isinstance(limit, bool):
        return limit
    match = re.search(r"@limit(\d+)$", record["dataset"]["id"])
    return int(match.group(1)) if match else None


def _base_dataset_id(record: dict[str, Any]) -> str:
    return re.sub(r"@limit\d+$", "", record["dataset"]["id"])


# --------------------------------------------------------------------------- argv


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


# --------------------------------------------------------------------------- safety


def _committed_roots(path: Path, record: dict[str, Any]) -> list[Path]:
    """Results folders the rerun must never write into."""
    from bench.core.results import slug

    roots = [Path(__file__).resolve().parents[2] / "leaderboards" / "results",
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


# --------------------------------------------------------------------------- compare


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


def _basis(old: Machine, new: Machine) -> tuple[bool, bool, str]:
    same_cpu = old.cpu is not None and old.cpu == new.cpu
    if old.threads is not None and new.threads is not None:
        same_threads, what = old.threads == new.threads, f"torch threads {old.threads} vs " \
            f"{new.threads}"
    else:
        a, b = old.hardware.get("cpu_count"), new.hardware.get("cpu_count")
        same_threads = a is not None and a == b
        what = f"torch threads not recorded, cpu_count {a} vs {b}"
    cpu = "same CPU" if same_cpu else "different CPU" if old.cpu and new.cpu else "CPU unknown"
    basis = f"{cpu} ({old.cpu or '?'} vs {new.cpu or '?'}), {what}"
    acc = [m.hardware.get("accelerator") for m in (old, new)]
    if all(a not in (None, "not checked") for a in acc) and acc[0] != acc[1]:
        same_cpu = False  # e.g. a CPU run against a CUDA one: different numerics
        basis += f", accelerator {acc[0]} vs {acc[1]} (counted as different hardware)"
    return same_cpu, same_threads, basis


def compare_metrics(committed: dict[str, Any], new: dict[str, Any] | None, *, same_cpu: bool,
                    same_threads: bool, tolerance: float | None = None,
                    timing_ratio: float = TIMING_RATIO) -> list[MetricRow]:
    """One row per metric: the committed record's metrics in order, then any only the
    rerun reports."""
    rows = []
    got = new["metrics"] if new else {}
    for name, value in committed["metrics"].items():
        tol = tolerance_for(name, value, same_cpu=same_cpu, same_threads=same_threads,
                            tolerance=tolerance, timing_ratio=timing_ratio)
        reproduced = got.get(name)
        within = reproduced is not None and tol.within(value, reproduced)
        rows.append(MetricRow(name, value, reproduced, tol, within,
                              main=name == committed["main_score"]))
    for name, value in got.items():
        if name not in committed["metrics"]:
            rows.append(MetricRow(name, None, value, None, None))
    return rows


# --------------------------------------------------------------------------- reproduce


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

    committed = _machine(record)
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
    reproduced = _machine(new) if new else _this_machine()
    same_cpu, same_threads, basis = _basis(committed, reproduced)
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


# --------------------------------------------------------------------------- report


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _diff(row: MetricRow) -> str:
    diff = row.difference
    if diff is None:
        return "-"
    text = f"{diff:+.3g}"
    if row.tolerance is not None and row.tolerance.kind == "ratio" and row.ratio is not None:
        text += f" (x{row.ratio:.3g})"
    return text


def format_report(report: ReproReport) -> str:
    """The report as plain text: what ran, both machines, commits, warnings, a per-metric
    table (committed, reproduced, difference, tolerance, within) and the verdict."""
    r = report.record
    lines = [
        f"reproduce {report.record_path}",
        f"  suite {r['suite']}, dataset {r['dataset']['id']}, method {r['method']}, model "
        f"{r['model']}, seed {r['seed']}, preset {r['preset']}",
        f"command ({report.argv_source}):",
        f"  {report.command}",
        *(f"  note: {n}" for n in report.argv_notes),
        f"new record: {report.new_record_path or '(none)'}",
        "hardware:",
        f"  committed:  {report.committed.hardware_line()}",
        f"  reproduced: {report.reproduced.hardware_line()}",
        "commit:",
        f"  committed:  {report.committed.commit_line()}",
        f"  current:    {report.reproduced.commit_line()}",
    ]
    if report.warnings:
        lines += ["warnings:", *(f"  ! {w}" for w in report.warnings)]
    lines.append(f"tolerance basis: {report.tolerance_basis}")
    header = ("metric", "committed", "reproduced", "difference", "tolerance", "within")
    table = [header]
    for row in report.rows:
        within = "-" if row.within is None else "yes" if row.within else "NO"
        table.append((row.name + (" *" if row.main else ""), _num(row.committed),
                      _num(row.reproduced), _diff(row),
                      row.tolerance.label if row.tolerance else "-", within))
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    for i, cells in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("(* main score; timing metrics are judged by ratio, the rest by difference)")
    committed_wall = (f"{report.committed_wall_s:.1f} s" if report.committed_wall_s is not None
                      else "not recorded")
    lines.append(f"wall time: committed run {committed_wall}, reproduction "
                 f"{report.wall_s:.1f} s")
    judged = [row for row in report.rows if row.committed is not None]
    bad = [row.name for row in judged if not row.within]
    if report.error:
        lines.append(f"error: {report.error}")
    if report.ok:
        lines.append(f"REPRODUCED: all {len(judged)} metrics within tolerance")
    else:
        lines.append(f"NOT REPRODUCED: {len(bad)} of {len(judged)} metrics outside tolerance"
                     + (f" ({', '.join(bad)})" if bad and not report.error else ""))
    return "\n".join(lines)
