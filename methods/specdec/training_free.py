"""Training-free drafts for ``specbench``: prompt lookup decoding (``pld``).

No draft model and no training: the draft is read off the context
(:mod:`bench.specdec.lookup`). Spec-Bench's PLD row proposes up to 10 tokens after a
matched n-gram of at most 3 tokens (its ``max_ngram_size=3, num_pred_tokens=10``), so the
recipe's presets set ``k`` to 10; a lookup proposes one chain, so trees are off.
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
