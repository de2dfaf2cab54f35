"""Seconds per answer of the gsm8k evaluation: batched answers vs one answer at a time.

Both paths answer the same ``offline/arith-2x2-digits`` test questions through lm-eval with
the same model (by default the first 8 layers of a gsm8k teacher, the default student's
shape; ``--model`` takes any causal LM directory) and :class:`TimedHFLM`: ``batch 1``
(``eval_batch_size=1``, every answer timed alone)
and ``batched`` (``eval_batch_size=B``, ``latency_items=0``). Repeats are interleaved
(1 B 1 B ...) and medians reported, since this machine is noisy; the script also checks that
the two paths give the same answers and token counts.

    python benchmarks/gsm8k_eval_batching.py [--items 32] [--batch-size 16] [--repeats 2]
        [--model DIR] [--layers 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _model(path: str | None, layers: int) -> tuple[object, object]:
    from bench.core.assets import load_causal_lm
    from methods.instruct.token_kd import build_student

    model, tok = load_causal_lm(path or "smollm2-135m-instruct", dtype="float32")
    if layers and layers < model.config.num_hidden_layers:
        model = build_student(model, layers)
    return model.eval(), tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default=None, help="causal LM dir (default: packaged SmolLM2)")
    parser.add_argument("--layers", type=int, default=8, help="keep the first k layers (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from bench.reasoning.evaluation import evaluate_model
    from bench.reasoning.suite import parse_dataset

    torch.set_num_threads(args.threads)
    model, tok = _model(args.model, args.layers)
    ds = parse_dataset("offline/arith-2x2-digits")
    base = {"max_gen_toks": 96, "n_test": args.items, "num_fewshot": None}
    modes = {"batch 1": {"eval_batch_size": 1, "latency_items": 0},
             "batched": {"eval_batch_size": args.batch_size, "latency_items": 0}}
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    answers: dict[str, list[tuple[str, float]]] = {}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            for mode, extra in modes.items():
                start = time.perf_counter()
                rows, _ = evaluate_model(ds, {**base, **extra}, model, tok, mode, 0, Path(work))
                seconds[mode].append((time.perf_counter() - start) / len(rows))
                answers[mode] = [(r["output"], r["generated_tokens"]) for r in rows]
    tokens = statistics.mean(n for _, n in answers["batch 1"])
    print(f"{args.items} arith-2x2-digits answers, {tokens:.1f} generated tokens each, "
          f"model {args.model or 'smollm2-135m-instruct'} first {args.layers or 'all'} layers, "
          f"{args.threads} thread(s), float32, greedy; medians of {args.repeats} repeats")
    for mode, values in seconds.items():
        print(f"  {mode:8s} {statistics.median(values):6.3f} s per answer  "
              f"({', '.join(f'{v:.3f}' for v in values)})")
    ratio = statistics.median(seconds["batch 1"]) / statistics.median(seconds["batched"])
    print(f"  batched (batch {args.batch_size}) is {ratio:.1f}x faster per answer")
    same = sum(a == b for a, b in zip(answers["batch 1"], answers["batched"], strict=True))
    print(f"  identical answers and token counts: {same}/{args.items}")


if __name__ == "__main__":
    main()
