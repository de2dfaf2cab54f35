"""Timing and lossless checks of the ``specbench`` suite (on :mod:`bench.specdec`).

Protocol (Spec-Bench, Xia et al. 2024, arXiv:2401.07851, adapted to a shared CPU):
Spec-Bench reports the ratio of tokens/s measured in separate runs, but on a shared CPU
the load drifts between runs, so here every prompt is decoded plainly (A) and with the
method (B) back to back in the same process, greedy. Which of the two runs first is a
seeded coin per item (:func:`spec_runs_first`: the suite's ``order_seed`` and the item id,
the same on every rerun), so a drift or warm-cache advantage of the second run falls on
both sides alike instead of always on B; the ``ar`` row (plain against plain, same
coins) measures what order and noise alone do. A multi-turn item decodes turn ``j``
after the plain decoding's answers to the earlier turns, so both modes see the same
conversation. Per item the wall times, tokens and target passes of all turns are summed.

Metrics of a group of items (a category, or all):

- ``speedup`` = total plain wall time / total speculative wall time (the main score);
- ``tau`` = generated tokens / target verification passes (bonus token included: plain
  decoding has tau 1; EAGLE's "average acceptance length");
- ``mean_accepted`` (tau without the bonus token), ``acceptance_rate`` (accepted /
  drafted tokens), ``tokens_per_s`` (speculative) and ``plain_tokens_per_s``,
  ``draft_fraction`` (share of the speculative wall time spent drafting), ``new_tokens``
  (mean per item), ``lossless`` (1.0 when every greedy output equals plain decoding's).

Losslessness depends on the decoding dtype (:func:`group_metrics`' ``check``): in
float32 (the default) ``lossless`` is token-exact equality with plain decoding. In
bfloat16 a batched verification forward can round differently from a one-token forward,
so a near-tie may flip a greedy token without anything being wrong; bf16 groups report
``token_agreement`` instead: the share of output tokens equal to plain bf16 decoding's,
position by position up to the shorter output of each turn, pooled over the group's
tokens (per item: over the item's turns).

Per item: ``speedup``, ``tau``, ``tokens_per_s``, ``new_tokens`` (for paired tests),
``spec_first`` (1 when the speculative run came first) and, in bf16, ``token_agreement``.
A record's ``cost`` (:func:`record_cost`) is the mean speculative wall time per item.

Sampling pass (the suite's ``speed_temperature``, default 1.0; 0 switches it off): the same
items decoded again at that temperature, plain sampling (A) against speculative sampling
(B), interleaved the same way, each turn from seeded generators; a tree method samples on
a chain of k (EAGLE-2 trees are greedy only here). Its figures are the metrics above with
the suffix ``_sampling`` (``speedup_sampling``, ``tau_sampling``, ...; per item
``speedup_sampling``, ``tau_sampling``); ``lossless`` is greedy-only, the sampling pass is
checked by the distribution test below.

Sampling check (:func:`sampling_check`): speculative sampling must leave the target's
distribution unchanged. The first generated token of a few short prompts is drawn
``runs`` times with the method's draft (a chain of one draft token at temperature 1, so
every draw goes through the accept / reject / residual rule) and its histogram is compared
with the target's softmax by a chi-square test (tokens with an expected count >= 5 are
their own cells, the rest one cell; cells of all prompts pooled, degrees of freedom
summed). Recorded with its p-value; a correct implementation fails at rate alpha.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ItemResult:
    id: str
    category: str
    plain_time: float = 0.0
    spec_time: float = 0.0
    draft_time: float = 0.0
    new_tokens: int = 0
    plain_tokens: int = 0
    passes: int = 0
    accepted: int = 0
    drafted: int = 0
    identical: bool = True
    agreeing: int = 0  # greedy output positions equal to plain decoding's
    compared: int = 0  # positions compared (the shorter output of each turn)
    spec_first: bool = False  # the speculative run came before the plain one
    text: str = ""  # the last turn's plain output (for samples in the config)

    @property
    def token_agreement(self) -> float:
        return self.agreeing / self.compared if self.compared else 1.0


def spec_runs_first(order_seed: int, item_id: str) -> bool:
    """The seeded coin of the A/B order: whether the speculative run of ``item_id`` goes
    first. A hash, not an RNG stream, so it depends on the seed and the item only (not on
    which other items a run selects) and is the same on every machine and rerun."""
    import hashlib

    digest = hashlib.sha256(f"specbench-order/{order_seed}/{item_id}".encode()).digest()
    return bool(digest[0] & 1)


def decode_item(target: Any, draft: Any, tokenizer: Any, item: Any, *, max_new_tokens: int,
                eos_ids: Sequence[int], k: int, tree: Any, max_turns: int | None = None,
                temperature: float = 0.0, seed: int = 0, spec_first: bool = False
                ) -> ItemResult:
    """Plain and speculative decoding of every turn of ``item`` (plain twice for ``ar``),
    plain first unless ``spec_first``.

    ``temperature > 0``: both modes sample (plain: ancestral; speculative: speculative
    sampling on a chain), each turn from its own generator seeded by ``seed`` and the item,
    so a rerun draws the same tokens; ``identical`` then stays True (sampled outputs
    differ by design; :func:`sampling_check` tests their distribution instead)."""
    import zlib

    from bench.specdec import autoregressive, speculative
    from bench.specdec.data import conversation_ids

    sampling = temperature > 0
    res = ItemResult(item.id, item.category, spec_first=spec_first)
    answers: list[str] = []
    turns = list(item.turns[:max_turns] if max_turns else item.turns)
    for j in range(len(turns)):
        prompt = conversation_ids(tokenizer, turns[: j + 1], answers)
        turn_seed = seed * 1_000_003 + zlib.crc32(f"{item.id}/{j}".encode())

        def gen(offset: int, turn_seed: int = turn_seed) -> torch.Generator | None:
            return torch.Generator().manual_seed(turn_seed + offset) if sampling else None

        def run_plain(prompt: list[int] = prompt, gen: Any = gen) -> Any:
            return autoregressive(target, prompt, max_new_tokens, eos_ids=eos_ids,
                                  temperature=temperature, generator=gen(0))

        def run_spec(prompt: list[int] = prompt, gen: Any = gen) -> Any:
            if draft is None:
                return autoregressive(target, prompt, max_new_tokens, eos_ids=eos_ids,
                                      temperature=temperature, generator=gen(1))
            return speculative(target, draft, prompt, max_new_tokens, k=k,
                               tree=None if sampling else tree, eos_ids=eos_ids,
                               temperature=temperature, generator=gen(1))

        if spec_first:
            spec = run_spec()
            plain = run_plain()
        else:
            plain = run_plain()
            spec = run_spec()
        st = spec.stats
        res.plain_time += plain.stats.wall_time
        res.spec_time += st.wall_time
        res.draft_time += st.draft_time
        res.new_tokens += st.new_tokens
        res.plain_tokens += plain.stats.new_tokens
        res.passes += st.target_passes
        res.accepted += sum(st.accepted_per_pass)
        res.drafted += sum(st.drafted_per_pass)
        res.identical = res.identical and (sampling or plain.tokens == spec.tokens)
        if not sampling:  # sampled outputs differ by design: nothing to agree on
            shared = min(len(plain.tokens), len(spec.tokens))
            res.compared += shared
            res.agreeing += sum(a == b for a, b in zip(plain.tokens[:shared],
                                                       spec.tokens[:shared], strict=True))
        res.text = tokenizer.decode(plain.tokens, skip_special_tokens=True).strip()
        answers.append(res.text)
    return res


def cast_for_decoding(target: Any, draft: Any, dtype: str) -> None:
    """Put the target (in place) and the draft's weights in the decoding ``dtype``, so
    plain and speculative decoding run in the same precision. Called after the draft is
    built: training and the cached target features keep the target's loaded dtype (float32
    for the packaged target, so the float32 default changes nothing)."""
    torch_dtype = getattr(torch, dtype)
    target.to(torch_dtype)
    cast = getattr(draft, "cast", None)
    if cast is not None:  # drafts without weights (pld, recycling) have nothing to cast
        cast(torch_dtype)


def warmup(target: Any, draft: Any, tokenizer: Any, item: Any, *, eos_ids: Sequence[int],
           k: int, tree: Any) -> None:
    """Decode the first turn of ``item`` both ways for 8 tokens, untimed."""
    decode_item(target, draft, tokenizer, item, max_new_tokens=8, eos_ids=eos_ids, k=k,
                tree=tree, max_turns=1)


def group_metrics(results: Sequence[ItemResult], check: str = "exact") -> dict[str, float]:
    """Suite metrics of a group of items (see the module docstring); all finite.

    ``check``: ``"exact"`` (float32) reports ``lossless``; ``"agreement"`` (bfloat16)
    reports ``token_agreement`` in its place."""
    plain = sum(r.plain_time for r in results)
    spec = sum(r.spec_time for r in results)
    tokens = sum(r.new_tokens for r in results)
    passes = max(1, sum(r.passes for r in results))
    out = {"speedup": plain / spec if spec > 0 else 0.0,
           "tau": tokens / passes,
           "mean_accepted": sum(r.accepted for r in results) / passes,
           "tokens_per_s": tokens / spec if spec > 0 else 0.0,
           "plain_tokens_per_s": sum(r.plain_tokens for r in results) / plain
           if plain > 0 else 0.0,
           "draft_fraction": sum(r.draft_time for r in results) / spec if spec > 0 else 0.0,
           "new_tokens": tokens / max(1, len(results)),
           "lossless": float(all(r.identical for r in results))}
    drafted = sum(r.drafted for r in results)
    if drafted:
        out["acceptance_rate"] = sum(r.accepted for r in results) / drafted
    if check == "agreement":
        del out["lossless"]
        compared = sum(r.compared for r in results)
        out["token_agreement"] = (sum(r.agreeing for r in results) / compared
                                  if compared else 1.0)
    elif check != "exact":
        raise ValueError(f"check must be 'exact' or 'agreement', got {check!r}")
    return out


def per_item_scores(results: Sequence[ItemResult], check: str = "exact"
                    ) -> dict[str, dict[str, float]]:
    """Per-item scores (see the module docstring); ``check`` as :func:`group_metrics`."""
    out = {
        "speedup": {r.id: r.plain_time / r.spec_time if r.spec_time > 0 else 0.0
                    for r in results},
        "tau": {r.id: r.new_tokens / max(1, r.passes) for r in results},
        "tokens_per_s": {r.id: r.new_tokens / r.spec_time if r.spec_time > 0 else 0.0
                         for r in results},
        "new_tokens": {r.id: float(r.new_tokens) for r in results},
        "spec_first": {r.id: float(r.spec_first) for r in results},
    }
    if check == "agreement":
        out["token_agreement"] = {r.id: r.token_agreement for r in results}
    return out


def record_cost(parameters: int, results: Sequence[ItemResult], draft: Any, target: Any,
                settings: dict[str, Any], tree: Any) -> dict[str, Any]:
    """A record's ``cost`` (:mod:`bench.core.cost`): the draft's own parameters and the
    mean speculative (greedy) wall time per prompt, the one the speedup is computed from."""
    from bench.core.cost import cost_entry, ms_per_item, weights_dtype

    if draft is None:
        decoding = "plain decoding (no draft)"
    elif tree is not None:
        decoding = (f"speculative decoding, tree of {tree.total_tokens} tokens, depth "
                    f"{tree.depth}, top-{tree.top_k}")
    else:
        decoding = f"speculative decoding, chain of k={settings['k']}"
    per = (f"prompt: up to {settings['max_new_tokens']} new tokens per turn, up to "
           f"{settings['max_turns']} turns, greedy {decoding}, batch 1, "
           f"{weights_dtype(target)} target (timed during evaluation)")
    return cost_entry(parameters, ms_per_item(sum(r.spec_time for r in results),
                                              len(results)), per)


def _cells(counts: Counter, p: torch.Tensor, runs: int) -> tuple[list[float], list[float]]:
    """(observed, expected) chi-square cells: tokens expected >= 5 times, plus the rest."""
    expected = p * runs
    big = [int(t) for t in torch.nonzero(expected >= 5).flatten().tolist()]
    obs = [float(counts.get(t, 0)) for t in big]
    exp = [float(expected[t]) for t in big]
    rest_obs, rest_exp = runs - sum(obs), runs - sum(exp)
    if rest_exp >= 5 or not big:
        obs.append(rest_obs)
        exp.append(rest_exp)
    else:  # too small for a cell of its own: merge into the smallest cell
        j = min(range(len(exp)), key=exp.__getitem__)
        obs[j] += rest_obs
        exp[j] += rest_exp
    return obs, exp


@torch.no_grad()
def sampling_check(target: Any, draft: Any, prompts: Sequence[Sequence[int]], *, runs: int,
                   temperature: float = 1.0, seed: int = 0, alpha: float = 1e-3,
                   ) -> dict[str, Any]:
    """Chi-square test that the first token under speculative sampling follows the
    target's tempered softmax (see the module docstring)."""
    from scipy import stats as sps

    from bench.specdec import speculative

    stat, dof, rejected, per_prompt = 0.0, 0, 0, []
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([list(prompt)], device=next(target.parameters()).device)
        logits = target(input_ids=ids).logits[0, -1].double()
        p = torch.softmax(logits / temperature, dim=-1).cpu()
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        counts: Counter = Counter()
        for _ in range(runs):
            out = speculative(target, draft, list(prompt), 2, k=1, temperature=temperature,
                              generator=gen)
            counts[out.tokens[0]] += 1
            rejected += int(out.stats.accepted_per_pass[0] == 0)
        obs, exp = _cells(counts, p, runs)
        s = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True) if e > 0)
        stat += s
        dof += len(obs) - 1
        per_prompt.append({"cells": len(obs), "chi2": s, "top_p": float(p.max())})
    p_value = float(sps.chi2.sf(stat, dof)) if dof > 0 else None
    return {"temperature": temperature, "prompts": len(prompts), "runs_per_prompt": runs,
            "chi2": stat, "dof": dof, "p_value": p_value, "alpha": alpha,
            "passed": None if p_value is None else p_value > alpha,
            "draft_rejection_rate": rejected / max(1, runs * len(prompts)),
            "per_prompt": per_prompt}
