"""Preference alignment recipes for the ``align`` suite: the reference policy, DPO and the
reverse DPO model (Rafailov et al. 2023, DPO, NeurIPS, arXiv:2305.18290; the reverse model is
AlignDistil's second teacher, Zhang et al. 2025, arXiv:2503.02832).

- ``sft`` (dispatched by the ``align`` suite to :class:`ReferencePolicy`; the registered name
  ``sft`` belongs to :mod:`methods.instruct.token_kd` for ``instruct``, so ``bench ls`` shows that
  entry's summary): the reference policy itself, no training. On the offline default that
  is SmolLM2-135M-Instruct as shipped, an SFT (+ preference-tuned) chat model, which is the
  role the SFT model plays in the DPO/AlignDistil pipelines; it anchors the table (win rate
  0.5 and KL 0 by construction).
- ``dpo``: Eq. 7 of the DPO paper (:func:`methods.losses.dpo.dpo_loss`, β = 0.1) on the
  suite's (prompt, chosen, rejected) pairs, starting from and regularised towards the
  reference policy.
- ``dpo-reverse``: the same with chosen and rejected swapped.

Decisions:

- The policy is trained through a peft LoRA adapter (r = 16, α = 32, dropout 0, all
  attention and MLP projections) by default: the backward pass skips the weight gradients
  of the 135M weights and AdamW keeps state for the adapter only (a LoRA step of 8 rows ran
  at ~110 tokens/s under bf16 autocast here, ~70 in fp32; full fine-tuning was not timed);
  ``--set lora_r=0`` fine-tunes every weight (the papers' setting, ``--preset full``). The
  adapter is merged before evaluation, so a result's model is a plain causal LM. Training
  uses bf16 autocast (``mixed_precision``), learning rate 1e-4 for the adapter (the papers'
  1e-6 is for full fine-tuning), 2 epochs, batch 8 pairs, warm-up 10%, cosine decay.
- Reference log-probabilities of every pair are computed once, in the precision the policy
  trains in (so the log-ratio is 0 at step 0), and cached in ``<work>/ref_logps`` keyed by
  the reference, the precision and the pairs.
- Sequence log-probabilities sum over the response tokens (EOS included when generated);
  only response positions go through the LM head.
- Checkpoints are keyed by (role, config, reference, pairs), not by the method that asked
  for the model, so AlignDistil reuses the ``dpo`` / ``dpo-reverse`` runs' models.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench.contracts import AlignContext, dataclass_settings

REGISTRY = [
    {"name": "dpo", "suites": ["align"], "target": "DPO",
     "summary": "DPO on the suite's preference pairs, LoRA on the reference policy (align)",
     "citation": "Rafailov et al. 2023 (DPO), arXiv:2305.18290"},
    {"name": "dpo-reverse", "suites": ["align"], "target": "DPOReverse",
     "summary": "DPO with chosen and rejected swapped (AlignDistil's reverse teacher; align)",
     "citation": "Zhang et al. 2025 (AlignDistil), arXiv:2503.02832"},
    {"name": "sft", "suites": ["align"], "target": "ReferencePolicy",
     "summary": "the reference policy as is (SmolLM2-135M-Instruct by default), no training",
     "citation": "Allal et al. 2025 (SmolLM2), arXiv:2502.02737"},
]
TRAIN_FORMAT = 1


@dataclass
class PreferencePair:
    id: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_reward: float | None = None  # gold reward (None for external data)
    rejected_reward: float | None = None


@dataclass
class PolicyConfig:
    lora_r: int = 16  # 0: full fine-tuning
    lora_alpha: int = 32
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_fraction: float = 0.1
    mixed_precision: str = "bf16"
    checkpoint_every: int = 25
    seed: int = 0


@dataclass
class DPOConfig(PolicyConfig):
    beta: float = 0.1


POLICY_KEYS = tuple(f for f in PolicyConfig.__dataclass_fields__ if f != "seed")
# The budget of every trained align recipe per preset (``dpo_*``: AlignDistil's DPO teachers).
ALIGN_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"max_steps": 4, "dpo_max_steps": 4},
    "full": {"lora_r": 0, "lr": 1e-6, "epochs": 1, "batch_size": 2, "grad_accum": 64,
             "dpo_lora_r": 0, "dpo_lr": 1e-6, "dpo_epochs": 1, "dpo_batch_size": 2,
             "dpo_grad_accum": 64},
}
DPO_KEYS = POLICY_KEYS + ("beta",)


def config_from(cls: type, context: AlignContext, prefix: str = "") -> Any:
    """``cls`` filled from the suite settings named ``prefix`` + field (``seed``: --seed)."""
    values = {name: context.settings[prefix + name] for name in cls.__dataclass_fields__
              if prefix + name in context.settings and name != "seed"}
    cfg = cls(**values, seed=context.options.seed)
    if cfg.max_steps is not None:
        cfg.max_steps = int(cfg.max_steps)
    return cfg


# -- response batches -----------------------------------------------------------------------
def collate_responses(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-padded (prompt + response) rows with, per row, the positions predicting each
    response token (``positions`` [R, L]), the tokens (``labels`` [R, L]) and ``mask``."""
    seqs = [p + r for p, r in rows]
    width, longest = max(len(s) for s in seqs), max(max(len(r) for _, r in rows), 1)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), longest), dtype=torch.long)
    labels = torch.zeros((len(rows), longest), dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.bool)
    for i, ((prompt, response), seq) in enumerate(zip(rows, seqs, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        n = len(response)
        positions[i, :n] = torch.arange(len(prompt) - 1, len(prompt) - 1 + n)
        labels[i, :n] = torch.tensor(response, dtype=torch.long)
        mask[i, :n] = True
    return {"input_ids": input_ids, "attention_mask": attention, "positions": positions,
            "labels": labels, "mask": mask}


def _parts(model: Any) -> tuple[Any, Any]:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder(), inner.get_output_embeddings()


def response_logits(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Logits ``[R, L, V]`` over the response tokens (slot j predicts ``labels[:, j]``); only
    those positions go through the LM head."""
    decoder, head = _parts(model)
    hidden = decoder(input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"]).last_hidden_state
    index = batch["positions"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return head(hidden.gather(1, index))


def response_logps(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Sequence log-probabilities ``[R]`` of the responses (float32)."""
    from methods.losses.dpo import sequence_logps

    return sequence_logps(response_logits(model, batch), batch["labels"], batch["mask"])


# -- policies -------------------------------------------------------------------------------
def build_policy(reference: Any, cfg: PolicyConfig) -> Any:
    """A trainable copy of the reference: LoRA adapter (``lora_r`` > 0) or full weights."""
    policy = copy.deepcopy(reference).float()
    if cfg.lora_r <= 0:
        return policy.train()
    from peft import LoraConfig

    from bench.core.hf import with_lora

    lora = LoraConfig(r=int(cfg.lora_r), lora_alpha=int(cfg.lora_alpha), lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj"])
    return with_lora(policy, lora).train()


def merged(model: Any) -> Any:
    """A plain causal LM: the LoRA adapter merged into the weights (no-op without one)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval()


def data_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def pairs_key(pairs: list[PreferencePair]) -> str:
    return data_key([[p.prompt_ids, p.chosen_ids, p.rejected_ids] for p in pairs])


def train_policy(context: AlignContext, role: str, cfg: PolicyConfig, dataset: list[Any],
                 step_fn: Any, collate_fn: Any, extra_key: Any = None) -> tuple[Any, int, Path]:
    """Train a policy with the shared trainer; returns (merged model, steps, checkpoint dir)."""
    from methods.trainer import StepOutput, TrainConfig, Trainer, total_steps

    steps = total_steps(len(dataset), cfg.batch_size, cfg.epochs, grad_accum=cfg.grad_accum,
                        max_steps=cfg.max_steps)
    train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_size,
                            grad_accum=int(cfg.grad_accum), lr=cfg.lr,
                            warmup_steps=max(1, int(steps * cfg.warmup_fraction)),
                            mixed_precision=cfg.mixed_precision,
                            checkpoint_every=cfg.checkpoint_every, keep_checkpoints=1,
                            seed=cfg.seed)
    key = data_key(TRAIN_FORMAT, role, asdict(cfg), context.reference_name,
                   pairs_key(context.pairs), extra_key)
    out_dir = context.work_dir / "train" / f"{role}-{key}"

    def step(model: Any, batch: Any) -> StepOutput:
        loss, n_tokens, metrics = step_fn(model, batch)
        return StepOutput(loss, n_tokens=n_tokens, metrics=metrics)

    trainer = Trainer(build_policy(context.reference, cfg), step, dataset, train_cfg, out_dir,
                      collate_fn=collate_fn)
    return merged(trainer.train()), steps, out_dir


# -- DPO ------------------------------------------------------------------------------------
def reference_logps(context: AlignContext, precision: str, batch_size: int = 8
                    ) -> dict[str, tuple[float, float]]:
    """{pair id: (log π_ref(chosen), log π_ref(rejected))}, computed once and cached."""
    key = data_key(context.reference_name, precision, pairs_key(context.pairs))
    path = context.work_dir / "ref_logps" / f"{key}.json"
    if path.exists():
        return {k: tuple(v) for k, v in json.loads(path.read_text()).items()}
    from bench.core.progress import progress_bar

    pad, out = context.tokenizer.pad_token_id, {}
    device = next(context.reference.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.no_grad(), autocast, progress_bar(len(context.pairs),
                                                 "reference log-probs") as advance:
        for start in range(0, len(context.pairs), batch_size):
            chunk = context.pairs[start:start + batch_size]
            rows = [(p.prompt_ids, p.chosen_ids) for p in chunk] + \
                   [(p.prompt_ids, p.rejected_ids) for p in chunk]
            batch = {k: v.to(device) for k, v in collate_responses(rows, pad).items()}
            logps = response_logps(context.reference, batch).tolist()
            for i, p in enumerate(chunk):
                out[p.id] = (logps[i], logps[len(chunk) + i])
            advance(len(chunk))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)
    return out


def train_dpo(context: AlignContext, reverse: bool, prefix: str = ""
              ) -> tuple[Any, dict[str, Any]]:
    """The DPO (or reverse DPO) model of this context: (merged model, what to record).

    Hyperparameters come from the settings named ``prefix`` + field: the ``dpo`` methods
    read ``lr``, ``epochs``, ...; AlignDistil reads ``dpo_lr``, ``dpo_epochs``, ... for its
    teachers, so ``--set lr=...`` there changes the student only and the teachers stay
    the ``dpo`` / ``dpo-reverse`` runs' models.
    """
    from methods.losses.dpo import dpo_loss

    cfg = config_from(DPOConfig, context, prefix)
    ref = reference_logps(context, cfg.mixed_precision)
    pad = context.tokenizer.pad_token_id

    def collate(pairs: list[PreferencePair]) -> dict[str, Any]:
        good = [p.rejected_ids if reverse else p.chosen_ids for p in pairs]
        bad = [p.chosen_ids if reverse else p.rejected_ids for p in pairs]
        rows = [(p.prompt_ids, r) for p, r in zip(pairs, good, strict=True)]
        rows += [(p.prompt_ids, r) for p, r in zip(pairs, bad, strict=True)]
        batch = collate_responses(rows, pad)
        a, b = (1, 0) if reverse else (0, 1)
        batch["ref_good"] = torch.tensor([ref[p.id][a] for p in pairs])
        batch["ref_bad"] = torch.tensor([ref[p.id][b] for p in pairs])
        return batch

    def step(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, int, dict[str, float]]:
        logps = response_logps(model, batch)
        n = batch["ref_good"].shape[0]
        loss, good, bad = dpo_loss(logps[:n], logps[n:], batch["ref_good"], batch["ref_bad"],
                                   beta=cfg.beta)
        return loss, int(batch["attention_mask"].sum()), {
            "reward_accuracy": float((good > bad).float().mean()),
            "reward_margin": float((good - bad).mean())}

    role = "dpo-reverse" if reverse else "dpo"
    model, steps, out_dir = train_policy(context, role, cfg, context.pairs, step, collate)
    return model, {"recipe": asdict(cfg), "train_steps": steps, "checkpoint_dir": str(out_dir),
                   "pairs": len(context.pairs)}


# The settings that move DPO along its gold-reward-vs-KL curve, with the tag that names
# them in a swept row's model (``-beta0.01``, ``-lr0.001``, ``-ep4``).
SWEEP_KEYS: tuple[tuple[str, str], ...] = (("beta", "beta"), ("lr", "lr"), ("epochs", "ep"))


def sweep_suffix(recipe: dict[str, Any], preset: str) -> str:
    """The model-name suffix of a DPO recipe off the preset's default on a swept setting.

    A β, learning rate or epoch count other than the preset's names its model, so a
    sweep's rows sit side by side (:mod:`bench.align.report` reads them as DPO's
    gold-reward-vs-KL curve); the default recipe gets no suffix.
    """
    fields = DPOConfig.__dataclass_fields__
    default = asdict(DPOConfig(**{k: v for k, v in ALIGN_PRESETS.get(preset, {}).items()
                                  if k in fields}))
    return "".join(f"-{tag}{recipe[key]:g}" for key, tag in SWEEP_KEYS
                   if recipe[key] != default[key])


def _name(context: AlignContext) -> str:
    return Path(context.reference_name).name


class ReferencePolicy:
    """The reference policy as is (the ``sft`` row of ``align``)."""

    settings_keys: tuple[str, ...] = ()
    implementation = "full"

    def build_model(self, context: AlignContext) -> tuple[Any, str]:
        return context.reference, _name(context)


class DPO:
    settings_keys = DPO_KEYS
    setting_specs = dataclass_settings(DPOConfig)
    presets = ALIGN_PRESETS
    implementation = "full"
    reverse = False

    def build_model(self, context: AlignContext) -> tuple[Any, str]:
        model, info = train_dpo(context, self.reverse)
        context.config["train"] = info
        suffix = "lora" if info["recipe"]["lora_r"] > 0 else "full"
        sweep = sweep_suffix(info["recipe"], context.options.preset)
        return model, f"{_name(context)}-{suffix}{sweep}"


class DPOReverse(DPO):
    reverse = True
