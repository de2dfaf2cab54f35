"""The decoding rows: ``specdec`` (speculative vs plain decoding) and ``eagle_step`` /
``fspad_step`` (one head-training step, then lossless decoding with the trained head)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from .common import (
    VOCAB,
    CheckFailed,
    Ctx,
    Outcome,
    compare_losses,
    expect_on,
    fresh_accelerate,
    metrics,
    on_policy,
    tiny_llama,
    train_losses,
)

# --------------------------------------------------------------------- speculative decoding


def decode_mismatch(a: list[int], b: list[int]) -> int:
    """Positions where two token lists differ (a length difference counts in full)."""
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


def check_specdec(ctx: Ctx) -> Outcome:
    """Greedy speculative decoding (chain k=3 and an EAGLE-2 tree) with an LMDraft must
    equal plain decoding token for token on the device, and plain decoding on the device
    must equal plain decoding on CPU (float64, so no near-tie can flip an argmax);
    speculative sampling with a device generator must run."""
    from bench.core.assets.students import first_k_layers_student
    from bench.specdec import LMDraft, TreeConfig, autoregressive, speculative

    target0 = tiny_llama(4, seed=0, init=0.2).double()
    prompts = [[5], [5, 6, 7, 8], [3, 14, 15, 9, 2, 6, 5, 3, 5]]
    prompts, n = (prompts[:2], 12) if ctx.quick else (prompts, 24)
    cpu_plain = [autoregressive(target0, p, n).tokens for p in prompts]

    target = copy.deepcopy(target0).to(ctx.device)
    draft = LMDraft(first_k_layers_student(target, 1))
    expect_on(draft.model, ctx.device, "the draft")
    mismatches, accepted, where = 0, 0, []
    for p, ref in zip(prompts, cpu_plain, strict=True):
        plain = autoregressive(target, p, n).tokens
        chain = speculative(target, draft, p, n, k=3)
        tree = speculative(target, draft, p, n, tree=TreeConfig(8, 3, 3))
        for label, got, want in (("plain vs CPU", plain, ref), ("chain vs plain", chain.tokens,
                                                                 plain),
                                 ("tree vs plain", tree.tokens, plain)):
            bad = decode_mismatch(got, want)
            mismatches += bad
            if bad:
                where.append(f"{label} (prompt {p[:3]}..., {bad} tokens)")
        accepted += sum(chain.stats.accepted_per_pass) + sum(tree.stats.accepted_per_pass)
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    sampled = speculative(target, draft, prompts[-1], n, k=3, temperature=1.0, generator=gen)
    if len(sampled.tokens) != n or not all(0 <= t < VOCAB for t in sampled.tokens):
        raise CheckFailed(f"speculative sampling returned {sampled.tokens}")
    outcome = Outcome(float(mismatches), "0 tokens", "float64",
                      f"{len(prompts)} prompts x {n} tokens, {accepted} draft tokens accepted")
    if mismatches:
        raise CheckFailed("greedy outputs differ: " + "; ".join(where), outcome)
    return outcome


# --------------------------------------------------------------------- EAGLE / FSPAD heads


def check_head(ctx: Ctx, kind: str) -> Outcome:
    """One training step of the recipe's head (target features, Trainer, bf16 autocast,
    chunked eagle/fspad loss) on the device vs float32 on CPU; then the trained head as a
    FeatureDraft must decode losslessly (greedy chain and tree, float64) on the device."""
    from bench.specdec import TreeConfig, autoregressive, speculative
    from methods.specdec.drafts import FSPAD, Eagle, HeadTrainConfig
    from methods.specdec.features import target_features
    from methods.specdec.heads import HEADS, FeatureDraft, HeadConfig

    recipe = Eagle() if kind == "eagle" else FSPAD()
    target0 = tiny_llama(2, seed=0, init=0.2)
    g = torch.Generator().manual_seed(5)
    train = [SimpleNamespace(prompt_ids=torch.randint(3, VOCAB, (6,), generator=g).tolist(),
                             response_ids=torch.randint(3, VOCAB, (8,), generator=g).tolist())
             for _ in range(4)]

    def run(dev: torch.device, precision: str) -> tuple[Any, dict[str, Any]]:
        target = copy.deepcopy(target0).to(dev)
        work = ctx.tmp / f"{kind}-{dev.type}-{precision}"
        store = target_features(target, train, work / "features", dtype="float32",
                                progress=False)
        cfg = HeadTrainConfig(max_steps=1, batch_size=2, noise_std=0.0, chunk_size=2,
                              mixed_precision=precision, checkpoint_every=1000)
        context = SimpleNamespace(target=target, work_dir=work, target_name="tiny-llama",
                                  train=train, config={}, settings={})
        with on_policy(dev):
            fresh_accelerate()
            head = recipe.train_head(HEADS[kind], HeadConfig.from_target(target.config), store,
                                     context, cfg)
        expect_on(head, dev, f"the {kind} head ({precision})")
        rows = metrics(Path(context.config["checkpoint_dir"]))
        train_losses(rows, 1, f"{kind} head on {dev}")
        return head, rows[0]

    _, ref = run(torch.device("cpu"), "no")
    head, got = run(ctx.device, "bf16")
    keys = ("loss", "feature_loss", "token_ce")
    outcome = compare_losses([got[k] for k in keys], [ref[k] for k in keys], "bf16 autocast",
                             f"loss {got['loss']:.3f}")

    target = copy.deepcopy(target0).double().to(ctx.device)
    draft = FeatureDraft(copy.deepcopy(head).to(ctx.device, torch.float64),
                         target.get_input_embeddings().weight, target.get_output_embeddings().weight)
    prompts = [[5, 6, 7, 8], [3, 14, 15, 9, 2, 6]]
    prompts, n = (prompts[:1], 10) if ctx.quick else (prompts, 16)
    for p in prompts:
        plain = autoregressive(target, p, n).tokens
        for label, out in (("chain", speculative(target, draft, p, n, k=3)),
                           ("tree", speculative(target, draft, p, n, tree=TreeConfig(8, 3, 3)))):
            if out.tokens != plain:
                raise CheckFailed(f"greedy {label} decoding with the {kind} head differs from "
                                  f"plain decoding in {decode_mismatch(out.tokens, plain)} "
                                  f"tokens (prompt {p})", outcome)
    outcome.note += f"; lossless decode float64 ({len(prompts)}x{n})"
    return outcome
