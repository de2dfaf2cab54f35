"""Reference rankers of the retrieval suites, as methods: BM25, the MiniLM teacher, the
``--teacher`` reranker, and a zero-shot LLM. Each yields one leaderboard row through the
retrieval family's ``build_rerankers(context)`` (:mod:`bench.contracts`); its reranker
``None`` means "keep the BM25 candidates as they are".

``rerank-teacher`` is the suites' teacher row for any teacher DeAR can distil: whatever
``--teacher`` names (default the MiniLM bi-encoder; a local or HF cross-encoder; a
RankLLaMA-style peft adapter), resolved by
:func:`bench.retrieval.teachers.load_teacher_reranker`, so the row and DeAR's teacher are
the same model for the same string. It is a separate name from ``minilm`` (whose committed
results are the MiniLM row) and from ``teacher`` (the ``instruct`` suite's generator
teacher: method names are unique across suites). ``minilm`` accepts only bi-encoders.
"""

from __future__ import annotations

from typing import Any

from bench.suite import Setting

REGISTRY = [
    {"name": "bm25", "suites": ["beir", "trec-dl"], "target": "BM25Baseline",
     "summary": "BM25 first stage (Anserini, k1=0.9, b=0.4), no reranking",
     "citation": "Robertson & Zaragoza 2009; Lin et al. 2021 (Pyserini), arXiv:2102.10073"},
    {"name": "minilm", "suites": ["beir", "trec-dl"], "target": "MiniLMReranker",
     "summary": "all-MiniLM-L6-v2 bi-encoder cosine over BM25 candidates (default teacher)",
     "citation": "Reimers & Gurevych 2019, arXiv:1908.10084; Wang et al. 2020, arXiv:2002.10957"},
    {"name": "rerank-teacher", "suites": ["beir", "trec-dl"], "target": "TeacherReranker",
     "summary": "the --teacher reranker over BM25 candidates: the MiniLM bi-encoder by default, "
                "or a cross-encoder / RankLLaMA adapter (local dir or HF id)",
     "citation": "Nogueira & Cho 2019, arXiv:1901.04085; Ma et al. 2023 (RankLLaMA), "
                 "arXiv:2310.08319"},
    {"name": "llm-zeroshot", "suites": ["beir", "trec-dl"], "target": "YesNoZeroShot",
     "summary": "zero-shot pointwise LLM reranker: log p(Yes) to a yes/no relevance prompt",
     "citation": "Nogueira et al. 2020, arXiv:2003.06713; Zhuang et al. 2023, arXiv:2310.14122"},
]


MODEL = Setting("model", "str", None, "reranker model: asset name, HF id or folder",
                nullable=True)
BATCH = Setting("batch_size", "int", 32, "pairs scored per batch", min=1)
DTYPES = ("float32", "bfloat16", "float16")


class _OneRow:
    """A recipe that yields one leaderboard row, named after the method."""

    def build_rerankers(self, context: Any) -> list[tuple[str, Any, str]]:
        return [(context.options.method, *self.build_reranker(context))]

    def build_reranker(self, context: Any) -> tuple[Any, str]:
        raise NotImplementedError


class BM25Baseline(_OneRow):
    settings_keys: tuple[str, ...] = ()

    def build_reranker(self, context: Any) -> tuple[None, str]:
        return None, "anserini-bm25"


class MiniLMReranker(_OneRow):
    settings_keys = ("model", "batch_size")
    setting_specs = (MODEL, BATCH)

    def build_reranker(self, context: Any) -> tuple[Any, str]:
        from bench.core.assets import load_bi_encoder
        from bench.errors import UsageError
        from bench.retrieval.rerankers import BiEncoderReranker
        from bench.retrieval.teachers import TEACHER_DEFAULT, describe_reranker

        flag = "--set model" if context.settings.get("model") else "--teacher"
        name = context.settings.get("model") or context.options.teacher or TEACHER_DEFAULT
        kind = describe_reranker(name, flag=flag).kind
        if kind != "bi-encoder":
            raise UsageError(f"{flag} {name!r} is a {kind} reranker; the minilm row takes "
                             "bi-encoders only: use --method rerank-teacher")
        context.config["model"] = name
        return BiEncoderReranker(load_bi_encoder(name), max_length=256), name


class TeacherReranker(_OneRow):
    settings_keys = ("model", "teacher_dtype", "batch_size")
    setting_specs = (MODEL, BATCH, Setting("teacher_dtype", "str", None, "teacher weights "
                                           "(null: as loaded)", choices=DTYPES, nullable=True))

    def build_reranker(self, context: Any) -> tuple[Any, str]:
        from pathlib import Path

        from bench.retrieval.teachers import TEACHER_DEFAULT, load_teacher_reranker

        flag = "--set model" if context.settings.get("model") else "--teacher"
        name = context.settings.get("model") or context.options.teacher or TEACHER_DEFAULT
        reranker = load_teacher_reranker(name, flag=flag,
                                         dtype=context.settings.get("teacher_dtype"))
        context.config.update({"teacher": name, "teacher_kind": reranker.kind})
        return reranker, (Path(name).name if Path(name).expanduser().is_dir() else name)


class YesNoZeroShot(_OneRow):
    settings_keys = ("model", "dtype", "max_doc_tokens", "batch_size")
    setting_specs = (MODEL, BATCH, Setting("dtype", "str", "bfloat16", "LM weights",
                                           choices=DTYPES),
                     Setting("max_doc_tokens", "int", 128, "passage tokens kept", min=1))

    def build_reranker(self, context: Any) -> tuple[Any, str]:
        import torch

        from bench.core.assets import load_causal_lm
        from bench.retrieval.rerankers import YesNoLLMReranker

        name = context.settings.get("model") or "smollm2-135m-instruct"
        # bf16 weights: ~5x the pairs/s of fp32 on AMX CPUs; scores move by
        # ~1e-2 in log-probability.
        dtype = context.settings.get("dtype", "bfloat16")
        model, tokenizer = load_causal_lm(name, dtype=getattr(torch, dtype))
        max_doc = int(context.settings.get("max_doc_tokens", 128))
        context.config.update({"model": name, "dtype": dtype, "max_doc_tokens": max_doc})
        return YesNoLLMReranker(model, tokenizer, max_doc_tokens=max_doc), name
