"""Result records: one schema-checked JSON file per (suite, dataset, method, model, seed).

A record carries everything needed to trust and regenerate a leaderboard row: metrics,
per-item scores (for paired significance tests), the config and preset, which dataset it ran
on (id, checksum, and whether it is an offline stand-in for a real benchmark), the suite
version, provenance (package versions, git commit, hardware, wall time, date) and, in
records written since it was added, the row's ``cost`` (:mod:`bench.core.cost`: parameters
of the evaluated model, milliseconds per item on that hardware, and what an item is).

Writes are atomic (temp file in the same directory, fsync, then a no-clobber hard link or
``os.replace``), so a crash never leaves a partial file, and an existing result is never
replaced unless the caller asks for it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.core.device import cuda_available
from bench.core.io import atomic_write_text
from bench.errors import SchemaError

SCHEMA_VERSION = 1
_NAME = {"type": "string", "minLength": 1}
_NUMBER = {"type": "number"}
# Optional (older records lack it): the evaluated model's size and time per item.
_COST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["parameters", "ms_per_item", "per"],
    "properties": {
        "parameters": {"type": ["integer", "null"], "minimum": 0},
        "ms_per_item": {"type": ["number", "null"], "minimum": 0},
        # what one item is and under which conditions (tokens, batch, dtype, how timed)
        "per": _NAME,
    },
}

RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema_version", "suite", "suite_version", "dataset", "method", "model", "seed",
        "preset", "main_score", "metrics", "per_item", "config", "implementation", "notes",
        "provenance",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "suite": _NAME,
        "suite_version": _NAME,
        "dataset": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "checksum", "split", "offline_stand_in"],
            "properties": {
                "id": _NAME,
                "checksum": {"type": "string", "pattern": "^(sha256:[0-9a-f]{64}|unknown)$"},
                "split": _NAME,
                # True when the data is the packaged offline substitute, never the real benchmark.
                "offline_stand_in": {"type": "boolean"},
                "stands_in_for": {"type": ["string", "null"]},
                "num_items": {"type": "integer", "minimum": 0},
            },
        },
        "method": _NAME,
        "model": _NAME,
        "seed": {"type": "integer"},
        "preset": _NAME,
        "main_score": _NAME,
        "metrics": {"type": "object", "minProperties": 1, "additionalProperties": _NUMBER},
        # metric -> item id -> score; may be empty when a suite has no per-item scores.
        "per_item": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": _NUMBER},
        },
        "config": {"type": "object"},
        # "partial" rows are flagged in every leaderboard; notes say what is missing.
        "implementation": {"enum": ["full", "partial"]},
        "notes": {"type": "array", "items": {"type": "string"}},
        "cost": _COST,
        "provenance": {
            "type": "object",
            "required": ["git_commit", "package_versions", "hardware", "wall_time_s", "date"],
            "properties": {
                "git_commit": {"type": "string"},
                "git_dirty": {"type": "boolean"},
                "runtime": {"type": "object", "properties": {
                    "device": {"type": "string"}, "dtype": {"type": "string"},
                    "processes": {"type": "integer", "minimum": 2}}},
                "package_versions": {"type": "object", "additionalProperties": {"type": "string"}},
                "hardware": {"type": "object"},
                "wall_time_s": {"type": "number", "minimum": 0},
                "date": {"type": "string", "format": "date-time"},
                "command": {"type": "string"},
                "python": {"type": "string"},
            },
        },
    },
}

TRACKED_PACKAGES = (
    "distillbench", "torch", "transformers", "peft", "accelerate", "pyserini", "ir-datasets",
    "lm-eval", "ranx", "datasets", "numpy",
)


def validate(record: dict[str, Any], source: str = "result record") -> None:
    """Raise :class:`SchemaError` naming ``source`` and the first offending field."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(RESULT_SCHEMA)
    errors = sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        field = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise SchemaError(f"{source}: field '{field}': {err.message}")
    main = record["main_score"]
    if main not in record["metrics"]:
        raise SchemaError(f"{source}: field 'main_score': {main!r} is not among the metrics")
    for name, value in _iter_numbers(record):
        if not math.isfinite(value):
            raise SchemaError(f"{source}: field '{name}': {value} is not a finite number")


def _iter_numbers(record: dict[str, Any]) -> Iterable[tuple[str, float]]:
    for k, v in record["metrics"].items():
        yield f"metrics/{k}", float(v)
    for metric, items in record["per_item"].items():
        for item, v in items.items():
            yield f"per_item/{metric}/{item}", float(v)
    ms = record.get("cost", {}).get("ms_per_item")
    if ms is not None:
        yield "cost/ms_per_item", float(ms)


def collect_provenance(wall_time_s: float, command: str | None = None) -> dict[str, Any]:
    """Package versions, git commit, hardware and date, without importing heavy packages."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    commit, dirty = git_state()
    from bench.core.device import installed

    policy = installed()  # set by `bench run --device`; the device the run actually used
    runtime = {"runtime": policy.describe()} if policy is not None else {}
    from bench.core.distributed import launched_processes, process_count

    if launched_processes() > 1:  # one process needs no field: older records stay valid
        runtime.setdefault("runtime", {})["processes"] = process_count()
    return {
        **runtime,
        "git_commit": commit,
        "git_dirty": dirty,
        "package_versions": versions,
        "hardware": hardware_info(),
        "wall_time_s": round(float(wall_time_s), 3),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": command if command is not None else " ".join(["bench", *sys.argv[1:]]),
        "python": platform.python_version(),
    }


@functools.cache
def git_state() -> tuple[str, bool]:
    """(HEAD, dirty) of the checkout, read once per process: ``bench run`` reads it when it
    starts, so a record names the code the run imported, not edits made while it ran.
    ``leaderboards/`` (result records and the pages made from them) is output, not code:
    a run that rewrote a committed record leaves the next run of the same commit clean."""
    repo = Path(__file__).resolve().parents[2]  # bench/core/results.py -> the checkout
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":(exclude)leaderboards"],
            cwd=repo, capture_output=True, text=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit or "unknown", bool(status.strip())


def git_state_at_start() -> None:
    """Pin the git state a run's records will carry to the moment the run starts."""
    git_state()


def hardware_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    torch = sys.modules.get("torch")  # report accelerators only if torch is already loaded
    if torch is not None and cuda_available():
        info["accelerator"] = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    else:
        info.setdefault("accelerator", "none" if torch is not None else "not checked")
    return info


def file_checksum(paths: Iterable[str | os.PathLike[str]]) -> str:
    """``sha256:<hex>`` over the bytes of the files, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"
    if slug != text:  # keep distinct names distinct after sanitising
        slug = f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return slug


class ResultStore:
    """Results under ``root/<suite>/<dataset>/<method>__<model>__seed<seed>[__<preset>].json``
    (the preset only when it is not ``default``, so a ``cpu-long`` or ``smoke`` run of the
    same method and model sits beside the default result instead of colliding with it)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, record: dict[str, Any]) -> Path:
        preset = record.get("preset", "default")
        name = (f"{slug(record['method'])}__{slug(record['model'])}__seed{record['seed']}"
                + ("" if preset == "default" else f"__{slug(preset)}") + ".json")
        return self.root / slug(record["suite"]) / slug(record["dataset"]["id"]) / name

    def write(self, record: dict[str, Any], *, overwrite: bool = False) -> Path:
        validate(record)
        path = self.path_for(record)
        text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
        atomic_write_text(path, text, overwrite=overwrite)
        return path

    def exists(self, record: dict[str, Any]) -> bool:
        return self.path_for(record).exists()

    @staticmethod
    def read(path: str | os.PathLike[str]) -> dict[str, Any]:
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
        if not isinstance(record, dict):
            raise SchemaError(f"{path}: field '(top level)': expected a JSON object")
        validate(record, source=str(path))
        return record

    def load(self, suite: str | None = None) -> list[dict[str, Any]]:
        """All records (of one suite), in a deterministic order."""
        return [record for _, record in self.items(suite)]

    def items(self, suite: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
        """``(path, record)`` of every record (of one suite), in a deterministic order.

        Each record is schema-checked, must sit in the folder of its own suite
        (``root/<suite>/...``: a file copied into another suite's folder would land in that
        suite's table), and no two files may hold the same result (suite, dataset, method,
        preset, model and seed: a copied file would be counted twice). Either raises a
        one-line :class:`SchemaError` naming the file(s).
        """
        base = self.root / slug(suite) if suite else self.root
        if not base.is_dir():
            return []
        found: list[tuple[Path, dict[str, Any]]] = []
        seen: dict[tuple[Any, ...], Path] = {}
        for path in sorted(base.rglob("*.json")):
            if path.name.startswith("."):
                continue
            record = self.read(path)
            self._check_folder(path, record)
            key = (record["suite"], record["dataset"]["id"], record["method"],
                   record.get("preset", "default"), record["model"], record["seed"])
            if key in seen:
                raise SchemaError(
                    f"{path}: duplicate of {seen[key]}: both hold suite {key[0]!r}, dataset "
                    f"{key[1]!r}, method {key[2]!r}, preset {key[3]!r}, model {key[4]!r}, "
                    f"seed {key[5]}; delete one of the two files")
            seen[key] = path
            found.append((path, record))
        return found

    def _check_folder(self, path: Path, record: dict[str, Any]) -> None:
        """A record's ``suite`` must name the folder it sits in (``root/<slug(suite)>/``)."""
        parts = path.relative_to(self.root).parts
        folder = parts[0] if len(parts) > 1 else None
        if folder != slug(record["suite"]):
            where = f"folder {folder!r}" if folder else f"no suite folder of {self.root}"
            raise SchemaError(
                f"{path}: field 'suite' is {record['suite']!r} but the file is in {where}; "
                f"move it to {self.path_for(record).parent}/ or fix the field (the results "
                "folder holds one folder per suite)")


def new_record(
    *,
    suite: str,
    suite_version: str,
    dataset: dict[str, Any],
    method: str,
    model: str,
    seed: int,
    preset: str,
    main_score: str,
    metrics: dict[str, float],
    per_item: dict[str, dict[str, float]] | None = None,
    config: dict[str, Any] | None = None,
    implementation: str = "full",
    notes: list[str] | None = None,
    wall_time_s: float = 0.0,
    command: str | None = None,
    cost: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble and validate a record, filling in provenance; ``cost`` (from
    :func:`bench.core.cost.cost_entry`) is left out of the record when None."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "suite": suite,
        "suite_version": str(suite_version),
        "dataset": dataset,
        "method": method,
        "model": model,
        "seed": int(seed),
        "preset": preset,
        "main_score": main_score,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "per_item": {m: {str(i): float(v) for i, v in items.items()}
                     for m, items in (per_item or {}).items()},
        "config": config or {},
        "implementation": implementation,
        "notes": list(notes or []),
        "provenance": collect_provenance(wall_time_s, command),
    }
    if cost is not None:
        record["cost"] = dict(cost)
    validate(record)
    return record
