"""``uld``: Universal Logit Distillation across tokenizers (Boizard et al. 2024,
arXiv:2402.12030), Gemma-3-270M into SmolLM2-135M.

As in the authors' code (github.com/Nicolas-BZRD/llm-recipes): the student and the teacher
read the same text, each with its own tokenizer; the student's distribution over its i-th
token is compared with the teacher's over *its* i-th token (positions aligned by index from
the start of the segment, cut to the shorter of the two), by the sorted-probability
Wasserstein distance of :func:`methods.losses.uld.uld_topk_rows`; the loss is
``CE + 1.5 · ULD`` (their ``cross_entropy_factor`` 1 and ``distil_factor`` 1.5), both
temperatures 1. Index alignment is the paper's choice, not an oversight: it needs no
tokenizer knowledge, and it drifts when the two tokenizations of a text differ in length
(here Gemma and SmolLM2 need about the same number of tokens per character, so the drift is
slow); :mod:`methods.lm.gold` aligns spans instead.

Top-k: the teacher's top ``topk`` probabilities (the suite's setting, 64) plus its rest
mass, against the student's top k of its full softmax plus its rest (a lower bound of the
full ULD, error at most twice the teacher's rest mass, recorded as ``teacher_rest_mass``).
The mean is over all aligned positions of a batch.
"""

from __future__ import annotations

from typing import Any

import torch

from methods.lm.common import Example, LMConfig, LMContext, LMRecipe

REGISTRY = [
    {"name": "uld", "suites": ["lm"], "target": "ULD",
     "summary": "CE + 1.5 x ULD (sorted-probability Wasserstein-1, positions aligned by "
                "index) from a teacher with another tokenizer (Gemma-3-270M)",
     "citation": "Boizard et al. 2024 (ULD), arXiv:2402.12030"},
]


class ULD(LMRecipe):
    kd = "uld (index-aligned, top-k + rest)"
    default_kd_weight = 1.5

    def examples(self, context: LMContext, cfg: LMConfig) -> list[Example]:
        examples = super().examples(context, cfg)
        self.attach_teacher(context, examples)
        self.k = int(context.settings["topk"])
        return examples

    def kd_loss(self, logits: torch.Tensor, batch: dict[str, Any], cfg: LMConfig
                ) -> torch.Tensor:
        from methods.losses.uld import topk_and_rest, uld_topk_rows

        rows_s, top_t, rest_t = [], [], []
        for e, start, n in zip(batch["examples"], batch["starts"], batch["lengths"],
                               strict=True):
            m = min(n, len(e.teacher.offsets))
            rows_s.append(logits[start:start + m])
            top_t.append(e.teacher.logp[:m].exp())
            rest_t.append(e.teacher.rest[:m])
        q = torch.softmax(torch.cat(rows_s), -1)
        q_top, q_rest = topk_and_rest(q, self.k)
        return uld_topk_rows(q_top, q_rest, torch.cat(top_t), torch.cat(rest_t)).mean()
