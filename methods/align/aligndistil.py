"""AlignDistil recipes for the ``align`` suite (Zhang et al. 2025, "AlignDistil: Token-Level
Language Model Alignment as Adaptive Policy Distillation", ACL 2025, arXiv:2503.02832).

Pipeline (as the official code, an OpenRLHF fork): train a DPO model and a reverse DPO model
(chosen/rejected swapped) on the preference pairs (:mod:`methods.align.dpo`, the same checkpoints
the ``dpo`` / ``dpo-reverse`` rows use), then distil into the policy, initialised from the
reference policy, the synthetic token-level teacher

    z*_t = z_dpo + α_t (z_dpo − z_rev),   α_t = r · Σ_v |p_dpo − p_rev| + ε,   β_t = β₀ / α_t

with the loss Σ_t β_t · KL(π_θ ‖ softmax(z*_t)) over response tokens, divided by the response
length, averaged over the batch (:func:`methods.losses.aligndistil.aligndistil_loss`; the L1
distance without ½, as the official code). Defaults: β₀ = 0.1, ε = 1e-3, r = 10 off-policy
and 15 on-policy (the official scripts' ``beta2``), length normalisation on.

Methods (separate names, so each gets its own leaderboard row):

- ``aligndistil``: off-policy, on the **chosen** responses of the pairs (the official
  off-policy trainer reads the DPO pair data and distils on ``chosen_ids`` only).
- ``aligndistil-on``: on-policy; every step samples one response per training prompt from
  the current policy (temperature 1, top-p 1, as the official on-policy script; seeded per
  batch, :func:`bench.core.generation.generate_batch`), then takes the loss on those responses.
- ``aligndistil-constant``: ablation "constant extrapolation" (Theorem 1): z* = z_ref +
  α (z_dpo − z_ref) with the reference policy as second model and a constant α (default 2:
  the RLHF optimum for a KL coefficient β = β₀/2, i.e. extrapolating twice the DPO
  reward), β_t = β₀/α.
- ``aligndistil-contrastive``: ablation "contrastive without adaptivity": z* = z_dpo +
  α (z_dpo − z_rev) with constant α (default 1), β_t = β₀/α.

``--set alpha=...`` sets the constant α of the ablations, ``r``, ``eps``, ``beta0``,
``length_normalize`` the adaptive teacher; ``lr``, ``epochs``, ``lora_r``, ... the student;
``dpo_lr``, ``dpo_epochs``, ... the two DPO teachers. Teachers run frozen in
``teacher_dtype`` (bf16 by default); the loss takes ``chunk_size`` response tokens at a time
so the float32 [tokens, vocab] tensors of one chunk only exist at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.contracts import AlignContext, dataclass_settings
from bench.core.hf import inference_copy
from methods.align.dpo import (
    ALIGN_PRESETS,
    DPO_KEYS,
    POLICY_KEYS,
    DPOConfig,
    PolicyConfig,
    collate_responses,
    config_from,
    data_key,
    response_logits,
    train_dpo,
    train_policy,
)

REGISTRY = [
    {"name": "aligndistil", "suites": ["align"], "target": "AlignDistil",
     "summary": "AlignDistil off-policy: adaptive logit extrapolation of DPO vs reverse DPO, "
                "distilled on the chosen responses (r=10; align)",
     "citation": "Zhang et al. 2025 (AlignDistil), arXiv:2503.02832"},
    {"name": "aligndistil-on", "suites": ["align"], "target": "AlignDistilOnPolicy",
     "summary": "AlignDistil on-policy: the same teacher on responses sampled from the "
                "current policy (r=15; align)",
     "citation": "Zhang et al. 2025 (AlignDistil), arXiv:2503.02832"},
    {"name": "aligndistil-constant", "suites": ["align"], "target": "AlignDistilConstant",
     "summary": "AlignDistil ablation: constant extrapolation from the reference policy "
                "(Theorem 1; align)",
     "citation": "Zhang et al. 2025 (AlignDistil), arXiv:2503.02832"},
    {"name": "aligndistil-contrastive", "suites": ["align"], "target": "AlignDistilContrastive",
     "summary": "AlignDistil ablation: contrastive DPO reward, constant alpha (align)",
     "citation": "Zhang et al. 2025 (AlignDistil), arXiv:2503.02832"},
]


@dataclass
class AlignDistilConfig(PolicyConfig):
    r: float = 10.0
    eps: float = 1e-3
    beta0: float = 0.1
    alpha: float = 1.0
    length_normalize: bool = True
    temperature: float = 1.0
    chunk_size: int | None = 128
    teacher_dtype: str = field(default="bfloat16",
                               metadata={"choices": ("float32", "bfloat16", "float16")})
    sample_temperature: float = 1.0  # on-policy rollouts
    sample_top_p: float | None = None


DISTIL_KEYS = ("r", "eps", "beta0", "alpha", "length_normalize", "temperature", "chunk_size",
               "teacher_dtype", "sample_temperature", "sample_top_p")


def _frozen(model: Any, dtype: str) -> Any:
    frozen = inference_copy(model, dtype)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def _on_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class AlignDistil:
    """Off-policy AlignDistil (adaptive, contrastive teacher)."""

    mode = "adaptive"
    on_policy = False
    presets = ALIGN_PRESETS
    defaults: dict[str, float] = {"r": 10.0}
    settings_keys = POLICY_KEYS + DISTIL_KEYS + tuple(f"dpo_{k}" for k in DPO_KEYS)
    setting_specs = dataclass_settings(AlignDistilConfig) + \
        dataclass_settings(DPOConfig, prefix="dpo_")
    implementation = "full"

    def config(self, context: AlignContext) -> AlignDistilConfig:
        cfg = config_from(AlignDistilConfig, context)
        for key, value in self.defaults.items():
            if key not in context.settings:
                setattr(cfg, key, value)
        return cfg

    def build_model(self, context: AlignContext) -> tuple[Any, str]:
        from methods.losses.aligndistil import aligndistil_loss

        cfg = self.config(context)
        dpo_model, dpo_info = train_dpo(context, reverse=False, prefix="dpo_")
        info: dict[str, Any] = {"dpo": dpo_info}
        if self.mode == "constant":  # Theorem 1: the second model is the reference policy
            second = context.reference
        else:
            second, info["dpo_reverse"] = train_dpo(context, reverse=True, prefix="dpo_")
        teachers = [_frozen(dpo_model, cfg.teacher_dtype), _frozen(second, cfg.teacher_dtype)]
        pad = context.tokenizer.pad_token_id
        if self.on_policy:
            dataset: list[Any] = list(context.prompts)

            def collate(prompts: list[list[int]]) -> list[list[int]]:
                return prompts
        else:
            dataset = [(p.prompt_ids, p.chosen_ids) for p in context.pairs]

            def collate(rows: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
                return collate_responses(rows, pad)

        def step(model: Any, batch: Any) -> tuple[torch.Tensor, int, dict[str, float]]:
            if self.on_policy:
                batch = self.rollout(model, batch, cfg, context)
            device = batch["input_ids"].device
            for t in teachers:
                if next(t.parameters()).device != device:
                    t.to(device)
            with torch.no_grad():
                z1, z2 = (response_logits(t, batch) for t in teachers)
            student = response_logits(model, batch)
            loss = aligndistil_loss(student, z1, z2, mask=batch["mask"], r=cfg.r, eps=cfg.eps,
                                    beta0=cfg.beta0, mode=self.mode, alpha=cfg.alpha,
                                    length_normalize=bool(cfg.length_normalize),
                                    temperature=cfg.temperature, chunk_size=cfg.chunk_size)
            return loss, int(batch["attention_mask"].sum()), {
                "response_tokens": float(batch["mask"].sum(-1).float().mean())}

        teacher_dirs = [dpo_info["checkpoint_dir"],
                        info.get("dpo_reverse", {}).get("checkpoint_dir")]
        model, steps, out_dir = train_policy(
            context, self.role, cfg, dataset, step, collate,
            extra_key=[teacher_dirs, context.settings["max_new_tokens"],
                       data_key(context.prompts) if self.on_policy else None])
        context.config["train"] = {"recipe": asdict(cfg), "mode": self.mode,
                                   "on_policy": self.on_policy, "train_steps": steps,
                                   "checkpoint_dir": str(out_dir), "teachers": info}
        suffix = "lora" if cfg.lora_r > 0 else "full"
        return model, f"{Path(context.reference_name).name}-{suffix}"

    @property
    def role(self) -> str:
        return f"aligndistil-{self.mode}-{'on' if self.on_policy else 'off'}"

    @staticmethod
    def rollout(model: Any, prompts: list[list[int]], cfg: AlignDistilConfig,
                context: AlignContext) -> dict[str, Any]:
        """One sampled response per prompt from the current policy, as a response batch."""
        from bench.core.generation import Sampling, generate_batch

        device = next(model.parameters()).device
        model.eval()
        try:
            with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
                gens = generate_batch(model, context.tokenizer, prompts,
                                      max_new_tokens=int(context.settings["max_new_tokens"]),
                                      sampling=Sampling(cfg.sample_temperature,
                                                        cfg.sample_top_p, cfg.seed))
        finally:
            model.train()
        eos = context.tokenizer.eos_token_id
        rows = [(g.prompt_ids, g.output_ids or [eos]) for g in gens]
        return _on_device(collate_responses(rows, context.tokenizer.pad_token_id), device)


class AlignDistilOnPolicy(AlignDistil):
    on_policy = True
    defaults = {"r": 15.0}


class AlignDistilConstant(AlignDistil):
    mode = "constant"
    defaults = {"alpha": 2.0}


class AlignDistilContrastive(AlignDistil):
    mode = "contrastive"
    defaults = {"alpha": 1.0}
