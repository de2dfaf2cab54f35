"""Chain-of-thought distillation for the ``gsm8k`` suite: answer-only, CoT SFT, Skip-Thinking.

All three train a student (by default the teacher's first ``student_layers`` decoder layers,
:func:`methods.token_kd.build_student`; ``--student`` takes any model with the teacher's
tokenizer) with token cross-entropy through the shared trainer, in the prompt format the
suite evaluates with lm-eval (``"Question: {q}\\nAnswer:"``, lm-eval's GSM8K prompt):

- ``answer-only``: the target is `` #### <gold answer>`` only (no rationale), on every
  training question (Ho et al. 2023's "vanilla fine-tuning" baseline of CoT distillation).
- ``cot-sft``: the target is the teacher's full greedy rationale plus ``#### <answer>``,
  kept only where the teacher's answer is right (Ho et al. 2023, "Large Language Models Are
  Reasoning Teachers", arXiv:2212.10071; Magister et al. 2023, arXiv:2212.08410): the
  standard CoT distillation baseline.
- ``skip-thinking``: Chen et al. 2025, "Skip-Thinking: Chunk-wise Chain-of-Thought
  Distillation Enable Smaller Language Models to Reason Better and Faster",
  arXiv:2505.18642 (EMNLP 2025). Same teacher rationales as ``cot-sft``. Stage 1,
  chunk-wise training (CWT): each rationale is split into ``n_chunks`` chunks of reasoning
  steps (``chunking=average`` or ``search``, :mod:`methods.skip_thinking_chunks`) and every
  chunk is one training example (prompt = question + the preceding chunks, loss on the
  chunk only). Stage 2, skip-thinking training (STT): with the CWT student, a middle chunk
  is skippable when the student, given the question and the kept chunks without it (the
  last chunk, which holds the answer, is what it must produce), still ends at the right
  answer (:func:`~methods.skip_thinking_chunks.skippable_chunks`, cumulative left to
  right); the student then learns the kept chunks chunk-wise. The paper body (equations,
  hyperparameters) was not readable; the interpretations are those documented in
  :mod:`methods.skip_thinking_chunks`, plus these [ours]: units are reasoning steps (one
  line or sentence each, written one per line); search-based chunking scores spans with
  the initial student's per-token NLL from ONE forward pass per rationale (the NLL of a
  chunk given everything before it is a slice of the full-sequence pass, since the model is
  causal), so SBC costs one forward per rationale; skippability checks run batched
  across rationales, in lock-step rounds of the cumulative rule.

Equal passes (decision): ``cot-sft`` trains ``epochs`` (2) passes over the rationales;
``skip-thinking`` trains ``cwt_epochs`` (1) pass of CWT then ``stt_epochs`` (1) pass of
STT, so both see every kept rationale token twice. ``answer-only`` trains ``epochs``
passes over the answers. Embeddings (tied to the LM head in SmolLM2) stay frozen.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT = 1  # bump when prompts, targets or a training step change meaning
PROMPT = "Question: {question}\nAnswer:"  # lm-eval gsm8k.yaml doc_to_text
ANSWER_PROMPT = "\nAnswer:"
# A second prompt the arith teacher is fine-tuned on (decision): the same question answered
# with `` #### N`` and no rationale, so the frozen teacher can also answer directly (what
# SemCoT's implicit states feed into, and the ``teacher-direct`` reference row).
DIRECT_ANSWER_PROMPT = "\nAnswer directly:"

REGISTRY = [
    {"name": "answer-only", "target": "AnswerOnly",
     "summary": "student fine-tuned on gold final answers only (no rationale)",
     "citation": "Ho et al. 2023 (Reasoning Teachers), arXiv:2212.10071"},
    {"name": "cot-sft", "target": "CoTSFT",
     "summary": "student fine-tuned on the teacher's correct full rationales (CoT distillation)",
     "citation": "Ho et al. 2023, arXiv:2212.10071; Magister et al. 2023, arXiv:2212.08410"},
    {"name": "skip-thinking", "target": "SkipThinking",
     "summary": "chunk-wise CoT distillation, then learning to skip unneeded middle chunks",
     "citation": "Chen et al. 2025 (Skip-Thinking), arXiv:2505.18642"},
    {"name": "skip-thinking-cwt", "target": "ChunkWiseOnly",
     "summary": "ablation: Skip-Thinking's chunk-wise training stage alone (no skipping)",
     "citation": "Chen et al. 2025 (Skip-Thinking), arXiv:2505.18642"},
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
class ReasoningContext:
    """What a recipe gets from the ``gsm8k`` suite."""

    options: Any
    settings: dict[str, Any]
    work_dir: Path
    teacher_name: str
    teacher: Any  # float32, eval mode; recipes must not modify it
    tokenizer: Any
    train: list[ReasoningItem]
    dataset_id: str = ""
    student_name: str | None = None  # --student; default: first-k layers of the teacher
    direct_prompt: str | None = None  # the teacher's direct-answer prompt, if it has one
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


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

    from methods.token_kd import collate, response_logits
    from methods.trainer import StepOutput, TrainConfig, Trainer

    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
        model.get_output_embeddings().weight.requires_grad_(False)

    def step(m: Any, batch: dict[str, Any]) -> StepOutput:
        ce = F.cross_entropy(response_logits(m, batch).float(), batch["targets"])
        return StepOutput(ce, n_tokens=int(batch["attention_mask"].sum()),
                          metrics={"ce": float(ce.detach())})

    steps = cfg.max_steps or max(1, cfg.epochs * -(-len(examples) // cfg.batch_size))
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
    from methods.token_kd import build_student

    layers = min(layers, int(context.teacher.config.num_hidden_layers))
    if context.student_name:
        from bench.assets import load_causal_lm
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

    from bench.assets import load_causal_lm
    from methods.token_kd import TrainExample

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


class _Recipe:
    """Shared parts of the three SFT recipes."""

    implementation = "full"
    settings_keys: tuple[str, ...] = ("student_layers", "freeze_embeddings", "epochs",
                                      "max_steps", "batch_size", "lr", "mixed_precision")

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


class AnswerOnly(_Recipe):
    def examples(self, context: ReasoningContext) -> list[Any]:
        from methods.token_kd import TrainExample

        tok = context.tokenizer
        return [TrainExample(prompt_ids(tok, it.question),
                             target_units(tok, "", it.answer)[0]) for it in context.train]


class CoTSFT(_Recipe):
    def examples(self, context: ReasoningContext) -> list[Any]:
        from methods.token_kd import TrainExample

        tok = context.tokenizer
        return [TrainExample(prompt_ids(tok, it.question),
                             [t for u in target_units(tok, it.rationale, it.answer) for t in u])
                for it in context.train if it.teacher_correct and it.rationale]


@dataclass
class SkipConfig:
    chunking: str = "search"  # "search" (SBC) | "average" (AC)
    n_chunks: int = 4
    cwt_epochs: int = 1
    stt_epochs: int = 1
    skip_check_tokens: int = 96  # generation budget of a skippability check
    check_batch_size: int = 32


def sentence_nlls(model: Any, rows: list[tuple[list[int], list[int]]], pad_id: int,
                  batch_size: int = 16) -> list[torch.Tensor]:
    """Per-token NLL of each ``target`` given ``prompt`` (one teacher-forced pass per row)."""
    from methods.token_kd import TrainExample, collate, response_logits

    out: list[torch.Tensor] = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(rows), batch_size):
            chunk = [TrainExample(p, t) for p, t in rows[start:start + batch_size]]
            batch = collate(chunk, pad_id)
            nll = torch.nn.functional.cross_entropy(
                response_logits(model, batch).float(), batch["targets"], reduction="none")
            out += list(torch.split(nll, [len(e.response_ids) for e in chunk]))
    return out


def chunk_units(units: list[list[int]], cfg: SkipConfig, nll: torch.Tensor | None
                ) -> list[list[int]]:
    """Chunks (token-id lists) of one rationale's units, by AC or by SBC over ``nll``."""
    from methods.skip_thinking_chunks import average_chunks, search_chunks

    k = min(cfg.n_chunks, len(units))
    if cfg.chunking == "average" or nll is None or k < 2:
        groups = average_chunks(units, k)
    else:
        starts = [0]
        for u in units:
            starts.append(starts[-1] + len(u))

        def cost(context: Any, chunk: Any) -> float:
            i = len(context)
            return float(nll[starts[i]:starts[i + len(chunk)]].mean())

        groups = search_chunks(units, k, cost)
    return [[t for u in g for t in u] for g in groups]


class _NeedAnswer(Exception):
    def __init__(self, key: tuple[int, ...]) -> None:
        self.key = key


def batched_skippable(model: Any, tokenizer: Any, items: list[tuple[list[int], list[list[int]],
                      str]], cfg: SkipConfig) -> list[list[int]]:
    """:func:`~methods.skip_thinking_chunks.skippable_chunks` for many rationales at once.

    ``items``: (prompt ids, chunks, gold answer). A check generates greedily from the
    prompt and the kept chunks except the last; the rule is run per item with a memo, and
    each round generates every answer still missing in one batched pass (at most
    ``n_chunks - 1`` rounds), so results equal the sequential function's.
    """
    import copy

    from bench.generation import generate
    from methods.skip_thinking_chunks import skippable_chunks

    fast = copy.deepcopy(model).to(torch.bfloat16).eval()  # batched decoding: bf16 is faster
    memo: dict[tuple[int, ...], str] = {}
    results: dict[int, list[int]] = {}
    while len(results) < len(items):
        need: set[tuple[int, ...]] = set()
        for i, (prompt, chunks, answer) in enumerate(items):
            if i in results:
                continue

            def answer_fn(_q: str, kept: list[Any], prompt: list[int] = prompt) -> str:
                key = tuple(prompt + [t for c in kept[:-1] for t in c])
                if key not in memo:
                    raise _NeedAnswer(key)
                return memo[key]

            try:
                results[i] = skippable_chunks(answer_fn, "", chunks, answer)
            except _NeedAnswer as exc:
                need.add(exc.key)
        if need:
            keys = sorted(need)
            gens = generate(fast, tokenizer, [list(k) for k in keys],
                            max_new_tokens=cfg.skip_check_tokens,
                            batch_size=cfg.check_batch_size, label="skippability checks")
            memo.update({k: g.text for k, g in zip(keys, gens, strict=True)})
    return [results[i] for i in range(len(items))]


def cached_skippable(cwt_dir: Path, model: Any, tokenizer: Any,
                     items: list[tuple[list[int], list[list[int]], str]], cfg: SkipConfig
                     ) -> list[list[int]]:
    """:func:`batched_skippable`, stored next to the CWT run that made the decisions.

    A rerun on the cached CWT student reuses them instead of decoding again: that saves the
    checks' time (minutes at cpu-long) and keeps the STT data, hence its cached run, fixed
    even where bf16 decoding at another thread count would flip a borderline check.
    """
    from bench.results import atomic_write_text

    path = cwt_dir / "skippable.json"
    key = run_key(items, cfg.skip_check_tokens, cfg.check_batch_size)
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return stored["skippable"]
    skippable = batched_skippable(model, tokenizer, items, cfg)
    atomic_write_text(path, json.dumps({"key": key, "skippable": skippable}))
    return skippable


class SkipThinking(CoTSFT):
    settings_keys = _Recipe.settings_keys + tuple(SkipConfig.__dataclass_fields__)
    skip_stage = True  # False: stop after chunk-wise training (``skip-thinking-cwt``)

    def build_model(self, context: ReasoningContext) -> tuple[Any, str]:
        from methods.skip_thinking_chunks import chunk_training_examples, skip_chunks
        from methods.token_kd import TrainExample

        skip = SkipConfig(**{k: v for k, v in context.settings.items()
                             if k in SkipConfig.__dataclass_fields__})
        if skip.chunking not in ("search", "average"):
            from bench.errors import UsageError

            raise UsageError(f"--set chunking={skip.chunking}: use search or average")
        cfg = sft_config(context.settings, context.options.seed)
        tok, pad = context.tokenizer, context.tokenizer.pad_token_id
        student, name = initial_student(context, cfg.student_layers)
        items = [it for it in context.train if it.teacher_correct and it.rationale]
        if not items:
            return super().build_model(context)  # raises the "no examples" error
        prompts = [prompt_ids(tok, it.question) for it in items]
        units = [target_units(tok, it.rationale, it.answer) for it in items]
        nlls: list[Any] = [None] * len(items)
        if skip.chunking == "search":
            nlls = sentence_nlls(student, [(p, [t for u in us for t in u])
                                           for p, us in zip(prompts, units, strict=True)], pad)
        chunks = [chunk_units(us, skip, n) for us, n in zip(units, nlls, strict=True)]

        def chunk_examples(chunk_lists: list[list[list[int]]]) -> list[Any]:
            return [TrainExample(p + ex.context, ex.target)
                    for p, cs in zip(prompts, chunk_lists, strict=True)
                    for ex in chunk_training_examples("", cs)]

        base_key = run_key(asdict(cfg), asdict(skip), context.teacher_name,
                           context.student_name)
        cwt = chunk_examples(chunks)
        out = context.work_dir / "train" / f"skip-thinking-cwt-{run_key(base_key, data_key(cwt))}"
        model = train_sft(student, cwt, sft_config(context.settings, context.options.seed,
                                                   epochs=skip.cwt_epochs), out, pad)
        context.config.update({
            "recipe": asdict(cfg), "skip_thinking": asdict(skip), "train_examples": len(items),
            "cwt_examples": len(cwt), "chunks_per_rationale": sum(map(len, chunks)) / len(chunks),
            "checkpoint_dir": str(out), "train_runs": [str(out)]})
        if not self.skip_stage:
            return model, name
        skippable = cached_skippable(out, model, tok, [(p, cs, it.answer) for p, cs, it in
                                                       zip(prompts, chunks, items, strict=True)],
                                     skip)
        kept = [skip_chunks(cs, s) for cs, s in zip(chunks, skippable, strict=True)]
        stt = chunk_examples(kept)
        out2 = context.work_dir / "train" / f"skip-thinking-stt-{run_key(base_key, data_key(stt))}"
        model = train_sft(model.train(), stt, sft_config(context.settings, context.options.seed,
                                                         epochs=skip.stt_epochs), out2, pad)
        n_tokens = sum(len(c) for cs in chunks for c in cs)
        skipped = sum(len(cs[i]) for cs, s in zip(chunks, skippable, strict=True) for i in s)
        context.config.update({
            "stt_examples": len(stt), "rationales_with_skips": sum(1 for s in skippable if s),
            "skipped_chunks": sum(map(len, skippable)),
            "skipped_token_fraction": skipped / max(n_tokens, 1),
            "checkpoint_dir": str(out2), "train_runs": [str(out), str(out2)]})
        return model, name


class ChunkWiseOnly(SkipThinking):
    """``skip-thinking-cwt`` (ablation, ours): Skip-Thinking's first stage alone, i.e. the CWT
    student of ``skip-thinking`` with the same settings (the same cached run), evaluated
    before any chunk is skipped. It separates what chunk-wise training does to accuracy from
    what skipping does. It trains ``cwt_epochs`` passes, not ``epochs`` (half of
    ``cot-sft``'s at the presets), so it is not an equal-passes rival of ``cot-sft``."""

    skip_stage = False
