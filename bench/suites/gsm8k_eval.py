"""lm-eval side of the ``gsm8k`` suite: a timed HFLM and one evaluation call per dataset.

Exact match comes from lm-eval itself (Gao et al., lm-evaluation-harness): the model object
goes in as ``HFLM(pretrained=model, tokenizer=tok)``, the tasks through
``TaskManager(include_path=...)`` (our local tasks) or lm-eval's own ``gsm8k`` /
``gsm8k_cot``, and ``simple_evaluate(..., log_samples=True)`` returns per-document
``exact_match`` under both of the task's filters (``strict-match``: the number after
``#### ``; ``flexible-extract``: the last number).

lm-eval measures neither tokens nor time, so :class:`TimedHFLM` (decision) overrides
``generate_until`` to hand lm-eval's requests to the normal HFLM generation in chunks of
``batch_size`` and time each chunk with ``time.perf_counter``: with ``batch_size=1``
(default) the latency of an answer is the wall time of its own greedy generation (prompt
encoding, prefill, decoding, detokenization; same machine, same run, one answer at a time,
as the implicit-CoT papers time it), and its generated tokens are the tokens the model
produced (stop sequence and EOS included). With ``batch_size > 1`` both are per-chunk
means (tokens re-counted from the returned text): cheaper, but not per-answer figures;
the result records which. A recipe may instead supply ``answer_fn(context, max_new_tokens,
until) -> (text, n_tokens)`` (SemCoT: generator + teacher), timed the same way.
:func:`evaluate_model` wires a trained model (or pipeline) to the local or lm-eval task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lm_eval.models.huggingface import HFLM

AnswerFn = Callable[[str, int, list[str]], tuple[str, int]]


class TimedHFLM(HFLM):
    """HFLM that records ``{(task, doc_id): {"latency_s", "generated_tokens"}}``."""

    def __init__(self, *args: Any, answer_fn: AnswerFn | None = None,
                 progress_label: str = "generate", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer_fn = answer_fn
        self.progress_label = progress_label
        self.timings: dict[tuple[str, int], dict[str, float]] = {}
        self._new_tokens: list[int] = []

    def _model_generate(self, context: Any, max_length: int, stop: list[str],
                        **generation_kwargs: Any) -> Any:
        out = super()._model_generate(context, max_length, stop, **generation_kwargs)
        if context.shape[0] == 1:
            self._new_tokens.append(int(out.shape[1] - context.shape[1]))
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

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        from bench.progress import progress_bar

        bs = int(self.batch_size) if str(self.batch_size).isdigit() else 1
        if self.answer_fn is not None:
            bs = 1
        out: list[str] = []
        with progress_bar(len(requests), self.progress_label) as advance:
            for start in range(0, len(requests), bs):
                chunk = requests[start:start + bs]
                self._new_tokens = []
                t0 = time.perf_counter()
                if self.answer_fn is not None:
                    text, n = self._answer(chunk[0])
                    texts, counts = [text], [n]
                else:
                    texts = super().generate_until(chunk, disable_tqdm=True)
                    counts = (self._new_tokens if len(chunk) == 1 and self._new_tokens else
                              [len(self.tok_encode(t)) for t in texts])
                seconds = time.perf_counter() - t0
                for req, n in zip(chunk, counts, strict=True):
                    self.timings[(req.task_name, req.doc_id)] = {
                        "latency_s": seconds / len(chunk), "generated_tokens": float(n)}
                out += texts
                advance(len(chunk), tok=sum(counts))
        return out


def evaluate(lm: TimedHFLM, task: str, *, include_path: Path | None, limit: int | None,
             num_fewshot: int | None = None, apply_chat_template: bool = False,
             system_instruction: str | None = None) -> list[dict[str, Any]]:
    """Run lm-eval on one task; one row per document: id, question, output, the two exact
    matches, latency and generated tokens."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = (TaskManager(include_path=str(include_path), include_defaults=False)
               if include_path is not None else TaskManager())
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
            **lm.timings.get((task, doc_id), {"latency_s": float("nan"),
                                              "generated_tokens": float("nan")})})
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
                   longest: int, work_dir: Path, *, system_instruction: str | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Evaluate ``model`` (an HF model, or a pipeline with ``answer``) on dataset ``ds``
    (:class:`bench.suites.gsm8k.Dataset`); ``system_instruction`` switches on lm-eval's
    chat template. Returns (rows, the protocol to record)."""
    import copy

    import torch

    max_new = gen_tokens(ds, settings, longest)
    include = None
    if ds.offline:
        from bench.reasoning.lm_eval_tasks import write_lm_eval_tasks

        sizes = [ds.digits] if ds.digits else []
        include = write_lm_eval_tasks(work_dir / "lm_eval", arith_sizes=sizes,
                                      asdiv=ds.kind == "asdiv", max_gen_toks=max_new,
                                      arith_style=ds.style)
    chat = system_instruction is not None
    bs = int(settings["eval_batch_size"])
    if hasattr(model, "answer"):  # SemCoT: generator + frozen teacher
        lm = TimedHFLM(pretrained=model.teacher, tokenizer=tok, batch_size=1,
                       answer_fn=model.answer, progress_label=label)
    else:
        model = copy.deepcopy(model).float().eval()
        lm = TimedHFLM(pretrained=model, tokenizer=tok, batch_size=bs, progress_label=label)
    rows = evaluate(lm, ds.task, include_path=include, limit=settings["n_test"],
                    num_fewshot=settings["num_fewshot"], apply_chat_template=chat,
                    system_instruction=system_instruction)
    protocol = {"batch_size": 1 if hasattr(model, "answer") else bs,
                "latency": "per answer, one at a time" if bs == 1 or hasattr(model, "answer")
                else f"mean over batches of {bs}", "dtype": "float32", "decoding": "greedy",
                "max_gen_toks": max_new, "prompt": "chat + instruction" if chat else "plain",
                "torch_threads": torch.get_num_threads()}
    return rows, protocol
