"""A tiny distillation run through the shared trainer, for one or several processes.

Run as ``python mp_train_script.py OUT`` (one process) or under a distributed launch with
CPU processes, e.g. ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2
--num_machines 1 --mixed_precision no --dynamo_backend no mp_train_script.py OUT`` (gloo).
(``accelerate launch --cpu --num_processes 2`` starts only one process: accelerate's CPU
multi-process launch goes through ``mpirun`` with ``--mpirun_hostfile``; without one it
runs the script once, not distributed.) ``tests/core/test_multiprocess.py`` drives it.

The student (a 1-layer tiny Llama) learns a fixed teacher's next-token distributions with a
token-level forward KL averaged over the valid tokens of a batch; examples have different
numbers of valid tokens, so the processes' shards hold different token counts. The
trainer's files go to ``OUT/train``; the main process alone appends one JSON line to
``OUT/result.jsonl`` (per-step losses from the trainer's log; per process and micro-batch
the example ids it drew, its local loss and token count; the final weights' SHA-256) and
writes ``OUT/weights.pt``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest

VOCAB, MAX_LEN = 32, 12


def dataset(n: int) -> list[dict]:
    """``n`` examples of 2..MAX_LEN valid tokens, right-padded to MAX_LEN."""
    g = torch.Generator().manual_seed(7)
    items = []
    for i in range(n):
        length = int(torch.randint(2, MAX_LEN + 1, (), generator=g))
        ids = torch.zeros(MAX_LEN, dtype=torch.long)
        ids[:length] = torch.randint(3, VOCAB, (length,), generator=g)
        mask = torch.zeros(MAX_LEN, dtype=torch.long)
        mask[:length] = 1
        items.append({"id": i, "input_ids": ids, "attention_mask": mask})
    return items


def collate(items: list[dict]) -> dict:
    return {"id": [x["id"] for x in items],
            "input_ids": torch.stack([x["input_ids"] for x in items]),
            "attention_mask": torch.stack([x["attention_mask"] for x in items])}


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch-size", type=int, default=6,
                        help="global batch, split over the processes")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    parser.add_argument("--unweighted", action="store_true",
                        help="leave StepOutput.mean_over unset (DDP's plain mean per process)")
    parser.add_argument("--watchdog", type=float, default=0.0,
                        help="seconds after which a stuck process prints its stack and exits")
    args = parser.parse_args(argv)
    if args.watchdog:
        import faulthandler

        faulthandler.dump_traceback_later(args.watchdog, exit=True)

    from conftest import tiny_llama

    from methods.losses.token_core import kl_rows, token_loss
    from methods.trainer import StepOutput, TrainConfig, Trainer

    student = tiny_llama(VOCAB, layers=1, seed=0, init=0.1).train()
    teacher = tiny_llama(VOCAB, layers=1, seed=1, init=0.5).eval()
    seen: list[dict] = []  # each micro-batch this process trained on: ids, local loss, tokens

    def step(model, batch) -> StepOutput:
        mask = batch["attention_mask"]
        logits = model(input_ids=batch["input_ids"], attention_mask=mask).logits
        with torch.no_grad():
            target = teacher(input_ids=batch["input_ids"], attention_mask=mask).logits
        loss = token_loss(lambda s, t: kl_rows(t, s), logits, target, mask=mask)  # KL(p‖q)
        n = int(mask.sum())
        seen.append({"ids": list(batch["id"]), "loss": float(loss.detach()), "tokens": n})
        return StepOutput(loss, n_tokens=n, mean_over=None if args.unweighted else n)

    cfg = TrainConfig(max_steps=args.max_steps, batch_size=args.batch_size,
                      grad_accum=args.grad_accum, lr=3e-3, warmup_steps=2,
                      schedule="constant", max_grad_norm=1.0,
                      checkpoint_every=args.checkpoint_every, keep_checkpoints=2,
                      seed=0, progress=False)
    data = dataset(args.examples)
    trainer = Trainer(student, step, data, cfg, args.out / "train", collate_fn=collate)
    model = trainer.train()

    from accelerate.utils import gather_object

    acc = trainer.accelerator
    per_process = gather_object([{"process": acc.process_index, "batches": seen}])
    if acc.is_main_process:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save(state, args.out / "weights.pt")
        log = args.out / "train" / "metrics.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        result = {
            "written_by": acc.process_index,
            "num_processes": acc.num_processes,
            "distributed_type": str(acc.distributed_type),
            "steps": [r["step"] for r in rows],
            "losses": [r["loss"] for r in rows],
            "tokens": [r["tokens"] for r in rows],
            "batches": {str(p["process"]): p["batches"] for p in per_process},
            "lengths": [int(x["attention_mask"].sum()) for x in data],
            "weights_sha256": weights_digest(state),
        }
        with (args.out / "result.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
    acc.wait_for_everyone()


if __name__ == "__main__":
    main()
    # Leave without tearing the process group down. With gloo (torch 2.13), destroying it
    # from Python (``end_training``, or the DDP reducer's or the interpreter's cleanup) can
    # deadlock: the destructor joins gloo's work thread while holding the GIL, and that
    # thread waits for the GIL to free the last collective's tensors (~AsyncAllgatherWork).
    # Everything this script writes is closed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
