"""Token-level distillation of a causal LM on teacher responses: SFT and the KD baselines.

Each method trains a student made of the teacher's first ``student_layers`` decoder layers
(embeddings, final norm and LM head copied; :func:`bench.core.assets.first_k_layers_student`) on
the teacher's responses to the suite's training prompts, with the shared trainer:

- ``sft``: cross-entropy on the teacher's response tokens (sequence-level KD, Kim & Rush
  2016; the "no token-level distillation" baseline);
- ``fkl`` / ``rkl`` / ``jsd`` / ``skew_fkl`` / ``skew_rkl`` / ``tvd``: the loss of that name
  (:mod:`methods.losses.divergences`) between student and teacher next-token distributions
  at every response token, plus ``ce_weight`` × the SFT cross-entropy (0 by default: the
  pure divergence, as the baselines of GKD/DistiLLM tables);
- ``custom-loss``: any callable of the library's signature, from ``bench run --loss
  file.py:fn``.

Teacher logits come from the top-k cache made while the teacher generated the responses
(``teacher_logits=cache``, default, k = the suite's ``topk``): the divergence is then taken
on the teacher's top-k support with both distributions renormalised there
(:mod:`bench.core.topk`), an approximation whose error is the teacher mass outside
its top k. ``--set teacher_logits=online`` runs the teacher on every batch instead and
uses the full vocabulary (chunked, ``chunk_size`` rows at a time): exact, ~2x slower here.

Only the response positions go through the LM head (the prompt's next-token logits are
never used), which is most of the vocabulary-wide work on long prompts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.contracts import InstructContext, dataclass_settings
from bench.suite import Setting

TRAIN_FORMAT = 2  # 2: top-k cache compared on top-k + rest with the full student softmax

REGISTRY = [
    {"name": "teacher", "suites": ["instruct"], "target": "Teacher",
     "summary": "the teacher itself (SmolLM2-135M-Instruct by default), no training",
     "citation": "Allal et al. 2025 (SmolLM2), arXiv:2502.02737"},
    {"name": "student-init", "suites": ["instruct"], "target": "StudentInit",
     "summary": "the student before any training (teacher's first k layers)",
     "citation": "Sanh et al. 2019 (DistilBERT layer init), arXiv:1910.01108"},
    {"name": "sft", "suites": ["instruct"], "target": "SFT",
     "summary": "student fine-tuned on the teacher's responses (sequence-level KD)",
     "citation": "Kim & Rush 2016, arXiv:1606.07947"},
    {"name": "fkl", "suites": ["instruct"], "target": "ForwardKL", "loss": "fkl",
     "summary": "token-level forward KL to the teacher (Hinton KD)",
     "citation": "Hinton et al. 2015, arXiv:1503.02531"},
    {"name": "rkl", "suites": ["instruct"], "target": "ReverseKL", "loss": "rkl",
     "summary": "token-level reverse KL to the teacher",
     "citation": "Gu et al. 2024 (MiniLLM), arXiv:2306.08543"},
    {"name": "jsd", "suites": ["instruct"], "target": "JSD", "loss": "jsd",
     "summary": "token-level generalized JSD (beta 0.5)",
     "citation": "Agarwal et al. 2024 (GKD), arXiv:2306.13649"},
    {"name": "skew_fkl", "suites": ["instruct"], "target": "SkewForwardKL", "loss": "skew_fkl",
     "summary": "token-level skew forward KL (alpha 0.1)",
     "citation": "Ko et al. 2024 (DistiLLM), arXiv:2402.03898"},
    {"name": "skew_rkl", "suites": ["instruct"], "target": "SkewReverseKL", "loss": "skew_rkl",
     "summary": "token-level skew reverse KL (alpha 0.1)",
     "citation": "Ko et al. 2024 (DistiLLM), arXiv:2402.03898"},
    {"name": "tvd", "suites": ["instruct"], "target": "TVD", "loss": "tvd",
     "summary": "token-level total variation distance",
     "citation": "Wen et al. 2023 (f-divergence KD), arXiv:2307.15190"},
]


@dataclass
class TrainExample:
    prompt_ids: list[int]
    response_ids: list[int]
    topk_values: torch.Tensor | None = None  # [len(response_ids), k]
    topk_indices: torch.Tensor | None = None
    topk_lse: torch.Tensor | None = None  # [len(response_ids)] teacher log-normaliser


@dataclass
class KDConfig:
    student_layers: int = 8
    freeze_embeddings: bool = True
    epochs: int = 2
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 8
    lr: float = 5e-4
    warmup_fraction: float = 0.05
    temperature: float = 1.0
    ce_weight: float = 0.0
    teacher_logits: str = "cache"  # "cache" (top-k) | "online" (full vocabulary)
    chunk_size: int = 512
    mixed_precision: str = "bf16"
    checkpoint_every: int = 25
    seed: int = 0
    loss_hp: dict[str, float] = field(default_factory=dict)  # e.g. {"beta": 0.5}


def build_student(teacher: Any, layers: int) -> Any:
    from bench.core.assets import first_k_layers_student

    n = teacher.config.num_hidden_layers
    student = first_k_layers_student(teacher, layers) if layers < n else _copy(teacher)
    return student.float().train()


def _copy(model: Any) -> Any:
    import copy

    return copy.deepcopy(model)


def collate(batch: list[TrainExample], pad_id: int) -> dict[str, Any]:
    """Right-padded prompt+response ids and the positions whose next token is a response
    token (``predict`` [B, S] bool), in the order the top-k rows are concatenated."""
    rows = [e.prompt_ids + e.response_ids for e in batch]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    predict = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (e, r) in enumerate(zip(batch, rows, strict=True)):
        input_ids[i, : len(r)] = torch.tensor(r)
        attention[i, : len(r)] = 1
        p = len(e.prompt_ids)
        predict[i, p - 1: p - 1 + len(e.response_ids)] = True
    targets = torch.cat([torch.tensor(e.response_ids) for e in batch])
    out = {"input_ids": input_ids, "attention_mask": attention, "predict": predict,
           "targets": targets, "examples": batch}
    if batch[0].topk_values is not None:
        out["topk_values"] = torch.cat([e.topk_values for e in batch]).float()
        out["topk_indices"] = torch.cat([e.topk_indices for e in batch]).long()
        out["topk_lse"] = torch.cat([e.topk_lse for e in batch]).float()
    return out


def response_logits(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Logits ``[N, V]`` at the response positions only (N = response tokens in the batch)."""
    hidden = model.base_model(input_ids=batch["input_ids"],
                              attention_mask=batch["attention_mask"]).last_hidden_state
    return model.get_output_embeddings()(hidden[batch["predict"]])


class TokenKD:
    """A recipe: train a first-k-layers student with one token-level loss."""

    loss: str | None = "fkl"  # None: SFT only
    settings_keys = ("student_layers", "freeze_embeddings", "epochs", "max_steps",
                     "batch_size", "lr", "temperature", "ce_weight", "teacher_logits",
                     "chunk_size", "mixed_precision", "beta", "alpha")
    # beta/alpha: the loss's own mixing weight (jsd, skew_*), passed to it when set.
    setting_specs = dataclass_settings(KDConfig) + (
        Setting("beta", "float", None, min=0, max=1, nullable=True),
        Setting("alpha", "float", None, min=0, max=1, nullable=True))
    presets: dict[str, dict[str, Any]] = {"smoke": {"max_steps": 12}}
    implementation = "full"

    def __init__(self, loss_fn: Callable[..., torch.Tensor] | None = None,
                 name: str | None = None) -> None:
        self.custom = loss_fn
        self.custom_name = name

    def config(self, context: InstructContext) -> KDConfig:
        names = {f for f in KDConfig.__dataclass_fields__ if f != "loss_hp"}
        cfg = KDConfig(**{k: v for k, v in context.settings.items() if k in names},
                       seed=context.options.seed)
        cfg.loss_hp = {k: float(context.settings[k]) for k in ("beta", "alpha")
                       if k in context.settings}
        if context.settings.get("max_steps") is not None:
            cfg.max_steps = int(context.settings["max_steps"])
        return cfg

    def wrap(self, student: Any) -> torch.nn.Module:
        """The module the trainer optimises (recipes with extra trained parts wrap it)."""
        return student

    def unwrap(self, model: Any) -> Any:
        return model

    def needs_online_teacher(self) -> bool:
        return False

    def loss_fn(self) -> Callable[..., torch.Tensor] | None:
        if self.custom is not None:
            return self.custom
        if self.loss is None:
            return None
        from methods.losses import get_loss

        return get_loss(self.loss)

    def step_loss(self, model: Any, batch: dict[str, Any], cfg: KDConfig,
                  teacher: Any | None) -> tuple[torch.Tensor, dict[str, float]]:
        import torch.nn.functional as F

        logits = response_logits(model, batch)
        ce = F.cross_entropy(logits.float(), batch["targets"])
        fn = self.loss_fn()
        if fn is None:
            return ce, {"ce": float(ce.detach())}
        if teacher is not None:  # online, full vocabulary
            with torch.no_grad():
                t_logits = response_logits(teacher, batch)
            student, target = logits.unsqueeze(0), t_logits.unsqueeze(0)
            kd = fn(student, target, temperature=cfg.temperature, chunk_size=cfg.chunk_size,
                    **cfg.loss_hp)
        else:
            from bench.core.topk import topk_support

            student, target = topk_support(logits, batch["topk_values"], batch["topk_indices"],
                                           batch["topk_lse"])
            kd = fn(student.unsqueeze(0), target.unsqueeze(0), temperature=cfg.temperature,
                    **cfg.loss_hp)
        loss = kd + cfg.ce_weight * ce if cfg.ce_weight else kd
        return loss, {"ce": float(ce.detach()), "kd": float(kd.detach())}

    def build_model(self, context: InstructContext) -> tuple[Any, str]:
        from methods.trainer import StepOutput, TrainConfig, Trainer, total_steps

        cfg = self.config(context)
        if cfg.teacher_logits not in ("cache", "online"):
            from bench.errors import UsageError

            raise UsageError(f"--set teacher_logits={cfg.teacher_logits}: use cache or online")
        student = build_student(context.teacher, cfg.student_layers)
        if cfg.freeze_embeddings:  # tied to the LM head in SmolLM2: both stay the teacher's
            student.get_input_embeddings().weight.requires_grad_(False)
            student.get_output_embeddings().weight.requires_grad_(False)
        teacher = None
        if self.needs_online_teacher() or (cfg.teacher_logits == "online"
                                           and self.loss_fn() is not None):
            teacher = _copy(context.teacher).to(torch.bfloat16).eval()
        pad = context.tokenizer.pad_token_id

        def step(model: Any, batch: dict[str, Any]) -> StepOutput:
            loss, parts = self.step_loss(model, batch, cfg, teacher)
            return StepOutput(loss, n_tokens=int(batch["attention_mask"].sum()), metrics=parts,
                              mean_over=int(batch["targets"].numel()))  # response tokens

        steps = total_steps(len(context.train), cfg.batch_size, cfg.epochs,
                            max_steps=cfg.max_steps)
        train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                warmup_steps=max(1, int(steps * cfg.warmup_fraction)),
                                mixed_precision=cfg.mixed_precision,
                                checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
                                progress=True)
        method = context.options.method
        # TRAIN_FORMAT changes whenever the meaning of a step changes, so a checkpoint of
        # an older recipe is never resumed as if it were this one.
        key = hashlib.sha256(json.dumps([TRAIN_FORMAT, method, self.custom_name, asdict(cfg),
                                         context.teacher_name, _data_key(context.train)],
                                        default=str).encode()).hexdigest()[:12]
        out_dir = context.work_dir / "train" / f"{method}-{key}"
        trainer = Trainer(self.wrap(student), step, context.train, train_cfg, out_dir,
                          collate_fn=lambda b: collate(b, pad))
        model = self.unwrap(trainer.train())
        context.config.update({"recipe": asdict(cfg), "train_steps": steps,
                               "loss": self.custom_name or self.loss or "ce",
                               "checkpoint_dir": str(out_dir),
                               "implementation": self.implementation})
        return model.eval(), f"{Path(context.teacher_name).name}-{cfg.student_layers}L"


def _data_key(train: list[TrainExample]) -> str:
    digest = hashlib.sha256()
    for e in train:
        digest.update(json.dumps([e.prompt_ids, e.response_ids]).encode())
    return digest.hexdigest()[:16]


class SFT(TokenKD):
    loss = None


class ForwardKL(TokenKD):
    loss = "fkl"


class ReverseKL(TokenKD):
    loss = "rkl"


class JSD(TokenKD):
    loss = "jsd"


class SkewForwardKL(TokenKD):
    loss = "skew_fkl"


class SkewReverseKL(TokenKD):
    loss = "skew_rkl"


class TVD(TokenKD):
    loss = "tvd"


class Teacher:
    settings_keys: tuple[str, ...] = ()

    def build_model(self, context: InstructContext) -> tuple[Any, str]:
        return context.teacher, Path(context.teacher_name).name


class StudentInit:
    settings_keys = ("student_layers",)
    setting_specs = tuple(s for s in TokenKD.setting_specs if s.name == "student_layers")

    def build_model(self, context: InstructContext) -> tuple[Any, str]:
        layers = int(context.settings.get("student_layers", KDConfig.student_layers))
        return build_student(context.teacher, layers).eval(), \
            f"{Path(context.teacher_name).name}-{layers}L"


def user_loss_recipe(options: Any) -> TokenKD:
    """The recipe of ``bench run --loss file.py:fn``: :class:`TokenKD` with the user's loss."""
    return TokenKD(options.loss_fn, name=options.loss_name or "custom")
