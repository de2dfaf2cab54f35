"""BM25 first stage for the ``beir`` and ``trec-dl`` suites (pyserini / Anserini Lucene).

Decisions:

- Parameters follow the BEIR convention, ``k1=0.9, b=0.4``, with Anserini's default English
  analyzer (Porter stemming, Lucene stopwords), which is what pyserini's
  ``beir-v1.0.0-<name>.flat`` prebuilt indexes use. A document's text is ``title + " " +
  text``, as in the "flat" BEIR indexes.
- A local corpus (BEIR ``corpus.jsonl``) is indexed once and cached under
  ``<cache>/indexes/<sha256(corpus)[:16]>``: the key is the file's content, so a rebuilt
  but identical corpus reuses the index and a changed one never does. The index is built in
  a temporary sibling directory and renamed into place, so an interrupted build leaves no
  half index; two concurrent builders race harmlessly (the loser discards its copy). A
  ``.tmp-*`` directory left by a killed build (``kill -9`` skips the clean-up) is removed
  by the next :func:`build_index` once it is older than that process and no live builder
  holds the lock file inside it (see :func:`sweep_stale_builds`).
- The index stores the ``contents`` field only (no positions, no docvectors): BM25 needs
  none of them, and ``contents`` lets rerankers fetch passage text by docid.
- Indexing runs Anserini in a child JVM (see :mod:`bench.retrieval.java` for the Java 21
  fixes); searching uses ``io.anserini.search.SimpleSearcher`` through pyjnius, avoiding the
  ~10 s ``pyserini.search.lucene`` import. Only prebuilt indexes (online mode,
  ``DISTILLBENCH_ONLINE=1``) go through ``LuceneSearcher.from_prebuilt_index``, which
  downloads and validates them.
- Candidates are exchanged as TREC run files (``qid Q0 docid rank score tag``), top-100 by
  default. Ties are broken by docid inside Anserini, so runs are deterministic.

Nothing heavy is imported at module level: ``bench --help`` must stay fast.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from bench.core.assets.models import online_mode
from bench.core.assets.specs import cache_dir
from bench.core.progress import progress_bar
from bench.errors import UsageError
from bench.retrieval.trec import write_run

K1 = 0.9
B = 0.4
TOP_K = 100
INDEX_FORMAT = 1
META_FILE = "distillbench-index.json"
PREBUILT = {"trec-dl": "msmarco-v1-passage", "msmarco-passage": "msmarco-v1-passage"}
_INDEX_ARGS = ["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
               "-storeContents"]
_BATCH_CHUNK = 256
_TMP_PREFIX = ".tmp-"
_LOCK_FILE = ".lock"
_IMPORTED_AT = time.time()


def prebuilt_index_name(dataset: str) -> str:
    """pyserini's prebuilt BM25 index for a BEIR dataset name or ``trec-dl``."""
    return PREBUILT.get(dataset, f"beir-v1.0.0-{dataset}.flat")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _convert_corpus(corpus: Path, out_dir: Path, shards: int) -> int:
    """BEIR ``{_id, title, text}`` lines -> Anserini JsonCollection ``{id, contents}`` shards.

    One shard per indexing thread, because Anserini parallelizes over files.
    """
    out_dir.mkdir(parents=True)
    outs = [(out_dir / f"part{i:03d}.jsonl").open("w", encoding="utf-8") for i in range(shards)]
    n = 0
    try:
        with _open_text(corpus) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                    docid = str(doc["_id"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UsageError(f"{corpus}:{lineno}: not a BEIR corpus line "
                                     '(expected JSON with "_id", "title", "text")') from None
                contents = f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()
                outs[n % shards].write(json.dumps({"id": docid, "contents": contents},
                                                  ensure_ascii=False) + "\n")
                n += 1
    finally:
        for out in outs:
            out.close()
    if n == 0:
        raise UsageError(f"{corpus}: the corpus has no documents")
    return n


def _run_indexer(cmd: list[str], env: dict[str, str], total: int, progress: bool) -> str:
    """Run Anserini's IndexCollection, showing a spinner with its document counter on stderr.

    Returns the full log; raises ``RuntimeError`` with the log's tail on failure.
    """
    from bench.core.signals import deferred

    tail: deque[str] = deque(maxlen=30)
    log: list[str] = []
    counter = re.compile(r"([\d,]+) documents indexed")
    proc: subprocess.Popen[str] | None = None
    bar: Any = None
    try:
        with deferred():  # a SIGTERM during the start raises once ``proc`` is set
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        if progress:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                           TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            task = bar.add_task(f"BM25: indexing {total:,} documents with Anserini",
                                total=None)
            bar.start()
        for line in proc.stdout:
            log.append(line)
            tail.append(line.rstrip())
            match = counter.search(line)
            if bar is not None and match:
                bar.update(task, description=f"BM25: indexed {match.group(1)} / {total:,} "
                                             "documents")
        rc = proc.wait()
    finally:
        if bar is not None:
            bar.stop()
        if proc is not None and proc.poll() is None:  # interrupted: the child goes too
            proc.kill()
            proc.wait()
    if rc != 0:
        raise RuntimeError(f"Anserini indexing failed (exit {rc}):\n" + "\n".join(tail))
    return "".join(log)


def _process_start_time() -> float:
    """When this process started (Linux ``/proc``), else when this module was imported."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, "starttime", in clock ticks after boot
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return min(_IMPORTED_AT, boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


def _try_lock(handle: IO[bytes], *, block: bool) -> bool:
    """An exclusive ``flock`` on ``handle``; False if another open file holds it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): open files cannot be removed there anyway
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def sweep_stale_builds(folder: Path) -> list[Path]:
    """Remove the ``.tmp-*`` build directories in ``folder`` left by killed builds.

    A directory goes only if it was last modified before this process started (so it
    cannot be one this process is writing) and no live builder holds the ``flock`` on its
    lock file (a concurrent build that began earlier keeps its directory; the kernel drops
    a killed process's lock). Only direct children of ``folder`` named ``.tmp-*`` are
    considered, never symlinks. Returns what was removed; failures are ignored.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    started = _process_start_time()
    for entry in entries:
        try:
            if (not entry.name.startswith(_TMP_PREFIX)
                    or not entry.is_dir(follow_symlinks=False)
                    or entry.stat(follow_symlinks=False).st_mtime >= started):
                continue
        except OSError:
            continue
        path = Path(entry.path)
        try:
            handle = (path / _LOCK_FILE).open("rb")
        except FileNotFoundError:  # a build from before lock files, or one just starting
            handle = None
        except OSError:
            continue
        try:
            if handle is not None and not _try_lock(handle, block=False):
                continue  # a live builder
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
        finally:
            if handle is not None:
                handle.close()
    return removed


def build_index(corpus_jsonl: Path, *, cache_root: Path | None = None, threads: int = 2,
                progress: bool = True) -> Path:
    """Lucene index of a BEIR corpus, built once and cached by the corpus file's content.

    Returns ``<cache_root>/indexes/<sha256[:16]>``; an existing index is reused as is.
    """
    corpus = Path(corpus_jsonl)
    if not corpus.is_file():
        raise UsageError(f"{corpus}: corpus file not found (expected a BEIR corpus.jsonl)")
    sha = _sha256(corpus)
    root = Path(cache_root) if cache_root is not None else cache_dir()
    target = root / "indexes" / sha[:16]
    sweep_stale_builds(target.parent)
    if (target / META_FILE).is_file():
        return target
    from bench.core.signals import sigterm_raises
    from bench.retrieval import java

    threads = max(1, int(threads))
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{sha[:16]}-", dir=target.parent))
    # Held until the work directory is gone: tells sweep_stale_builds this build is alive.
    lock = (work / _LOCK_FILE).open("wb")
    try:
        _try_lock(lock, block=True)
    except OSError:  # a filesystem without flock: the start-time rule alone applies
        pass
    try:
        # A SIGTERM unwinds through the finally clauses: the child JVM is killed and the
        # work directory removed (exit 143 via the CLI).
        with sigterm_raises():
            started = time.perf_counter()
            num_docs = _convert_corpus(corpus, work / "collection", threads)
            index = work / "index"
            args = [*_INDEX_ARGS, "-threads", str(threads)]
            cmd = java.java_command("io.anserini.index.IndexCollection",
                                    [*args, "-input", str(work / "collection"),
                                     "-index", str(index)])
            log = _run_indexer(cmd, java.java_env(), num_docs, progress)
        indexed = re.search(r"indexed:\s+(\d+)", log)
        (index / "write.lock").unlink(missing_ok=True)
        meta = {"format": INDEX_FORMAT, "corpus": str(corpus.resolve()), "corpus_sha256": sha,
                "num_docs": num_docs, "indexed": int(indexed.group(1)) if indexed else None,
                "anserini": java.anserini_jar().name, "args": args,
                "build_seconds": round(time.perf_counter() - started, 2)}
        (index / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(index, target)
        except OSError:
            if not (target / META_FILE).is_file():  # not a concurrent builder's win: re-raise
                raise
        if progress:
            print(f"BM25: indexed {num_docs:,} documents in {meta['build_seconds']:.1f}s -> "
                  f"{target}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        lock.close()
    return target


def _looks_like_path(index: Path | str) -> bool:
    if isinstance(index, Path):
        return True
    return (os.sep in index or index.startswith((".", "~")) or Path(index).exists())


class BM25Retriever:
    """BM25 over a local Lucene index directory or (online) a pyserini prebuilt index name."""

    def __init__(self, index: Path | str, k1: float = K1, b: float = B) -> None:
        self.k1, self.b = float(k1), float(b)
        self._owner: Any = None  # keeps a pyserini LuceneSearcher alive for prebuilt indexes
        if _looks_like_path(index):
            path = Path(index).expanduser()
            if not path.is_dir():
                raise UsageError(f"{path}: no Lucene index directory there "
                                 "(build one with bench.retrieval.bm25.build_index)")
            from bench.retrieval import java

            self.index = str(path)
            self._searcher = java.autoclass("io.anserini.search.SimpleSearcher")(str(path))
        else:
            if not online_mode():
                raise UsageError(f"BM25 index {index!r} is a pyserini prebuilt index, which needs "
                                 "the network: set DISTILLBENCH_ONLINE=1 or give a local index "
                                 "directory")
            self.index = index
            self._searcher = self._prebuilt(index)
        self._searcher.set_bm25(self.k1, self.b)

    def _prebuilt(self, name: str) -> Any:
        from bench.retrieval import java

        # Before any pyserini import: even pyserini.prebuilt_index_info starts a JVM, which
        # must be Java 21 with the filtered options.
        java.ensure_pyserini_importable()
        from pyserini.prebuilt_index_info import TF_INDEX_INFO

        if name not in TF_INDEX_INFO:
            close = difflib.get_close_matches(name, list(TF_INDEX_INFO), n=3)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise UsageError(f"unknown pyserini prebuilt index {name!r}; {hint}(e.g. "
                             f"{prebuilt_index_name('scifact')!r} or 'msmarco-v1-passage')")
        from pyserini.search.lucene import LuceneSearcher  # ~10 s: torch, transformers

        searcher = LuceneSearcher.from_prebuilt_index(name, verbose=True)
        if searcher is None:  # pyserini printed why (usually the download) and returned None
            raise UsageError(f"could not download or open prebuilt index {name!r} (see above); "
                             "check the network or give a local index directory")
        self._owner = searcher
        return searcher.object

    @property
    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def search(self, query: str, k: int = TOP_K) -> list[tuple[str, float]]:
        """Top-``k`` ``(docid, score)`` pairs, best first."""
        return [(str(h.docid), float(h.score)) for h in self._searcher.search(query, int(k))]

    def batch_search(self, queries: Mapping[str, str], k: int = TOP_K, threads: int = 2,
                     progress: bool = True) -> dict[str, dict[str, float]]:
        """``{qid: {docid: score}}`` (docids in rank order) using Anserini's thread pool.

        Queries go to Java in chunks so that a progress bar can follow a long run; every
        qid is present in the result, with an empty dict when nothing matched.
        """
        from bench.retrieval import java

        JArrayList = java.autoclass("java.util.ArrayList")
        items = list(queries.items())
        run: dict[str, dict[str, float]] = {}
        show = progress and len(items) > _BATCH_CHUNK
        with progress_bar(len(items), "BM25: searching", enabled=show) as advance:
            for start in range(0, len(items), _BATCH_CHUNK):
                chunk = items[start:start + _BATCH_CHUNK]
                jq, jid = JArrayList(), JArrayList()
                for qid, text in chunk:
                    jid.add(str(qid))
                    jq.add(str(text))
                found = self._searcher.batch_search(jq, jid, int(k), max(1, int(threads)))
                hits = {str(e.getKey()): e.getValue() for e in found.entrySet().toArray()}
                for qid, _ in chunk:
                    run[str(qid)] = {str(h.docid): float(h.score)
                                     for h in hits.get(str(qid)) or []}
                advance(len(chunk))
        return run

    def doc_text(self, docid: str) -> str:
        """Stored text of a document (``contents``, or a prebuilt index's ``raw`` JSON)."""
        doc = self._searcher.doc(str(docid))
        if doc is None:
            raise KeyError(docid)
        contents = doc.get("contents")
        if contents is not None:
            return str(contents)
        raw = doc.get("raw")
        if raw is None:
            raise ValueError(f"index {self.index} stores no document text")
        try:
            fields = json.loads(str(raw))
        except json.JSONDecodeError:
            return str(raw)
        if "contents" in fields:
            return str(fields["contents"])
        return f"{fields.get('title') or ''} {fields.get('text') or ''}".strip()

    def write_run(self, queries: Mapping[str, str], path: Path, k: int = TOP_K,
                  threads: int = 2, tag: str = "bm25") -> dict[str, dict[str, float]]:
        """Retrieve the top-``k`` candidates and write them as a TREC run file."""
        run = self.batch_search(queries, k=k, threads=threads)
        write_run(run, path, tag=tag)
        return run

    def close(self) -> None:
        self._searcher.close()

    def __enter__(self) -> BM25Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BM25Retriever({self.index!r}, k1={self.k1}, b={self.b})"

