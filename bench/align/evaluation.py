"""Scoring for the ``align`` suite: the gold reward, preference pairs built with it, win
rates, the per-token KL to the reference policy, an optional pairwise LLM judge, and the
real-scale preference data (UltraFeedback).

Gold reward (offline default): ``r(x, y) = max_k cos(e(y), e(a_k))``, the cosine between the
all-MiniLM-L6-v2 embedding (mean pooling, L2-normalised, 128 tokens at most) of the response
``y`` and of each reference answer ``a_k`` of the prompt, maximised over the references (an
empty response scores 0). It rewards responses that say what a reference answer says,
in the manner of the gold reward models of reward-model studies (Gao et al. 2023,
arXiv:2210.10760): a fixed scorer that defines preferences, samples and evaluation alike.

Preference pairs, as those studies build them: ``n`` responses sampled from the reference
policy per training prompt are scored by the gold reward; the best becomes ``chosen``, the
worst ``rejected`` (first index on equal rewards); a prompt is dropped when its best and
worst rewards differ by less than ``min_margin`` or when either response is empty.

Win rate against the reference policy: per test prompt 1 when the policy's greedy response
has the higher gold reward than the reference policy's greedy response, 0 when lower, and
**0.5 for a tie** (identical text, or rewards within 1e-6); the metric is the mean.

KL to the reference: per test prompt, the mean over the policy's own greedy response tokens
(teacher-forced) of KL(π(·|x, y<t) ‖ π_ref(·|x, y<t)) on the full vocabulary, in float32;
the metric is the mean over prompts (an empty response contributes 0).

Judge (``--judge MODEL``; AlpacaEval-2 / MT-Bench / Arena-Hard style, pluggable): a causal
LM is shown the question and two responses and asked which is better; its preference is the
softmax over its next-token logits for "A" and "B". Each pair is judged in both orders
(policy as A, then as B) and the two probabilities that the policy's response is better are
averaged, cancelling position bias; ``judge_win_rate`` is the mean over prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

TIE_TOLERANCE = 1e-6
RewardFn = Callable[[Sequence[str], Sequence[Sequence[str]]], list[float]]


class GoldReward:
    """Bi-encoder similarity of a response to its best reference answer (module doc)."""

    rule = ("max over reference answers of cos(MiniLM(response), MiniLM(reference)), "
            "mean-pooled L2-normalised all-MiniLM-L6-v2 embeddings, 128 tokens; empty "
            "response = 0")

    def __init__(self, encoder: Any, max_length: int = 128) -> None:
        self.encoder = encoder
        self.max_length = max_length

    def __call__(self, responses: Sequence[str], references: Sequence[Sequence[str]]
                 ) -> list[float]:
        texts = sorted({t for t in responses if t.strip()} | {a for refs in references
                                                               for a in refs})
        index = {t: i for i, t in enumerate(texts)}
        emb = self.encoder.encode(texts, max_length=self.max_length) if texts else None
        scores = []
        for response, refs in zip(responses, references, strict=True):
            if not response.strip() or emb is None or not refs:
                scores.append(0.0)
                continue
            sims = emb[[index[a] for a in refs]] @ emb[index[response]]
            scores.append(float(sims.max()))
        return scores


def preference_pairs(ids: Sequence[str], prompts: Sequence[list[int]],
                     samples: Sequence[Sequence[Any]], references: Sequence[Sequence[str]],
                     reward: RewardFn, min_margin: float = 1e-6
                     ) -> tuple[list[Any], dict[str, Any]]:
    """(pairs, statistics): best/worst of each prompt's samples under ``reward``.

    ``samples[i]`` are generations (``.text``, ``.output_ids``) for ``prompts[i]``.
    """
    from methods.align.dpo import PreferencePair

    flat = [g for row in samples for g in row]
    refs = [references[i] for i, row in enumerate(samples) for _ in row]
    scores = reward([g.text for g in flat], refs)
    pairs, start, skipped = [], 0, 0
    for item_id, prompt, row in zip(ids, prompts, samples, strict=True):
        rewards = scores[start:start + len(row)]
        start += len(row)
        if not rewards:
            skipped += 1
            continue
        best = max(range(len(row)), key=lambda j: (rewards[j], -j))
        worst = min(range(len(row)), key=lambda j: (rewards[j], j))
        if rewards[best] - rewards[worst] < min_margin or not row[best].output_ids \
                or not row[worst].output_ids:
            skipped += 1
            continue
        pairs.append(PreferencePair(item_id, list(prompt), list(row[best].output_ids),
                                    list(row[worst].output_ids), rewards[best],
                                    rewards[worst]))
    stats = {"prompts": len(ids), "pairs": len(pairs), "skipped": skipped,
             "mean_sample_reward": sum(scores) / len(scores) if scores else None}
    if pairs:
        stats["mean_chosen_reward"] = sum(p.chosen_reward for p in pairs) / len(pairs)
        stats["mean_rejected_reward"] = sum(p.rejected_reward for p in pairs) / len(pairs)
    return pairs, stats


def win_scores(policy: Sequence[float], reference: Sequence[float], policy_text: Sequence[str],
               reference_text: Sequence[str]) -> list[float]:
    """1 / 0.5 / 0 per prompt: policy's gold reward above / tied with / below the reference's."""
    out = []
    for a, b, ta, tb in zip(policy, reference, policy_text, reference_text, strict=True):
        out.append(0.5 if ta == tb or abs(a - b) <= TIE_TOLERANCE else float(a > b))
    return out


@torch.no_grad()
def kl_to_reference(policy: Any, reference: Any, rows: Sequence[tuple[list[int], list[int]]],
                    pad_id: int, batch_size: int = 8) -> list[float]:
    """Per row: mean over response tokens of KL(π ‖ π_ref), float32, full vocabulary."""
    from methods.align.dpo import collate_responses, response_logits

    if policy is reference:
        return [0.0] * len(rows)
    out: list[float] = []
    device = next(policy.parameters()).device
    for start in range(0, len(rows), batch_size):
        chunk = [(p, r) for p, r in rows[start:start + batch_size]]
        nonempty = [(p, r if r else [pad_id]) for p, r in chunk]
        batch = {k: v.to(device) for k, v in collate_responses(nonempty, pad_id).items()}
        logp = torch.log_softmax(response_logits(policy, batch).float(), -1)
        logq = torch.log_softmax(response_logits(reference, batch).float(), -1)
        kl = (logp.exp() * (logp - logq)).sum(-1)  # [R, L]
        mask = batch["mask"].float()
        per_row = ((kl * mask).sum(-1) / mask.sum(-1).clamp_min(1)).tolist()
        out += [v if r else 0.0 for v, (_, r) in zip(per_row, chunk, strict=True)]
    return out


JUDGE_TEMPLATE = ("Which response answers the question better? Reply with one letter, A or B."
                  "\n\nQuestion: {question}\n\nResponse A: {a}\n\nResponse B: {b}")


class PairwiseJudge:
    """A causal LM as a pairwise judge, both orders averaged (module doc)."""

    def __init__(self, model: Any, tokenizer: Any, name: str, batch_size: int = 8) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size = batch_size
        self.choices = [self._token(c) for c in ("A", "B")]

    def _token(self, letter: str) -> int:
        ids = self.tokenizer.encode(letter, add_special_tokens=False)
        if not ids:
            raise ValueError(f"judge tokenizer cannot encode {letter!r}")
        return ids[-1]

    @torch.no_grad()
    def prob_first_better(self, questions: Sequence[str], first: Sequence[str],
                          second: Sequence[str]) -> list[float]:
        from bench.core.generation import chat_prompt_ids
        from bench.core.hf import left_pad

        out: list[float] = []
        rows = [chat_prompt_ids(self.tokenizer, JUDGE_TEMPLATE.format(question=q, a=a, b=b))
                for q, a, b in zip(questions, first, second, strict=True)]
        device = next(self.model.parameters()).device
        for start in range(0, len(rows), self.batch_size):
            ids, mask, pos = left_pad(rows[start:start + self.batch_size],
                                      self.tokenizer.pad_token_id)
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                position_ids=pos.to(device)).logits[:, -1].float()
            out += torch.softmax(logits[:, self.choices], -1)[:, 0].tolist()
        return out

    def win_probabilities(self, questions: Sequence[str], policy: Sequence[str],
                          reference: Sequence[str]) -> list[float]:
        """P(policy better), averaged over both presentation orders; 0.5 for identical text."""
        as_a = self.prob_first_better(questions, policy, reference)
        as_b = self.prob_first_better(questions, reference, policy)
        return [0.5 if p == r else (a + 1.0 - b) / 2
                for a, b, p, r in zip(as_a, as_b, policy, reference, strict=True)]


def ultrafeedback(tokenizer: Any, settings: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(train pairs, test items) from HuggingFaceH4/ultrafeedback_binarized.

    The ``train_prefs`` pairs are used as they are (chosen/rejected replies cut to
    ``max_new_tokens`` tokens + EOS, prompts to ``max_context_tokens``); the test items are
    ``test_prefs`` prompts with their chosen reply as the gold reward's reference.
    """
    from bench.core.assets.models import online_mode
    from bench.core.generation import chat_prompt_ids
    from bench.errors import UsageError
    from bench.instruct.suite import Item
    from methods.align.dpo import PreferencePair

    if not online_mode():
        raise UsageError("--dataset ultrafeedback downloads HuggingFaceH4/ultrafeedback_"
                         "binarized: set DISTILLBENCH_ONLINE=1")
    from datasets import load_dataset

    def reply(messages: list[dict[str, str]]) -> list[int]:
        text = messages[-1]["content"]
        return tokenizer.encode(text, add_special_tokens=False)[: settings["max_new_tokens"]] \
            + [tokenizer.eos_token_id]

    def cut(text: str) -> str:  # the prompt's text, before the chat template
        ids = tokenizer.encode(text, add_special_tokens=False)
        return text if len(ids) <= settings["max_context_tokens"] else \
            tokenizer.decode(ids[: settings["max_context_tokens"]])

    train = load_dataset("HuggingFaceH4/ultrafeedback_binarized", split="train_prefs")
    test = load_dataset("HuggingFaceH4/ultrafeedback_binarized", split="test_prefs")
    n_train, n_test = settings["train_per_task"], settings["test_per_task"]
    pairs = [PreferencePair(r["prompt_id"], chat_prompt_ids(tokenizer, cut(r["prompt"])),
                            reply(r["chosen"]), reply(r["rejected"]))
             for r in train.select(range(min(n_train or len(train), len(train))))]
    items = [Item(r["prompt_id"], cut(r["prompt"]), (r["chosen"][-1]["content"],),
                  r["prompt_id"])
             for r in test.select(range(min(n_test or len(test), len(test))))]
    return pairs, items
