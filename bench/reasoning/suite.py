"""``gsm8k``: math reasoning judged by lm-eval exact match, with tokens and latency per answer.

Protocol: GSM8K (Cobbe et al. 2021, arXiv:2110.14168) as lm-eval scores it: greedy answers
to ``"Question: {q}\\nAnswer:"``, exact match of the number after ``#### `` (``strict-match``,
our main score ``exact_match``; ``exact_match_flexible`` is lm-eval's last-number filter),
through ``HFLM(pretrained=model, tokenizer=tok)`` (:mod:`bench.reasoning.evaluation`). lm-eval
times nothing, so the first ``latency_items`` (20) test answers are also timed one at a
time (batch 1, float32, greedy: the fastest batch-1 setting on CPU):
``latency_s`` per answer, same machine, same run; the other answers are generated in
batches of ``eval_batch_size`` (16) for accuracy, which costs a fraction of batch 1
(``--set eval_batch_size=1`` times every answer). ``generated_tokens`` is counted per
answer from the generated ids in both modes. Each result also records a paired bootstrap
of ``exact_match`` against ``cot-sft``.

Cost (every record's ``cost``, :mod:`bench.core.cost`): the parameters of what answers
(the student; the teacher for ``teacher``; for ``semcot`` its generator plus the frozen
teacher, and for ``teacher-direct`` the teacher, since those run for every answer) and its
milliseconds per answer: the mean ``latency_s`` above, measured directly (lm-eval caches
nothing), batch 1, on the first ``latency_items`` test answers (every answer for the
one-at-a-time pipelines); ``null`` when no answer was timed.

Datasets (each method trains and is judged per dataset; one record per dataset):

- ``offline/arith-2x2-digits`` (default), ``offline/arith-3x3``, ``offline/arith-4x4``,
  any ``offline/arith-AxB[-digits]``: multiplication with worked long-multiplication
  rationales (:mod:`bench.reasoning.arith`, fixed splits). ``-digits`` writes every
  partial product as one-digit times-table facts summed pairwise (``72 * 8 = 560 + 16 =
  576``); without it a partial product is one step (``72 * 8 = 576``). ``--set
  arith=3x3,4x4`` picks the sizes a default run covers. The packaged SmolLM2-135M-Instruct scores ~0 here, so the teacher is
  SmolLM2-135M-Instruct **fine-tuned on the gold rationales** of ``teacher_train`` training
  problems (all layers but the tied embeddings, 1 epoch, lr 2e-4), trained once and cached
  by a key of everything that shapes it (``<work_dir>/gsm8k/teacher/<key>/model``); the
  result records the key and recipe.
- ``offline/asdiv`` (default): ASDiv in GSM8K form (:mod:`bench.reasoning.asdiv`). No
  rationales exist, so the teacher is the packaged model prompted with its chat template
  and a step-by-step instruction; it is weak at word problems (a few % right), so
  rationale methods get only its few correct rationales and ``answer-only`` the gold
  answers. Reported for completeness; compare methods on ``arith``.
- ``gsm8k``, ``gsm8k_cot``: lm-eval's own tasks (and GSM8K's train split with its gold
  rationales via ``datasets``); need ``DISTILLBENCH_ONLINE=1``. SVAMP / MultiArith are
  not wired up (lm-eval ships no such task; a local GSM8K-format JSONL would be the route).

Methods: ``teacher`` (the teacher itself; dispatched here, the registered ``teacher`` is
the instruct suite's), ``teacher-direct`` (the arith teacher under its direct-answer prompt,
no rationale: the reference for ``semcot``, whose implicit state goes in front of that
prompt; the teacher is fine-tuned on both prompts, ``--set teacher_direct=false`` for
rationales only), ``answer-only``, ``cot-sft`` (baseline), ``skip-thinking`` and its
first stage alone ``skip-thinking-cwt`` (an ablation; :mod:`methods.reasoning.skip_thinking`),
``semcot`` (:mod:`methods.reasoning.semcot`). Students are the
teacher's first 8 layers (``--set student_layers``) trained on the teacher's greedy
rationales for the first ``n_train`` training questions (generated once, cached), kept
where the teacher's answer is right (``--set rationales=gold``: the verified gold
rationales instead, where the dataset has them; an ablation, recorded).

Presets (recorded in every result):

========  ==============================================================================
smoke     24 training / 12 test questions, a teacher fine-tuned on 48 rationales: minutes
default   300 training / 100 test questions per dataset, teacher fine-tuned on 1,200 gold
          rationales and the same 1,200 questions answered directly (300 steps), students
          2 epochs (``skip-thinking``: 1 CWT + 1 STT epoch), SemCoT 3 + 2 generator
          epochs; datasets ``offline/arith-2x2-digits`` and ``offline/asdiv``
cpu-long  arith only, students of 16 layers trained on the teacher's correct rationales for
          1,200 training questions, 4 epochs (``skip-thinking``: 2 CWT + 2 STT epochs;
          SemCoT's generator 16 layers): past the 30-minute budget (each command resumes
          from its checkpoints), where the students learn some of the arithmetic
full      paper scale on GPUs: lm-eval ``gsm8k``, all 7,473 training questions, teacher
          ``meta-llama/Llama-2-7b-chat-hf`` (SemCoT's "small" configuration), bf16,
          the official SemCoT GSM8K hyperparameters (7 + 2 generator epochs)
========  ==============================================================================

How the defaults were sized and every measurement behind them (teacher fine-tunes, wall
times, accuracy per method, the probes for cpu-long): ``docs/measurements/gsm8k.md``.

Real scale (GPU, online; Llama-2 is gated: log in to the hub first)::

    export DISTILLBENCH_ONLINE=1
    bench run --method teacher --suite gsm8k --preset full
    bench run --method cot-sft --suite gsm8k --preset full --student princeton-nlp/Sheared-LLaMA-1.3B
    bench run --method semcot --suite gsm8k --preset full \
        --student princeton-nlp/Sheared-LLaMA-1.3B --set n_train=800 --set n_test=200

(SemCoT's own protocol: 800 training and 200 test GSM8K items; this recipe has not been
run here: no network or GPU.)
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.contracts import recipe_option, resolve_recipe
from bench.errors import UsageError
from bench.suite import (
    DatasetSpec,
    RunOptions,
    Setting,
    Suite,
    SuiteMetadata,
    attach_baseline_bootstrap,
)

# The arithmetic sets are generated by this project's code (bench/reasoning/arith.py).
ARITH_LICENCE = "Apache-2.0 (generated by distillbench)"

METADATA = SuiteMetadata(
    name="gsm8k", version="1", family="reasoning",
    summary="math reasoning: lm-eval exact match, generated tokens and latency per answer "
            "(offline: arith multiplication with rationales, ASDiv); GSM8K at real scale",
    citation="Cobbe et al. 2021 (GSM8K), arXiv:2110.14168",
    main_score="exact_match", baseline="cot-sft",
    plot="bench.core.plots:accuracy_vs_latency",
    description="Offline default (CPU budget): exact match by lm-eval (strict `#### N` "
                "filter), generated tokens per answer, and wall latency per answer timed "
                "one at a time on the first 20 test items (batch 1, fp32, same machine and "
                "run; the other answers are generated in batches for accuracy). On "
                "`offline/arith-2x2-digits` (2-digit x 2-digit multiplication, every "
                "partial product written as one-digit times-table steps) the teacher is "
                "SmolLM2-135M-Instruct fine-tuned once on 1,200 gold long-multiplication "
                "rationales and on the same questions answered directly under "
                "\"Answer directly:\" (`teacher-direct` is that prompt: SemCoT's implicit "
                "state goes in front of it). Default students are its first 8 of 30 layers "
                "trained on its correct rationales for 300 training problems and tested on "
                "100; `[cpu-long]` rows: 16 layers, 1,200 problems, 4 epochs, arith only. "
                "On `offline/asdiv` the teacher is the packaged 135M model prompted "
                "step by step with its chat template, and students learn only its correct "
                "rationales; arith is the dataset to compare methods on. "
                "`[cpu-long]` rows are tested against `cot-sft [cpu-long]`, the others "
                "against `cot-sft`. Skip-Thinking's paper body "
                "was not readable offline (our documented interpretations, "
                "methods/reasoning/skip_thinking_chunks.py); SemCoT follows its official code with a "
                "deterministic condensed reasoning instead of GPT-4o-mini's. "
                "Measurement logs: docs/measurements/gsm8k.md.",
    datasets=(
        DatasetSpec("offline/arith-2x2-digits", "2-digit x 2-digit multiplication, worked "
                    "rationales in one-digit steps, fixed splits", stands_in_for="GSM8K",
                    licence=ARITH_LICENCE),
        DatasetSpec("offline/arith-3x3", "3-digit x 3-digit multiplication, one step per "
                    "partial product (--set arith=3x3)", stands_in_for="GSM8K",
                    licence=ARITH_LICENCE),
        DatasetSpec("offline/arith-4x4", "4-digit x 4-digit multiplication (--dataset or "
                    "--set arith=3x3,4x4)", stands_in_for="GSM8K",
                    licence=ARITH_LICENCE),
        DatasetSpec("offline/arith-3x3-digits", "3x3 multiplication, every partial product "
                    "broken into one-digit steps (--set arith=3x3-digits)",
                    stands_in_for="GSM8K", licence=ARITH_LICENCE),
        DatasetSpec("offline/asdiv", "ASDiv word problems in GSM8K format",
                    stands_in_for="GSM8K", licence="see upstream: https://github.com/chaochun/nlu-asdiv-dataset (ASDiv)"),
        DatasetSpec("gsm8k", "GSM8K test (lm-eval gsm8k task; online)", licence="MIT (GSM8K)"),
        DatasetSpec("gsm8k_cot", "GSM8K test (lm-eval gsm8k_cot task; online)",
                    licence="MIT (GSM8K)"),
    ),
    settings=(
        Setting("n_train", "int", 300, "training problems (null: all)", min=1, nullable=True),
        Setting("n_test", "int", 100, "test problems (null: all)", min=1, nullable=True),
        Setting("teacher_train", "int", 1200, "problems the arith teacher is fine-tuned on",
                min=1),
        Setting("teacher_epochs", "int", 1, "the teacher's fine-tuning epochs", min=1),
        Setting("teacher_lr", "float", 2e-4, "the teacher's learning rate", min=0),
        Setting("teacher_batch_size", "int", 8, "the teacher's batch size", min=1),
        Setting("teacher_finetune", "bool", None, "fine-tune the teacher (null: on arith)",
                nullable=True),
        Setting("teacher_prompt", "str", "auto", "the teacher's prompt format",
                choices=("auto", "plain", "chat")),
        Setting("max_gen_toks", "int", None, "tokens generated per answer (null: from the "
                "data)", min=1, nullable=True),
        Setting("teacher_gen_tokens", "int", None, "tokens per teacher rationale (null: from "
                "the data)", min=1, nullable=True),
        Setting("eval_batch_size", "int", 16, "answers generated per batch", min=1),
        Setting("latency_items", "int", 20, "test items timed one at a time", min=0),
        Setting("teacher_direct", "bool", True, "also fine-tune the teacher to answer "
                "directly (teacher-direct, SemCoT)"),
        Setting("gen_batch_size", "int", 32, "teacher rationales generated per batch", min=1),
        Setting("baseline", "str", "cot-sft", "method the result's bootstrap interval is "
                "against"),
        Setting("num_fewshot", "int", None, "lm-eval few-shot examples", min=0,
                nullable=True),
        Setting("arith", "str", "2x2-digits", "arith sizes, comma-separated (e.g. 3x3,4x4)"),
        Setting("asdiv", "bool", True, "also run ASDiv"),
        Setting("rationales", "str", "teacher", "students learn the teacher's rationales or "
                "the gold ones", choices=("teacher", "gold")),
    ),
    presets={
        "smoke": {"n_train": 24, "n_test": 12, "teacher_train": 48},
        "default": {},
        "full": {"n_train": None, "n_test": None, "teacher_finetune": False},
        # Past the 30-minute budget, where the students learn some arithmetic (resumable).
        "cpu-long": {"n_train": 1200, "asdiv": False},
    },
)

FULL_TEACHER = "meta-llama/Llama-2-7b-chat-hf"  # SemCoT's "small" configuration
COT_INSTRUCTION = ("Solve the math word problem step by step, one short step per line. "
                   "End with a final line of the form '#### <number>'.")


@dataclass(frozen=True)
class Dataset:
    id: str
    task: str  # lm-eval task name
    kind: str  # "arith" | "asdiv" | "lm-eval"
    digits: tuple[int, int] | None = None
    style: str = "partial"  # arith rationale style (bench.reasoning.arith.STYLES)

    @property
    def offline(self) -> bool:
        return self.kind != "lm-eval"


def parse_dataset(dataset_id: str) -> Dataset:
    m = re.fullmatch(r"offline/arith-(\d+)x(\d+)(-digits)?", dataset_id)
    if m:
        from bench.reasoning.lm_eval_tasks import arith_task_name

        a, b = int(m.group(1)), int(m.group(2))
        style = "digits" if m.group(3) else "partial"
        return Dataset(dataset_id, arith_task_name(a, b, style), "arith", (a, b), style)
    if dataset_id == "offline/asdiv":
        return Dataset(dataset_id, "asdiv_offline", "asdiv")
    if dataset_id in ("gsm8k", "gsm8k_cot"):
        return Dataset(dataset_id, dataset_id, "lm-eval")
    raise UsageError(f"--dataset {dataset_id!r}: not a dataset of suite 'gsm8k'; choose "
                     "offline/arith-3x3, offline/arith-4x4 (any offline/arith-AxB, "
                     "offline/arith-AxB-digits for one-digit steps), "
                     "offline/asdiv, gsm8k or gsm8k_cot")


class GSM8KSuite(Suite):
    metadata = METADATA
    def settings(self, options: RunOptions, recipe: Any) -> dict[str, Any]:
        settings = self.resolve_settings(options, recipe)
        if options.limit is not None:
            settings["n_test"] = options.limit
        return settings

    def _datasets(self, options: RunOptions, settings: dict[str, Any]) -> list[Dataset]:
        if options.dataset:
            ids = [options.dataset]
        elif options.preset == "full":
            ids = ["gsm8k"]
        else:
            sizes = [s.strip() for s in str(settings["arith"]).split(",") if s.strip()]
            ids = [f"offline/arith-{s}" for s in sizes] + \
                (["offline/asdiv"] if settings["asdiv"] else [])
        found = [parse_dataset(i) for i in ids]
        if any(not d.offline for d in found):
            from bench.core.assets.models import online_mode

            if not online_mode():
                raise UsageError("datasets gsm8k/gsm8k_cot download GSM8K through lm-eval: "
                                 "set DISTILLBENCH_ONLINE=1 (or run the offline default)")
        return found

    def run(self, options: RunOptions) -> list[dict[str, Any]]:
        from bench.core.assets import cache_dir, load_causal_lm

        start = time.perf_counter()
        recipe = resolve_recipe(options.method, self.name)
        settings = self.settings(options, recipe)
        datasets = self._datasets(options, settings)
        work_dir = Path(options.work_dir or cache_dir() / "runs") / "gsm8k"
        base_name = options.teacher or (FULL_TEACHER if options.preset == "full"
                                        else "smollm2-135m-instruct")
        base, tok = load_causal_lm(base_name, dtype="float32")
        records, skipped = [], []
        for ds in datasets:
            try:
                records.append(self._run_dataset(options, settings, recipe, ds, base,
                                                 base_name, tok, work_dir, start))
            except SkippedDataset as exc:
                skipped.append(str(exc))
                print(f"bench: warning: {exc}", file=sys.stderr)
        if not records:
            raise UsageError("; ".join(skipped))
        return records

    def _run_dataset(self, options: RunOptions, settings: dict[str, Any], recipe: Any,
                     ds: Dataset, base: Any, base_name: str, tok: Any, work_dir: Path,
                     start: float) -> dict[str, Any]:
        from bench.contracts import ReasoningContext
        from methods.reasoning.cot_distill import NoTrainingData

        t0 = time.perf_counter()
        seconds: dict[str, float] = {}
        train, test_target_tokens = _train_items(ds, settings, tok)
        teacher, teacher_name, teacher_info = _teacher(ds, settings, base, base_name, tok,
                                                       train, work_dir)
        seconds["teacher"] = round(time.perf_counter() - t0, 1)
        if recipe_option(recipe, "needs_rationales"):
            t1 = time.perf_counter()
            teacher_info.update(_add_rationales(ds, settings, teacher, teacher_info, tok,
                                                train, work_dir, test_target_tokens))
            seconds["teacher_rationales"] = round(time.perf_counter() - t1, 1)
        n_train = settings["n_train"]
        context = ReasoningContext(options=options, settings=settings, work_dir=work_dir,
                                   base_name=teacher_name, base=teacher, tokenizer=tok,
                                   train=train[:n_train] if n_train else train,
                                   dataset_id=ds.id, student_name=options.student,
                                   direct_prompt=teacher_info.get("direct_prompt"))
        t1 = time.perf_counter()
        try:
            model, model_name = recipe.build_model(context)
        except NoTrainingData as exc:
            raise SkippedDataset(f"{options.method} skipped on {ds.id}: {exc}") from None
        seconds["train"] = round(time.perf_counter() - t1, 1)
        # "train" is this process's wall (model loading only when the student was cached);
        # the logged step times count every optimizer step once, across resumes and caches.
        if context.config.get("train_runs"):
            from methods.trainer import logged_train_seconds

            seconds["train_steps"] = round(sum(logged_train_seconds(run) or 0.0
                                               for run in context.config["train_runs"]), 3)
        # One leaderboard row per method across datasets: name models after the base model
        # (config.teacher says whether this dataset's teacher was fine-tuned, and where).
        model_name = model_name.replace(Path(teacher_name).name, Path(base_name).name, 1)
        t1 = time.perf_counter()
        from bench.reasoning.evaluation import evaluate_model

        chat = options.method == "teacher" and teacher_info["prompt"] == "chat"
        rows, protocol = evaluate_model(
            ds, settings, model, tok, f"{options.method} on {ds.id}", test_target_tokens,
            work_dir, system_instruction=COT_INSTRUCTION if chat else None)
        seconds["evaluate"] = round(time.perf_counter() - t1, 1)
        return self._record(options, settings, ds, rows, model_name, context, teacher_info,
                            protocol, seconds, time.perf_counter() - t0,
                            _cost(model, rows, protocol))

    def _record(self, options: RunOptions, settings: dict[str, Any], ds: Dataset,
                rows: list[dict[str, Any]], model_name: str, context: Any,
                teacher_info: dict[str, Any], protocol: dict[str, Any],
                seconds: dict[str, float], wall: float, cost: dict[str, Any]
                ) -> dict[str, Any]:
        from bench.core.results import new_record

        metric_names = ("exact_match", "exact_match_flexible", "generated_tokens", "latency_s")
        per_item = {m: {r["id"]: r[m] for r in rows if m in r} for m in metric_names}
        metrics = {m: sum(v.values()) / len(v) for m, v in per_item.items() if v}
        checksum = hashlib.sha256(json.dumps([[r["id"], r["question"], r["target"]]
                                              for r in rows]).encode()).hexdigest()
        dataset = {"id": ds.id, "checksum": f"sha256:{checksum}", "split": "test",
                   "offline_stand_in": ds.offline,
                   "stands_in_for": "GSM8K" if ds.offline else None, "num_items": len(rows)}
        config = {"preset": options.preset, **settings, "lm_eval_task": ds.task,
                  "teacher": teacher_info, "eval_protocol": protocol, "seconds": seconds,
                  **copy.deepcopy(context.config),
                  # every answer (lm-eval's log_samples): lets a reader see how rows fail
                  "samples": [{"id": r["id"], "output": r["output"]} for r in rows]}
        notes = list(context.notes)
        attach_baseline_bootstrap(config, notes, options, self.name, ds.id, "exact_match",
                                  per_item["exact_match"], settings["baseline"])
        recipe_impl = recipe_option(resolve_recipe(options.method, self.name),
                                    "implementation")
        return new_record(
            suite=self.name, suite_version=self.version, dataset=dataset,
            method=options.method, model=model_name, seed=options.seed,
            preset=options.preset, main_score=self.main_score, metrics=metrics,
            per_item=per_item, config=config, implementation=recipe_impl, notes=notes,
            wall_time_s=wall, cost=cost)


def _cost(model: Any, rows: list[dict[str, Any]], protocol: dict[str, Any]) -> dict[str, Any]:
    """The record's cost: the parameters of every model that runs per answer (a pipeline
    such as SemCoT's generator + teacher holds them as attributes) and the mean of the
    batch-1 latencies the evaluation measured."""
    from bench.core.cost import cost_entry, parameter_count, weights_dtype

    timed = [r["latency_s"] for r in rows if "latency_s" in r]
    pipeline = hasattr(model, "answer")  # answers with its own models, as they are
    dtype = weights_dtype(model) if pipeline else "fp32"  # evaluate_model's float copy
    if not timed:
        how = "not timed: latency_items=0"
    elif pipeline or len(timed) == len(rows):
        how = "every test answer timed one at a time during evaluation"
    else:
        how = f"the first {len(timed)} test answers timed one at a time during evaluation"
    per = (f"answer of up to {protocol['max_gen_toks']} new tokens, greedy, batch 1, "
           f"{dtype} weights ({how})")
    ms = sum(timed) / len(timed) * 1000.0 if timed else None
    return cost_entry(parameter_count(model), ms, per)


class SkippedDataset(UsageError):
    """A method had nothing to learn from on one dataset (e.g. no correct teacher rationale)."""


def _train_items(ds: Dataset, settings: dict[str, Any], tok: Any) -> tuple[list[Any], int]:
    """(training items, the longest gold test target in tokens or 0 when unknown)."""
    from methods.reasoning.cot_distill import ReasoningItem, target_units

    if ds.kind == "arith":
        from bench.reasoning.arith import make_arith
        from bench.reasoning.lm_eval_tasks import ARITH_SEED, ARITH_TEST_SIZE

        a, b = ds.digits or (3, 3)
        n = max(settings["n_train"] or 0, settings["teacher_train"] or 0)
        problems = make_arith(a, b, n, ARITH_SEED, split="train", style=ds.style)
        test = make_arith(a, b, min(settings["n_test"] or ARITH_TEST_SIZE, ARITH_TEST_SIZE),
                          ARITH_SEED, split="test", style=ds.style)
        longest = max(sum(map(len, target_units(tok, p.rationale, p.answer))) for p in test)
        return [ReasoningItem(p.id, p.question, p.answer, gold_rationale=p.rationale)
                for p in problems], longest
    if ds.kind == "asdiv":
        from bench.reasoning.asdiv import asdiv_splits

        train = asdiv_splits()[0][: settings["n_train"] or None]
        return [ReasoningItem(p.id, p.question, p.answer) for p in train], 0
    from datasets import load_dataset

    rows = load_dataset("openai/gsm8k", "main", split="train")
    items = []
    for i, row in enumerate(rows):
        rationale, _, answer = row["answer"].partition("####")
        items.append(ReasoningItem(f"gsm8k-train-{i}", row["question"],
                                   answer.strip().replace(",", ""),
                                   gold_rationale=re.sub(r"<<[^>]*>>", "", rationale).strip()))
    return items[: settings["n_train"] or None], 0


def _teacher(ds: Dataset, settings: dict[str, Any], base: Any, base_name: str, tok: Any,
             train: list[Any], work_dir: Path) -> tuple[Any, str, dict[str, Any]]:
    """(teacher, name, info): the base model, or for ``arith`` the base fine-tuned on gold
    rationales (trained once, cached by key)."""
    finetune = settings["teacher_finetune"]
    if finetune is None:
        finetune = ds.kind == "arith"
    prompt = settings["teacher_prompt"]
    if prompt == "auto":
        prompt = "plain" if finetune else "chat"
    info: dict[str, Any] = {"base": base_name, "finetuned": bool(finetune), "prompt": prompt}
    if not finetune:
        return base, base_name, info
    from methods.reasoning.cot_distill import finetune_teacher, run_key, sft_config

    items = [it for it in train if it.gold_rationale][: settings["teacher_train"]]
    direct = bool(settings["teacher_direct"])
    if not items:
        raise UsageError(f"{ds.id}: no gold rationales to fine-tune the teacher on; "
                         "--set teacher_finetune=false")
    cfg = sft_config({"epochs": settings["teacher_epochs"], "lr": settings["teacher_lr"],
                      "batch_size": settings["teacher_batch_size"]}, 0,
                     student_layers=base.config.num_hidden_layers)
    data = hashlib.sha256(json.dumps([[it.question, it.gold_rationale, it.answer]
                                      for it in items]).encode()).hexdigest()[:16]
    from methods.reasoning.cot_distill import DIRECT_ANSWER_PROMPT

    parts = [base_name, ds.id, cfg.__dict__, data] + (["direct"] if direct else [])
    key = run_key("teacher", *parts)
    out, name = work_dir / "teacher" / key, f"{Path(base_name).name}-{ds.kind}-ft"
    teacher = finetune_teacher(base, tok, items, cfg, out, name=name, direct=direct)
    info.update({"key": key, "path": str(out / name), "train_items": len(items),
                 "recipe": dict(cfg.__dict__),
                 "direct_prompt": DIRECT_ANSWER_PROMPT if direct else None})
    return teacher, str(out / name), info


def _add_rationales(ds: Dataset, settings: dict[str, Any], teacher: Any,
                    info: dict[str, Any], tok: Any, train: list[Any], work_dir: Path,
                    longest: int) -> dict[str, Any]:
    """The teacher's greedy rationales for the student's training questions (cached);
    marks each item correct or not. Returns figures for the record."""
    from bench.core.generation import GenerationCache, chat_prompt_ids, generate
    from bench.core.hf import inference_copy, model_fingerprint
    from bench.reasoning.problem import answers_match
    from methods.reasoning.cot_distill import PROMPT, prompt_ids, split_output

    items = train[: settings["n_train"] or None]
    if settings["rationales"] == "gold":  # ablation / tests: the verified gold rationales
        for it in items:
            it.rationale, it.teacher_correct = it.gold_rationale, bool(it.gold_rationale)
        return {"rationales": "gold", "train_questions": len(items),
                "train_with_rationale": sum(it.teacher_correct for it in items)}
    if settings["rationales"] != "teacher":
        raise UsageError(f"--set rationales={settings['rationales']}: use teacher or gold")
    from bench.reasoning.evaluation import gen_tokens

    max_new = settings["teacher_gen_tokens"] or gen_tokens(ds, settings, longest)
    fast = inference_copy(teacher)
    key = json.dumps([model_fingerprint(teacher), info["prompt"], max_new, "greedy"])
    prompts = [prompt_ids(tok, it.question) if info["prompt"] == "plain" else
               chat_prompt_ids(tok, PROMPT.format(question=it.question), system=COT_INSTRUCTION)
               for it in items]
    gens = generate(fast, tok, prompts, max_new_tokens=max_new,
                    batch_size=settings["gen_batch_size"],
                    cache=GenerationCache(work_dir / "generations", key),
                    label=f"teacher rationales ({ds.id})")
    for it, g in zip(items, gens, strict=True):
        it.teacher_correct = answers_match(g.text, it.answer)
        it.rationale = split_output(g.text) if it.teacher_correct else ""
    right = sum(it.teacher_correct for it in items)
    return {"train_correct": right, "train_questions": len(items),
            "train_accuracy": right / max(len(items), 1), "rationale_max_tokens": max_new}
