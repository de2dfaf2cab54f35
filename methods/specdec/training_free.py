"""Training-free drafts for ``specbench``: prompt lookup decoding (``pld``) and Token
Recycling (``recycling``).

No draft model and no training. ``pld`` reads the draft off the context
(:mod:`bench.specdec.lookup`): Spec-Bench's PLD row proposes up to 10 tokens after a
matched n-gram of at most 3 tokens (its ``max_ngram_size=3, num_pred_tokens=10``), so the
recipe's presets set ``k`` to 10; a lookup proposes one chain, so trees are off.
``recycling`` walks a matrix of the target's own top candidates after each token
(:mod:`bench.specdec.recycling`; 8 candidates per token as in the paper). Its default is a
chain of ``k`` first candidates (the suite's k = 3), which runs greedy and sampled; the
paper's draft tree is ``--set tree=total,depth,top_k`` (greedy only; the sampling pass
then runs the chain). Partly implemented: the paper's static 80-node tree template is not
reproduced (the tree is the engine's breadth-first growth by candidate rank), so the
leaderboard marks the row partial.
"""

from __future__ import annotations

from typing import Any

from bench.contracts import SpecContext
from bench.errors import UsageError
from bench.suite import Setting

REGISTRY = [
    {"name": "pld", "suites": ["specbench"], "target": "PromptLookup",
     "summary": "prompt lookup decoding: draft tokens copied from the context after a "
                "repeat of its last n-gram (training-free)",
     "citation": "Saxena 2023 (Prompt Lookup Decoding); Xia et al. 2024 (Spec-Bench), "
                 "arXiv:2401.07851"},
    {"name": "recycling", "suites": ["specbench"], "target": "TokenRecycling",
     "summary": "Token Recycling: drafts walk a matrix of the target's own top candidates "
                "after each token, updated every pass (training-free)",
     "citation": "Luo et al. 2025 (Token Recycling), arXiv:2408.08696"},
]


class PromptLookup:
    settings_keys = ("max_ngram",)
    setting_specs = (Setting("max_ngram", "int", 3, "longest n-gram looked up in the context",
                             min=1, max=32),)
    presets: dict[str, dict[str, Any]] = {
        "smoke": {"k": 10}, "default": {"k": 10}, "full": {"k": 10, "tree": None}}
    needs_training_data = False

    def check_settings(self, settings: dict[str, Any]) -> None:
        if settings.get("tree") not in (None, "", "none", "chain"):
            raise UsageError(f"--set tree={settings['tree']}: pld proposes one chain; use "
                             "--set tree=none")

    def build_draft(self, context: SpecContext) -> tuple[Any, str]:
        from pathlib import Path

        from bench.specdec.lookup import PromptLookupDraft

        n = int(context.settings.get("max_ngram", 3))
        vocab = int(context.target.get_output_embeddings().weight.shape[0])
        context.config["draft"] = {"kind": "prompt-lookup", "max_ngram": n,
                                   "tokens_proposed": int(context.settings["k"])}
        return PromptLookupDraft(vocab, max_ngram=n), f"{Path(context.target_name).name}+pld-n{n}"


class TokenRecycling:
    settings_keys = ("candidates",)
    setting_specs = (Setting("candidates", "int", 8, "top candidates kept per token", min=1,
                             max=64),)
    needs_training_data = False

    def build_draft(self, context: SpecContext) -> tuple[Any, str]:
        from pathlib import Path

        from bench.specdec.recycling import RecyclingDraft

        m = int(context.settings.get("candidates", 8))
        vocab = int(context.target.get_output_embeddings().weight.shape[0])
        context.config["draft"] = {"kind": "token-recycling", "candidates": m}
        context.config["implementation"] = "partial"
        context.notes.append("Token Recycling with the engine's breadth-first tree by "
                             "candidate rank (or a chain by default), not the paper's static "
                             "80-node tree template")
        return RecyclingDraft(vocab, candidates=m), f"{Path(context.target_name).name}+recycling"
