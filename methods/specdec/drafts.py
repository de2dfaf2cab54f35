"""Draft recipes of the ``specbench`` suite: ``ar``, ``draft-lm``, ``eagle``, ``fspad``.

- ``ar``: plain autoregressive decoding of the target (no draft). Its "speedup" is plain
  against plain in the same interleaved run, so it measures the timing noise floor
  (expected 1.0) and its tau is 1 by definition.
- ``draft-lm``: standard speculative decoding (Leviathan et al. 2023, arXiv:2211.17192;
  Chen et al. 2023, arXiv:2302.01318) with a draft LM of the target's tokenizer: the
  target's first ``draft_layers`` layers (:func:`methods.instruct.token_kd.build_student`),
  KD-trained by default with forward KL on the target's responses (the ``fkl`` recipe of
  :mod:`methods.instruct.token_kd`, top-k cached target logits); ``kd_epochs=0`` keeps it untrained.
- ``eagle`` (Li et al. 2024, EAGLE, arXiv:2401.15077; EAGLE-2 trees, arXiv:2406.16858)
  and ``fspad`` (Gui et al. 2024, FSPAD, arXiv:2408.15562): feature-level heads
  (:mod:`methods.specdec.heads`) trained on cached target features with
  :func:`methods.losses.spec.eagle_loss` / :func:`~methods.losses.spec.fspad_loss`
  through :class:`methods.trainer.Trainer` (checkpoints, exact resume).

Training data of the heads (EAGLE's recipe on our data): the target's greedy responses to
the suite's training prompts (generated once and cached by the suite,
:class:`bench.core.generation.GenerationCache`); the target's last hidden states over each
prompt + response are computed **once** (float32 target) and stored as one safetensors
file in the work directory (:func:`methods.specdec.features.target_features`), keyed by the
target's fingerprint and the token ids. Per sequence of length ``L`` the pairs ``t = 0..L-2`` are (input ``f_t`` +
uniform noise, next token ``x_{t+1}``) -> target ``f_{t+1}``; the loss covers the pairs
from the one whose next token is the last prompt token (the first draft of a turn) to the
end of the response (EAGLE's ``loss_mask`` covers the assistant tokens only; the two
extra pairs per sequence are the drafts made at the start of a turn).

Paper hyperparameters (official scripts): AdamW betas (0.9, 0.95), lr 3e-5 (EAGLE) / 5e-5
(FSPAD), 2,000 warm-up steps, gradient clipping by value 0.5, uniform noise std 0.2,
20 epochs of ShareGPT (68k dialogues), bf16. ``--preset full`` uses them (lr, 20 epochs,
2,000 warm-up steps then constant: the official linear decay to 800k steps is nearly
flat). The CPU default trains a randomly initialised head for ~135 steps (3 epochs of 360
sequences), where lr 3e-5 would barely move it: lr 1e-3 with 5% warm-up and cosine decay
(a probe: the loss fell steadily over 40 steps). Gradients are clipped by norm 0.5 (the
shared trainer clips norms, not values). Every value is recorded in the result.
``--preset cpu-long`` (:data:`HEAD_PRESETS`, eagle and fspad only) trains 2,250 steps on
1,800 responses; with the suite's ``curve_steps`` the head's weights after those steps
are saved during training (:mod:`methods.specdec.snapshots`) and offered on the draft as
``curve_snapshots`` for the suite's tau-vs-steps curve (:mod:`bench.specdec.curve`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.contracts import SpecContext, dataclass_settings
from bench.errors import UsageError
from bench.specdec.curve import parse_curve_steps
from methods.specdec.features import FeatureStore, data_key, head_batch, target_features
from methods.specdec.snapshots import SNAPSHOT_FOLDER, StepSnapshots, attach

TRAIN_FORMAT = 1

REGISTRY = [
    {"name": "ar", "suites": ["specbench"], "target": "Plain",
     "summary": "plain autoregressive decoding of the target (specbench's reference: "
                "speedup 1 up to timing noise, tau 1)",
     "citation": "Xia et al. 2024 (Spec-Bench), arXiv:2401.07851"},
    {"name": "draft-lm", "suites": ["specbench"], "target": "DraftLM",
     "summary": "speculative decoding with a small draft LM: the target's first 4 layers, "
                "KD-trained (forward KL) on the target's responses (specbench)",
     "citation": "Leviathan et al. 2023, arXiv:2211.17192; Chen et al. 2023, "
                 "arXiv:2302.01318"},
    {"name": "eagle", "suites": ["specbench"], "target": "Eagle",
     "summary": "EAGLE feature-level draft head: fc([embedding; feature]) + one decoder "
                "layer over the frozen target's embedding/LM head (specbench)",
     "citation": "Li et al. 2024 (EAGLE), arXiv:2401.15077; EAGLE-2, arXiv:2406.16858"},
    {"name": "fspad", "suites": ["specbench"], "target": "FSPAD",
     "summary": "FSPAD: EAGLE-style head with feature sampling (embedding-gated SwiGLU) and "
                "partial alignment distillation (feature half + logit half) (specbench)",
     "citation": "Gui et al. 2024 (FSPAD), arXiv:2408.15562"},
]


# ----------------------------------------------------------------------------- recipes


class Plain:
    """``ar``: no draft."""

    settings_keys: tuple[str, ...] = ()
    needs_training_data = False

    def build_draft(self, context: SpecContext) -> tuple[Any, str]:
        return None, Path(context.target_name).name


@dataclass
class DraftLMConfig:
    draft_layers: int = 4
    kd_epochs: int = 2
    kd_steps: int | None = None
    kd_lr: float = 5e-4
    kd_batch_size: int = 8
    mixed_precision: str = "bf16"


# The training budget of every trained draft per preset (kd_epochs: the draft LM's KD).
SPEC_PRESETS: dict[str, dict[str, Any]] = {"smoke": {"epochs": 1, "kd_epochs": 1}}
# ``--preset cpu-long`` (eagle and fspad only; the suite's preset adds 300 training prompts
# per category and the tau curve): 10 epochs of the 1,800 responses at batch 8. max_steps
# pins that budget (10 x ceil(1,800 / 8) = 2,250 steps) so that both heads take exactly
# the same number of steps and the curve's last point (2,250) is the final head even if a
# response comes back empty and drops out of the training set.
HEAD_PRESETS: dict[str, dict[str, Any]] = {**SPEC_PRESETS,
                                           "cpu-long": {"epochs": 10, "max_steps": 2250}}


class DraftLM:
    """``draft-lm``: the target's first ``draft_layers`` layers, KD-trained (forward KL)."""

    settings_keys = tuple(DraftLMConfig.__dataclass_fields__)
    setting_specs = dataclass_settings(DraftLMConfig)
    presets = SPEC_PRESETS
    needs_training_data = True

    def build_draft(self, context: SpecContext) -> tuple[Any, str]:
        from bench.contracts import InstructContext
        from bench.specdec import LMDraft
        from methods.instruct.token_kd import ForwardKL, build_student

        cfg = DraftLMConfig(**{k: context.settings[k] for k in self.settings_keys
                               if k in context.settings})
        name = f"{Path(context.target_name).name}+draft-{cfg.draft_layers}L"
        context.config["recipe"] = asdict(cfg)
        if context.options.student:  # a given draft LM (e.g. vicuna-68m), used as it is
            from bench.core.assets import load_causal_lm

            model, tok = load_causal_lm(context.options.student)
            if tok.get_vocab() != context.tokenizer.get_vocab():
                raise UsageError(f"--student {context.options.student!r} does not share the "
                                 "target's tokenizer; speculative decoding needs one")
            context.config["recipe"] = {"draft": context.options.student}
            device = next(context.target.parameters()).device
            return LMDraft(model.to(device).eval()), \
                f"{Path(context.target_name).name}+{Path(context.options.student).name}"
        if cfg.kd_epochs == 0 and not cfg.kd_steps:
            context.notes.append("draft LM untrained (kd_epochs=0)")
            student = build_student(context.target, cfg.draft_layers)
            return LMDraft(student.to(next(context.target.parameters()).dtype).eval()), name
        kd_settings = {"student_layers": cfg.draft_layers, "epochs": cfg.kd_epochs,
                       "max_steps": cfg.kd_steps, "lr": cfg.kd_lr,
                       "batch_size": cfg.kd_batch_size,
                       "mixed_precision": cfg.mixed_precision}
        if not context.train or context.train[0].topk_values is None:
            kd_settings["teacher_logits"] = "online"  # reference responses: no top-k cache
        kd = InstructContext(options=context.options, settings=kd_settings,
                             work_dir=context.work_dir, base_name=context.target_name,
                             base=context.target, tokenizer=context.tokenizer,
                             train=context.train)
        model, _ = ForwardKL().build_model(kd)
        context.config["kd"] = kd.config
        dtype = next(context.target.parameters()).dtype
        return LMDraft(model.to(dtype).eval()), name + "-fkl"


@dataclass
class HeadTrainConfig:
    epochs: int = 3
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_fraction: float = 0.05
    warmup_steps: int | None = None  # overrides warmup_fraction
    schedule: str = field(default="cosine",
                          metadata={"choices": ("cosine", "linear", "constant")})
    max_grad_norm: float = 0.5
    noise_std: float = 0.2
    feature_weight: float = 1.0
    token_weight: float = 0.1
    chunk_size: int = 256
    mixed_precision: str = "bf16"
    checkpoint_every: int = 50
    draft_vocab: int = 0  # 0: full vocabulary; N: the N most frequent training tokens
    feature_dtype: str = field(default="bfloat16",
                               metadata={"choices": ("float32", "bfloat16", "float16")})
    seed: int = 0


class FeatureHeadRecipe:
    """Shared recipe of ``eagle`` and ``fspad`` (the head class differs)."""

    kind = "eagle"
    paper_lr = 3e-5
    settings_keys = tuple(f for f in HeadTrainConfig.__dataclass_fields__ if f != "seed")
    setting_specs = dataclass_settings(HeadTrainConfig)
    presets = HEAD_PRESETS
    needs_training_data = True

    @staticmethod
    def check_settings(settings: dict[str, Any]) -> None:
        """``betas`` (a JSON pair, or "b1,b2" as :meth:`train_config` reads it) must be two
        numbers in [0, 1) for AdamW; checked up front."""
        if "betas" not in settings:
            return
        betas = settings["betas"]
        if isinstance(betas, str):
            try:
                betas = [float(x) for x in betas.split(",")]
            except ValueError:
                pass
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                for b in betas)):
            raise UsageError(f"--set betas={json.dumps(settings['betas'])}: expected two "
                             "numbers in [0, 1), e.g. [0.9, 0.95] or 0.9,0.95")

    def config(self, context: SpecContext) -> HeadTrainConfig:
        return self.train_config(context.settings, context.options.preset,
                                 context.options.seed)

    def train_config(self, settings: dict[str, Any], preset: str, seed: int = 0
                     ) -> HeadTrainConfig:
        """The training configuration of a run with ``settings`` at ``preset``."""
        values = {k: settings[k] for k in self.settings_keys if k in settings}
        if preset == "full":  # the official training scripts
            values = {"lr": self.paper_lr, "epochs": 20, "warmup_steps": 2000,
                      "schedule": "constant", **values}
        if isinstance(values.get("betas"), str):
            values["betas"] = tuple(float(x) for x in values["betas"].split(","))
        return HeadTrainConfig(**values, seed=seed)

    def planned_steps(self, settings: dict[str, Any], n_train: int | None,
                      preset: str = "default") -> int | None:
        """Optimizer steps of a run on at most ``n_train`` training sequences (None:
        unknown before the data is read): ``max_steps`` when set, else the epochs over
        ``n_train`` (an upper bound: empty responses drop out). The suite checks
        ``curve_steps`` against it before any work (:mod:`bench.specdec.curve`)."""
        from methods.trainer import total_steps

        cfg = self.train_config(settings, preset)
        if cfg.max_steps:
            return int(cfg.max_steps)
        if n_train is None:
            return None
        return total_steps(n_train, cfg.batch_size, cfg.epochs)

    def build_draft(self, context: SpecContext) -> tuple[Any, str]:
        from methods.specdec.heads import HEADS, FeatureDraft, HeadConfig, head_param_count

        cfg = self.config(context)
        target = context.target
        vocab = int(target.get_output_embeddings().weight.shape[0])
        if cfg.draft_vocab > vocab:
            raise UsageError(f"--set draft_vocab={cfg.draft_vocab}: the target's vocabulary "
                             f"has {vocab} tokens; use 1..{vocab}, or 0 for all of them")
        store = target_features(target, context.train, context.work_dir / "features",
                                dtype=cfg.feature_dtype)
        head = self.train_head(HEADS[self.kind], HeadConfig.from_target(target.config), store,
                               context, cfg)
        embed_w = target.get_input_embeddings().weight.detach()
        out = target.get_output_embeddings()
        bias = None if getattr(out, "bias", None) is None else out.bias.detach()
        subset = draft_vocabulary(context.train, cfg.draft_vocab) if cfg.draft_vocab else None
        context.config.update({"recipe": asdict(cfg), "head_params": head_param_count(head),
                               "features_file": str(store.path),
                               "draft_vocab_size": None if subset is None
                               else int(subset.numel())})
        head = head.to(embed_w.device, embed_w.dtype).eval()
        draft = FeatureDraft(head, embed_w, out.weight.detach(), bias, subset)
        curve = parse_curve_steps(context.settings.get("curve_steps"))
        if curve:  # the suite draws the tau curve from the heads saved during training
            folder = Path(context.config["checkpoint_dir"]) / SNAPSHOT_FOLDER
            attach(draft, StepSnapshots(folder, curve))
            context.config["curve_snapshots"] = str(folder)
        return draft, f"{Path(context.target_name).name}+{self.kind}-head"

    def train_head(self, head_class: type, head_cfg: Any, store: FeatureStore,
                   context: SpecContext, cfg: HeadTrainConfig) -> Any:
        from methods.losses.spec import eagle_loss, fspad_loss
        from methods.trainer import StepOutput, TrainConfig, Trainer, total_steps

        target = context.target
        embed_w = target.get_input_embeddings().weight.detach()
        out = target.get_output_embeddings()
        head_w = out.weight.detach()
        head_b = None if getattr(out, "bias", None) is None else out.bias.detach()
        kind = self.kind

        def step(model: Any, batch: dict[str, torch.Tensor]) -> StepOutput:
            feats = batch["features"]
            b, t, _ = feats.shape
            embed = F.embedding(batch["next_ids"], embed_w.to(feats.device))
            positions = torch.arange(t, device=feats.device).expand(b, t)
            logit_h, next_f, _ = model(feats, embed, positions)
            kwargs = {"feature_weight": cfg.feature_weight, "token_weight": cfg.token_weight,
                      "head_bias": head_b, "chunk_size": cfg.chunk_size}
            if kind == "fspad":
                loss = fspad_loss(logit_h, next_f, batch["targets"], head_w, batch["mask"],
                                  **kwargs)
            else:
                loss = eagle_loss(next_f, batch["targets"], head_w, batch["mask"], **kwargs)
            return StepOutput(loss.loss, n_tokens=int(batch["mask"].sum()),
                              metrics={"feature_loss": float(loss.feature),
                                       "token_ce": float(loss.token)})

        steps = total_steps(len(store), cfg.batch_size, cfg.epochs, max_steps=cfg.max_steps)
        curve = parse_curve_steps(context.settings.get("curve_steps"))
        if curve and curve[-1] > steps:  # the suite could not know the data's size before
            raise UsageError(f"curve_steps={context.settings['curve_steps']}: step "
                             f"{curve[-1]} is past this run's {steps} training steps "
                             f"({len(store)} sequences); end the curve at or before {steps}")
        train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                betas=tuple(cfg.betas),  # type: ignore[arg-type]
                                warmup_steps=cfg.warmup_steps if cfg.warmup_steps is not None
                                else max(1, int(steps * cfg.warmup_fraction)),
                                schedule=cfg.schedule, max_grad_norm=cfg.max_grad_norm,
                                mixed_precision=cfg.mixed_precision,
                                checkpoint_every=cfg.checkpoint_every, seed=cfg.seed)
        # A run with a curve trains in a folder of its own (its steps in the key): a
        # finished run without snapshots could not take them any more. Without a curve the
        # key is the one it always was, so cached heads stay valid.
        key = hashlib.sha256(json.dumps([TRAIN_FORMAT, kind, asdict(cfg), context.target_name,
                                         str(store.path.name if store.path else ""),
                                         data_key(context.train)] + ([curve] if curve else []),
                                        default=str).encode()).hexdigest()[:12]
        out_dir = context.work_dir / "train" / f"{kind}-{key}"
        torch.manual_seed(cfg.seed)  # the head's initialisation (PyTorch defaults, as the
        head = head_class(head_cfg)  # official nn.Module heads)
        snapshots = StepSnapshots(out_dir / SNAPSHOT_FOLDER, curve)
        trainer: Any = None

        def step_and_snapshot(model: Any, batch: dict[str, torch.Tensor]) -> StepOutput:
            # the weights after state["step"] steps, before this step changes them
            snapshots.capture(trainer.state["step"], model)
            return step(model, batch)

        trainer = Trainer(head, step_and_snapshot if curve else step, store, train_cfg,
                          out_dir, collate_fn=lambda items: head_batch(items, cfg.noise_std))
        trained = trainer.train()
        snapshots.capture(trainer.state["step"], trained)  # the last step's head
        context.config.update({"train_steps": steps, "checkpoint_dir": str(out_dir),
                               "train_final": _last_metrics(out_dir)})
        return trained


def _last_metrics(out_dir: Path) -> dict[str, float]:
    """Mean loss parts over the last tenth of training (from ``metrics.jsonl``)."""
    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tail = rows[-max(1, len(rows) // 10):]
    return {k: sum(r[k] for r in tail) / len(tail) for k in ("loss", "feature_loss",
                                                             "token_ce") if k in tail[0]}


def draft_vocabulary(train: list[Any], size: int) -> torch.Tensor:
    """The ``size`` most frequent token ids of the training responses (FR-Spec style),
    sorted; fewer when fewer distinct tokens occur."""
    counts = Counter(t for e in train for t in e.response_ids)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))[:size]
    return torch.tensor(sorted(ranked), dtype=torch.long)


class Eagle(FeatureHeadRecipe):
    kind = "eagle"


class FSPAD(FeatureHeadRecipe):
    kind = "fspad"
    paper_lr = 5e-5
