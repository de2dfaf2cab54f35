"""``bench reproduce RESULT.json``: rerun the command a result records and compare metrics.

The modules:

* :mod:`~bench.core.reproduce.command`: the ``bench run`` argv that reproduces a record
  (the recorded command where it matches the record, else rebuilt from its fields), always
  writing into a scratch folder;
* :mod:`~bench.core.reproduce.rerun`: :func:`reproduce`, which checks the record and the
  scratch folder, runs that argv and finds the record it wrote;
* :mod:`~bench.core.reproduce.tolerance`: the two machines and the tolerance each metric is
  judged with (a ratio for timing metrics; exact, 0.001 or 0.01 by CPU and thread count for
  the rest);
* :mod:`~bench.core.reproduce.report`: :class:`ReproReport` and :func:`format_report`.

:attr:`ReproReport.ok` is true when the rerun exited 0, its record was found and every
committed metric is within tolerance (a committed metric the rerun does not report is not;
a metric only the rerun reports is listed and not judged). The CLI exits 0 when ``ok``, 1
when not, and 2 on usage errors (an unreadable or invalid result file, a bad tolerance, a
scratch folder inside the committed results folder), which raise
:class:`bench.errors.UsageError` with one line.
"""

from __future__ import annotations

from bench.core.reproduce.command import rebuild_argv
from bench.core.reproduce.report import ReproReport, format_report
from bench.core.reproduce.rerun import RunFn, read_result, reproduce
from bench.core.reproduce.tolerance import (
    CPU_TOLERANCE,
    THREADS_TOLERANCE,
    TIMING_RATIO,
    TIMING_WORDS,
    Machine,
    MetricRow,
    Tolerance,
    compare_metrics,
    is_timing_metric,
    machine_of,
    this_machine,
    tolerance_basis,
    tolerance_for,
    torch_threads,
)

__all__ = [
    "CPU_TOLERANCE", "THREADS_TOLERANCE", "TIMING_RATIO", "TIMING_WORDS", "Machine",
    "MetricRow", "ReproReport", "RunFn", "Tolerance", "compare_metrics", "format_report",
    "is_timing_metric", "machine_of", "read_result", "rebuild_argv", "reproduce",
    "this_machine", "tolerance_basis", "tolerance_for", "torch_threads",
]
