"""Reference rankers of the retrieval suites, as methods: BM25, the MiniLM teacher, and a
zero-shot LLM. Each provides ``build_reranker(context)`` for ``bench.retrieval.pipeline``
(``None`` means "keep the BM25 candidates as they are")."""

from __future__ import annotations

from typing import Any

REGISTRY = [
    {"name": "bm25", "target": "BM25Baseline",
     "summary": "BM25 first stage (Anserini, k1=0.9, b=0.4), no reranking",
     "citation": "Robertson & Zaragoza 2009; Lin et al. 2021 (Pyserini), arXiv:2102.10073"},
    {"name": "minilm", "target": "MiniLMReranker",
     "summary": "all-MiniLM-L6-v2 bi-encoder cosine over BM25 candidates (default teacher)",
     "citation": "Reimers & Gurevych 2019, arXiv:1908.10084; Wang et al. 2020, arXiv:2002.10957"},
    {"name": "llm-zeroshot", "target": "YesNoZeroShot",
     "summary": "zero-shot pointwise LLM reranker: log p(Yes) to a yes/no relevance prompt",
     "citation": "Nogueira et al. 2020, arXiv:2003.06713; Zhuang et al. 2023, arXiv:2310.14122"},
]


class BM25Baseline:
    settings_keys: tuple[str, ...] = ()

    def build_reranker(self, context: Any) -> tuple[None, str]:
        return None, "anserini-bm25"


class MiniLMReranker:
    settings_keys = ("model", "batch_size")

    def build_reranker(self, context: Any) -> tuple[Any, str]:
        from bench.assets import load_bi_encoder
        from bench.retrieval.rerankers import BiEncoderReranker

        name = context.settings.get("model") or context.options.teacher or "all-minilm-l6-v2"
        context.config["model"] = name
        return BiEncoderReranker(load_bi_encoder(name), max_length=256), name


class YesNoZeroShot:
    settings_keys = ("model", "dtype", "max_doc_tokens", "batch_size")

    def build_reranker(self, context: Any) -> tuple[Any, str]:
        import torch

        from bench.assets import load_causal_lm
        from bench.retrieval.rerankers import YesNoLLMReranker

        name = context.settings.get("model") or "smollm2-135m-instruct"
        # bf16 weights: ~5x the pairs/s of fp32 on AMX CPUs (DESIGN §3); scores move by
        # ~1e-2 in log-probability.
        dtype = context.settings.get("dtype", "bfloat16")
        model, tokenizer = load_causal_lm(name, dtype=getattr(torch, dtype))
        max_doc = int(context.settings.get("max_doc_tokens", 128))
        context.config.update({"model": name, "dtype": dtype, "max_doc_tokens": max_doc})
        return YesNoLLMReranker(model, tokenizer, max_doc_tokens=max_doc), name
