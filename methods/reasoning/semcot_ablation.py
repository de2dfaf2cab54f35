"""Does SemCoT's frozen teacher read the implicit states? The state ablation.

:func:`implicit_state_ablation` (``scripts/semcot_ablation.py``) replaces a trained
pipeline's states (:func:`replace_states`: zeros, another question's states, a random vector
of each state's norm, or none) and feeds them through the evaluation's own code path
(:class:`methods.reasoning.semcot_pipeline.TeacherAnswers`); the method is
:mod:`methods.reasoning.semcot`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from bench.core.progress import progress_bar
from methods.reasoning.semcot_pipeline import TeacherAnswers

# The replacements :func:`implicit_state_ablation` feeds the frozen teacher, in table order.
STATE_VARIANTS: tuple[str, ...] = ("trained", "zeros", "other-question", "random-same-norm",
                                   "none")


def replace_states(states: list[torch.Tensor], variant: str, *, seed: int = 0
                   ) -> list[torch.Tensor | None]:
    """The implicit states of n questions (``[k, H]`` each) under one ablation ``variant``.

    ``trained``: as given; ``zeros``: all-zero vectors; ``other-question``: question ``i``
    gets question ``(i + 1) % n``'s states (with one question, its own); ``random-same-norm``:
    Gaussian directions (seeded by ``seed``) scaled to each vector's own norm; ``none``: no
    states at all (the ``teacher-direct`` input).
    """
    if variant == "trained":
        return list(states)
    if variant == "zeros":
        return [torch.zeros_like(s) for s in states]
    if variant == "other-question":
        return [states[(i + 1) % len(states)] for i in range(len(states))]
    if variant == "random-same-norm":
        gen = torch.Generator().manual_seed(seed)
        out = []
        for s in states:
            r = torch.randn(s.shape, generator=gen, dtype=torch.float32).to(s)
            out.append(r * (s.norm(dim=-1, keepdim=True) / r.norm(dim=-1, keepdim=True)))
        return out
    if variant == "none":
        return [None] * len(states)
    raise ValueError(f"unknown state variant {variant!r}; choose from {STATE_VARIANTS}")


@torch.no_grad()
def implicit_state_ablation(pipeline: TeacherAnswers, contexts: list[str], golds: list[str],
                            *, correct: Callable[[str, str], bool], max_new_tokens: int = 32,
                            until: Sequence[str] = ("Question:", "</s>", "<|im_end|>"),
                            variants: Sequence[str] = STATE_VARIANTS, seed: int = 0
                            ) -> dict[str, Any]:
    """Do the frozen teacher's answers depend on the implicit states? For each lm-eval
    ``context`` the pipeline's states (:meth:`TeacherAnswers.states`) are replaced per
    :func:`replace_states` variant and fed through the evaluation's own code path
    (:meth:`TeacherAnswers.generate_from`, greedy, ``max_new_tokens``, cut at ``until``).

    Per variant: ``exact_match`` (``correct(output, gold)``), ``changed`` (answers that
    differ from the ``trained`` variant's; needs ``trained`` in ``variants``), and from the
    teacher's logits at the gold answer's positions (`` #### N`` + EOS, teacher forced,
    :meth:`TeacherAnswers.answer_logits`): ``gold_logprob`` (mean log-probability per gold
    token), ``logit_diff`` (mean over items of the largest absolute logit difference to
    ``trained``) and ``argmax_changed`` (fraction of gold positions whose argmax token
    differs from ``trained``'s). Also the mean norms of the trained states and of the
    teacher's input embeddings (vocabulary rows and the questions' tokens), the mean cosine
    between the trained state vectors of different questions, and every output. Returns a
    JSON-ready dict.
    """
    tok = pipeline.tokenizer
    encoded = [pipeline.encode(c) for c in contexts]
    trained = [pipeline.states(q) for q, _ in encoded]
    if any(s is None for s in trained) and any(v != "none" for v in variants):
        raise ValueError("the pipeline inserts no implicit states (teacher-direct?): "
                         "only variant 'none' applies")
    emb = pipeline.teacher.get_input_embeddings().weight.detach().float()
    question_norms = torch.cat([emb[torch.tensor(q, device=emb.device)].norm(dim=-1)
                                for q, _ in encoded])
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    gold_ids = [list(tok(f" #### {g}", add_special_tokens=False)["input_ids"]) + eos
                for g in golds]
    outputs: dict[str, list[str]] = {}
    ref_logits: list[torch.Tensor] = []  # the trained states' (compared against)
    rows = []
    with progress_bar(len(variants) * len(contexts), "state ablation") as advance:
        for variant in sorted(variants, key=lambda v: v != "trained"):  # trained first
            states = replace_states(trained, variant, seed=seed)  # type: ignore[arg-type]
            texts, hits, logp, diff, flips = [], [], [], [], []
            for i, ((q_ids, p_ids), st, gids, gold) in enumerate(
                    zip(encoded, states, gold_ids, golds, strict=True)):
                text, _ = pipeline.generate_from(q_ids, st, p_ids, max_new_tokens, list(until))
                for stop in until:
                    text = text.split(stop)[0] if stop else text
                texts.append(text)
                hits.append(bool(correct(text, gold)))
                lg = pipeline.answer_logits(q_ids, st, p_ids, gids).cpu()
                logp.append(torch.log_softmax(lg, -1).gather(1, torch.tensor(gids)[:, None])
                            .mean().item())
                if variant == "trained":
                    ref_logits.append(lg)
                elif ref_logits:
                    diff.append((lg - ref_logits[i]).abs().max().item())
                    flips.append((lg.argmax(-1) != ref_logits[i].argmax(-1)).float().mean().item())
                advance(variant=variant)
            outputs[variant] = texts
            row: dict[str, Any] = {"variant": variant, "exact_match": sum(hits) / len(hits),
                                   "correct": sum(hits), "gold_logprob": sum(logp) / len(logp)}
            if "trained" in outputs:
                row["changed"] = sum(a != b for a, b in zip(texts, outputs["trained"], strict=True))
                row["logit_diff"] = sum(diff) / len(diff) if diff else 0.0
                row["argmax_changed"] = sum(flips) / len(flips) if flips else 0.0
            rows.append(row)
    rows.sort(key=lambda r: list(variants).index(r["variant"]))
    vectors = torch.cat([s.float().cpu() for s in trained if s is not None]) \
        if any(s is not None for s in trained) else torch.zeros(0, emb.shape[1])
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    cos = unit @ unit.T
    pairs = cos.numel() - cos.shape[0]
    return {"items": len(contexts), "max_new_tokens": max_new_tokens, "seed": seed,
            "state_norm": vectors.norm(dim=-1).mean().item() if len(vectors) else None,
            # how alike the states of different questions are (1: one vector for all)
            "state_cosine": (cos.sum() - cos.diagonal().sum()).item() / pairs
            if pairs else None,
            "token_embedding_norm": emb.norm(dim=-1).mean().item(),
            "question_token_norm": question_norms.mean().item(),
            "variants": rows, "outputs": outputs}
