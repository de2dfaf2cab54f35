"""``bench run`` under ``accelerate launch`` with two CPU processes gives one process's results.

Two training suites at ``--preset smoke`` with tiny settings: ``instruct`` (``fkl`` on the
tiny chat Llama) and ``imagenet-lt`` (``ce`` without random augmentation: each process
draws its shifts and flips from its own RNG, so with augmentation two processes train on
other, equally random, images than one; the same holds for the teacher that ``kd`` trains
first, which always augments). Each runs
once as one process and once as two gloo processes
(``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m bench run``).
The trainer's batch is global (each process trains on half of it), generation and image
prediction are spread over the processes in the same batches and gathered
(:func:`bench.core.distributed.map_sharded`), and only the main process writes caches and
result files. So:

- the two-process run writes exactly the files the one-process run writes (one record per
  dataset, no temporary or duplicate file) and records ``processes: 2``;
- its training losses equal one process's within 1e-5 relative or 1e-7 absolute (float32
  on CPU: the processes' gradients are summed in another order; see
  ``test_multiprocess.py``);
- its per-item scores equal one process's exactly (the same batches, and weights that
  differ by ~1e-7 change no greedy token or arg-max class here).

~2 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 400
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-7  # seen: 3e-8 absolute on fkl losses of ~3e-4

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bench(processes: int, argv: list[str]) -> str:
    if processes == 1:
        cmd = [sys.executable, "-m", "bench", *argv]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
               "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "bench", *argv]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "DISTILLBENCH_PROGRESS": "0",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
               [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} timed out:\n{log[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log[-4000:]}"
    return log


def _records(out: Path) -> dict[str, dict]:
    return {str(f.relative_to(out)): json.loads(f.read_text()) for f in out.rglob("*.json")}


def _losses(work: Path, pattern: str) -> dict[str, list[float]]:
    """Logged losses per training folder, named without its hash (a student's folder
    hashes its teacher's weights, which differ in the last bits between the launches)."""
    return {str(f.parent.relative_to(work)).rsplit("-", 1)[0]: [
        json.loads(line)["loss"] for line in f.read_text().splitlines()]
        for f in sorted(work.rglob(pattern))}


def _compare(tmp_path: Path, argv: list[str], metrics_glob: str) -> dict[str, dict]:
    runs = {}
    for processes in (1, 2):
        out, work = tmp_path / f"out{processes}", tmp_path / f"work{processes}"
        log = _bench(processes, ["run", *argv, "--out", str(out), "--work-dir", str(work)])
        runs[processes] = {"records": _records(out), "losses": _losses(work, metrics_glob),
                           "log": log, "files": sorted(p.name for p in out.rglob("*"))}
    one, two = runs[1], runs[2]
    assert two["files"] == one["files"], "the same files, written once"
    assert one["records"].keys() == two["records"].keys() and one["records"]
    assert two["log"].count("done in") == 1, "one process reports"
    assert one["losses"].keys() == two["losses"].keys() and one["losses"]
    for name, losses in one["losses"].items():
        assert two["losses"][name] == pytest.approx(losses, rel=LOSS_RTOL, abs=LOSS_ATOL), name
    for name, record in one["records"].items():
        other = two["records"][name]
        assert "processes" not in record["provenance"].get("runtime", {})
        assert other["provenance"]["runtime"]["processes"] == 2
        assert other["per_item"] == record["per_item"], name
        assert other["metrics"] == record["metrics"], name
    return runs


def test_instruct_fkl_two_processes_equal_one(tiny_chat_model_dir, tmp_path):
    argv = ["--method", "fkl", "--suite", "instruct", "--preset", "smoke",
            "--teacher", str(tiny_chat_model_dir), "--limit", "5"]
    for item in ("max_new_tokens=4", "train_per_task=8", "student_layers=1",
                 "mixed_precision=no", "gen_batch_size=2", "max_context_tokens=16",
                 "max_steps=4", "batch_size=4"):
        argv += ["--set", item]
    runs = _compare(tmp_path, argv, "fkl-*/metrics.jsonl")
    assert len(runs[1]["records"]) == 3  # one per test set


def test_imagenet_lt_ce_two_processes_equal_one(tmp_path):
    argv = ["--method", "ce", "--suite", "imagenet-lt", "--preset", "smoke", "--limit", "10",
            # 154 training images in 7 global batches of 22: no short last batch (which
            # accelerate would fill with repeated images to split it evenly)
            "--set", "n_max=64", "--set", "batch_size=22", "--set", "eval_batch_size=16",
            # Random shifts and flips are drawn from each process's own RNG, so with them
            # two processes train on other (equally random) augmentations than one.
            "--set", "max_shift=0", "--set", "flip=false"]
    runs = _compare(tmp_path, argv, "metrics.jsonl")
    assert [len(losses) for losses in runs[1]["losses"].values()] == [7]


def test_a_launch_whose_processes_did_not_join_is_refused(tmp_path, monkeypatch, capsys):
    """Without ``ACCELERATE_USE_CPU`` a GPU-less machine starts independent processes: each
    would train alone and write the same files, so the run stops before any work."""
    from bench import cli
    from bench.core import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "_state", lambda: type("S", (), {"num_processes": 1})())
    assert cli.main(["run", "--method", "bm25", "--suite", "beir",
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "WORLD_SIZE=2" in err[0] and "ACCELERATE_USE_CPU=1" in err[0]
    assert not (tmp_path / "out").exists()


def test_map_sharded_spreads_chunks_round_robin_and_keeps_their_order(monkeypatch):
    from bench.core import distributed

    calls = []

    def fn(chunk):
        calls.append(chunk)
        return chunk * 10

    assert list(distributed.map_sharded([1, 2, 3], fn)) == [(1, 10), (2, 20), (3, 30)]
    # process 1 of 2: computes chunks 2 and 4 (1-based), receives the others by gathering
    calls.clear()
    monkeypatch.setattr(distributed, "process_count", lambda: 2)
    monkeypatch.setattr(distributed, "process_index", lambda: 1)
    monkeypatch.setattr(distributed, "gather", lambda values: [-1, *values])  # process 0: -1
    pairs = list(distributed.map_sharded([1, 2, 3], fn))
    assert calls == [2]  # the last round has one chunk, process 0's
    assert pairs == [(1, -1), (2, 20), (3, -1)]
