"""Image-classification distillation on a long-tailed training set: CE and Hinton KD.

Models are transformers ViTs (``ViTForImageClassification``; any image classifier with a
CLS token by HF id or local folder, e.g. DeiT, when online or cached). Built-in sizes for
the CPU default, trained from scratch on the long-tailed training set:

- ``vit-128x4`` (teacher): width 128, 4 layers, 4 heads, MLP 256,
- ``vit-64x3`` (student): width 64, 3 layers, 2 heads, MLP 128,

both cutting small images (28x28, 32x32) into a 4x4 grid of patches (16 patch tokens:
7x7-pixel patches on Fashion-MNIST; 4x4-pixel patches, 49 tokens, ran ~2x slower on this
CPU) and 224x224 images into 16x16-pixel patches. Recipes:

- ``ce``: the student trained alone with cross-entropy,
- ``kd``: Hinton KD, ``0.1·CE + 0.9·T²·KL(teacher ‖ student)`` at T = 4 (mdistiller's KD
  weights for image classification),
- the suite's ``teacher`` row: the teacher trained with cross-entropy (once, cached).

Training: AdamW (lr 1e-3, weight decay 0.05), 5% warm-up then cosine, batch 128, random
shifts of up to 2 pixels and horizontal flips applied on tensors (no torchvision), fp32 on
CPU (these widths are too small for bf16 to pay), through the shared trainer (checkpoints,
exact resume, NaN guard). :mod:`methods.vision.trg` adds the TRG token terms.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.contracts import VisionContext, dataclass_settings
from bench.core.distributed import map_sharded

REGISTRY = [
    {"name": "ce", "suites": ["imagenet-lt"], "target": "CrossEntropy",
     "summary": "image student trained alone with cross-entropy (no distillation)",
     "citation": "Dosovitskiy et al. 2021 (ViT), arXiv:2010.11929"},
    {"name": "kd", "suites": ["imagenet-lt"], "target": "HintonKD",
     "summary": "image student with Hinton KD (0.1 CE + 0.9 T^2 KL, T=4)",
     "citation": "Hinton et al. 2015, arXiv:1503.02531"},
    {"name": "teacher", "suites": ["imagenet-lt"], "target": "TeacherTraining",
     "summary": "the ViT teacher trained with cross-entropy on the long-tailed set",
     "citation": "Dosovitskiy et al. 2021 (ViT), arXiv:2010.11929"},
]

VIT_SIZES: dict[str, dict[str, int]] = {
    "vit-128x4": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                  "intermediate_size": 256},
    "vit-64x3": {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
                 "intermediate_size": 128},
}
VISION_FORMAT = 1  # bump when a training step changes meaning (checkpoint keys)


@dataclass
class VisionConfig:
    """One training run's hyperparameters (recorded in the result)."""

    model: str = "vit-64x3"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    max_shift: int = 2
    flip: bool = True
    temperature: float = 4.0
    ce_weight: float = 0.1
    kd_weight: float = 0.9
    mixed_precision: str = "no"
    checkpoint_every: int = 100
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # recipe-specific (TRG weights)


def build_vit(name: str, *, image_size: int, channels: int, num_classes: int,
              seed: int = 0) -> Any:
    """A built-in size (random init, seeded), or an HF id / folder of an image classifier."""
    from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

    if name in VIT_SIZES:
        torch.manual_seed(seed)
        patch = image_size // 4 if image_size <= 32 else 16  # a 4x4 grid on small images
        cfg = ViTConfig(image_size=image_size, patch_size=patch, num_channels=channels,
                        num_labels=num_classes, **VIT_SIZES[name])
        return ViTForImageClassification(cfg)
    from bench.core.assets.models import load_pretrained, resolve_model_source

    source, local = resolve_model_source(name, "image classifier")
    return load_pretrained(AutoModelForImageClassification, source, local, "image classifier",
                            num_labels=num_classes, ignore_mismatched_sizes=True)


def forward_tokens(model: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, C], patch tokens [B, N, D]) after the final layer norm."""
    channels = getattr(model.config, "num_channels", pixels.shape[1])
    if channels != pixels.shape[1]:  # grayscale data into an RGB model
        pixels = pixels.expand(-1, channels, -1, -1) if pixels.shape[1] == 1 else \
            pixels.mean(1, keepdim=True)
    seq = model.base_model(pixel_values=pixels).last_hidden_state
    logits = model.classifier(seq[:, 0])
    grid = (model.config.image_size // model.config.patch_size) ** 2
    return logits, seq[:, -grid:]


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float in [-1, 1] (ViT's 0.5 / 0.5 normalisation)."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)


def augment(pixels: torch.Tensor, max_shift: int, flip: bool) -> torch.Tensor:
    """Random shifts (zero padding) and horizontal flips, drawn from torch's global RNG."""
    b, _, h, w = pixels.shape
    if max_shift:
        padded = F.pad(pixels, (max_shift,) * 4, value=-1.0)
        dx = torch.randint(0, 2 * max_shift + 1, (b,)).tolist()
        dy = torch.randint(0, 2 * max_shift + 1, (b,)).tolist()
        pixels = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    if flip:
        flips = torch.rand(b) < 0.5
        pixels = torch.where(flips[:, None, None, None], pixels.flip(-1), pixels)
    return pixels


@torch.no_grad()
def predict(model: Any, data: Any, *, batch_size: int = 512, label: str = "predict"
            ) -> np.ndarray:
    """Arg-max class of every image in ``data`` (eval mode, no augmentation)."""
    from bench.core.progress import progress_bar

    model.eval()
    out = []
    n = len(data.labels)
    chunks = [list(range(start, min(n, start + batch_size))) for start in range(0, n, batch_size)]
    with progress_bar(n, label) as advance:
        for idx, classes in map_sharded(chunks, lambda idx: forward_tokens(
                model, to_pixels(data.batch(idx)))[0].argmax(-1).numpy()):
            out.append(classes)
            advance(len(idx))
    return np.concatenate(out)


class CrossEntropy:
    """Student trained alone; subclasses add a teacher term in :meth:`loss`."""

    uses_teacher = False
    settings_keys = ("student", "epochs", "batch_size", "lr", "weight_decay", "max_shift",
                     "flip", "mixed_precision", "checkpoint_every")
    setting_specs = dataclass_settings(VisionConfig, exclude=("seed", "extra")) + \
        dataclass_settings(VisionConfig, rename={"student": "model"})
    # Every image recipe (and the teacher, which reads teacher_* instead) at one budget.
    presets: dict[str, dict[str, Any]] = {
        "smoke": {"epochs": 1}, "default": {"epochs": 20},
        "full": {"epochs": 90, "batch_size": 256, "lr": 5e-4, "mixed_precision": "bf16",
                 "student": "facebook/deit-tiny-patch16-224"},
    }
    implementation = "full"

    def config(self, context: VisionContext) -> VisionConfig:
        s = context.settings
        names = set(VisionConfig.__dataclass_fields__) - {"model", "seed", "extra"}
        return VisionConfig(model=s.get("student", "vit-64x3"), seed=context.seed,
                            **{k: s[k] for k in names if k in s},
                            extra={k: s[k] for k in self.extra_keys() if k in s})

    def extra_keys(self) -> tuple[str, ...]:
        return ()

    def wrap(self, student: Any, teacher: Any, cfg: VisionConfig) -> torch.nn.Module:
        return student

    def unwrap(self, model: Any) -> Any:
        return model

    def loss(self, model: Any, pixels: torch.Tensor, labels: torch.Tensor, teacher: Any,
             cfg: VisionConfig, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        logits, _ = forward_tokens(model, pixels)
        ce = F.cross_entropy(logits, labels)
        return ce, {"ce": float(ce.detach())}

    def build_model(self, context: VisionContext) -> tuple[Any, str]:
        cfg = self.config(context)
        student = build_vit(cfg.model, image_size=context.image_size,
                            channels=context.channels, num_classes=context.num_classes,
                            seed=cfg.seed)
        teacher = context.teacher if self.uses_teacher else None
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        model = train_classifier(self, student, teacher, cfg, context,
                                 out_name=f"{type(self).__name__.lower()}")
        return model, Path(cfg.model).name


def train_classifier(recipe: Any, student: Any, teacher: Any, cfg: VisionConfig,
                     context: VisionContext, *, out_name: str) -> Any:
    """Train ``student`` with ``recipe.loss`` on the context's training set; resumable."""
    from methods.trainer import StepOutput, TrainConfig, Trainer, total_steps

    n = len(context.train.labels)
    steps = total_steps(n, cfg.batch_size, cfg.epochs)
    total = {"steps": steps}

    def collate(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return (to_pixels(context.train.batch(indices)),
                torch.as_tensor(context.train.labels[indices]))

    def step(model: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        pixels, labels = batch
        pixels = augment(pixels, cfg.max_shift, cfg.flip)
        progress = trainer.state["step"] / total["steps"]
        loss, parts = recipe.loss(model, pixels, labels, teacher, cfg, progress)
        return StepOutput(loss, n_tokens=len(labels), metrics=parts, mean_over=len(labels))

    key = hashlib.sha256(json.dumps([VISION_FORMAT, out_name, asdict(cfg), context.teacher_name
                                     if teacher is not None else None,
                                     context.config.get("train_checksum")],
                                    default=str).encode()).hexdigest()[:12]
    out_dir = context.work_dir / "train" / f"{out_name}-{key}"
    train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                            weight_decay=cfg.weight_decay,
                            warmup_steps=max(1, int(steps * cfg.warmup_fraction)),
                            mixed_precision=cfg.mixed_precision,
                            checkpoint_every=cfg.checkpoint_every, seed=cfg.seed)
    trainer = Trainer(recipe.wrap(student, teacher, cfg), step, list(range(n)), train_cfg,
                      out_dir, collate_fn=collate)
    model = recipe.unwrap(trainer.train())
    context.config.setdefault("train", {})[out_name] = {
        "recipe": asdict(cfg), "steps": steps, "checkpoint_dir": str(out_dir)}
    return model.eval()


class HintonKD(CrossEntropy):
    uses_teacher = True
    settings_keys = CrossEntropy.settings_keys + ("temperature", "ce_weight", "kd_weight")

    def loss(self, model: Any, pixels: torch.Tensor, labels: torch.Tensor, teacher: Any,
             cfg: VisionConfig, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        from methods.losses.trg import hinton_kd

        logits, _ = forward_tokens(model, pixels)
        with torch.no_grad():
            t_logits, _ = forward_tokens(teacher, pixels)
        loss = hinton_kd(logits, t_logits, labels, temperature=cfg.temperature,
                         ce_weight=cfg.ce_weight, kd_weight=cfg.kd_weight)
        return loss, {"kd": float(loss.detach())}


class TeacherTraining(CrossEntropy):
    """The teacher: trained with cross-entropy on the same long-tailed set.

    The suite trains it (:meth:`train_teacher`) before every recipe that ``uses_teacher``;
    as the ``teacher`` row it is that same model, evaluated as it is.
    """

    uses_teacher = True
    settings_keys = ("teacher_model", "teacher_epochs")

    def train_teacher(self, context: VisionContext) -> Any:
        return CrossEntropy.build_model(self, context)[0]

    def build_model(self, context: VisionContext) -> tuple[Any, str]:
        return context.teacher, Path(self.config(context).model).name

    def config(self, context: VisionContext) -> VisionConfig:
        # Independent of the students' settings, so every student run shares one teacher.
        s = context.settings
        return VisionConfig(model=s.get("teacher_model") or "vit-128x4",
                            epochs=int(s.get("teacher_epochs") or VisionConfig.epochs), seed=0)
