"""Speculative decoding engine for the ``specbench`` suite.

- :func:`autoregressive`: plain decoding with a KV cache (the baseline);
- :func:`speculative`: speculative decoding with a :class:`Draft`, chain (``k`` tokens,
  greedy or speculative sampling) or EAGLE-2 dynamic tree (``tree=TreeConfig(60, 5, 10)``,
  greedy only);
- :class:`LMDraft`: a small causal LM with the target's tokenizer as the draft;
- :func:`speculative_step_distribution`: the exact output law of one accept/reject step.

The suite (:mod:`bench.specdec.suite`) decodes every prompt plainly and speculatively back
to back, in a seeded random order per prompt (:func:`bench.specdec.evaluation.decode_item`),
and measures the cost model of speculative decoding (:mod:`bench.specdec.costs`).

Batch size 1 throughout (as EAGLE's and Spec-Bench's evaluation). Conventions (tau
includes the bonus token; plain decoding has tau = 1) are in :mod:`bench.specdec.engine`.

References: Leviathan et al. 2023, arXiv:2211.17192; Chen et al. 2023, arXiv:2302.01318;
Li et al. 2024, EAGLE, arXiv:2401.15077; Li et al. 2024, EAGLE-2, arXiv:2406.16858.
"""

from bench.specdec.drafts import Draft, LMDraft, Proposal
from bench.specdec.engine import DecodeResult, DecodeStats, autoregressive, speculative
from bench.specdec.sampling import residual_distribution, speculative_step_distribution
from bench.specdec.tree import DraftTree, TreeConfig, build_dynamic_tree

__all__ = ["DecodeResult", "DecodeStats", "Draft", "DraftTree", "LMDraft", "Proposal",
           "TreeConfig", "autoregressive", "build_dynamic_tree", "residual_distribution",
           "speculative", "speculative_step_distribution"]
