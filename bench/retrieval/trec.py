"""Reading and writing TREC-style relevance judgments (qrels) and runs.

Formats:

* **qrels, TREC**: ``qid iter docid rel`` (4 whitespace-separated columns; ``iter`` ignored).
* **qrels, BEIR TSV**: ``query-id corpus-id score`` (3 columns) after a header line. The format
  is detected from the first non-blank line: 4 columns -> TREC, 3 columns -> BEIR; the BEIR
  header is recognised by a non-integer third column (a headerless 3-column file is accepted
  too). A tab-separated BEIR file is split on tabs, so ids may contain spaces.
* **run**: ``qid Q0 docid rank score tag`` (6 columns). As in trec_eval, the rank column is
  not used: documents are ordered by score, descending, ties broken by docid descending
  (trec_eval's ``qsort`` comparator). :func:`ranked` is that order, and :func:`write_run`
  writes ranks consistent with it so every tool that trusts the rank column agrees.

All these files are UTF-8; a leading byte-order mark is dropped (:func:`text_lines`, which
the BEIR readers in :mod:`bench.retrieval.collections` share).

Relevance labels are integers (trec_eval reads them with ``atol``; a fractional label is
almost always a column mix-up, so it is rejected rather than truncated). Labels ``<= 0`` mean
non-relevant, as in trec_eval at its default relevance level 1.

Every problem in a file raises :class:`bench.errors.UsageError` with one line of the form
``FILE:LINE: problem; what to do``; the CLI turns it into exit status 2 without a traceback.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from bench.errors import UsageError

Qrels = dict[str, dict[str, int]]
RunDict = dict[str, dict[str, float]]

_TREC_QRELS = "qid iter docid rel"
_BEIR_QRELS = "query-id corpus-id score"
_RUN_COLUMNS = "qid Q0 docid rank score tag"
_BOM = "\ufeff"


def text_lines(path: str | os.PathLike[str], kind: str) -> Iterator[str]:
    """The lines of a UTF-8 text file, streamed: the one way bench opens qrels, runs and
    BEIR corpus/queries/qrels files.

    Lines are split at ``\\n`` only and keep their line ending (as when iterating a file). A
    leading byte-order mark is dropped (the first line is decoded as ``utf-8-sig``): editors
    on Windows write one, and left in place it would glue itself to the first query id. A
    byte-order mark at the start of a later line (files concatenated with ``cat``) would do
    the same to that line, so it is an error. A missing, unreadable or non-UTF-8 file is a
    :class:`UsageError` naming the file (and the line).
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such {kind} file; check the path")
    if p.is_dir():
        raise UsageError(f"{p}: is a directory, expected a {kind} file")
    try:
        with p.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise UsageError(f"{p}:{number}: not valid UTF-8; re-encode the {kind} "
                                     "file as UTF-8") from None
                if number > 1 and line.startswith(_BOM):
                    raise UsageError(f"{p}:{number}: byte-order mark (U+FEFF) at the start of "
                                     "the line, as when files are concatenated; remove it")
                yield line
    except OSError as exc:
        raise UsageError(f"{p}: cannot read {kind} file ({exc.strerror})") from None


def _lines(path: str | os.PathLike[str], kind: str) -> list[str]:
    """The file's lines as ``str.splitlines`` gives them, read by :func:`text_lines`."""
    return [part for line in text_lines(path, kind) for part in line.splitlines()]


def _nonblank(lines: list[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


def _parse_label(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{where}: relevance label {text!r} is not an integer; "
                         "labels are integers, <= 0 meaning non-relevant") from None


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read TREC or BEIR-TSV qrels into ``{qid: {docid: label}}``.

    Every judged document is kept, including labels ``<= 0``: a query whose judgments are all
    non-relevant is still a judged query (trec_eval ``-c`` counts it in the denominator and
    pytrec_eval scores it 0). A (query, doc) pair judged twice with the same label is
    harmless; with different labels the file is ambiguous and is rejected.
    """
    lines = _lines(path, "qrels")
    body = list(_nonblank(lines))
    if not body:
        raise UsageError(f"{path}: empty qrels file; expected lines '{_TREC_QRELS}' (TREC) "
                         f"or a header and lines '{_BEIR_QRELS}' (BEIR TSV)")
    first_no, first = body[0]
    n_first = len(first.split())
    if "\t" in first and len(first.split("\t")) == 3:
        n_first = 3
    if n_first == 4:
        fmt, expected, split = "TREC", _TREC_QRELS, str.split
    elif n_first == 3:
        fmt, expected = "BEIR", _BEIR_QRELS
        split = (lambda s: s.rstrip("\r\n").split("\t")) if "\t" in first else str.split
        try:
            int(split(first)[2])
        except ValueError:
            body = body[1:]  # the header line
            if not body:
                raise UsageError(f"{path}: BEIR qrels file has a header but no judgments; "
                                 f"add lines '{_BEIR_QRELS}'") from None
    else:
        raise UsageError(f"{path}:{first_no}: expected 4 columns '{_TREC_QRELS}' (TREC qrels) "
                         f"or 3 columns '{_BEIR_QRELS}' (BEIR TSV), found {n_first}; "
                         "check that this is a qrels file")
    qrels: Qrels = {}
    for number, line in body:
        where = f"{path}:{number}"
        cols = [c.strip() for c in split(line)]
        width = 4 if fmt == "TREC" else 3
        if len(cols) != width or not all(cols):
            raise UsageError(f"{where}: expected {width} columns '{expected}' ({fmt} qrels, "
                             f"detected from line {first_no}), found {len([c for c in cols if c])}; "
                             "fix or remove the line")
        qid, docid, raw = (cols[0], cols[2], cols[3]) if fmt == "TREC" else cols
        label = _parse_label(raw, where)
        docs = qrels.setdefault(qid, {})
        if docs.get(docid, label) != label:
            raise UsageError(f"{where}: query {qid!r} judges document {docid!r} twice with "
                             f"different labels ({docs[docid]} and {label}); keep one judgment")
        docs[docid] = label
    return qrels


def read_run(path: str | os.PathLike[str]) -> RunDict:
    """Read a TREC run into ``{qid: {docid: score}}`` (the rank and tag columns are checked,
    not kept: trec_eval orders by score, see :func:`ranked`).

    A document listed twice for a query is an error, as in trec_eval: its score would be
    ambiguous. Scores must be finite numbers (NaN has no place in an order).
    """
    lines = _lines(path, "run")
    run: RunDict = {}
    for number, line in _nonblank(lines):
        where = f"{path}:{number}"
        cols = line.split()
        if len(cols) != 6:
            raise UsageError(f"{where}: expected 6 columns '{_RUN_COLUMNS}' (TREC run), found "
                             f"{len(cols)}; fix or remove the line")
        qid, _, docid, rank, raw, _ = cols
        try:
            int(rank)
        except ValueError:
            raise UsageError(f"{where}: rank {rank!r} is not an integer; column 4 of "
                             f"'{_RUN_COLUMNS}' is the rank") from None
        try:
            score = float(raw)
        except ValueError:
            raise UsageError(f"{where}: score {raw!r} is not a number; column 5 of "
                             f"'{_RUN_COLUMNS}' is the score") from None
        if not math.isfinite(score):
            raise UsageError(f"{where}: score {raw!r} is not finite; write a finite number")
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise UsageError(f"{where}: document {docid!r} appears twice for query {qid!r}; "
                             "keep one line per (query, document)")
        docs[docid] = score
    if not run:
        raise UsageError(f"{path}: empty run file; expected lines '{_RUN_COLUMNS}'")
    return run


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(docid, score)`` in trec_eval's order: score descending, then docid descending.

    trec_eval sorts by score and breaks ties with ``strcmp`` on docids, descending; Python's
    ``str`` order is code-point order, which is UTF-8 byte order, so this is the same order.
    Ranking by this function makes every consumer (ranx, pytrec_eval, the rank column)
    agree on tied scores. A NaN or infinite score has no place in an order: UsageError.
    """
    items = [(str(d), float(s)) for d, s in docs.items()]
    for docid, score in items:
        if not math.isfinite(score):
            raise UsageError(f"score {score!r} of document {docid!r} is not finite; "
                             "rank with finite scores")
    return sorted(items, key=lambda x: (x[1], x[0]), reverse=True)


def format_run(run: Mapping[str, Mapping[str, float]], tag: str) -> str:
    """The TREC text of ``run``: queries in sorted order, ranks 1..n in :func:`ranked` order,
    scores written with ``repr`` so reading the file back gives the same floats."""
    if not tag or any(c.isspace() for c in tag):
        raise UsageError(f"run tag {tag!r} must be one non-empty token without whitespace")
    out: list[str] = []
    for qid in sorted(run):
        for rank, (docid, score) in enumerate(ranked(run[qid]), start=1):
            for name, value in (("query id", qid), ("document id", docid)):
                if not value or any(c.isspace() for c in value):
                    raise UsageError(f"{name} {value!r} is empty or contains whitespace; "
                                     "TREC files are whitespace-separated")
            out.append(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")
    return "".join(out)


def write_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike[str],
              tag: str) -> Path:
    """Write ``run`` in TREC format, atomically (readers never see half a file).

    Ranks follow :func:`ranked` (score descending, ties by docid descending), the order
    trec_eval would use anyway. An empty run is refused: reading it back would fail.
    """
    from bench.core.io import atomic_write_text

    if not any(run.values()):
        raise UsageError(f"{path}: refusing to write an empty run (no query has documents)")
    atomic_write_text(path, format_run(run, tag))
    return Path(path)
