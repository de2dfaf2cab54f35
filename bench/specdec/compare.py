"""Plain vs speculative decoding on the same prompts, interleaved (A B A B), with the
lossless check and the speedup a ``specbench`` result records.

Spec-Bench (Xia et al. 2024, github hemingkx/Spec-Bench ``evaluation/speed.py``) reports
the speedup as the ratio of mean tokens/s of the method and of vanilla decoding measured
in separate runs. On a shared CPU the load drifts between runs, so here every prompt is
decoded plainly and speculatively back to back in the same process (A B A B ...), and the
speedup is total plain wall time / total speculative wall time over the same prompts (the
generated token counts are equal under greedy decoding). Per-prompt records keep both
results for significance tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bench.specdec.drafts import Draft
from bench.specdec.engine import DecodeResult, autoregressive, speculative
from bench.specdec.sampling import is_greedy
from bench.specdec.tree import TreeConfig


@dataclass
class PairRecord:
    """One prompt decoded both ways; ``identical`` is None under sampling."""

    plain: DecodeResult
    spec: DecodeResult
    identical: bool | None


@dataclass
class PairSummary:
    records: list[PairRecord]

    @property
    def speedup(self) -> float:
        """Total plain wall time / total speculative wall time (same prompts)."""
        spec = sum(r.spec.stats.wall_time for r in self.records)
        return sum(r.plain.stats.wall_time for r in self.records) / spec if spec else float("nan")

    @property
    def tau(self) -> float:
        """Tokens per target pass over all speculative passes (bonus included)."""
        passes = sum(r.spec.stats.target_passes for r in self.records)
        return sum(r.spec.stats.new_tokens for r in self.records) / max(1, passes)

    @property
    def mean_accepted(self) -> float:
        """Accepted draft tokens per target pass over all passes (bonus excluded)."""
        passes = sum(r.spec.stats.target_passes for r in self.records)
        return sum(sum(r.spec.stats.accepted_per_pass) for r in self.records) / max(1, passes)

    @property
    def lossless(self) -> bool | None:
        """Every greedy output identical to plain decoding's (None under sampling)."""
        flags = [r.identical for r in self.records]
        return None if any(f is None for f in flags) else all(flags)

    def as_dict(self) -> dict[str, Any]:
        def tps(which: str) -> float:
            res = [getattr(r, which) for r in self.records]
            wall = sum(x.stats.wall_time for x in res)
            return sum(x.stats.new_tokens for x in res) / wall if wall else float("nan")

        return {"prompts": len(self.records), "speedup": self.speedup, "tau": self.tau,
                "mean_accepted": self.mean_accepted, "lossless": self.lossless,
                "plain_tokens_per_second": tps("plain"),
                "spec_tokens_per_second": tps("spec"),
                "identical": [r.identical for r in self.records]}


def run_interleaved(target: Any, draft: Draft, prompts: Sequence[Sequence[int]],
                    max_new_tokens: int, *, k: int = 4, tree: TreeConfig | None = None,
                    temperature: float = 0.0, eos_ids: Iterable[int] = (), seed: int = 0,
                    warmup: bool = True) -> PairSummary:
    """Decode every prompt plainly then speculatively (A B A B ...), batch size 1.

    Sampling draws from one ``torch.Generator`` per prompt and mode seeded from ``seed``
    and the prompt index. ``warmup`` first decodes the first prompt both ways, untimed
    (lazy initialisation, allocator warm-up).
    """
    eos = list(eos_ids)
    device = next(target.parameters()).device
    gen_device = device if device.type == "cuda" else torch.device("cpu")

    def generator(i: int, mode: int) -> torch.Generator | None:
        if is_greedy(temperature):
            return None
        return torch.Generator(device=gen_device).manual_seed(seed * 1_000_003 + 2 * i + mode)

    if warmup and prompts:
        autoregressive(target, prompts[0], min(8, max_new_tokens), temperature=temperature,
                       eos_ids=eos, generator=generator(0, 0))
        speculative(target, draft, prompts[0], min(8, max_new_tokens), k=k, tree=tree,
                    temperature=temperature, eos_ids=eos, generator=generator(0, 1))
    records = []
    for i, prompt in enumerate(prompts):
        plain = autoregressive(target, prompt, max_new_tokens, temperature=temperature,
                               eos_ids=eos, generator=generator(i, 0))
        spec = speculative(target, draft, prompt, max_new_tokens, k=k, tree=tree,
                           temperature=temperature, eos_ids=eos, generator=generator(i, 1))
        same = plain.tokens == spec.tokens if is_greedy(temperature) else None
        records.append(PairRecord(plain, spec, same))
    return PairSummary(records)
