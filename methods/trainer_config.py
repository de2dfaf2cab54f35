"""What a recipe gives the trainer and how it optimises: :class:`TrainConfig`, the
``step_fn``'s :class:`StepOutput`, step counts, and the AdamW optimizer with its warm-up
plus linear / cosine / constant learning-rate schedule.

Import these from :mod:`methods.trainer`, which re-exports them with the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainConfig:
    max_steps: int
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine" | "linear" | "constant"
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    max_nonfinite: int = 5
    seed: int = 0
    progress: bool = True


@dataclass
class StepOutput:
    """What a ``step_fn`` returns. ``n_tokens`` feeds the tokens/s metric only.
    ``mean_over``: the number of items ``loss`` is a mean over (valid tokens of a
    token-level loss, examples of a per-example one); with several processes, the trainer
    weights each process's loss by its share of the global count, so the gradient is the
    mean over all processes' items (see :mod:`methods.trainer`). ``None``: every process's
    loss counts equally (DDP's plain mean). Ignored with one process."""

    loss: torch.Tensor
    n_tokens: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    mean_over: int | None = None


def total_steps(n_examples: int, batch_size: int, epochs: int, *, grad_accum: int = 1,
                max_steps: int | None = None) -> int:
    """Optimizer steps of ``epochs`` passes over ``n_examples`` (a partial last batch is a
    step), or ``max_steps`` when given; at least 1."""
    if max_steps:
        return max_steps
    return max(1, epochs * -(-n_examples // (batch_size * grad_accum)))


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """The learning-rate factor per step: linear warm-up, then cosine, linear or constant.

    After warm-up this is ``transformers.get_scheduler``'s cosine and linear schedule
    (tested); it is kept by hand because transformers' warm-up starts at factor 0 on step
    0 (a step that trains nothing) where this one starts at ``1 / warmup_steps``, and
    switching would change every committed training run on rerun.
    """
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        if cfg.schedule == "linear":
            return 1.0 - progress
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        raise ValueError(f"unknown schedule {cfg.schedule!r}; use cosine, linear or constant")

    return factor


def optimizer_and_scheduler(
        model: torch.nn.Module, cfg: TrainConfig,
        param_groups: list[dict[str, Any]] | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``param_groups`` (default: every trainable parameter of ``model``) with
    ``cfg``'s learning rate, betas and weight decay, and its :func:`lr_lambda` schedule."""
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas,
                                  weight_decay=cfg.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
