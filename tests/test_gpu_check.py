"""scripts/gpu_check.py on CPU: the prepared GPU check runs clean, and fails in one line.

The check is meant for a short window on a lent GPU (docs/gpu-check.md); running it here
with ``--device cpu --quick`` keeps it working between those windows: every registered
loss, the trainer, the TRG loss on tiny ViTs, speculative decoding, the EAGLE/FSPAD heads
and both DeAR stages, on tiny random models, with lm_eval/ranx/pyserini/gguf hidden.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"
FIXED = ["trainer", "vision_trg", "specdec", "eagle_step", "fspad_step", "dear_stage1_step",
         "dear_stage2_step"]


def _run(*args: str, fail: str | None = None, timeout: int = 300
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_FAIL"}
    if fail is not None:
        env["GPU_CHECK_FAIL"] = fail
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@functools.cache
def _components() -> tuple[str, ...]:
    listed = _run("--list")
    assert listed.returncode == 0, listed.stderr
    return tuple(listed.stdout.split())


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """component -> its cells, from the printed table (cells are 2+ spaces apart)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("component"))
    rows = {}
    for line in lines[start + 2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 7 or cells[0].startswith(("FAILED", "all")):
            break
        rows[cells[0]] = cells
    return rows


def test_components_cover_every_registered_loss():
    from methods.losses import LOSSES

    names = _components()
    assert list(names) == [f"loss:{n}" for n in LOSSES.names()] + FIXED


def test_quick_cpu_run_passes_every_row():
    names = _components()
    done = _run("--device", "cpu", "--quick")
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    rows = _table_rows(done.stdout)
    assert list(rows) == list(names)
    for name, cells in rows.items():
        assert cells[-1] == "ok" and cells[4] == "cpu", (name, cells)
    assert f"all {len(names)} checks passed" in done.stdout
    assert "FAILED" not in done.stdout


def test_forced_failure_stops_with_one_line_reason():
    first, second, third = _components()[:3]
    done = _run("--device", "cpu", "--only", f"{first},{second},{third}", fail=second)
    assert done.returncode != 0
    rows = _table_rows(done.stdout)
    assert list(rows) == [first, second]  # the table so far; the third row never ran
    assert rows[first][-1] == "ok" and rows[second][-1] == "FAILED"
    last = done.stdout.strip().splitlines()[-1]
    assert last == f"FAILED {second}: forced by GPU_CHECK_FAIL"
    assert "checks passed" not in done.stdout


def test_keep_going_runs_every_selected_row_then_fails():
    first, second = _components()[:2]
    done = _run("--device", "cpu", "--only", f"{first},{second}", "--keep-going",
                fail=first)
    assert done.returncode == 1
    assert list(_table_rows(done.stdout)) == [first, second]
    assert done.stdout.strip().splitlines()[-1] == f"FAILED {first}: forced by GPU_CHECK_FAIL"


def test_unknown_component_is_a_usage_error():
    done = _run("--only", "no-such-row")
    assert done.returncode == 2 and "unknown component" in done.stderr
