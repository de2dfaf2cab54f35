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

- ``offline/arith-3x1-digits`` (default since suite version 2; ``offline/arith-2x2-digits``
  was version 1's), ``offline/arith-3x3``, ``offline/arith-4x4``, any
  ``offline/arith-AxB[-digits]``: multiplication with worked long-multiplication
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
default   1,200 training / 100 test questions per dataset, teacher fine-tuned on 1,200
          gold rationales and the same 1,200 questions answered directly (300 steps),
          students of 8 layers, 4 epochs (``skip-thinking``: 2 CWT + 2 STT epochs), SemCoT
          3 + 2 generator epochs; datasets ``offline/arith-3x1-digits`` and
          ``offline/asdiv``. Chosen on validation items by a criterion that favours no
          method (cot-sft, the baseline, must learn: 0.66 against the teacher's 0.96);
          version 1's default (2x2 digits, 300 questions, 2 epochs) left every student
          at 0 (``docs/measurements/gsm8k.md``)
cpu-long  the default's recipe with students of 16 layers (SemCoT's generator too), arith
          only: past the 30-minute budget (each command resumes from its checkpoints)
full      paper scale on GPUs: lm-eval ``gsm8k``, all 7,473 training questions, teacher
          ``meta-llama/Llama-2-7b-chat-hf`` (SemCoT's "small" configuration), bf16,
          the official SemCoT GSM8K hyperparameters (7 + 2 generator epochs)
========  ==============================================================================

Choosing a recipe (``--set eval_split=validation``): the last ``val_per_task`` (100) items
of each offline dataset's training pool are scored instead of the test items (the first
``n_test`` of them, as with test items), under the dataset id ``<id>@validation`` (split
``validation``; lm-eval exact match as usual, through a local task ``<task>_validation``
whose few-shot pool leaves them out), so defaults are chosen on them and the test split
stays untouched. They are never trained on in either mode: not by the students
(``n_train``), the arith teacher's fine-tune (``teacher_train``) nor its rationales. On
arith they are drawn from the same seeded stream *after* the ``max(n_train,
teacher_train)`` training items, so the training items, the teacher's cache key and test
results are exactly as without them (a larger draw extends a smaller one); on ASDiv they
are the train split's last items, at most a third of it, which changes the students' items
only when ``n_train`` reaches into them. The generation budget still comes from the test
targets, so both modes train alike. ``gsm8k``/``gsm8k_cot`` have none (a usage error).
Details: :mod:`bench.reasoning.splits`.

Code: :mod:`bench.reasoning.splits` (datasets, training pools, validation items),
:mod:`bench.reasoning.teacher` (the teacher and its rationales),
:mod:`bench.reasoning.evaluation` (lm-eval), :mod:`bench.reasoning.records` (the result).

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

import sys
import time
from pathlib import Path
from typing import Any

from bench.contracts import recipe_option, resolve_recipe
from bench.errors import UsageError
from bench.reasoning.records import answer_cost, gsm8k_record
from bench.reasoning.splits import (
    Dataset,
    check_validation,
    longest_test_target,
    parse_dataset,
    training_items,
    validation_items,
)
from bench.reasoning.teacher import COT_INSTRUCTION, add_rationales, build_teacher
from bench.suite import DatasetSpec, RunOptions, Setting, Suite, SuiteMetadata

# The arithmetic sets are generated by this project's code (bench/reasoning/arith.py).
ARITH_LICENCE = "Apache-2.0 (generated by distillbench)"

METADATA = SuiteMetadata(
    name="gsm8k", version="2", family="reasoning",
    summary="math reasoning: lm-eval exact match, generated tokens and latency per answer "
            "(offline: arith multiplication with rationales, ASDiv); GSM8K at real scale",
    citation="Cobbe et al. 2021 (GSM8K), arXiv:2110.14168",
    main_score="exact_match", baseline="cot-sft",
    plot="bench.core.plots:accuracy_vs_latency",
    description="Offline default (CPU budget): exact match by lm-eval (strict `#### N` "
                "filter), generated tokens per answer, and wall latency per answer timed "
                "one at a time on the first 20 test items (batch 1, fp32, same machine and "
                "run; the other answers are generated in batches for accuracy). On "
                "`offline/arith-3x1-digits` (3-digit x 1-digit multiplication, every "
                "partial product written as one-digit times-table steps) the teacher is "
                "SmolLM2-135M-Instruct fine-tuned once on 1,200 gold long-multiplication "
                "rationales and on the same questions answered directly under "
                "\"Answer directly:\" (`teacher-direct` is that prompt: SemCoT's implicit "
                "state goes in front of it). Default students are its first 8 of 30 layers "
                "trained for 4 epochs on its correct rationales for 1,200 training problems and "
                "tested on 100 (chosen on held-out validation items so that the baseline, "
                "cot-sft, learns); `[cpu-long]` rows: 16 layers, arith only. Version 1 "
                "(`offline/arith-2x2-digits`, 300 problems, 2 epochs; its `[cpu-long]`: "
                "16 layers, 1,200 problems, 4 epochs) left every 8-layer student at 0; "
                "its rows left this table when version 2's arrived (one protocol per "
                "table; they are logged in docs/measurements/gsm8k.md). "
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
        DatasetSpec("offline/arith-3x1-digits", "3-digit x 1-digit multiplication, worked "
                    "rationales in one-digit steps, fixed splits", stands_in_for="GSM8K",
                    licence=ARITH_LICENCE),
        DatasetSpec("offline/arith-2x2-digits", "2-digit x 2-digit multiplication, worked "
                    "rationales in one-digit steps (version 1's default; --set "
                    "arith=2x2-digits)", stands_in_for="GSM8K",
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
        Setting("n_train", "int", 1200, "training problems (null: all)", min=1, nullable=True),
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
        Setting("arith", "str", "3x1-digits", "arith sizes, comma-separated (e.g. 3x3,4x4)"),
        Setting("asdiv", "bool", True, "also run ASDiv"),
        Setting("rationales", "str", "teacher", "students learn the teacher's rationales or "
                "the gold ones", choices=("teacher", "gold")),
        Setting("eval_split", "str", "test", "items scored: test, or validation (held out "
                "of the training pool, for choosing a recipe; offline datasets only)",
                choices=("test", "validation")),
        Setting("val_per_task", "int", 100, "validation items per dataset, held out of its "
                "training pool and never trained on", min=1),
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

# Dataset, parse_dataset and COT_INSTRUCTION now live in bench.reasoning.splits / .teacher;
# re-exported because benchmarks/gsm8k_eval_batching.py and tests import them from here.
__all__ = ["COT_INSTRUCTION", "METADATA", "Dataset", "GSM8KSuite", "SkippedDataset",
           "parse_dataset"]


class SkippedDataset(UsageError):
    """A method had nothing to learn from on one dataset (e.g. no correct teacher rationale)."""


class GSM8KSuite(Suite):
    metadata = METADATA

    @staticmethod
    def teacher_base(options: RunOptions) -> str:
        """The model the teacher is fine-tuned from (and the student's layers come from)."""
        return options.teacher or (FULL_TEACHER if options.preset == "full"
                                   else "smollm2-135m-instruct")

    def truncated_model(self, options: RunOptions, settings: dict[str, Any]) -> str | None:
        return None if options.student else self.teacher_base(options)

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
        if settings["eval_split"] == "validation":
            check_validation(found)  # before the online check: that flag would not help
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
        base_name = self.teacher_base(options)
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
        split = settings["eval_split"]
        # Drawn first so a pair space too small for them fails before any training.
        validation = validation_items(ds, settings) if split == "validation" else None
        train = training_items(ds, settings)
        test_target_tokens = longest_test_target(ds, settings, tok)
        teacher, teacher_name, teacher_info = build_teacher(ds, settings, base, base_name, tok,
                                                            train, work_dir)
        seconds["teacher"] = round(time.perf_counter() - t0, 1)
        if recipe_option(recipe, "needs_rationales"):
            t1 = time.perf_counter()
            teacher_info.update(add_rationales(ds, settings, teacher, teacher_info, tok,
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
            work_dir, system_instruction=COT_INSTRUCTION if chat else None,
            validation=validation)
        seconds["evaluate"] = round(time.perf_counter() - t1, 1)
        return gsm8k_record(self, options, settings, ds, rows, model_name, context,
                            teacher_info, protocol, seconds, time.perf_counter() - t0,
                            answer_cost(model, rows, protocol, split))
