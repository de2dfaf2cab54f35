"""``trec-dl``: TREC Deep Learning 2019/2020 passage reranking, nDCG@10 (Craswell et al.).

Real scale: ``msmarco-passage/trec-dl-2019/judged`` and ``.../trec-dl-2020/judged`` with
pyserini's ``msmarco-v1-passage`` prebuilt index (needs DISTILLBENCH_ONLINE=1). Offline, no
packaged data resembles MS MARCO's graded web-passage judgements closely; the default runs
the BoolQ passage stand-in (Wikipedia passages, binary labels) and every result says so.
"""

from __future__ import annotations

from bench.retrieval.pipeline import RetrievalSuite
from bench.suites.base import DatasetSpec

REGISTRY = [{
    "name": "trec-dl", "target": "TrecDLSuite",
    "summary": "TREC-DL 2019/2020 passage reranking of BM25 top-100; nDCG@10 "
               "(offline: BoolQ stand-in)",
    "citation": "Craswell et al. 2020, arXiv:2003.07820",
    "baseline": "bm25", "main_score": "ndcg@10",
    "methods": ["bm25", "minilm", "rerank-teacher", "llm-zeroshot"],
}]


class TrecDLSuite(RetrievalSuite):
    name = "trec-dl"
    version = "1"
    offline_datasets = ("offline/boolq",)
    real_datasets = ("msmarco-passage/trec-dl-2019/judged", "msmarco-passage/trec-dl-2020/judged")
    datasets = (
        DatasetSpec("offline/boolq", "BoolQ passage stand-in", stands_in_for="TREC-DL 2019/2020"),
        *(DatasetSpec(d, "real TREC-DL via ir-datasets") for d in real_datasets),
    )
    citation = "Craswell et al. 2020, arXiv:2003.07820"
