"""``gold``: alignment-based cross-tokenizer distillation: text-span alignment, exact-match
vocabulary mapping, ULD for the rest (after Hugging Face TRL's GOLD trainer, itself an
extension of ULD, Boizard et al. 2024, arXiv:2402.12030).

For each training segment, read by both models with their own tokenizers:

1. the two token sequences are cut into groups covering the same characters
   (:func:`methods.losses.xtoken.align_spans`: one-to-one where the tokenizers agree,
   many-to-one or many-to-many around merges and splits);
2. each side's distributions in a group are merged by the chain rule
   (:func:`~methods.losses.xtoken.merge_groups`): the distribution at the group's first
   token times the probability of the group's later tokens (the teacher's from its cached
   ``target_logp``, the student's from its own logits, with gradients);
3. the merged distributions are compared by :func:`~methods.losses.xtoken.hybrid_topk_rows`:
   teacher top-k tokens whose text is a student token (:func:`~methods.losses.xtoken.
   exact_match_map`, cached per tokenizer pair) against that student token one to one, the
   unmatched rest by ULD's sorted L1 (top k plus rest on both sides).

Loss: ``CE + 1.5 · mean over groups of H`` (λ = ULD's 1.5, so ``uld`` and ``gold`` differ only
in the alignment and the matching), temperature 1. Every choice that differs from GOLD is
listed in :mod:`methods.losses.xtoken`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from methods.lm.common import Example, LMConfig, LMContext, LMRecipe

REGISTRY = [
    {"name": "gold", "suites": ["lm"], "target": "GOLD",
     "summary": "CE + 1.5 x hybrid ULD on text-span-aligned, chain-rule-merged distributions; "
                "exact-match vocabulary pairs compared one to one (GOLD-style)",
     "citation": "Hugging Face TRL GOLD trainer (2025); Boizard et al. 2024 (ULD), "
                 "arXiv:2402.12030"},
]


def vocabulary_map(context: LMContext, teacher_tokenizer: Any) -> torch.Tensor:
    """Teacher id -> student id of the same text, or -1 (cached per tokenizer pair)."""
    from safetensors.torch import load_file

    from bench.core.io import atomic_save_tensors
    from methods.losses.xtoken import exact_match_map, token_texts

    teacher_texts = token_texts(teacher_tokenizer)
    student_texts = token_texts(context.tokenizer)
    key = hashlib.sha256(json.dumps([teacher_texts, student_texts]).encode()).hexdigest()[:16]
    path = context.work_dir / "vocab-map" / f"{key}.safetensors"
    if not path.exists():
        atomic_save_tensors({"map": exact_match_map(student_texts, teacher_texts)}, path)
    return load_file(str(path))["map"]


class GOLD(LMRecipe):
    kd = "gold (span-aligned, exact-match + ULD, top-k + rest)"
    default_kd_weight = 1.5

    def examples(self, context: LMContext, cfg: LMConfig) -> list[Example]:
        from methods.losses.xtoken import align_spans

        examples = super().examples(context, cfg)
        teacher_tokenizer = self.attach_teacher(context, examples)
        self.vocab_map = vocabulary_map(context, teacher_tokenizer)
        self.k = int(context.settings["topk"])
        groups = 0
        for e in examples:
            e.extra["groups"] = align_spans(e.offsets, e.teacher.offsets)
            groups += len(e.extra["groups"])
        context.config["alignment"] = {
            "groups": groups, "student_tokens": sum(len(e.offsets) for e in examples),
            "teacher_tokens": sum(len(e.teacher.offsets) for e in examples),
            "matched_teacher_ids": int((self.vocab_map >= 0).sum()),
            "teacher_vocabulary": int(self.vocab_map.numel())}
        return examples

    def kd_loss(self, logits: torch.Tensor, batch: dict[str, Any], cfg: LMConfig
                ) -> torch.Tensor:
        from methods.losses.xtoken import hybrid_topk_rows, merge_groups

        values = []
        for e, start, n in zip(batch["examples"], batch["starts"], batch["lengths"],
                               strict=True):
            groups = e.extra["groups"]
            logp = torch.log_softmax(logits[start:start + n], -1)
            merged = merge_groups(logp, batch["targets"][start:start + n],
                                  [s for s, _ in groups])
            t = e.teacher
            first = [g[0] for _, g in groups]
            later = torch.stack([t.target_logp[g[1:]].sum() for _, g in groups])
            p_top = (t.logp[first] + later.unsqueeze(-1)).exp()
            p_rest = t.rest[first] * later.exp()
            values.append(hybrid_topk_rows(merged.exp(), p_top, t.ids[first], p_rest,
                                           self.vocab_map, self.k))
        return torch.cat(values).mean()
