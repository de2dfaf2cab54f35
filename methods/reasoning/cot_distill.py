"""Chain-of-thought distillation for the ``gsm8k`` suite: answer-only and CoT SFT, and the
pieces Skip-Thinking (:mod:`methods.reasoning.skip_thinking`) and SemCoT build on.

Every recipe here and in :mod:`methods.reasoning.skip_thinking` trains a student (by default the
teacher's first ``student_layers`` decoder layers, :func:`methods.instruct.token_kd.build_student`;
``--student`` takes any model with the teacher's tokenizer) with token cross-entropy
through the shared trainer, in the prompt format the suite evaluates with lm-eval (``"Question: {q}\\nAnswer:"``, lm-eval's GSM8K prompt):

- ``answer-only``: the target is `` #### <gold answer>`` only (no rationale), on every
  training question (Ho et al. 2023's "vanilla fine-tuning" baseline of CoT distillation).
- ``cot-sft``: the target is the teacher's full greedy rationale plus ``#### <answer>``,
  kept only where the teacher's answer is right (Ho et al. 2023, "Large Language Models Are
  Reasoning Teachers", arXiv:2212.10071; Magister et al. 2023, arXiv:2212.08410): the
  standard CoT distillation baseline.
- ``skip-thinking`` and its ablation ``skip-thinking-cwt``: :mod:`methods.reasoning.skip_thinking`
  (same teacher rationales as ``cot-sft``, learned chunk by chunk).

Equal passes: ``cot-sft`` trains ``epochs`` (2) passes over the rationales;
``skip-thinking`` trains ``cwt_epochs`` (1) pass of CWT then ``stt_epochs`` (1) pass of
STT, so both see every kept rationale token twice. ``answer-only`` trains ``epochs``
passes over the answers. Embeddings (tied to the LM head in SmolLM2) stay frozen.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.contracts import ReasoningContext, dataclass_settings

FORMAT = 1  # bump when prompts, targets or a training step change meaning
PROMPT = "Question: {question}\nAnswer:"  # lm-eval gsm8k.yaml doc_to_text
ANSWER_PROMPT = "\nAnswer:"
# A second prompt the arith teacher is fine-tuned on: the same question answered
# with `` #### N`` and no rationale, so the frozen teacher can also answer directly (what
# SemCoT's implicit states feed into, and the ``teacher-direct`` reference row).
DIRECT_ANSWER_PROMPT = "\nAnswer directly:"

REGISTRY = [
    {"name": "answer-only", "suites": ["gsm8k"], "target": "AnswerOnly",
     "summary": "student fine-tuned on gold final answers only (no rationale)",
     "citation": "Ho et al. 2023 (Reasoning Teachers), arXiv:2212.10071"},
    {"name": "cot-sft", "suites": ["gsm8k"], "target": "CoTSFT",
     "summary": "student fine-tuned on the teacher's correct full rationales (CoT distillation)",
     "citation": "Ho et al. 2023, arXiv:2212.10071; Magister et al. 2023, arXiv:2212.08410"},
    {"name": "teacher", "suites": ["gsm8k"], "target": "TeacherRow",
     "summary": "the (fine-tuned) teacher writing its rationale, no training",
     "citation": "Allal et al. 2025 (SmolLM2), arXiv:2502.02737"},
    {"name": "teacher-direct", "suites": ["gsm8k"], "target": "TeacherDirectRow",
     "summary": "the fine-tuned teacher under its direct-answer prompt (no rationale): "
                "SemCoT's answer-without-reasoning reference",
     "citation": "He et al. 2025 (SemCoT), arXiv:2510.24940"},
]


class NoTrainingData(Exception):
    """A recipe has nothing to learn from on one dataset (no usable rationale); the suite
    skips that dataset for that method with a warning (a usage error if all are skipped)."""


@dataclass
class ReasoningItem:
    """A training question with its gold answer and the teacher's rationale (if correct)."""

    id: str
    question: str
    answer: str
    rationale: str = ""  # the teacher's rationale without the #### line; "" if none/wrong
    gold_rationale: str = ""
    teacher_correct: bool = False  # the rationale is usable (teacher right, or gold)


@dataclass
class SFTConfig:
    student_layers: int = 8
    freeze_embeddings: bool = True
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 8
    lr: float = 5e-4
    warmup_fraction: float = 0.05
    mixed_precision: str = "bf16"
    checkpoint_every: int = 50
    seed: int = 0


# -- formatting ------------------------------------------------------------------------------

def prompt_ids(tokenizer: Any, question: str, answer_prompt: str = ANSWER_PROMPT) -> list[int]:
    """The lm-eval context ids, encoded as HFLM encodes them (tokenizer defaults);
    ``answer_prompt`` swaps the trailing ``"\nAnswer:"`` (e.g. the direct-answer prompt)."""
    text = PROMPT.format(question=question).removesuffix(ANSWER_PROMPT) + answer_prompt
    return list(tokenizer(text)["input_ids"])


def reasoning_steps(rationale: str) -> list[str]:
    """A rationale's steps: its non-empty lines, each split further at sentence ends."""
    steps = []
    for line in rationale.splitlines():
        steps += [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", line) if s.strip()]
    return steps


def target_units(tokenizer: Any, rationale: str, answer: str) -> list[list[int]]:
    """Token ids of the target, one list per unit: each step as a line, then ``#### N`` + EOS.

    The first unit starts with a space (the target follows ``Answer:``); an empty
    rationale gives the answer-only target `` #### N`` + EOS.
    """
    texts = [s + "\n" for s in reasoning_steps(rationale)] + [f"#### {answer}"]
    texts[0] = " " + texts[0]
    units = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    if tokenizer.eos_token_id is not None:
        units[-1].append(int(tokenizer.eos_token_id))
    return units


def split_output(text: str) -> str:
    """The rationale part of a generation (everything before the first ``####``)."""
    return text.split("####", 1)[0].strip()


# -- training --------------------------------------------------------------------------------

def sft_config(settings: dict[str, Any], seed: int, **changes: Any) -> SFTConfig:
    names = set(SFTConfig.__dataclass_fields__)
    cfg = SFTConfig(**{k: v for k, v in settings.items() if k in names and v is not None})
    cfg.seed = seed
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


def data_key(examples: list[Any]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.prompt_ids, e.response_ids]).encode())
    return digest.hexdigest()[:16]


def train_sft(model: Any, examples: list[Any], cfg: SFTConfig, out_dir: Path, pad_id: int,
              *, progress: bool = True) -> Any:
    """Token cross-entropy on the response tokens of ``examples`` (TrainExample) with the
    shared trainer; resumable from ``out_dir``. Returns the model in eval mode."""
    import torch.nn.functional as F

    from methods.instruct.token_kd import collate, response_logits
    from methods.trainer import StepOutput, TrainConfig, Trainer, total_steps

    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
        model.get_output_embeddings().weight.requires_grad_(False)

    def step(m: Any, batch: dict[str, Any]) -> StepOutput:
        ce = F.cross_entropy(response_logits(m, batch).float(), batch["targets"])
        return StepOutput(ce, n_tokens=int(batch["attention_mask"].sum()),
                          metrics={"ce": float(ce.detach())},
                          mean_over=int(batch["targets"].numel()))  # response tokens

    steps = total_steps(len(examples), cfg.batch_size, cfg.epochs, max_steps=cfg.max_steps)
    train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                            warmup_steps=max(1, int(steps * cfg.warmup_fraction)),
                            mixed_precision=cfg.mixed_precision,
                            checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
                            progress=progress)
    trainer = Trainer(model.train(), step, examples, train_cfg, out_dir,
                      collate_fn=lambda b: collate(b, pad_id))
    return trainer.train().eval()


def run_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([FORMAT, *parts], default=str).encode()).hexdigest()[:12]


def initial_student(context: ReasoningContext, layers: int) -> tuple[Any, str]:
    """(student, model name): ``--student`` if given, else the teacher's first layers."""
    from methods.instruct.token_kd import build_student

    layers = min(layers, int(context.teacher.config.num_hidden_layers))
    if context.student_name:
        from bench.core.assets import load_causal_lm
        from methods.trainer import check_same_vocabulary

        student, tok = load_causal_lm(context.student_name, dtype="float32")
        check_same_vocabulary(context.teacher_name, context.tokenizer, context.student_name, tok)
        return student.float().train(), Path(context.student_name).name
    return build_student(context.teacher, layers), \
        f"{Path(context.teacher_name).name}-{layers}L"


def finetune_teacher(base: Any, tokenizer: Any, items: list[ReasoningItem], cfg: SFTConfig,
                     out_dir: Path, *, name: str = "model", progress: bool = True,
                     direct: bool = False) -> Any:
    """The teacher fine-tuned on gold rationales (full model), cached in ``out_dir/name``;
    ``direct``: also on the same questions under :data:`DIRECT_ANSWER_PROMPT` answered
    `` #### N`` (one example each, shuffled in with the rationales)."""
    import copy

    from bench.core.assets import load_causal_lm
    from methods.instruct.token_kd import TrainExample

    final = out_dir / name
    if (final / "config.json").exists():
        return load_causal_lm(str(final), dtype="float32")[0].eval()
    examples = [TrainExample(prompt_ids(tokenizer, it.question),
                             [t for u in target_units(tokenizer, it.gold_rationale, it.answer)
                              for t in u]) for it in items]
    if direct:
        examples += [TrainExample(prompt_ids(tokenizer, it.question, DIRECT_ANSWER_PROMPT),
                                  target_units(tokenizer, "", it.answer)[0]) for it in items]
    model = train_sft(copy.deepcopy(base).float(), examples, cfg, out_dir / "train",
                      tokenizer.pad_token_id, progress=progress)
    tmp = out_dir / ".model.tmp"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(final)
    import shutil

    shutil.rmtree(out_dir / "train" / "checkpoints", ignore_errors=True)  # ~3 GB; kept model
    return model


# The training budget of every trained gsm8k recipe per preset, shared so that the
# students of one preset see the same passes (st_*/cg_*: SemCoT's two stages).
REASONING_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"epochs": 1, "st_linear_epochs": 1, "st_llm_epochs": 0, "cg_linear_epochs": 1,
              "cg_llm_epochs": 1},
    "default": {"epochs": 4, "cwt_epochs": 2, "stt_epochs": 2, "cg_linear_epochs": 3,
                "cg_llm_epochs": 2},
    "full": {"mixed_precision": "bf16"},
    "cpu-long": {"student_layers": 16, "epochs": 4, "cwt_epochs": 2, "stt_epochs": 2,
                 "cg_linear_epochs": 3, "cg_llm_epochs": 2},
}


class SFTRecipe:
    """Shared parts of the three SFT recipes."""

    implementation = "full"
    presets = REASONING_PRESETS
    settings_keys: tuple[str, ...] = ("student_layers", "freeze_embeddings", "epochs",
                                      "max_steps", "batch_size", "lr", "mixed_precision")
    setting_specs = dataclass_settings(SFTConfig)

    def examples(self, context: ReasoningContext) -> list[Any]:
        raise NotImplementedError

    def build_model(self, context: ReasoningContext) -> tuple[Any, str]:
        cfg = sft_config(context.settings, context.options.seed)
        student, name = initial_student(context, cfg.student_layers)
        examples = self.examples(context)
        if not examples:
            raise NoTrainingData(f"{context.options.method}: no training examples on "
                             f"{context.dataset_id} (the teacher answered no training "
                             "question correctly); raise --set n_train or use answer-only")
        key = run_key(context.options.method, asdict(cfg), context.teacher_name,
                      context.student_name, data_key(examples))
        out = context.work_dir / "train" / f"{context.options.method}-{key}"
        model = train_sft(student, examples, cfg, out, context.tokenizer.pad_token_id)
        context.config.update({"recipe": asdict(cfg), "train_examples": len(examples),
                               "checkpoint_dir": str(out), "train_runs": [str(out)]})
        return model, name


class AnswerOnly(SFTRecipe):
    def examples(self, context: ReasoningContext) -> list[Any]:
        from methods.instruct.token_kd import TrainExample

        tok = context.tokenizer
        return [TrainExample(prompt_ids(tok, it.question),
                             target_units(tok, "", it.answer)[0]) for it in context.train]


class CoTSFT(SFTRecipe):
    needs_rationales = True  # the suite generates the teacher's rationales first

    def examples(self, context: ReasoningContext) -> list[Any]:
        from methods.instruct.token_kd import TrainExample

        tok = context.tokenizer
        return [TrainExample(prompt_ids(tok, it.question),
                             [t for u in target_units(tok, it.rationale, it.answer) for t in u])
                for it in context.train if it.teacher_correct and it.rationale]


class TeacherRow:
    """The ``teacher`` row: the (fine-tuned) teacher itself, no training."""

    implementation = "full"
    settings_keys: tuple[str, ...] = ()

    def build_model(self, context: Any) -> tuple[Any, str]:
        return context.teacher, Path(context.teacher_name).name


class TeacherDirectRow(TeacherRow):
    """The ``teacher-direct`` row: the fine-tuned teacher answering under its direct-answer
    prompt (no rationale): the answer-without-reasoning reference for ``semcot``, whose
    implicit state goes into this same prompt."""

    def build_model(self, context: Any) -> tuple[Any, str]:
        from methods.reasoning.semcot import TeacherAnswers

        if not context.direct_prompt:
            raise NoTrainingData("the teacher was not fine-tuned with a direct-answer prompt "
                                 "here (--set teacher_direct=true, arith only)")
        return (TeacherAnswers(context.teacher, context.tokenizer, context.direct_prompt),
                f"{Path(context.teacher_name).name}-direct")
