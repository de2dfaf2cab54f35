"""Two CPU processes (gloo DDP through ``accelerate launch``) train like one process.

``mp_train_script.py`` trains a tiny student for 10 steps on 24 examples of 2..12 valid
tokens with a token-level KL. One process and two processes with the same global batch
of 6 (the trainer splits it: 3 examples per process) see the same 6 examples per step,
but the two shards hold different numbers of tokens, so the runs agree only if each process's loss is weighted by its share of the
step's tokens (``StepOutput.mean_over``). Tolerances (float32 on CPU; the runs differ only
in summation order): losses 1e-5 relative, weights 1e-5 relative + 1e-6 absolute (seen:
~1.5e-7 and ~1.2e-7). An interrupted two-process run resumes to bit-identical weights.

The launch is ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2``:
``accelerate launch --cpu --num_processes 2`` starts one process (its CPU multi-process
launch needs ``mpirun`` and ``--mpirun_hostfile``), and without ``ACCELERATE_USE_CPU`` a
CPU-only machine runs two independent single-process trainings. The result records the
number of processes, so neither mistake passes. ~45 s on 2 cores.
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
import torch

SCRIPT = Path(__file__).with_name("mp_train_script.py")
ROOT = Path(__file__).resolve().parents[2]
STEPS, CUT, EXAMPLES, PER_PROCESS = 10, 5, 24, 3
LOSS_RTOL, WEIGHT_RTOL, WEIGHT_ATOL = 1e-5, 1e-5, 1e-6
TIMEOUT = 240  # per launch; the script's own watchdog fires first


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(out: Path, processes: int, *args: str) -> dict:
    """Train into ``out``; returns the result line this launch appended."""
    script = [str(SCRIPT), str(out), "--watchdog", str(TIMEOUT - 30), *args]
    if processes == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli",  # `accelerate`
               "launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), *script]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "DISTILLBENCH_PROGRESS": "0",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
               [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    before = _results(out)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
        log, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} timed out after {TIMEOUT}s:\n{log[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log[-4000:]}"
    after = _results(out)
    assert len(after) == len(before) + 1, "exactly one process writes the result"
    return after[-1]


def _results(out: Path) -> list[dict]:
    path = out / "result.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "weights.pt", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiprocess")
    batch = str(2 * PER_PROCESS)  # the global batch: 2 processes take 3 examples each
    one = _run(root / "one", 1, "--batch-size", batch)
    two = _run(root / "two", 2, "--batch-size", batch)
    cut = _run(root / "cut", 2, "--batch-size", batch, "--max-steps", str(CUT))
    resumed = _run(root / "cut", 2, "--batch-size", batch)
    return {"root": root, "one": one, "two": two, "cut": cut, "resumed": resumed}


def test_launch_is_really_two_processes(runs):
    assert runs["one"]["num_processes"] == 1
    for name in ("two", "cut", "resumed"):
        assert runs[name]["num_processes"] == 2, name
        assert runs[name]["distributed_type"] == "DistributedType.MULTI_CPU", name
        assert runs[name]["written_by"] == 0, name
        assert set(runs[name]["batches"]) == {"0", "1"}, name


def test_two_processes_train_like_one_with_the_whole_batch(runs):
    one, two = runs["one"], runs["two"]
    assert one["steps"] == two["steps"] == list(range(1, STEPS + 1))
    assert two["losses"] == pytest.approx(one["losses"], rel=LOSS_RTOL)
    assert two["tokens"] == one["tokens"]  # logged tokens are summed over the processes
    a, b = _weights(runs["root"] / "one"), _weights(runs["root"] / "two")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL,
                                   msg=lambda m, name=name: f"{name}: {m}")
    # the check has teeth: the shards hold different token counts, and DDP's plain mean of
    # the two processes' losses is far from the one-process loss at those steps
    shards = zip(two["batches"]["0"], two["batches"]["1"], one["losses"], strict=True)
    gaps = [abs((r0["loss"] + r1["loss"]) / 2 - loss) / loss
            for r0, r1, loss in shards if r0["tokens"] != r1["tokens"]]
    assert gaps and max(gaps) > 100 * LOSS_RTOL


def test_each_process_draws_its_own_shard(runs):
    one, two = runs["one"], runs["two"]
    rank0 = [b["ids"] for b in two["batches"]["0"]]
    rank1 = [b["ids"] for b in two["batches"]["1"]]
    # step s: process 0 gets the first half of one process's batch, process 1 the second
    assert [a + b for a, b in zip(rank0, rank1, strict=True)] == \
        [b["ids"] for b in one["batches"]["0"]]
    per_epoch = EXAMPLES // (2 * PER_PROCESS)
    for epoch in range(STEPS // per_epoch):
        steps = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
        mine = [i for ids in rank0[steps] for i in ids]
        theirs = [i for ids in rank1[steps] for i in ids]
        assert not set(mine) & set(theirs), epoch
        assert sorted(mine + theirs) == list(range(EXAMPLES)), epoch
    lengths = one["lengths"]
    assert len(set(lengths)) > 3  # examples differ in their number of valid tokens
    for shard0, shard1 in zip(two["batches"]["0"], two["batches"]["1"], strict=True):
        assert shard0["tokens"] == sum(lengths[i] for i in shard0["ids"])
        assert shard1["tokens"] == sum(lengths[i] for i in shard1["ids"])


def test_only_the_main_process_writes_logs_and_checkpoints(runs):
    for name in ("one", "two", "cut"):
        out = runs["root"] / name
        assert len(_results(out)) == (2 if name == "cut" else 1)
        assert sorted(p.name for p in out.iterdir()) == ["result.jsonl", "train", "weights.pt"]
        rows = [json.loads(line) for line in (out / "train" / "metrics.jsonl").open()]
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), name  # once each
        root = out / "train" / "checkpoints"
        assert sorted(p.name for p in root.iterdir()) == ["step-00000009", "step-00000010"]
        processes = runs[name]["num_processes"]
        for checkpoint in root.iterdir():
            expected = {"model.safetensors", "optimizer.bin", "scheduler.bin",
                        "trainer_state.json"}
            expected |= {f"random_states_{i}.pkl" for i in range(processes)}
            expected |= {f"trainer_rng_{i}.json" for i in range(processes)}
            assert {p.name for p in checkpoint.iterdir()} == expected, checkpoint


def test_interrupted_two_process_run_resumes_to_the_same_weights(runs):
    two, cut, resumed = runs["two"], runs["cut"], runs["resumed"]
    assert cut["steps"] == list(range(1, CUT + 1))
    assert cut["losses"] == two["losses"][:CUT]
    # the resumed run picks up mid-epoch at step CUT + 1 with the data the full run had there
    for process in ("0", "1"):
        assert resumed["batches"][process] == two["batches"][process][CUT:], process
    assert resumed["steps"] == list(range(1, STEPS + 1))
    assert resumed["losses"] == two["losses"]
    assert resumed["weights_sha256"] == two["weights_sha256"]
    a, b = _weights(runs["root"] / "two"), _weights(runs["root"] / "cut")
    assert all(torch.equal(a[name], b[name]) for name in a)
