"""The ``vision_trg`` row: the TRG recipe's loss on tiny ViTs, float32 vs float64 on CPU."""

from __future__ import annotations

import copy

import torch

from .common import Ctx, Outcome, compare, verdict

VISION_TOL = 1e-3  # a float32 ViT forward/backward vs float64, TRG weights up to 100


def check_vision_trg(ctx: Ctx) -> Outcome:
    """The TRG recipe's loss (Hinton KD + contextual + kNN-graph + token InfoNCE) on tiny
    ViTs: float32 on the device vs float64 on CPU, value, parts and student gradients."""
    from methods.vision.kd import VisionConfig, build_vit
    from methods.vision.trg import TRG, TRG_DEFAULTS

    recipe = TRG()
    shape = {"image_size": 16, "channels": 3, "num_classes": 10}
    student = build_vit("vit-64x3", seed=0, **shape).eval()
    teacher = build_vit("vit-128x4", seed=1, **shape).eval()
    cfg = VisionConfig(extra=dict(TRG_DEFAULTS))
    wrapped = recipe.wrap(student, teacher, cfg)
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(4, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 10, (4,), generator=g)

    def run(dev: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(wrapped).to(dev, dtype).eval()
        t = copy.deepcopy(teacher).to(dev, dtype).eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(11)  # TRG draws its token positions from the global RNG
            loss, parts = recipe.loss(model, pixels.to(dev, dtype), labels.to(dev), t, cfg,
                                      0.5)
        loss.backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        return {"loss": loss.detach(), **{k: torch.tensor(v) for k, v in parts.items()},
                "grad(student)": torch.cat(grads)}

    ref = run(torch.device("cpu"), torch.float64)
    got = run(ctx.device, torch.float32)
    worst, bad = compare(got, ref, VISION_TOL)
    return verdict(worst, bad, f"{VISION_TOL:.0e} (+rel)", "float32",
                   f"ViT 64x3 <- 128x4, loss {float(got['loss']):.3f}")
