"""``beir``: zero-shot reranking of BM25 top-100, nDCG@10 (Thakur et al., NeurIPS 2021).

Offline default: BEIR-format stand-ins built from packaged data (BoolQ, NarrativeQA,
FiQA; see :mod:`bench.retrieval.collections`), labelled as stand-ins in every result.
Real scale (``--preset full`` or ``--dataset <ir-datasets id>``): the public BEIR sets of
the DeAR/RankGPT tables that ir-datasets serves; TREC-NEWS, Robust04 and Signal-1M need
licensed data and are left out. Protocol and presets: :mod:`bench.retrieval.pipeline`.
"""

from __future__ import annotations

from bench.retrieval.pipeline import RetrievalSuite
from bench.suites.base import DatasetSpec

REGISTRY = [{
    "name": "beir", "target": "BeirSuite",
    "summary": "BEIR-style reranking of BM25 top-100; nDCG@10 (offline: BoolQ, NarrativeQA, FiQA)",
    "citation": "Thakur et al. 2021, arXiv:2104.08663",
    "baseline": "bm25", "main_score": "ndcg@10",
    "methods": ["bm25", "minilm", "rerank-teacher", "llm-zeroshot", "dear"],
    "plot": "bench.plots:main_score_bars",
    "sections": "bench.retrieval.report:undistilled_tables",
}]


class BeirSuite(RetrievalSuite):
    name = "beir"
    version = "1"
    offline_datasets = ("offline/boolq", "offline/narrativeqa", "offline/fiqa")
    real_datasets = ("beir/trec-covid", "beir/nfcorpus/test", "beir/webis-touche2020/v2",
                     "beir/dbpedia-entity/test", "beir/scifact/test", "beir/fiqa/test")
    datasets = (
        DatasetSpec("offline/boolq", "BoolQ questions over 2,938 Wikipedia passages",
                    stands_in_for="BEIR"),
        DatasetSpec("offline/narrativeqa", "NarrativeQA questions over 101 story summaries",
                    stands_in_for="BEIR"),
        DatasetSpec("offline/fiqa", "648 FiQA questions over their answers (zero-shot)",
                    stands_in_for="BEIR FiQA-2018"),
        *(DatasetSpec(d, "real BEIR set via ir-datasets") for d in real_datasets),
    )
    citation = "Thakur et al. 2021, arXiv:2104.08663"
