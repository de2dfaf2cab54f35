"""The outcome of ``bench reproduce`` (:class:`ReproReport`) and its plain-text report
(:func:`format_report`): what ran, both machines, commits, warnings, a per-metric table and
the verdict."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.reproduce.tolerance import Machine, MetricRow


@dataclass
class ReproReport:
    """What :func:`~bench.core.reproduce.rerun.reproduce` ran and found; ``ok`` when the rerun
    exited 0, its record was found and every committed metric is within tolerance."""

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
