"""lm-eval side of the ``gsm8k`` suite: a timed HFLM and one evaluation call per dataset.

Exact match comes from lm-eval itself (Gao et al., lm-evaluation-harness): the model object
goes in as ``HFLM(pretrained=model, tokenizer=tok)``, the tasks through
``TaskManager(include_path=...)`` (our local tasks) or lm-eval's own ``gsm8k`` /
``gsm8k_cot``, and ``simple_evaluate(..., log_samples=True)`` returns per-document
``exact_match`` under both of the task's filters (``strict-match``: the number after
``#### ``; ``flexible-extract``: the last number).

lm-eval measures neither tokens nor time, so :class:`TimedHFLM` overrides
``generate_until`` to hand lm-eval's requests to the normal HFLM generation itself:

- **latency**: the first ``latency_items`` test items (by document id; default 20) are
  answered one at a time and each is timed with ``time.perf_counter`` (prompt encoding,
  prefill, greedy decoding, detokenization; same machine, same run, batch 1, as the
  implicit-CoT papers time it). ``latency_s`` is their mean; paired latency tests use them.
- **accuracy and tokens**: every other item is answered in batches of ``batch_size``
  (left-padded greedy decoding, lm-eval's own batching), which on this CPU is several
  times cheaper than batch 1 and frees the budget for training (measured in
  ``benchmarks/gsm8k_eval_batching.py``). Generated tokens are counted per answer from the
  generated ids in both modes: the new tokens up to and including the first EOS (= pad for
  SmolLM2), i.e. exactly what batch 1 generates when the answer ends with EOS; an answer
  cut by a stop string inside a batch counts one pad token more.
  ``latency_items=0`` with ``batch_size=1`` times every answer at batch 1;
  the result records which.

A recipe may instead supply ``answer_fn(context, max_new_tokens, until) -> (text,
n_tokens)`` (SemCoT: generator + teacher), answered and timed one at a time.
:func:`evaluate_model` wires a trained model (or pipeline) to the local or lm-eval task.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from lm_eval.models.huggingface import HFLM

from bench.reasoning.lm_eval_tasks import quiet_datasets
from bench.reasoning.problem import Problem

AnswerFn = Callable[[str, int, list[str]], tuple[str, int]]


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """lm-eval's warnings off while a model object goes in as ``pretrained``: it warns on
    every run that such a model skips its loading arguments and accelerate launch, which
    is how this suite uses it on purpose (``simple_evaluate`` itself runs at ERROR)."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _quiet_git_hash() -> str | None:
    """lm-eval's ``get_git_commit_hash`` without its stray "fatal: not a git repository"
    on stderr outside a checkout (lm-eval lets git's error through; our records carry
    their own provenance)."""
    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True,
                             text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


@contextlib.contextmanager
def quiet_git_hash() -> Iterator[None]:
    """lm-eval's evaluator asks git for a commit hash quietly while this is active."""
    import lm_eval.evaluator

    with mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", _quiet_git_hash):
        yield


@contextlib.contextmanager
def quiet_request_building() -> Iterator[None]:
    """lm-eval's tqdm bar over the documents while it builds a task's requests off (it
    draws one per evaluation, with no setting to turn it off; the generation that follows
    has this suite's own bar, ``progress_label``)."""
    import functools

    import lm_eval.api.task
    from tqdm import tqdm

    with mock.patch.object(lm_eval.api.task, "tqdm", functools.partial(tqdm, disable=True)):
        yield


class TimedHFLM(HFLM):
    """HFLM that records ``{(task, doc_id): {"latency_s"?, "generated_tokens"}}``; items
    with ``doc_id < latency_items`` (all items for an ``answer_fn``) run one at a time and
    get a latency, the rest run in batches of ``batch_size``."""

    def __init__(self, *args: Any, answer_fn: AnswerFn | None = None,
                 progress_label: str = "generate", latency_items: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer_fn = answer_fn
        self.progress_label = progress_label
        self.latency_items = latency_items
        self.timings: dict[tuple[str, int], dict[str, float]] = {}
        self._counts: dict[tuple[int, ...], int] = {}

    def _model_generate(self, context: Any, max_length: int, stop: list[str],
                        **generation_kwargs: Any) -> Any:
        out = super()._model_generate(context, max_length, stop, **generation_kwargs)
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        width = context.shape[1]
        for prompt, row in zip(context.tolist(), out[:, width:].tolist(), strict=True):
            while prompt and prompt[0] == self.tokenizer.pad_token_id:  # left padding
                prompt = prompt[1:]
            n = next((i + 1 for i, t in enumerate(row) if t in ends), len(row))
            self._counts[tuple(prompt)] = n
        return out

    def _answer(self, request: Any) -> tuple[str, int]:
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

        assert self.answer_fn is not None
        context, gen_kwargs = request.args
        kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        text, n = self.answer_fn(context, int(kwargs.pop("max_gen_toks")), until)
        for stop in until:
            if stop:
                text = text.split(stop)[0]
        return text, n

    def _chunks(self, requests: list[Any]) -> tuple[list[list[Any]], set[int]]:
        """(chunks, ids of the timed requests): timed items alone (batch 1), then the
        others in batches of ``batch_size``; with batch 1 or an ``answer_fn`` every item
        is timed."""
        bs = int(self.batch_size) if str(self.batch_size).isdigit() else 1
        if self.answer_fn is not None or bs == 1:
            return [[r] for r in requests], {id(r) for r in requests}
        timed = [r for r in requests if r.doc_id < (self.latency_items or 0)]
        rest = [r for r in requests if r.doc_id >= (self.latency_items or 0)]
        return [[r] for r in timed] + [rest[i:i + bs] for i in range(0, len(rest), bs)], \
            {id(r) for r in timed}

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        from bench.core.progress import progress_bar

        texts_by_request: dict[int, str] = {}
        with progress_bar(len(requests), self.progress_label) as advance:
            chunks, timed = self._chunks(requests)
            for chunk in chunks:
                self._counts = {}
                t0 = time.perf_counter()
                if self.answer_fn is not None:
                    text, n = self._answer(chunk[0])
                    texts, counts = [text], [n]
                else:
                    texts = super().generate_until(chunk, disable_tqdm=True)
                    counts = [self._request_count(r) for r in chunk]
                seconds = time.perf_counter() - t0
                for req, text, n in zip(chunk, texts, counts, strict=True):
                    timing = {"generated_tokens": float(n)}
                    if id(req) in timed:
                        timing["latency_s"] = seconds
                    self.timings[(req.task_name, req.doc_id)] = timing
                    texts_by_request[id(req)] = text
                advance(len(chunk), tok=sum(counts))
        return [texts_by_request[id(r)] for r in requests]

    def _request_count(self, request: Any) -> int:
        """Generated tokens of one request of the last batch (its prompt ids as HFLM
        encoded them, truncated from the left like HFLM does)."""
        ids = tuple(self.tok_encode(request.args[0]))
        if ids in self._counts:
            return self._counts[ids]
        for key in sorted(self._counts, key=len, reverse=True):  # a BOS on one side only
            short, full = sorted((key, ids), key=len)
            if full[len(full) - len(short):] == short:
                return self._counts[key]
        raise RuntimeError(f"no generation recorded for doc {request.doc_id}")


def evaluate(lm: TimedHFLM, task: str, *, include_path: Path | None, limit: int | None,
             num_fewshot: int | None = None, apply_chat_template: bool = False,
             system_instruction: str | None = None) -> list[dict[str, Any]]:
    """Run lm-eval on one task; one row per document: id, question, output, the two exact
    matches, latency and generated tokens."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = (TaskManager(include_path=str(include_path), include_defaults=False)
               if include_path is not None else TaskManager())
    with quiet_git_hash(), quiet_datasets(), quiet_request_building():
        results = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit,
                                  num_fewshot=num_fewshot, log_samples=True,
                                  apply_chat_template=apply_chat_template,
                                  system_instruction=system_instruction, bootstrap_iters=0,
                                  verbosity="ERROR")
    if results is None:
        raise RuntimeError(f"lm-eval returned no results for {task}")
    rows: dict[int, dict[str, Any]] = {}
    for sample in results["samples"][task]:
        doc_id = int(sample["doc_id"])
        doc = sample["doc"]
        row = rows.setdefault(doc_id, {
            "doc_id": doc_id, "id": str(doc.get("id", f"{task}-{doc_id}")),
            "question": doc.get("question", ""), "target": str(sample["target"]),
            "output": sample["resps"][0][0] if sample["resps"] else "",
            **lm.timings.get((task, doc_id), {"generated_tokens": float("nan")})})
        key = "exact_match" if sample["filter"] == "strict-match" else \
            f"exact_match_{sample['filter'].split('-')[0]}"
        row[key] = float(sample["exact_match"])
        row[f"extracted_{sample['filter']}"] = sample["filtered_resps"][0]
    return [rows[k] for k in sorted(rows)]


def gen_tokens(ds: Any, settings: dict[str, Any], longest: int) -> int:
    """Generation budget: ``max_gen_toks`` or, for arith, the longest gold test target + 32."""
    if settings["max_gen_toks"]:
        return int(settings["max_gen_toks"])
    if ds.kind == "arith" and longest:
        return longest + 32
    return 256 if ds.kind == "lm-eval" else 128


def evaluate_model(ds: Any, settings: dict[str, Any], model: Any, tok: Any, label: str,
                   longest: int, work_dir: Path, *, system_instruction: str | None = None,
                   validation: Sequence[Problem] | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Evaluate ``model`` (an HF model, or a pipeline with ``answer``) on dataset ``ds``
    (:class:`bench.reasoning.splits.Dataset`); ``system_instruction`` switches on lm-eval's
    chat template; ``validation`` (offline datasets) scores those items instead of the test
    split, through the same lm-eval filters and metric. Returns (rows, the protocol to
    record)."""
    import copy

    import torch

    max_new = gen_tokens(ds, settings, longest)
    include, task, split = None, ds.task, "test"
    if validation is not None:
        from bench.reasoning.lm_eval_tasks import (
            task_splits,
            validation_task_name,
            write_validation_task,
        )

        fewshot = task_splits([ds.digits] if ds.digits else [], ds.kind == "asdiv",
                              ds.style)[ds.task][0]
        include = write_validation_task(work_dir / "lm_eval", ds.task, fewshot, validation,
                                        max_gen_toks=max_new)
        task, split = validation_task_name(ds.task), "validation"
    elif ds.offline:
        from bench.reasoning.lm_eval_tasks import write_lm_eval_tasks

        sizes = [ds.digits] if ds.digits else []
        include = write_lm_eval_tasks(work_dir / "lm_eval", arith_sizes=sizes,
                                      asdiv=ds.kind == "asdiv", max_gen_toks=max_new,
                                      arith_style=ds.style)
    chat = system_instruction is not None
    bs = int(settings["eval_batch_size"])
    timed_items = int(settings["latency_items"] or 0)
    pipeline = hasattr(model, "answer")  # SemCoT / direct answers: one at a time
    with quiet_lm_eval():
        if pipeline:
            lm = TimedHFLM(pretrained=model.teacher, tokenizer=tok, batch_size=1,
                           answer_fn=model.answer, progress_label=label)
        else:
            model = copy.deepcopy(model).float().eval()
            lm = TimedHFLM(pretrained=model, tokenizer=tok, batch_size=bs,
                           progress_label=label, latency_items=timed_items)
    rows = evaluate(lm, task, include_path=include, limit=settings["n_test"],
                    num_fewshot=settings["num_fewshot"], apply_chat_template=chat,
                    system_instruction=system_instruction)
    every = pipeline or bs == 1
    timed = sum("latency_s" in r for r in rows)
    protocol = {"batch_size": 1 if pipeline else bs,
                "latency": "per answer, one at a time, every item" if every else
                f"per answer, one at a time, the first {timed} {split} items; the other "
                f"items answered in batches of {bs} (accuracy and tokens only)",
                "latency_items": timed, "dtype": "float32", "decoding": "greedy",
                "max_gen_toks": max_new, "prompt": "chat + instruction" if chat else "plain",
                "torch_threads": torch.get_num_threads()}
    return rows, protocol
