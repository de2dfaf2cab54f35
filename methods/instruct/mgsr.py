"""MGSR recipe (Liu et al. 2024, arXiv:2407.10068): L = L_SFT + L_DAC-KL + L_span, with SCRG.

The losses are pure functions in :mod:`methods.losses.mgsr` (read its docstring for every
interpretation: the paper's method section was not readable offline, the equations come
from the public OpenReview discussion). This file is the training recipe on the
``instruct`` suite, on the shared trainer and the same first-k-layers student and teacher
responses as the KD baselines (:mod:`methods.instruct.token_kd`):

- every step: L_SFT = cross-entropy on the teacher's response tokens (unit weight);
- DAC-KL and the span loss (unit weights) are taken on the **distillation sequence** of the
  step. On most steps that is the teacher's cached response, compared on the teacher's
  top-k support (as every cached-logit baseline here). On a fraction ``scrg_fraction``
  (default 0.2) of steps it is an SCRG-revised student sequence: the student decodes each
  prompt (greedy [ours]; the paper does not say which decoding), the teacher scores it, the
  position of largest KL(teacher ‖ student) among tokens where the student disagrees with
  the teacher's argmax gets the teacher's token (one correction per sample, the paper's
  default), the student re-generates the rest, and the teacher's top-k logits on the
  revised sequence are the targets. A sequence with no disagreement is kept as generated.
  Which steps revise is drawn from the trainer's seeded RNG, so resume stays exact.
- the DAC clipping network is trained jointly with the student (one optimizer, same lr).
- spans: one span per word of the response (token strings, :func:`word_span_ids`), since
  the paper's phrase chunker needs NLTK tagger data that is not packaged [ours].

Cost on this CPU: an SCRG step runs two student decodes and two teacher forwards, about
4x a cached step, hence the fraction. ``--set scrg_fraction=0`` gives the MGSR losses
without SCRG (an ablation), ``scrg_fraction=1`` revises every step.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import torch

from bench.contracts import InstructContext
from bench.core.device import no_autocast
from bench.core.hf import model_device
from bench.suite import Setting
from methods.instruct.token_kd import KDConfig, TokenKD, TrainExample, collate

REGISTRY = [{
    "name": "mgsr", "suites": ["instruct"], "target": "MGSR",
    "summary": "MGSR: SFT + DAC-KL (learned quantile clipping) + span loss, with SCRG "
               "sequence revision (interpretations documented)",
    "citation": "Liu et al. 2024 (MGSR), arXiv:2407.10068",
}]


class MGSRModel(torch.nn.Module):
    """The student LM and the DAC clipping network, trained (and checkpointed) together."""

    def __init__(self, lm: Any) -> None:
        super().__init__()
        from methods.losses.mgsr import DACClipNet

        self.lm = lm
        self.clip_net = DACClipNet()


def span_ids(tokenizer: Any, examples: list[TrainExample]) -> torch.Tensor:
    """[1, N] word-span ids over the concatenated response tokens; no span crosses two
    examples."""
    from methods.losses.mgsr import word_span_ids

    parts, offset = [], 0
    for e in examples:
        ids = word_span_ids([tokenizer.convert_ids_to_tokens(e.response_ids)])[0]
        parts.append(torch.where(ids >= 0, ids + offset, ids))
        offset += int(ids.max().clamp_min(-1)) + 1
    return torch.cat(parts).unsqueeze(0)


@torch.no_grad()
def scrg_revise(student: Any, teacher: Any, tokenizer: Any, prompts: list[list[int]], *,
                max_new_tokens: int, topk: int) -> tuple[list[TrainExample], int]:
    """SCRG on a batch of prompts: (revised examples with teacher top-k, corrections made)."""
    was_training = student.training
    student.eval()
    # Decoding under the trainer's bf16 autocast is several times slower on CPU; a GPU
    # keeps it.
    device = model_device(student)
    with no_autocast(device) if device.type == "cpu" else contextlib.nullcontext():
        return _revise(student, teacher, tokenizer, prompts, max_new_tokens, topk,
                       was_training)


def _revise(student: Any, teacher: Any, tokenizer: Any, prompts: list[list[int]],
            max_new_tokens: int, topk: int, was_training: bool
            ) -> tuple[list[TrainExample], int]:
    from bench.core.generation import generate_batch, stop_ids
    from bench.core.topk import topk_lse_of
    from methods.instruct.token_kd import response_logits
    from methods.losses.mgsr import scrg_correction

    first = [g.output_ids for g in generate_batch(student, tokenizer, prompts,
                                                  max_new_tokens=max_new_tokens)]
    rows = [i for i, r in enumerate(first) if r]
    corrections = 0
    if rows:
        batch = collate([TrainExample(prompts[i], first[i]) for i in rows],
                        tokenizer.pad_token_id)
        width = max(len(first[i]) for i in rows)
        s_flat, t_flat = response_logits(student, batch), response_logits(teacher, batch)
        vocab = s_flat.shape[-1]
        s_pad = s_flat.new_zeros((len(rows), width, vocab))
        t_pad = t_flat.new_zeros((len(rows), width, vocab))
        tokens = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        start = 0
        for j, i in enumerate(rows):
            n = len(first[i])
            s_pad[j, :n], t_pad[j, :n] = s_flat[start:start + n], t_flat[start:start + n]
            tokens[j, :n], mask[j, :n] = torch.tensor(first[i]), True
            start += n
        positions, teacher_tokens, _ = scrg_correction(tokens, s_pad.float(), t_pad.float(),
                                                       mask)
        stop = set(stop_ids(student, tokenizer))
        pending = []
        for j, i in enumerate(rows):
            pos = int(positions[j])
            if pos < 0:
                continue
            corrections += 1
            first[i] = first[i][:pos] + [int(teacher_tokens[j])]
            if first[i][-1] not in stop and len(first[i]) < max_new_tokens:
                pending.append(i)
        if pending:
            budget = max_new_tokens - min(len(first[i]) for i in pending)
            tails = generate_batch(student, tokenizer, [prompts[i] + first[i] for i in pending],
                                   max_new_tokens=budget)
            for i, tail in zip(pending, tails, strict=True):
                first[i] = first[i] + tail.output_ids[: max_new_tokens - len(first[i])]
    revised = [TrainExample(p, r) for p, r in zip(prompts, first, strict=True) if r]
    if revised:
        logits = response_logits(teacher, collate(revised, tokenizer.pad_token_id))
        values, indices, lse = topk_lse_of(logits, topk)
        start = 0
        for e in revised:
            n = len(e.response_ids)
            e.topk_values, e.topk_indices = values[start:start + n], indices[start:start + n]
            e.topk_lse = lse[start:start + n]
            start += n
    student.train(was_training)
    return revised, corrections


class MGSR(TokenKD):
    loss = "mgsr"
    settings_keys = (*TokenKD.settings_keys, "scrg_fraction", "span_distance")
    setting_specs = TokenKD.setting_specs + (
        Setting("scrg_fraction", "float", 0.2, "share of steps with SCRG revision", min=0,
                max=1),
        Setting("span_distance", "str", "l2", "distance of the span loss",
                choices=("l2", "kl")))

    def build_model(self, context: InstructContext) -> tuple[Any, str]:
        self.context = context
        self.scrg_fraction = float(context.settings.get("scrg_fraction", 0.2))
        self.span_distance = str(context.settings.get("span_distance", "l2"))
        self.stats = {"scrg_steps": 0, "scrg_corrections": 0}
        model, name = super().build_model(context)
        context.config.update({"scrg_fraction": self.scrg_fraction,
                               "span_distance": self.span_distance, **self.stats})
        context.notes.append("MGSR: method details interpreted from the public equations "
                             "(see methods/losses/mgsr.py); spans are words, SCRG greedy")
        return model, name

    def wrap(self, student: Any) -> torch.nn.Module:
        return MGSRModel(student)

    def unwrap(self, model: Any) -> Any:
        return model.lm

    def step_loss(self, model: Any, batch: dict[str, Any], cfg: KDConfig,
                  teacher: Any | None) -> tuple[torch.Tensor, dict[str, float]]:
        import torch.nn.functional as F

        from bench.core.topk import topk_support
        from methods.instruct.token_kd import response_logits
        from methods.losses.mgsr import mgsr_loss

        model = getattr(model, "module", model)
        lm, examples = model.lm, batch["examples"]
        logits = response_logits(lm, batch)
        sft = F.cross_entropy(logits.float(), batch["targets"])
        # random.random() draws from the RNG state the trainer checkpoints and restores.
        if self.scrg_fraction > 0 and random.random() < self.scrg_fraction:
            revised, fixes = scrg_revise(lm, teacher, self.context.tokenizer,
                                         [e.prompt_ids for e in examples],
                                         max_new_tokens=self.context.settings["max_new_tokens"],
                                         topk=self.context.settings["topk"])
            self.stats["scrg_steps"] += 1
            self.stats["scrg_corrections"] += fixes
            if revised:
                examples = revised
                batch = collate(examples, self.context.tokenizer.pad_token_id)
                logits = response_logits(lm, batch)
        student, target = topk_support(logits, batch["topk_values"], batch["topk_indices"],
                                       batch["topk_lse"])
        loss, parts = mgsr_loss(student.unsqueeze(0), target.unsqueeze(0), sft=sft,
                                clip_net=model.clip_net,
                                spans=span_ids(self.context.tokenizer, examples),
                                temperature=cfg.temperature, span_distance=self.span_distance)
        return loss, {"ce": float(parts["sft"]), "dac_kl": float(parts["dac_kl"]),
                      "span": float(parts["span"])}

    def needs_online_teacher(self) -> bool:
        return self.scrg_fraction > 0

    def loss_fn(self) -> None:  # the loss is step_loss itself
        return None
