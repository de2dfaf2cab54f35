"""Diagnostic: do SemCoT's implicit states change the frozen teacher's answers?

    python scripts/semcot_ablation.py --work-dir /tmp/semcot-work [--limit 50] [--json out.json]

Runs ``bench run --method semcot --suite gsm8k`` (the trained generator comes from the work
directory's cache when that run was trained already, otherwise it is trained first, as
``bench run`` would) with the evaluation replaced by
:func:`methods.reasoning.semcot.implicit_state_ablation` on the first test questions of the
arith dataset: the same questions answered with the trained states, all-zero states,
another question's states, random states of the same norm, and no states (``none``: the
``teacher-direct`` input). Prints a markdown table (exact match, answers changed against the
trained states, mean log-probability of the gold answer tokens, the largest logit change at
the gold answer's positions and how often its argmax token changes) and the norms of the
states and of the teacher's token embeddings; ``--json`` also writes every answer. Nothing
is written to the results store. docs/measurements/gsm8k.md ("SemCoT: does the frozen
teacher use the implicit state?").
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import bench.reasoning.evaluation as gsm8k_eval
from bench.cli import main
from bench.reasoning.arith import make_arith
from bench.reasoning.lm_eval_tasks import ARITH_SEED
from bench.reasoning.problem import STRICT_ANSWER, normalize_number
from methods.reasoning.cot_distill import PROMPT
from methods.reasoning.semcot import STATE_VARIANTS, implicit_state_ablation


class _Done(Exception):
    pass


def strict_match(output: str, gold: str) -> bool:
    """lm-eval's ``strict-match`` filter: the number after the first ``#### `` equals gold."""
    m = STRICT_ANSWER.search(output)
    return bool(m) and normalize_number(m.group(1)) == normalize_number(gold)


def ablation(*, preset: str, dataset: str, work_dir: str | None, items: int | None,
             max_new_tokens: int, seed: int, extra: list[str]) -> dict[str, Any]:
    """The ablation's result (:func:`implicit_state_ablation`) for the SemCoT model that
    ``bench run --method semcot --suite gsm8k --preset P --dataset D [extra]`` trains."""
    found: dict[str, Any] = {}

    def probe(ds: Any, settings: Any, model: Any, tok: Any, *args: Any, **kwargs: Any) -> Any:
        if ds.kind != "arith":
            raise SystemExit(f"{ds.id}: the ablation runs on arith datasets only")
        n = items or settings["n_test"] or 100
        problems = make_arith(*ds.digits, n, ARITH_SEED, split="test", style=ds.style)
        contexts = [PROMPT.format(question=p.question) for p in problems]
        found.update(implicit_state_ablation(
            model, contexts, [p.answer for p in problems], correct=strict_match,
            max_new_tokens=max_new_tokens, seed=seed))
        found["ids"] = [p.id for p in problems]
        found["dataset"] = ds.id
        raise _Done

    real, gsm8k_eval.evaluate_model = gsm8k_eval.evaluate_model, probe
    try:
        with tempfile.TemporaryDirectory() as out:
            cmd = ["run", "--method", "semcot", "--suite", "gsm8k", "--preset", preset,
                   "--dataset", dataset, "--out", out, *extra]
            if work_dir:
                cmd += ["--work-dir", work_dir]
            code = main(cmd)
            raise SystemExit(f"bench run ended ({code}) before the evaluation")
    except _Done:
        pass
    finally:
        gsm8k_eval.evaluate_model = real
    return found


def markdown(result: dict[str, Any]) -> str:
    lines = ["| states fed to the teacher | EM | answers changed vs trained | gold log-prob "
             "per token | max abs logit diff vs trained | argmax changed at gold positions |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["variants"]:
        lines.append(f"| {r['variant']} | {r['exact_match']:.2f} | {r['changed']} / "
                     f"{result['items']} | {r['gold_logprob']:.3f} | {r['logit_diff']:.2f} | "
                     f"{r['argmax_changed']:.3f} |")
    lines.append("")
    lines.append(f"{result['items']} test items of {result['dataset']}; mean norm of a trained "
                 f"state {result['state_norm']:.2f}, of the teacher's token embeddings "
                 f"{result['token_embedding_norm']:.2f} (vocabulary) / "
                 f"{result['question_token_norm']:.2f} (the questions' tokens); mean cosine "
                 f"between two questions' trained states {result['state_cosine']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--dataset", default=None,
                        help="an arith dataset (default: the suite's default arith set)")
    parser.add_argument("--work-dir", default=None,
                        help="bench run's --work-dir (where the trained SemCoT is cached)")
    parser.add_argument("--limit", type=int, default=None,
                        help="test items (default: the preset's n_test)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random states")
    parser.add_argument("--teacher", default=None, help="bench run's --teacher")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to bench run as --set (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args()
    if args.dataset is None:
        from bench.reasoning.suite import METADATA

        args.dataset = f"offline/arith-{METADATA.setting('arith').default.split(',')[0]}"
    result = ablation(preset=args.preset, dataset=args.dataset, work_dir=args.work_dir,
                      items=args.limit, max_new_tokens=args.max_new_tokens, seed=args.seed,
                      extra=[a for kv in args.set for a in ("--set", kv)] +
                      (["--teacher", args.teacher] if args.teacher else []))
    assert [r["variant"] for r in result["variants"]] == list(STATE_VARIANTS)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
