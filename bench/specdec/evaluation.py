"""Timing and lossless checks of the ``specbench`` suite (on :mod:`bench.specdec`).

Protocol (Spec-Bench, Xia et al. 2024, arXiv:2401.07851, adapted to a shared CPU):
Spec-Bench reports the ratio of tokens/s measured in separate runs, but on a shared CPU
the load drifts between runs, so here every prompt is decoded plainly (A) and then with
the method (B) back to back in the same process, A B A B ..., greedy; a multi-turn
item decodes turn ``j`` after the plain decoding's answers to the earlier turns, so both
modes see the same conversation. Per item the wall times, tokens and target passes of all
turns are summed.

Metrics of a group of items (a category, or all):

- ``speedup`` = total plain wall time / total speculative wall time (the main score);
- ``tau`` = generated tokens / target verification passes (bonus token included: plain
  decoding has tau 1; EAGLE's "average acceptance length");
- ``mean_accepted`` (tau without the bonus token), ``acceptance_rate`` (accepted /
  drafted tokens), ``tokens_per_s`` (speculative) and ``plain_tokens_per_s``,
  ``draft_fraction`` (share of the speculative wall time spent drafting), ``new_tokens``
  (mean per item), ``lossless`` (1.0 when every greedy output equals plain decoding's).

Per item: ``speedup``, ``tau``, ``tokens_per_s``, ``new_tokens`` (for paired tests).
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
    text: str = ""  # the last turn's plain output (for samples in the config)


def decode_item(target: Any, draft: Any, tokenizer: Any, item: Any, *, max_new_tokens: int,
                eos_ids: Sequence[int], k: int, tree: Any, max_turns: int | None = None,
                temperature: float = 0.0, seed: int = 0) -> ItemResult:
    """Plain then speculative decoding of every turn of ``item`` (plain twice for ``ar``).

    ``temperature > 0``: both modes sample (plain: ancestral; speculative: speculative
    sampling on a chain), each turn from its own generator seeded by ``seed`` and the item,
    so a rerun draws the same tokens; ``identical`` then stays True (sampled outputs
    differ by design; :func:`sampling_check` tests their distribution instead)."""
    import zlib

    from bench.specdec import autoregressive, speculative
    from bench.specdec.data import conversation_ids

    sampling = temperature > 0
    res = ItemResult(item.id, item.category)
    answers: list[str] = []
    turns = list(item.turns[:max_turns] if max_turns else item.turns)
    for j in range(len(turns)):
        prompt = conversation_ids(tokenizer, turns[: j + 1], answers)
        turn_seed = seed * 1_000_003 + zlib.crc32(f"{item.id}/{j}".encode())

        def gen(offset: int, turn_seed: int = turn_seed) -> torch.Generator | None:
            return torch.Generator().manual_seed(turn_seed + offset) if sampling else None

        plain = autoregressive(target, prompt, max_new_tokens, eos_ids=eos_ids,
                               temperature=temperature, generator=gen(0))
        if draft is None:
            spec = autoregressive(target, prompt, max_new_tokens, eos_ids=eos_ids,
                                  temperature=temperature, generator=gen(1))
        else:
            spec = speculative(target, draft, prompt, max_new_tokens, k=k,
                               tree=None if sampling else tree, eos_ids=eos_ids,
                               temperature=temperature, generator=gen(1))
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
        res.text = tokenizer.decode(plain.tokens, skip_special_tokens=True).strip()
        answers.append(res.text)
    return res


def warmup(target: Any, draft: Any, tokenizer: Any, item: Any, *, eos_ids: Sequence[int],
           k: int, tree: Any) -> None:
    """Decode the first turn of ``item`` both ways for 8 tokens, untimed."""
    decode_item(target, draft, tokenizer, item, max_new_tokens=8, eos_ids=eos_ids, k=k,
                tree=tree, max_turns=1)


def group_metrics(results: Sequence[ItemResult]) -> dict[str, float]:
    """Suite metrics of a group of items (see the module docstring); all finite."""
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
    return out


def per_item_scores(results: Sequence[ItemResult]) -> dict[str, dict[str, float]]:
    return {
        "speedup": {r.id: r.plain_time / r.spec_time if r.spec_time > 0 else 0.0
                    for r in results},
        "tau": {r.id: r.new_tokens / max(1, r.passes) for r in results},
        "tokens_per_s": {r.id: r.new_tokens / r.spec_time if r.spec_time > 0 else 0.0
                         for r in results},
        "new_tokens": {r.id: float(r.new_tokens) for r in results},
    }


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


def spec_bench_tables(records: Sequence[dict[str, Any]]) -> list[str]:
    """The leaderboard's Spec-Bench-shaped tables (``sections`` hook of the suite).

    Per method: speedup (and tau) per category, then tau and speedup over all prompts, as in
    Spec-Bench's table (Xia et al. 2024, Table 2: categories, "#Mean Accepted Tokens",
    "Overall"); one table for greedy decoding and one for the sampling pass. Means over
    seeds. A header line states hardware, torch version, target dtype, batch size 1 and
    torch threads, from the records.
    """
    from bench.core.leaderboard import escape_md, row_method
    from bench.specdec.data import CATEGORY_NAMES

    cells: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = {}
    setups = set()
    for r in records:
        # "<name>/specbench-<category>", "@limitN" after it on a --limit run
        category = r["dataset"]["id"].split("@")[0].rsplit("/", 1)[-1] \
            .removeprefix("specbench-")
        row = cells.setdefault((row_method(r), r["model"]), {})
        for name, value in r["metrics"].items():
            row.setdefault(category, {}).setdefault(name, []).append(value)
        prov = r["provenance"]
        setups.add((prov["hardware"]["cpu"], prov["hardware"]["accelerator"],
                    prov["package_versions"].get("torch", "?"),
                    r["config"].get("torch_threads", "?")))
    categories = [c for c in CATEGORY_NAMES if any(c in v for v in cells.values())]
    out = ["## Spec-Bench table", "",
           "Hardware and setup: " + "; ".join(
               f"{escape_md(cpu)} / accelerator {escape_md(acc)}, torch {escape_md(torch_v)}, "
               f"{threads} torch thread(s)" for cpu, acc, torch_v, threads in sorted(setups, key=str))
           + ". Target float32, batch size 1; speedup = plain / speculative wall time on the "
             "same prompts in the same run; tau = tokens per target forward pass, bonus "
             "token included (plain decoding: 1). Category cells: speedup (tau)."]

    def mean(row: dict[str, dict[str, list[float]]], cat: str, name: str) -> str:
        values = row.get(cat, {}).get(name)
        return "—" if not values else f"{sum(values) / len(values):.2f}"

    for title, suffix in (("Greedy (temperature 0)", ""),
                          ("Sampling (temperature 1, speculative sampling on a chain)",
                           "_sampling")):
        rows = []
        for (method, model), row in sorted(cells.items()):
            if f"speedup{suffix}" not in row.get("all", {}):
                continue
            rows.append(f"| {escape_md(method)} | {escape_md(model)} | "
                        + " | ".join(f"{mean(row, c, 'speedup' + suffix)}x "
                                     f"({mean(row, c, 'tau' + suffix)})" for c in categories)
                        + f" | {mean(row, 'all', 'tau' + suffix)} | "
                          f"{mean(row, 'all', 'speedup' + suffix)}x |")
        if not rows:
            continue
        out += ["", f"### {title}", "",
                "| Method | Model | " + " | ".join(map(escape_md, categories))
                + " | tau (all) | Overall speedup |",
                "| --- | --- | " + " | ".join("---:" for _ in categories) + " | ---: | ---: |",
                *rows]
    return out
