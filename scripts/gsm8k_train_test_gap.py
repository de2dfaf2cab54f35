"""Diagnostic: exact match of gsm8k students on training questions vs test questions.

    python scripts/gsm8k_train_test_gap.py --preset cpu-long skip-thinking-cwt cot-sft skip-thinking

For each method this runs ``bench run --method M --suite gsm8k`` with the evaluation replaced
by greedy decoding (fp32, batches of 16, 128 new tokens) of the first ``--items`` training
and test questions of the arith dataset, and prints both exact matches; nothing is written
to the results store. The student comes from the work directory's cache when that run was
trained already (otherwise it is trained first, as ``bench run`` would). A row whose
training accuracy far exceeds its test accuracy has learnt answers rather than the
procedure (docs/measurements/gsm8k.md, "Skip-Thinking at cpu-long").
"""

from __future__ import annotations

import argparse
from typing import Any

import bench.reasoning.evaluation as gsm8k_eval
from bench.cli import main
from bench.core.generation import generate
from bench.reasoning.arith import make_arith
from bench.reasoning.lm_eval_tasks import ARITH_SEED
from bench.reasoning.problem import answers_match
from methods.reasoning.cot_distill import prompt_ids


class _Done(Exception):
    pass


def train_test_gap(method: str, preset: str, items: int) -> dict[str, float]:
    found: dict[str, float] = {}

    def probe(ds: Any, settings: Any, model: Any, tok: Any, *args: Any, **kwargs: Any) -> Any:
        a, b = ds.digits
        for split in ("train", "test"):
            problems = make_arith(a, b, items, ARITH_SEED, split=split, style=ds.style)
            gens = generate(model, tok, [prompt_ids(tok, p.question) for p in problems],
                            max_new_tokens=128, batch_size=16)
            found[split] = sum(answers_match(g.text, p.answer)
                               for g, p in zip(gens, problems, strict=True)) / len(problems)
        raise _Done

    real, gsm8k_eval.evaluate_model = gsm8k_eval.evaluate_model, probe
    try:
        main(["run", "--method", method, "--suite", "gsm8k", "--preset", preset,
              "--dataset", "offline/arith-2x2-digits"])
    except _Done:
        pass
    finally:
        gsm8k_eval.evaluate_model = real
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("methods", nargs="+")
    parser.add_argument("--preset", default="cpu-long")
    parser.add_argument("--items", type=int, default=100)
    args = parser.parse_args()
    print("| method | train EM | test EM |\n|---|---:|---:|")
    for m in args.methods:
        gap = train_test_gap(m, args.preset, args.items)
        print(f"| {m} [{args.preset}] | {gap['train']:.2f} | {gap['test']:.2f} |", flush=True)
