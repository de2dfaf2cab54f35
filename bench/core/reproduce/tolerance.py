"""Tolerances: how a reproduced metric is judged against the committed one, chosen from
the two machines that produced them (:class:`Machine`, :func:`tolerance_basis`).

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
rerun reports is listed and not judged (:func:`compare_metrics`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TIMING_RATIO = 1.5
CPU_TOLERANCE = 0.01
THREADS_TOLERANCE = 0.001
TIMING_WORDS = frozenset({"latency", "seconds", "s", "speedup", "throughput"})


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


def machine_of(record: dict[str, Any]) -> Machine:
    """The machine that produced ``record``, from its provenance."""
    prov = record["provenance"]
    threads, source = torch_threads(record)
    return Machine(hardware=dict(prov.get("hardware") or {}), threads=threads,
                   threads_source=source, commit=str(prov.get("git_commit", "unknown")),
                   dirty=prov.get("git_dirty"), python=prov.get("python"),
                   packages=dict(prov.get("package_versions") or {}))


def this_machine() -> Machine:
    """This machine and checkout (no thread count: nothing ran); stands in for a rerun
    that wrote no record."""
    from bench.core.results import git_state, hardware_info

    commit, dirty = git_state()
    return Machine(hardware=hardware_info(), threads=None, threads_source="not recorded",
                   commit=commit, dirty=dirty)


def tolerance_basis(old: Machine, new: Machine) -> tuple[bool, bool, str]:
    """``(same CPU, same thread count, the basis in words)`` of two machines, under the
    rules in the module docstring."""
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
