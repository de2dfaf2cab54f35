"""What every ``lm`` recipe shares: the student, the training examples, the teacher's
cached top-k distributions, and one training loop.

Every method trains the same student (the suite's ``--student``, whole, or its first
``student_layers`` layers; tied embeddings and LM head frozen, as in ``instruct``) with the
shared :class:`~methods.trainer.Trainer` on the suite's training segments, minimising

    ce_weight · CE(student, text) + kd_weight · KD

where CE is the next-token cross-entropy on the segment's tokens (each segment starts with
the same prefix token as scoring, :func:`bench.lm.bpb.prefix_id`) and KD the method's
distillation term (none for ``ce`` and ``sft``).

Teacher distributions: the teacher runs once over every training segment, tokenized with
its own tokenizer, and its top ``topk`` log-probabilities at every position are cached with
their ids, the log-probability of the token that actually follows, and the tokens' character
offsets (``<work>/teacher-topk/``, keyed by teacher, k and texts; shared by every method and
seed). A full distribution (262,144 floats per position for Gemma 3) cannot be cached; each
recipe states how it uses the top k and the mass outside it ("rest"), and records the mean
rest mass (``teacher_rest_mass``), which bounds the error of the approximation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.contracts import dataclass_settings
from bench.lm.context import STUDENT, TEACHER, LMContext

TRAIN_FORMAT = 1
CACHE_FORMAT = 1


@dataclass
class LMConfig:
    student_layers: int = 0  # 0: the whole student; k: its first k layers
    freeze_embeddings: bool = True
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 4
    lr: float = 1e-4
    warmup_fraction: float = 0.1
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    mixed_precision: str = "no"  # bf16 autocast measured slower than float32 on this CPU
    checkpoint_every: int = 25
    seed: int = 0


@dataclass
class TeacherRows:
    """One text under the teacher: row j is its distribution over text token j."""

    logp: torch.Tensor  # [n, k] top-k log-probabilities, decreasing
    ids: torch.Tensor  # [n, k] their token ids
    target_logp: torch.Tensor  # [n] log-probability of the token that follows
    offsets: list[tuple[int, int]]  # [n] character offsets of the teacher's tokens

    @property
    def rest(self) -> torch.Tensor:
        """[n] probability outside the top k."""
        return (1.0 - self.logp.exp().sum(-1)).clamp_min(0.0)


@dataclass
class Example:
    """A training text in the student's tokens: ``ids`` = prefix + text tokens; CE counts
    text tokens from ``train_from`` on (``sft``: the teacher's continuation only)."""

    id: str
    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    train_from: int = 0
    teacher: TeacherRows | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """``(prefix + token ids, character offsets of the text tokens)``."""
    from bench.lm.bpb import prefix_id

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [prefix_id(tokenizer), *enc["input_ids"]], [tuple(o) for o in enc["offset_mapping"]]


def build_student(context: LMContext, layers: int) -> Any:
    import copy

    from bench.core.assets import first_k_layers_student

    base = context.student
    student = first_k_layers_student(base, layers) if layers else copy.deepcopy(base)
    return student.float().train()


def student_name(context: LMContext, layers: int) -> str:
    name = Path(context.student_name).name
    return f"{name}-{layers}L" if layers else name


def collate(batch: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded ids; ``predict`` [B, L] marks the positions that predict a text token
    (packed rows in example order); ``starts`` each example's first packed row."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    predict = torch.zeros((len(batch), width), dtype=torch.bool)
    train = []
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        attention[i, : len(e.ids)] = 1
        predict[i, : len(e.ids) - 1] = True
        train += [j >= e.train_from for j in range(len(e.ids) - 1)]
    lengths = [len(e.ids) - 1 for e in batch]
    starts = [sum(lengths[:i]) for i in range(len(batch))]
    return {"input_ids": ids, "attention_mask": attention, "predict": predict,
            "targets": torch.cat([torch.tensor(e.ids[1:]) for e in batch]),
            "train": torch.tensor(train, dtype=torch.bool), "lengths": lengths,
            "starts": starts, "examples": batch}


def student_logits(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """``[N, V]`` logits at the positions that predict text tokens, packed."""
    hidden = model.base_model(input_ids=batch["input_ids"],
                              attention_mask=batch["attention_mask"]).last_hidden_state
    return model.get_output_embeddings()(hidden[batch["predict"]]).float()


@torch.no_grad()
def _teacher_pass(model: Any, ids: list[int], k: int, head_chunk: int = 128
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.tensor([ids])
    hidden = model.base_model(input_ids=x).last_hidden_state[0, :-1]
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    targets = x[0, 1:]
    parts = []
    for start in range(0, hidden.shape[0], head_chunk):
        logits = head(hidden[start:start + head_chunk]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        logp = torch.log_softmax(logits, -1)
        top = torch.topk(logp, min(k, logp.shape[-1]), dim=-1)
        picked = logp.gather(-1, targets[start:start + head_chunk].unsqueeze(-1)).squeeze(-1)
        parts.append((top.values, top.indices.to(torch.int32), picked))
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def teacher_rows(context: LMContext, load_model: Any, tokenizer: Any, texts: list[str],
                 k: int) -> list[TeacherRows]:
    """The teacher's cached top-k rows for ``texts`` (computed once, then read; the
    teacher model is loaded, by ``load_model()``, only to compute them)."""
    from safetensors.torch import load_file

    from bench.core.io import atomic_save_tensors
    from bench.core.progress import progress_bar

    key = hashlib.sha256(json.dumps([CACHE_FORMAT, context.teacher_name, k, texts]).encode()
                         ).hexdigest()[:16]
    path = context.work_dir / "teacher-topk" / f"{key}.safetensors"
    if not path.exists():
        chunks: dict[str, list[torch.Tensor]] = {n: [] for n in
                                                 ("logp", "ids", "target", "offsets")}
        lengths = []
        teacher = load_model()
        with progress_bar(len(texts), "teacher top-k") as advance:
            for text in texts:
                ids, offsets = encode(tokenizer, text)
                logp, top_ids, target = _teacher_pass(teacher, ids, k)
                for name, value in zip(chunks, (logp, top_ids, target,
                                                torch.tensor(offsets, dtype=torch.int32)),
                                       strict=True):
                    chunks[name].append(value)
                lengths.append(len(offsets))
                advance(1)
        atomic_save_tensors({**{n: torch.cat(v) for n, v in chunks.items()},
                             "lengths": torch.tensor(lengths)}, path)
    data = load_file(str(path))
    rows, at = [], 0
    for n in data["lengths"].tolist():
        rows.append(TeacherRows(data["logp"][at:at + n].float(), data["ids"][at:at + n],
                                data["target"][at:at + n].float(),
                                [tuple(o) for o in data["offsets"][at:at + n].tolist()]))
        at += n
    return rows


def load_teacher(context: LMContext) -> tuple[Any, Any]:
    from bench.core.assets import load_causal_lm

    if context.teacher_name is None:
        raise ValueError("this recipe needs a teacher")
    return load_causal_lm(context.teacher_name)


def load_tokenizer(name: str) -> Any:
    """A model's tokenizer alone (a packaged model is prepared first if need be)."""
    from transformers import AutoTokenizer

    from bench.core.assets.models import load_pretrained, resolve_model_source

    source, local = resolve_model_source(name, "model")
    tokenizer = load_pretrained(AutoTokenizer, source, local, "tokenizer")
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class LMRecipe:
    """A recipe of the ``lm`` suite: build the examples, then train with CE (+ KD)."""

    uses_teacher = True
    default_teacher: str | None = TEACHER
    shared_vocabulary = False  # True: KD compares entries by id, so one vocabulary
    kd: str | None = None  # what the KD term is, for the record
    default_kd_weight = 1.0
    settings_keys: tuple[str, ...] = tuple(f for f in LMConfig.__dataclass_fields__
                                           if f != "seed")
    setting_specs = dataclass_settings(LMConfig)
    presets: dict[str, dict[str, Any]] = {"smoke": {"max_steps": 2, "batch_size": 2}}
    implementation = "full"

    def config(self, context: LMContext) -> LMConfig:
        names = set(LMConfig.__dataclass_fields__) - {"seed"}
        values = {k: v for k, v in context.settings.items() if k in names}
        values.setdefault("kd_weight", self.default_kd_weight)  # --set kd_weight wins
        return LMConfig(**values, seed=context.options.seed)

    def examples(self, context: LMContext, cfg: LMConfig) -> list[Example]:
        """The training texts in the student's tokens (with teacher rows if needed)."""
        out = []
        for seg in context.train:
            ids, offsets = encode(context.tokenizer, seg.text)
            out.append(Example(seg.id, seg.text, ids, offsets))
        return out

    def kd_loss(self, logits: torch.Tensor, batch: dict[str, Any], cfg: LMConfig
                ) -> torch.Tensor | None:
        """The KD term from the packed student logits ``[N, Vs]`` (None: CE only)."""
        return None

    def attach_teacher(self, context: LMContext, examples: list[Example]) -> Any:
        """Give every example the teacher's rows for its text (one cached pass); returns
        the teacher's tokenizer."""
        tokenizer = load_tokenizer(str(context.teacher_name))
        k = int(context.settings["topk"])
        rows = teacher_rows(context, lambda: load_teacher(context)[0], tokenizer,
                            [e.text for e in examples], k)
        for e, r in zip(examples, rows, strict=True):
            e.teacher = r
        rest = torch.cat([r.rest for r in rows])
        context.config["teacher_rest_mass"] = {"mean": float(rest.mean()),
                                               "max": float(rest.max()), "topk": k}
        return tokenizer

    def build_model(self, context: LMContext) -> tuple[Any, str]:
        from methods.trainer import StepOutput, TrainConfig, Trainer, total_steps

        cfg = self.config(context)
        examples = self.examples(context, cfg)
        student = build_student(context, cfg.student_layers)
        if cfg.freeze_embeddings:  # tied to the LM head in SmolLM2: both stay pretrained
            student.get_input_embeddings().weight.requires_grad_(False)
            student.get_output_embeddings().weight.requires_grad_(False)
        pad = context.tokenizer.pad_token_id

        def step(model: Any, batch: dict[str, Any]) -> StepOutput:
            logits = student_logits(model, batch)
            train = batch["train"]
            ce = torch.nn.functional.cross_entropy(logits[train], batch["targets"][train])
            kd = self.kd_loss(logits, batch, cfg)
            loss = cfg.ce_weight * ce + (cfg.kd_weight * kd if kd is not None else 0.0)
            parts = {"ce": float(ce.detach())}
            if kd is not None:
                parts["kd"] = float(kd.detach())
            n = int(train.sum())
            return StepOutput(loss, n_tokens=n, metrics=parts, mean_over=n)

        steps = total_steps(len(examples), cfg.batch_size, cfg.epochs, max_steps=cfg.max_steps)
        train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                warmup_steps=max(1, int(steps * cfg.warmup_fraction)),
                                mixed_precision=cfg.mixed_precision,
                                checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
                                keep_checkpoints=1)
        method = context.options.method
        data_key = hashlib.sha256(json.dumps([[e.ids, e.train_from] for e in examples]
                                             ).encode()).hexdigest()[:16]
        key = hashlib.sha256(json.dumps(
            [TRAIN_FORMAT, method, getattr(self, "custom_name", None), asdict(cfg),
             context.student_name, context.teacher_name, self.kd, context.settings["topk"],
             data_key], default=str).encode()).hexdigest()[:12]
        out_dir = context.work_dir / "train" / f"{method}-{key}"
        trainer = Trainer(student, step, examples, train_cfg, out_dir,
                          collate_fn=lambda b: collate(b, pad))
        model = trainer.train().eval()
        context.config.update({"recipe": asdict(cfg), "train_steps": steps,
                               "train_examples": len(examples),
                               "train_tokens": sum(len(e.ids) - 1 - e.train_from
                                                   for e in examples),
                               "kd": self.kd or "none", "checkpoint_dir": str(out_dir),
                               "implementation": self.implementation})
        return model, student_name(context, cfg.student_layers)


class SharedVocabularyKD(LMRecipe):
    """KD that compares the two distributions entry by entry, so teacher and student must
    share one vocabulary (the suite checks before any work): the teacher's cached top k
    plus one rest class against the student's full softmax coarse-grained the same way
    (:func:`bench.core.topk.topk_support`), then a registered loss or a user's."""

    default_teacher = STUDENT
    shared_vocabulary = True
    loss = "fkl"

    def __init__(self, loss_fn: Any = None, name: str | None = None) -> None:
        self.custom = loss_fn
        self.custom_name = name

    @property
    def kd(self) -> str:  # type: ignore[override]
        return self.custom_name or self.loss

    def examples(self, context: LMContext, cfg: LMConfig) -> list[Example]:
        examples = super().examples(context, cfg)
        self.attach_teacher(context, examples)
        for e in examples:
            if e.teacher is None or len(e.teacher.offsets) != len(e.ids) - 1:
                raise ValueError(f"segment {e.id}: the teacher tokenized it differently; "
                                 "this method needs the student's tokenizer")
        return examples

    def kd_loss(self, logits: torch.Tensor, batch: dict[str, Any], cfg: LMConfig
                ) -> torch.Tensor:
        from bench.core.topk import topk_support
        from methods.losses import get_loss

        rows = [e.teacher for e in batch["examples"]]
        values = torch.cat([r.logp for r in rows])
        indices = torch.cat([r.ids for r in rows]).long()
        # cached values are log-probabilities: a zero normaliser keeps them as they are
        student, target = topk_support(logits, values, indices, torch.zeros(len(values)))
        fn = self.custom if self.custom is not None else get_loss(self.loss)
        return fn(student.unsqueeze(0), target.unsqueeze(0), temperature=1.0)


def lm_user_loss_recipe(options: Any) -> SharedVocabularyKD:
    """The recipe of ``bench run --loss file.py:fn --suite lm``: the user's loss as the KD
    term of :class:`SharedVocabularyKD` (CE + 1.0 · loss, same-tokenizer teacher)."""
    return SharedVocabularyKD(options.loss_fn, name=options.loss_name or "custom")
