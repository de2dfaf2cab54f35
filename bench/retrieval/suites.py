"""The two reranking suites, ``beir`` and ``trec-dl``; the protocol they share is
:mod:`bench.retrieval.pipeline`.

``beir``: zero-shot reranking of BM25 top-100, nDCG@10 (Thakur et al., NeurIPS 2021).
Offline default: BEIR-format stand-ins built from packaged data (BoolQ, NarrativeQA, FiQA;
see :mod:`bench.retrieval.collections`), labelled as stand-ins in every result. Real scale
(``--preset full`` or ``--dataset <ir-datasets id>``): the public BEIR sets of the
DeAR/RankGPT tables that ir-datasets serves; TREC-NEWS, Robust04 and Signal-1M need
licensed data and are left out.

``trec-dl``: TREC Deep Learning 2019/2020 passage reranking, nDCG@10 (Craswell et al.).
Real scale: ``msmarco-passage/trec-dl-2019/judged`` and ``.../trec-dl-2020/judged`` with
pyserini's ``msmarco-v1-passage`` prebuilt index (needs DISTILLBENCH_ONLINE=1). Offline, no
packaged data resembles MS MARCO's graded web-passage judgements closely; the default runs
the BoolQ passage stand-in (Wikipedia passages, binary labels) and every result says so.
"""

from __future__ import annotations

from bench.retrieval.pipeline import RetrievalSuite
from bench.suite import DatasetSpec, Setting, SuiteMetadata

# The real BEIR sets keep each source corpus's own terms.
BEIR_LICENCE = "see upstream: https://github.com/beir-cellar/beir (per BEIR set)"

# The protocol settings both suites share (presets in the table of bench.retrieval.pipeline).
RETRIEVAL_SETTINGS = (
    Setting("n_queries", "int", 200, "test queries (the first N ids in sorted order; null: all)",
            min=1, nullable=True),
    Setting("depth", "int", 20, "rerank the top N of the 100 BM25 candidates", min=1, max=100),
    Setting("eval_split", "str", "test", "queries scored: test, or validation (the "
            "collection's dev split, for choosing a recipe; never trained on)",
            choices=("test", "validation")),
)
RETRIEVAL_PRESETS = {
    "smoke": {"n_queries": 25, "depth": 10},
    "default": {},
    "full": {"n_queries": None, "depth": 100},
    "cpu-long": {},  # the default protocol; the method's own longer CPU recipe
}

BEIR = SuiteMetadata(
    name="beir", version="1", family="retrieval",
    summary="BEIR-style reranking of BM25 top-100; nDCG@10 (offline: BoolQ, NarrativeQA, FiQA)",
    citation="Thakur et al. 2021, arXiv:2104.08663",
    main_score="ndcg@10", baseline="bm25",
    datasets=(
        DatasetSpec("offline/boolq", "BoolQ questions over 2,938 Wikipedia passages",
                    stands_in_for="BEIR", licence="CC-BY-SA-3.0 (BoolQ)"),
        DatasetSpec("offline/narrativeqa", "NarrativeQA questions over 101 story summaries",
                    stands_in_for="BEIR", licence="Apache-2.0 (NarrativeQA)"),
        DatasetSpec("offline/fiqa", "648 FiQA questions over their answers (zero-shot)",
                    stands_in_for="BEIR FiQA-2018",
                    licence="see upstream: https://sites.google.com/view/fiqa/ (FiQA-2018)"),
        DatasetSpec("beir/trec-covid", "real BEIR set via ir-datasets",
                    licence=BEIR_LICENCE),
        DatasetSpec("beir/nfcorpus/test", "real BEIR set via ir-datasets",
                    licence=BEIR_LICENCE),
        DatasetSpec("beir/webis-touche2020/v2", "real BEIR set via ir-datasets",
                    licence=BEIR_LICENCE),
        DatasetSpec("beir/dbpedia-entity/test", "real BEIR set via ir-datasets",
                    licence=BEIR_LICENCE),
        DatasetSpec("beir/scifact/test", "real BEIR set via ir-datasets",
                    licence=BEIR_LICENCE),
        DatasetSpec("beir/fiqa/test", "real BEIR set via ir-datasets",
                    licence=BEIR_LICENCE),
    ),
    settings=RETRIEVAL_SETTINGS, presets=RETRIEVAL_PRESETS, recipe_presets=("cpu-long",),
    plot="bench.core.plots:main_score_bars", sections="bench.retrieval.report:undistilled_tables",
    description=(
        "Offline default (CPU budget): 200 test queries per collection, BM25 (Anserini, "
        "k1 0.9, b 0.4) retrieves 100 candidates and a reranker rescores the top 20; "
        "nDCG@10 (ranx, with trec_eval -c semantics), each row tested against BM25 on the "
        "same queries. How to read "
        "DeAR's rows here: the default teacher is all-MiniLM-L6-v2, a 22M-parameter "
        "bi-encoder, distilled into a larger decoder (SmolLM2-135M's first 4 layers, "
        "42.5M parameters), the reverse of the paper's 13B-to-3B direction; "
        "`dear-student-init` is that student before training (a random score head), "
        "`dear-p` the pointwise student after stage 1, `dear-l` its listwise stage 2. On "
        "the offline collections BM25 is strong: on NarrativeQA it scores above the "
        "teacher itself, so a student of that teacher cannot be expected to beat it "
        "there; FiQA is where the teacher has headroom over BM25. The 4-layer student is "
        "the deepest that fits `make run`'s budget on a 2-core CPU; deeper students "
        "(`--preset cpu-long`: 16 layers; `--set student_layers=12 --set "
        "frozen_layers=8`) rank better and take longer. Measurement logs: "
        "docs/measurements/beir.md."),
)


TREC_DL = SuiteMetadata(
    name="trec-dl", version="1", family="retrieval",
    summary="TREC-DL 2019/2020 passage reranking of BM25 top-100; nDCG@10 "
            "(offline: BoolQ stand-in)",
    citation="Craswell et al. 2020, arXiv:2003.07820",
    main_score="ndcg@10", baseline="bm25",
    datasets=(
        DatasetSpec("offline/boolq", "BoolQ passage stand-in", stands_in_for="TREC-DL 2019/2020",
                    licence="CC-BY-SA-3.0 (BoolQ)"),
        DatasetSpec("msmarco-passage/trec-dl-2019/judged", "real TREC-DL via ir-datasets",
                    licence="see upstream: https://microsoft.github.io/msmarco/ (MS MARCO)"),
        DatasetSpec("msmarco-passage/trec-dl-2020/judged", "real TREC-DL via ir-datasets",
                    licence="see upstream: https://microsoft.github.io/msmarco/ (MS MARCO)"),
    ),
    settings=RETRIEVAL_SETTINGS, presets=RETRIEVAL_PRESETS, recipe_presets=("cpu-long",),
)


class BeirSuite(RetrievalSuite):
    metadata = BEIR


class TrecDLSuite(RetrievalSuite):
    metadata = TREC_DL
