"""TRG: distillation through a token-level relationship graph (Zhang, Liu & He 2023).

Zhang et al., "Knowledge Distillation via Token-level Relationship Graph",
arXiv:2306.12442. ``L = L_logit + a·L_inner + b·L_local + g·L_global`` over the patch
tokens of the last layer (after the final layer norm) of a ViT student and teacher:

- ``L_logit``: Hinton KD as the ``kd`` baseline (0.1·CE + 0.9·T²·KL, T = 4), so TRG is
  compared with KD on equal footing and only the token terms differ;
- ``L_local`` (b = 100): KL between row-softmaxed kNN graphs of the sampled tokens
  (:func:`methods.losses.trg.graph_local_loss`, k = 8);
- ``L_global`` (g = 0.1): token InfoNCE between the student's tokens, linearly projected
  to the teacher's width, and the teacher's token at the same position; negatives are the
  other sampled tokens of the batch; the temperature falls linearly from 0.5 to 0.07 over
  training (high first for coarse structure, low later for hard negatives);
- ``L_inner`` (a = 100): MSE between ``softmax(F Fᵀ/√D)`` maps of all patch tokens of
  each image.

The weights put every term at the order of the others when training starts, measured at
step 1 on Fashion-MNIST-LT (n_max 2000) with a trained teacher: logit 4.6, inner 0.012, local 0.0087
(a softmax over 512 entries in [0, 1] is nearly flat, so graph rows differ little),
global 6.2 (~log 512). With weights 1 the inner and local terms would be invisible.

Tokens for the graph and InfoNCE: ``tokens_per_image`` (4 of the 16) positions drawn at
random per image, the same positions for student and teacher, pooled over the batch (the
graph relates tokens across images, which is the point of a relationship *graph*; batch
128 gives 512 tokens). The paper's body was not readable offline and no official code is
public: the weights a, b, g, k, σ (mean squared kNN distance of each graph), the number of
sampled tokens, the KL direction and the temperature schedule are our choices, written
here and recorded in every result. Ablations switch one term off: ``trg-no-inner``,
``trg-no-local``, ``trg-no-global``.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.suite import Setting
from methods.vision.kd import HintonKD, VisionConfig, forward_tokens

REGISTRY = [
    {"name": "trg", "suites": ["imagenet-lt"], "target": "TRG",
     "summary": "TRG: KD + token graph (kNN, KL), token InfoNCE and contextual-map losses",
     "citation": "Zhang et al. 2023 (TRG), arXiv:2306.12442"},
    {"name": "trg-no-inner", "suites": ["imagenet-lt"], "target": "TRGNoInner",
     "summary": "TRG ablation without the contextual (inner) loss",
     "citation": "Zhang et al. 2023 (TRG), arXiv:2306.12442"},
    {"name": "trg-no-local", "suites": ["imagenet-lt"], "target": "TRGNoLocal",
     "summary": "TRG ablation without the local graph loss",
     "citation": "Zhang et al. 2023 (TRG), arXiv:2306.12442"},
    {"name": "trg-no-global", "suites": ["imagenet-lt"], "target": "TRGNoGlobal",
     "summary": "TRG ablation without the global InfoNCE loss",
     "citation": "Zhang et al. 2023 (TRG), arXiv:2306.12442"},
]

TRG_DEFAULTS: dict[str, Any] = {"inner_weight": 100.0, "local_weight": 100.0,
                                "global_weight": 0.1, "knn_k": 8, "tokens_per_image": 4,
                                "tau_start": 0.5, "tau_end": 0.07}
INT_KEYS = ("knn_k", "tokens_per_image")  # counts: at least 1


class _StudentWithProjection(torch.nn.Module):
    """The student plus the linear map of its tokens to the teacher's width (trained)."""

    def __init__(self, student: Any, student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.student = student
        self.projection = torch.nn.Linear(student_width, teacher_width)


class TRG(HintonKD):
    drop: str | None = None  # the term an ablation switches off
    settings_keys = HintonKD.settings_keys + tuple(TRG_DEFAULTS)
    setting_specs = HintonKD.setting_specs + tuple(
        Setting(k, "int" if isinstance(v, int) else "float", v, min=1 if k in INT_KEYS else 0)
        for k, v in TRG_DEFAULTS.items())

    def extra_keys(self) -> tuple[str, ...]:
        return tuple(TRG_DEFAULTS)

    def config(self, context: Any) -> VisionConfig:
        cfg = super().config(context)
        cfg.extra = {**TRG_DEFAULTS, **cfg.extra}
        if self.drop:
            cfg.extra[f"{self.drop}_weight"] = 0.0
        return cfg

    def wrap(self, student: Any, teacher: Any, cfg: VisionConfig) -> torch.nn.Module:
        return _StudentWithProjection(student, student.config.hidden_size,
                                      teacher.config.hidden_size)

    def unwrap(self, model: Any) -> Any:
        return model.student

    def loss(self, model: Any, pixels: torch.Tensor, labels: torch.Tensor, teacher: Any,
             cfg: VisionConfig, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        from methods.losses.trg import (
            contextual_loss,
            graph_local_loss,
            hinton_kd,
            token_infonce,
        )

        hp = cfg.extra
        logits, tokens = forward_tokens(model.student, pixels)
        with torch.no_grad():
            t_logits, t_tokens = forward_tokens(teacher, pixels)
        if tokens.shape[1] != t_tokens.shape[1]:
            from bench.errors import UsageError

            raise UsageError(f"TRG needs the same token grid: student has {tokens.shape[1]} "
                             f"patch tokens, teacher {t_tokens.shape[1]}; pick models with "
                             "the same image and patch size")
        parts = {"logit": hinton_kd(logits, t_logits, labels, temperature=cfg.temperature,
                                    ce_weight=cfg.ce_weight, kd_weight=cfg.kd_weight)}
        if hp["inner_weight"]:
            parts["inner"] = contextual_loss(tokens, t_tokens)
        if hp["local_weight"] or hp["global_weight"]:
            b, n, _ = tokens.shape
            m = min(int(hp["tokens_per_image"]), n)
            pos = torch.rand(b, n).argsort(dim=1)[:, :m]  # positions per image
            pick = torch.arange(b)[:, None]
            s_set = tokens[pick, pos].reshape(b * m, -1)
            t_set = t_tokens[pick, pos].reshape(b * m, -1)
            if hp["local_weight"]:
                parts["local"] = graph_local_loss(s_set, t_set, k=int(hp["knn_k"]))
            if hp["global_weight"]:
                tau = hp["tau_start"] + (hp["tau_end"] - hp["tau_start"]) * min(1.0, progress)
                parts["global"] = token_infonce(model.projection(s_set), t_set,
                                                temperature=tau)
        weights = {"logit": 1.0, "inner": hp["inner_weight"], "local": hp["local_weight"],
                   "global": hp["global_weight"]}
        loss = sum(weights[k] * v for k, v in parts.items())
        return loss, {k: float(v.detach()) for k, v in parts.items()}


class TRGNoInner(TRG):
    drop = "inner"


class TRGNoLocal(TRG):
    drop = "local"


class TRGNoGlobal(TRG):
    drop = "global"
