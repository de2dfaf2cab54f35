"""Our decoding loops against transformers' ``generate`` on the same prompts, same process.

Four pairs, each ours (``bench.specdec``) against the library's reference path, greedy,
batch 1, the packaged SmolLM2-135M-Instruct target on the first turn of specbench test
prompts (chat template applied):

- plain:   ``autoregressive`` vs ``generate(do_sample=False)``;
- pld:     ``speculative(PromptLookupDraft)`` vs ``generate(prompt_lookup_num_tokens=k)``;
- draft:   ``speculative(LMDraft(first 4 target layers))`` vs ``generate(assistant_model=
  the same draft)`` (untrained: both loops get the same proposals, so this times the
  loops, not the draft's quality; transformers adapts its draft length unless told not to,
  so ``num_assistant_tokens_schedule="constant"`` with ``num_assistant_tokens=k``).

Every prompt runs every path once per repeat, in an order shuffled per prompt and repeat
(seeded), so load drift hits all paths alike; reported: the median wall time per prompt
per path, the ratio ours / transformers per prompt (its median), tokens per second, and
whether the greedy outputs agree token for token (our loops are exact; a mismatch is a bug
or, for transformers' candidate generators, a stopping difference, and is printed).

    python benchmarks/specdec_vs_transformers.py [--prompts 6] [--tokens 64] [--repeats 2]
        [--k 3] [--dtype float32|bfloat16] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any


def _prompts(tokenizer: Any, n: int) -> list[tuple[str, list[int]]]:
    """(id, chat-template ids) of the first turn of n test prompts, spread over categories."""
    from bench.specdec.data import conversation_ids, offline_pools

    pools = offline_pools(tokenizer, 128, n_train=0, n_test=n)
    tests = [test for _, (_, test) in sorted(pools.items())]
    items = [test[i] for i in range(n) for test in tests if i < len(test)][:n]
    return [(it.id, conversation_ids(tokenizer, [it.turns[0]], [])) for it in items]


def _timed(fn: Any) -> tuple[list[int], float]:
    start = time.perf_counter()
    tokens = fn()
    return tokens, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as transformers_logging

    from bench.core.assets import first_k_layers_student, load_causal_lm
    from bench.specdec import LMDraft, autoregressive, speculative
    from bench.specdec.lookup import PromptLookupDraft

    torch.set_num_threads(args.threads)
    # generate() warns about its own internal generation_config on every assisted call
    transformers_logging.set_verbosity_error()
    dtype = getattr(torch, args.dtype)
    target, tok = load_causal_lm("smollm2-135m-instruct")
    target = target.to(dtype).eval()
    draft_lm = first_k_layers_student(target, 4).eval()
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    n, k = args.tokens, args.k

    def hf(ids: list[int], **extra: Any) -> list[int]:
        x = torch.tensor([ids])
        with torch.no_grad():
            out = target.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                                  do_sample=False, pad_token_id=tok.pad_token_id or 0,
                                  **extra)
        return out[0, len(ids):].tolist()

    paths = {
        ("plain", "ours"): lambda ids: autoregressive(target, ids, n, eos_ids=eos).tokens,
        ("plain", "transformers"): lambda ids: hf(ids),
        ("pld", "ours"): lambda ids: speculative(target, PromptLookupDraft(
            target.config.vocab_size), ids, n, k=k, eos_ids=eos).tokens,
        ("pld", "transformers"): lambda ids: hf(ids, prompt_lookup_num_tokens=k),
        ("draft", "ours"): lambda ids: speculative(target, LMDraft(draft_lm), ids, n, k=k,
                                                   eos_ids=eos).tokens,
        ("draft", "transformers"): lambda ids: hf(
            ids, assistant_model=draft_lm, num_assistant_tokens=k,
            num_assistant_tokens_schedule="constant"),
    }
    prompts = _prompts(tok, args.prompts)
    for _, ids in prompts[:1]:  # warm-up: first-call overheads out of the timings
        for fn in paths.values():
            fn(ids)
    rng = random.Random(0)
    times: dict[tuple[str, str], dict[str, list[float]]] = {p: {} for p in paths}
    tokens: dict[tuple[str, str], dict[str, list[int]]] = {p: {} for p in paths}
    for _ in range(args.repeats):
        for pid, ids in prompts:
            order = list(paths)
            rng.shuffle(order)
            for path in order:
                out, seconds = _timed(lambda path=path, ids=ids: paths[path](ids))
                times[path].setdefault(pid, []).append(seconds)
                tokens[path][pid] = out
    report: dict[str, Any] = {"settings": vars(args), "pairs": {}}
    for pair in ("plain", "pld", "draft"):
        ours, ref = times[(pair, "ours")], times[(pair, "transformers")]
        ratios = [statistics.median(ours[p]) / statistics.median(ref[p]) for p, _ in prompts]
        agree = sum(tokens[(pair, "ours")][p] == tokens[(pair, "transformers")][p]
                    for p, _ in prompts)
        row = {}
        for side, per in (("ours", ours), ("transformers", ref)):
            med = statistics.median(statistics.median(v) for v in per.values())
            toks = statistics.median(len(tokens[(pair, side)][p]) / statistics.median(per[p])
                                     for p, _ in prompts)
            row[side] = {"median_s_per_prompt": round(med, 4), "tokens_per_s": round(toks, 1)}
        row["median_ratio_ours_over_transformers"] = round(statistics.median(ratios), 3)
        row["outputs_identical"] = f"{agree}/{len(prompts)}"
        report["pairs"][pair] = row
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{len(prompts)} prompts x {args.repeats} repeats, {n} new tokens, k={k}, "
              f"{args.dtype}, {args.threads} thread(s)")
        print("| pair | ours s/prompt | transformers s/prompt | ours tok/s | transformers "
              "tok/s | ours/transformers (median ratio) | identical |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for pair, row in report["pairs"].items():
            print(f"| {pair} | {row['ours']['median_s_per_prompt']} | "
                  f"{row['transformers']['median_s_per_prompt']} | "
                  f"{row['ours']['tokens_per_s']} | {row['transformers']['tokens_per_s']} | "
                  f"{row['median_ratio_ours_over_transformers']} | "
                  f"{row['outputs_identical']} |")
    return report


if __name__ == "__main__":
    main()
