"""The DeAR rows: one stage-1 (pointwise) and one stage-2 (listwise LoRA) training step,
bf16 autocast on the device vs float32 on CPU, then scoring / reranking on the device."""

from __future__ import annotations

from typing import Any

import torch

from .common import (
    WORDS,
    CheckFailed,
    Ctx,
    Outcome,
    compare_losses,
    expect_on,
    fresh_accelerate,
    metrics,
    on_policy,
    tiny_lm_dir,
    train_losses,
)


class OverlapTeacher:
    """Word overlap as a stand-in teacher (the recipe's real one is MiniLM)."""

    def fingerprint(self) -> str:
        return "overlap"

    def score(self, queries: list[str], docs: list[str]) -> list[float]:
        return [len(set(q.split()) & set(d.split())) / 5 for q, d in zip(queries, docs,
                                                                          strict=True)]


def toy_retrieval() -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]],
                             dict[str, dict[str, float]]]:
    docs = {f"d{i}": " ".join(WORDS[i:i + 5]) for i in range(10)}
    queries = {f"q{i}": " ".join(WORDS[i:i + 2]) for i in range(4)}
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(queries)}
    candidates = {q: {d: float(-abs(int(d[1:]) - int(q[1:]))) for d in docs} for q in queries}
    return docs, queries, qrels, candidates


def check_dear_stage1(ctx: Ctx) -> Outcome:
    """One DeAR stage-1 step (train_stage1: PointwiseLM on the tiny Llama, dear_pointwise,
    Trainer): bf16 autocast on the device vs float32 on CPU; then scoring on the device."""
    from methods.retrieval.dear import DeARConfig, build_groups, train_stage1

    lm_dir = tiny_lm_dir(ctx)
    docs, queries, qrels, candidates = toy_retrieval()
    groups = build_groups(queries, qrels, candidates, group_size=3, negatives_depth=6)[:2]

    def run(dev: torch.device, precision: str) -> tuple[Any, float]:
        cfg = DeARConfig(student=str(lm_dir), student_layers=2, group_size=3,
                         batch_queries=2, epochs=1, checkpoint_every=1000,
                         mixed_precision=precision, max_doc_tokens=8)
        work = ctx.tmp / f"dear1-{dev.type}-{precision}"
        with on_policy(dev):
            fresh_accelerate()
            model = train_stage1(cfg, queries=queries, docs=docs, groups=groups,
                                 teacher=OverlapTeacher(), work_dir=work, progress=False)
        expect_on(model, dev, f"the stage-1 student ({precision})")
        return model, train_losses(metrics(work / "stage1"), 1, f"stage 1 on {dev}")[0]

    _, ref = run(torch.device("cpu"), "no")
    model, got = run(ctx.device, "bf16")
    outcome = compare_losses([got], [ref], "bf16 autocast", f"loss {got:.3f}")
    scores = model.score([queries["q0"]] * 2, [docs["d0"], docs["d5"]])
    if len(scores) != 2 or not all(torch.isfinite(torch.tensor(scores))):
        raise CheckFailed(f"scoring on the device returned {scores}", outcome)
    return outcome


def check_dear_stage2(ctx: Ctx) -> Outcome:
    """One DeAR stage-2 step (train_stage2: LoRA via peft on the tiny Llama, listwise
    cross-entropy, Trainer): bf16 autocast on the device vs float32 on CPU; then the
    ListwiseReranker (LoRA merged, bf16, batched greedy loop) permutes a window there."""
    from bench.core.assets import load_causal_lm
    from methods.retrieval.dear_listwise import (
        ListwiseConfig,
        ListwiseReranker,
        build_windows,
        train_stage2,
    )

    lm_dir = tiny_lm_dir(ctx)
    docs, queries, _, candidates = toy_retrieval()
    windows = build_windows(candidates, window=3, stride=2, depth=3, n_windows=2, seed=0)
    teacher = OverlapTeacher()
    scores = {(q, d): teacher.score([queries[q]], [docs[d]])[0] for q, ids in windows
              for d in ids}

    def run(dev: torch.device, precision: str) -> tuple[Any, float]:
        cfg = ListwiseConfig(window=3, stride=2, depth=3, max_doc_tokens=6, train_windows=2,
                             epochs=1, batch_windows=2, lora_rank=4, lora_alpha=8,
                             mixed_precision=precision, checkpoint_every=1000,
                             inference_batch=2)
        lm, tokenizer = load_causal_lm(str(lm_dir))
        work = ctx.tmp / f"dear2-{dev.type}-{precision}"
        with on_policy(dev):
            fresh_accelerate()
            model = train_stage2(cfg, lm=lm, tokenizer=tokenizer, queries=queries, docs=docs,
                                 windows=windows, scores=scores, work_dir=work,
                                 progress=False)
        expect_on(model, dev, f"the stage-2 model ({precision})")
        return model, train_losses(metrics(work), 1, f"stage 2 on {dev}")[0]

    _, ref = run(torch.device("cpu"), "no")
    model, got = run(ctx.device, "bf16")
    outcome = compare_losses([got], [ref], "bf16 autocast", f"loss {got:.3f}")
    qid, ids = windows[0]
    order = ListwiseReranker(model).permute(queries[qid], [docs[d] for d in ids])
    if sorted(order) != list(range(len(ids))):
        raise CheckFailed(f"the listwise reranker returned {order}, not a permutation",
                          outcome)
    return outcome
