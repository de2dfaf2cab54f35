"""Skip-Thinking for the ``gsm8k`` suite: ``skip-thinking`` and ``skip-thinking-cwt``.

Chen et al. 2025, "Skip-Thinking: Chunk-wise Chain-of-Thought Distillation Enable Smaller
Language Models to Reason Better and Faster", arXiv:2505.18642 (EMNLP 2025). Same teacher rationales as ``cot-sft``. Stage 1,
chunk-wise training (CWT): each rationale is split into ``n_chunks`` chunks of reasoning
steps (``chunking=average`` or ``search``, :mod:`methods.reasoning.skip_thinking_chunks`) and every
chunk is one training example (prompt = question + the preceding chunks, loss on the
chunk only). Stage 2, skip-thinking training (STT): with the CWT student, a middle chunk
is skippable when the student, given the question and the kept chunks without it (the
last chunk, which holds the answer, is what it must produce), still ends at the right
answer (:func:`~methods.reasoning.skip_thinking_chunks.skippable_chunks`, cumulative left to
right); the student then learns the kept chunks chunk-wise. The paper body (equations,
hyperparameters) was not readable; the interpretations are those documented in
:mod:`methods.reasoning.skip_thinking_chunks`, plus these [ours]: units are reasoning steps (one
line or sentence each, written one per line); search-based chunking scores spans with
the initial student's per-token NLL from ONE forward pass per rationale (the NLL of a
chunk given everything before it is a slice of the full-sequence pass, since the model is
causal), so SBC costs one forward per rationale; skippability checks run batched
across rationales, in lock-step rounds of the cumulative rule.

``skip-thinking`` trains ``cwt_epochs`` passes of CWT then ``stt_epochs`` passes of STT, so
with the presets' values it sees every kept rationale token as often as ``cot-sft``
(:mod:`methods.reasoning.cot_distill`, "Equal passes"). ``skip-thinking-cwt`` is the CWT stage alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench.contracts import ReasoningContext, dataclass_settings
from bench.core.device import autocast
from bench.core.hf import inference_copy, model_device
from methods.reasoning.cot_distill import (
    CoTSFT,
    SFTRecipe,
    data_key,
    initial_student,
    prompt_ids,
    run_key,
    sft_config,
    target_units,
    train_sft,
)

REGISTRY = [
    {"name": "skip-thinking", "suites": ["gsm8k"], "target": "SkipThinking",
     "summary": "chunk-wise CoT distillation, then learning to skip unneeded middle chunks",
     "citation": "Chen et al. 2025 (Skip-Thinking), arXiv:2505.18642"},
    {"name": "skip-thinking-cwt", "suites": ["gsm8k"], "target": "ChunkWiseOnly",
     "summary": "ablation: Skip-Thinking's chunk-wise training stage alone (no skipping)",
     "citation": "Chen et al. 2025 (Skip-Thinking), arXiv:2505.18642"},
]


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
    from methods.instruct.token_kd import TrainExample, collate, response_logits

    out: list[torch.Tensor] = []
    with torch.no_grad(), autocast(model_device(model), torch.bfloat16):
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
    from methods.reasoning.skip_thinking_chunks import average_chunks, search_chunks

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
    """:func:`~methods.reasoning.skip_thinking_chunks.skippable_chunks` for many rationales at once.

    ``items``: (prompt ids, chunks, gold answer). A check generates greedily from the
    prompt and the kept chunks except the last; the rule is run per item with a memo, and
    each round generates every answer still missing in one batched pass (at most
    ``n_chunks - 1`` rounds), so results equal the sequential function's.
    """

    from bench.core.generation import generate
    from methods.reasoning.skip_thinking_chunks import skippable_chunks

    fast = inference_copy(model)  # batched decoding: bf16 is faster
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
    from bench.core.io import atomic_write_text

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
    settings_keys = SFTRecipe.settings_keys + tuple(SkipConfig.__dataclass_fields__)
    setting_specs = SFTRecipe.setting_specs + dataclass_settings(SkipConfig)
    skip_stage = True  # False: stop after chunk-wise training (``skip-thinking-cwt``)

    def build_model(self, context: ReasoningContext) -> tuple[Any, str]:
        from methods.instruct.token_kd import TrainExample
        from methods.reasoning.skip_thinking_chunks import chunk_training_examples, skip_chunks

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
