"""The ``trainer`` row: the shared Trainer, bf16 autocast on the device vs float32 on CPU."""

from __future__ import annotations

import copy
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


def check_trainer(ctx: Ctx) -> Outcome:
    """3 steps of the shared Trainer (CE + registered fkl to a frozen teacher, tiny
    Llamas): bf16 autocast on the device vs float32 on CPU."""
    import torch.nn.functional as F

    from methods.losses import get_loss
    from methods.trainer import StepOutput, TrainConfig, Trainer

    fkl = get_loss("fkl")
    student0, teacher0 = tiny_llama(2, seed=0), tiny_llama(4, seed=1, init=0.1)
    g = torch.Generator().manual_seed(7)
    data = list(torch.randint(3, VOCAB, (12, 16), generator=g))
    steps = 3

    def run(dev: torch.device, precision: str) -> list[float]:
        teacher = copy.deepcopy(teacher0).to(dev)

        def step(model: Any, ids: torch.Tensor) -> StepOutput:
            logits = model(input_ids=ids).logits[:, :-1]
            with torch.no_grad():
                t_logits = teacher(input_ids=ids).logits[:, :-1]
            mask = torch.ones_like(ids[:, 1:], dtype=torch.bool)
            mask[:, :4] = False  # the "prompt" is not distilled
            ce = F.cross_entropy(logits.float().reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
            kd = fkl(logits, t_logits, mask=mask, chunk_size=8)
            return StepOutput(ce + kd, n_tokens=int(mask.sum()),
                              metrics={"kd": float(kd.detach())})

        cfg = TrainConfig(max_steps=steps, batch_size=4, lr=1e-3, schedule="constant",
                          mixed_precision=precision, checkpoint_every=1000, progress=False)
        out = ctx.tmp / f"trainer-{dev.type}-{precision}"
        student = copy.deepcopy(student0).train()
        head_dtypes: set[torch.dtype] = set()  # proves autocast was on (the loss sees fp32)
        student.lm_head.register_forward_hook(lambda m, i, o: head_dtypes.add(o.dtype))
        with on_policy(dev):
            fresh_accelerate()
            model = Trainer(student, step, data, cfg, out, collate_fn=torch.stack).train()
        expect_on(model, dev, f"the trained model ({precision})")
        if precision == "bf16" and torch.bfloat16 not in head_dtypes:
            raise CheckFailed(f"bf16 autocast was not active on {dev}: the LM head ran in "
                              f"{sorted(map(str, head_dtypes))}")
        return train_losses(metrics(out), steps, f"trainer on {dev}")

    ref = run(torch.device("cpu"), "no")
    got = run(ctx.device, "bf16")
    return compare_losses(got, ref, "bf16 autocast", f"{steps} steps, loss {got[-1]:.3f}")
