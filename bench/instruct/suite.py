"""``instruct``: instruction following judged by ROUGE-L, the MiniLLM protocol (Gu et al. 2024).

Offline default (stand-ins, labelled as such in every result): three generation tasks from
the packaged data, each with a fixed train/test split (items ordered by a content hash; the
first 30% are the test pool, the rest the train pool; NarrativeQA is split by story so no
test story is seen in training):

- ``offline/xsum``: one-sentence summary of a BBC article (reference: its XSum summary),
- ``offline/nq-open``: short answer to an open-domain question (references: NQ answers),
- ``offline/narrativeqa``: one-sentence answer about a story summary (two references).

Articles and stories are cut to ``max_context_tokens`` (128) so a CPU can train on them.
The score of a response is ROUGE-L F1 (rouge-score, Porter stemmer, as MiniLLM) against
its best reference; the dataset score is the mean. Each result also records the mean
response length, and a paired bootstrap 95% confidence interval of the difference against
a named baseline (``--set baseline=sft`` by default) when that baseline's result for the
same dataset and seed is already in the results directory.

Distillation data: the teacher's greedy responses to the training prompts (chat template,
bf16 weights), generated once and cached together with the teacher's top-k logits at every
response token (:mod:`bench.core.generation`). Test responses are generated greedily with bf16
weights (students too; ~1.5x faster on AMX CPUs than fp32). Every method trains one student on the union of
the three training sets and is evaluated on each test set (three records per run).

Cost (every record's ``cost``, :mod:`bench.core.cost`): the parameters of the model that
generated the row (the student; the teacher for ``teacher``) and its milliseconds per
response, from a probe after evaluation, because a rerun takes its responses from the
generation cache: the first 8 evaluated prompts generated once more, uncached, greedy,
up to ``max_new_tokens`` new tokens, in batches of ``gen_batch_size`` (one batch of 8 at the
default), with the weights the evaluation used; after a one-token warm-up, the median of up
to 3 passes, none started once 2 s are spent (so one pass for a real model on a CPU).

Presets (recorded in every result; sizes per task):

=========  =====  ====  ======================================================
preset     train  test  notes
=========  =====  ====  ======================================================
smoke      24     12    minutes; for trying the pipeline
default    100    60    the committed leaderboard; within 20 min per method on 2 cores
full       all    all   real scale: ``--dataset dolly`` (databricks-dolly-15k via
                        ``datasets``, needs DISTILLBENCH_ONLINE=1) or a local JSONL
=========  =====  ====  ======================================================

Choosing a recipe (``--set eval_split=validation``): the last ``val_per_task`` (60) items of
each training pool are held out from training whichever split is scored (at most a third
of a small pool), and scored instead of the test items under the dataset id
``<set>@validation``, so defaults are chosen on them and the test split stays untouched.
``--set teacher_sft_steps=N`` first fine-tunes the teacher on the training references
(MiniLLM's teacher SFT, :mod:`methods.instruct.teacher_sft`; cached and shared by every
method and seed, its model name gains ``-sftN``).

Real scale: ``--dataset path/to/file.jsonl`` with ``{"id", "prompt", "references": [...],
"split": "train"|"test"}`` lines runs any prompt set (e.g. the MiniLLM test sets of Dolly,
SelfInst, Vicuna, S-NI, UnNI exported to that form); ``--dataset dolly`` reads Dolly-15k
and holds out 500 items as MiniLLM does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.hf import inference_copy
from bench.errors import UsageError
from bench.suite import (
    DatasetSpec,
    RunOptions,
    Setting,
    Suite,
    SuiteMetadata,
    attach_baseline_bootstrap,
)

METADATA = SuiteMetadata(
    name="instruct", version="1", family="generation",
    summary="instruction following, ROUGE-L vs references (offline: XSum, NQ-open, "
            "NarrativeQA); MiniLLM protocol at real scale",
    citation="Gu et al. 2024 (MiniLLM), arXiv:2306.08543",
    main_score="rougeL", baseline="sft", user_loss=True,
    plot="bench.core.plots:main_score_bars",
    description="Offline default (CPU budget): SmolLM2-135M-Instruct teacher, fine-tuned 60 "
                "steps on the training references first (MiniLLM's teacher SFT; model names "
                "end in -sft60); students are its first 8 of 30 layers trained 76 "
                "steps on 300 teacher responses, then judged on 60 test prompts per set "
                "(greedy, ROUGE-L F1 against the best reference); each row is tested against "
                "`sft` (the legend names the test), with 3 training seeds per distilled row. "
                "student-init (the untrained 8-layer student) and teacher bound the range. "
                "At this budget the seed-to-seed spread of a row (SD 0.01-0.05 per set) "
                "dominates: read the MDE column before ranking losses. Measurement logs: "
                "docs/measurements/instruct.md.",
    datasets=(
        DatasetSpec("offline/xsum", "XSum: one-sentence summaries of BBC articles",
                    stands_in_for="MiniLLM instruction sets", licence="see upstream: https://github.com/EdinburghNLP/XSum (XSum)"),
        DatasetSpec("offline/nq-open", "NQ-open: short answers to open-domain questions",
                    stands_in_for="MiniLLM instruction sets", licence="CC-BY-SA-3.0 (NQ-open)"),
        DatasetSpec("offline/narrativeqa", "NarrativeQA: answers about story summaries",
                    stands_in_for="MiniLLM instruction sets", licence="Apache-2.0 (NarrativeQA)"),
    ),
    settings=(
        Setting("train_per_task", "int", 100, "training prompts per set (null: all)", min=1,
                nullable=True),
        Setting("test_per_task", "int", 60, "test prompts per set (null: all)", min=1,
                nullable=True),
        Setting("max_new_tokens", "int", 48, "tokens generated per response", min=1),
        Setting("max_context_tokens", "int", 128, "prompts longer than this are skipped",
                min=1),
        Setting("topk", "int", 64, "teacher logits cached per response token", min=1),
        Setting("baseline", "str", "sft", "method the result's bootstrap interval is against"),
        Setting("gen_batch_size", "int", 32, "prompts generated per batch", min=1),
        Setting("teacher_dtype", "str", "bfloat16", "teacher weights when generating",
                choices=("float32", "bfloat16", "float16")),
        Setting("eval_split", "str", "test", "items scored: test, or validation (held out "
                "from the training pool, for choosing a recipe)",
                choices=("test", "validation")),
        Setting("val_per_task", "int", 60, "validation items per set, taken from the end of "
                "the training pool and never trained on", min=1),
        Setting("teacher_sft_steps", "int", 60, "fine-tune the teacher on the training "
                "references first (MiniLLM); 0: the teacher as given", min=0),
        Setting("teacher_sft_lr", "float", 1e-4, "learning rate of that fine-tune", min=0),
    ),
    # smoke checks the pipeline without the teacher fine-tune; at full scale pass a teacher
    # already fine-tuned on the task (MiniLLM publishes theirs) or set teacher_sft_steps.
    presets={"smoke": {"train_per_task": 24, "test_per_task": 12, "teacher_sft_steps": 0},
             "default": {},
             "full": {"train_per_task": None, "test_per_task": None, "teacher_sft_steps": 0}},
)
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class Item:
    id: str
    prompt: str
    references: tuple[str, ...]
    group: str  # split key: items of one group fall on the same side


@dataclass(frozen=True)
class Task:
    dataset_id: str
    data_file: str
    description: str
    offline_stand_in: bool = True

    def pools(self, tokenizer: Any, max_context_tokens: int) -> tuple[list[Item], list[Item]]:
        """(train pool, test pool) in their fixed order."""
        return split(self.items(tokenizer, max_context_tokens))

    def items(self, tokenizer: Any, max_context_tokens: int) -> list[Item]:
        from bench.core.assets import data_file

        def cut(text: str) -> str:
            ids = tokenizer.encode(text, add_special_tokens=False)
            return text if len(ids) <= max_context_tokens else \
                tokenizer.decode(ids[:max_context_tokens]) + " ..."

        rows = [json.loads(line) for line in
                data_file(self.data_file).read_text(encoding="utf-8").splitlines() if line]
        items = []
        for i, row in enumerate(rows):
            if self.data_file == "xsum":
                items.append(Item(f"xsum-{row['id']}", "Summarize the following article in "
                                  f"one sentence.\n\nArticle: {cut(row['document'])}",
                                  (row["summary"],), row["id"]))
            elif self.data_file == "nq-open":
                items.append(Item(f"nq-{i}", "Answer the following question in a few words."
                                  f"\n\nQuestion: {row['question']}",
                                  tuple(row["answer"]), row["question"]))
            else:
                items.append(Item(f"nqa-{i}", "Read the story and answer the question in one "
                                  f"sentence.\n\nStory: {cut(row['passage'])}\n\nQuestion: "
                                  f"{row['question']}", tuple(row["answer"]), row["passage"]))
        return items


@dataclass(frozen=True)
class ExternalTask(Task):
    """Real-scale prompt sets: a local JSONL file, or Dolly-15k through ``datasets``."""

    offline_stand_in: bool = False

    def pools(self, tokenizer: Any, max_context_tokens: int) -> tuple[list[Item], list[Item]]:
        if self.data_file == "dolly":
            from bench.core.assets.models import online_mode

            if not online_mode():
                raise UsageError("--dataset dolly downloads databricks/databricks-dolly-15k: "
                                 "set DISTILLBENCH_ONLINE=1, or export it to JSONL and pass "
                                 "the file")
            from datasets import load_dataset

            rows = load_dataset("databricks/databricks-dolly-15k", split="train")
            items = [Item(f"dolly-{i}", r["instruction"] + (f"\n\n{r['context']}"
                                                          if r["context"] else ""),
                          (r["response"],), f"dolly-{i}") for i, r in enumerate(rows)]
            ordered = sorted(items, key=lambda it: hashlib.sha256(it.id.encode()).hexdigest())
            return ordered[500:], ordered[:500]  # MiniLLM holds out 500 Dolly items
        path = Path(self.data_file)
        train, test, unsplit = [], [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                item = Item(str(row["id"]), str(row["prompt"]),
                            tuple(str(r) for r in row["references"]), str(row["id"]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UsageError(f"{path}:{n}: need a JSON object with id, prompt and a "
                                 f"references list ({type(exc).__name__}: {exc})") from None
            {"train": train, "test": test}.get(row.get("split"), unsplit).append(item)
        if unsplit:
            extra_train, extra_test = split(unsplit)
            train, test = train + extra_train, test + extra_test
        return train, test


TASKS = (
    Task("offline/xsum", "xsum", "XSum: one-sentence summaries of BBC articles"),
    Task("offline/nq-open", "nq-open", "NQ-open: short answers to open-domain questions"),
    Task("offline/narrativeqa", "narrativeqa", "NarrativeQA: answers about story summaries"),
)


def split(items: list[Any]) -> tuple[list[Any], list[Any]]:
    """(train pool, test pool), both in a fixed pseudo-random order by content hash.

    Items need ``id`` and ``group`` (items of one group fall on the same side); the
    ``align`` and ``specbench`` suites split their prompts with this too."""
    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    groups = sorted({it.group for it in items}, key=h)
    test_groups = set(groups[: round(len(groups) * TEST_FRACTION)])
    ordered = sorted(items, key=lambda it: (h(it.group), it.id))
    return ([it for it in ordered if it.group not in test_groups],
            [it for it in ordered if it.group in test_groups])


def held_out(pool: list[Any], n: int) -> tuple[list[Any], list[Any]]:
    """(training pool without the last ``n`` items, those items): the validation items,
    never trained on whichever split is scored, so a recipe chosen on them is evaluated
    on the test split with the same training data. At most a third of a small pool."""
    n = min(n, len(pool) // 3)
    return (pool[: len(pool) - n], pool[len(pool) - n:]) if n else (pool, [])


def rouge_l(prediction: str, references: tuple[str, ...], scorer: Any) -> float:
    """ROUGE-L F1 against the best reference."""
    return max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in references)


class InstructSuite(Suite):
    metadata = METADATA

    def truncated_model(self, options: RunOptions, settings: dict[str, Any]) -> str:
        """The teacher, whose first layers make the student."""
        return options.teacher or "smollm2-135m-instruct"

    def settings(self, options: RunOptions, recipe: Any) -> dict[str, Any]:
        settings = self.resolve_settings(options, recipe)
        if options.limit is not None:
            settings["test_per_task"] = options.limit
        return settings

    def user_loss_recipe(self, options: RunOptions) -> Any:
        from methods.instruct.token_kd import user_loss_recipe

        return user_loss_recipe(options)

    def run(self, options: RunOptions) -> list[dict[str, Any]]:
        from bench.contracts import InstructContext, resolve_recipe
        from bench.core.assets import cache_dir, load_causal_lm
        from bench.core.cost import generation_cost
        from bench.core.generation import GenerationCache, chat_prompt_ids, generate
        from methods.instruct.token_kd import TrainExample

        start = time.perf_counter()
        recipe = (self.user_loss_recipe(options) if options.loss_fn is not None
                  else resolve_recipe(options.method, self.name))
        settings = self.settings(options, recipe)
        work_dir = Path(options.work_dir or cache_dir() / "runs") / "instruct"
        teacher_name = self.truncated_model(options, {})
        teacher, tokenizer = load_causal_lm(teacher_name)
        tasks = self._tasks(options)
        train_items, test_sets = [], []
        for task in tasks:
            pool_train, pool_test = task.pools(tokenizer, settings["max_context_tokens"])
            pool_train, validation = held_out(pool_train, settings["val_per_task"])
            train_items += pool_train[: settings["train_per_task"]]
            scored = validation if settings["eval_split"] == "validation" else pool_test
            test_sets.append((task, scored[: settings["test_per_task"]]))

        teacher_sft = None
        if settings["teacher_sft_steps"]:
            from bench.core.hf import model_fingerprint
            from methods.instruct.teacher_sft import fine_tune_teacher

            teacher, teacher_sft = fine_tune_teacher(
                teacher, tokenizer, train_items, steps=settings["teacher_sft_steps"],
                lr=settings["teacher_sft_lr"], batch_size=8, work_dir=work_dir,
                teacher_key=model_fingerprint(teacher))
            teacher_name = f"{teacher_name}-sft{settings['teacher_sft_steps']}"
        gen_teacher = inference_copy(teacher, settings["teacher_dtype"])
        teacher_key = json.dumps([teacher_name, settings["teacher_dtype"],
                                  settings["max_new_tokens"], "greedy"] +
                                 ([teacher_sft["checkpoint_dir"]] if teacher_sft else []))
        teacher_cache = GenerationCache(work_dir / "generations", teacher_key)
        prompts = [chat_prompt_ids(tokenizer, it.prompt) for it in train_items]
        responses = generate(gen_teacher, tokenizer, prompts,
                             max_new_tokens=settings["max_new_tokens"],
                             batch_size=settings["gen_batch_size"], topk=settings["topk"],
                             cache=teacher_cache, label="teacher responses (train)")
        examples = [TrainExample(g.prompt_ids, g.output_ids, g.topk_values, g.topk_indices,
                                 g.topk_lse) for g in responses if g.output_ids]
        context = InstructContext(options=options, settings=settings, work_dir=work_dir,
                                  base_name=teacher_name, base=teacher,
                                  tokenizer=tokenizer, train=examples)
        context.config["seconds"] = {"setup_and_teacher_responses":
                                     round(time.perf_counter() - start, 1)}
        if teacher_sft is not None:
            context.config["teacher_sft"] = teacher_sft
        t_train = time.perf_counter()
        model, model_name = recipe.build_model(context)
        context.config["seconds"]["train"] = round(time.perf_counter() - t_train, 1)
        if model is teacher:
            model, model_cache = gen_teacher, teacher_cache
        else:
            from bench.core.hf import model_fingerprint

            model = inference_copy(model, "bfloat16")
            model_cache = GenerationCache(work_dir / "generations", json.dumps(
                [model_fingerprint(model), settings["max_new_tokens"], "greedy"]))
        train_seconds = time.perf_counter() - start
        records = []
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        for task, items in test_sets:
            t0 = time.perf_counter()
            gens = generate(model, tokenizer, [chat_prompt_ids(tokenizer, it.prompt)
                                               for it in items],
                            max_new_tokens=settings["max_new_tokens"],
                            batch_size=settings["gen_batch_size"], cache=model_cache,
                            label=f"{options.method} on {task.dataset_id}")
            context.config["seconds"]["generate_test"] = round(time.perf_counter() - t0, 1)
            scores = {it.id: rouge_l(g.text, it.references, scorer)
                      for it, g in zip(items, gens, strict=True)}
            lengths = {it.id: float(len(g.output_ids)) for it, g in zip(items, gens, strict=True)}
            cost = generation_cost(model, tokenizer, [chat_prompt_ids(tokenizer, it.prompt)
                                                      for it in items],
                                   max_new_tokens=settings["max_new_tokens"],
                                   batch_size=settings["gen_batch_size"])
            records.append(self._record(options, settings, task, items, model_name, scores,
                                        lengths, context, gens,
                                        train_seconds + time.perf_counter() - t0, cost))
        return records

    @staticmethod
    def _tasks(options: RunOptions) -> tuple[Task, ...]:
        if options.dataset is None:
            return TASKS
        for task in TASKS:
            if task.dataset_id == options.dataset:
                return (task,)
        if options.dataset == "dolly":
            return (ExternalTask("dolly", "dolly", "databricks-dolly-15k (MiniLLM split)"),)
        if options.dataset.endswith(".jsonl") and Path(options.dataset).is_file():
            return (ExternalTask(options.dataset, options.dataset, "local prompt set"),)
        raise UsageError(f"--dataset {options.dataset!r}: not a dataset of suite 'instruct'; "
                         f"choose one of {', '.join(t.dataset_id for t in TASKS)}, dolly, "
                         "or an existing .jsonl file")

    def _record(self, options: RunOptions, settings: dict[str, Any], task: Task,
                items: list[Item], model_name: str, scores: dict[str, float],
                lengths: dict[str, float], context: Any, gens: list[Any],
                wall: float, cost: dict[str, Any]) -> dict[str, Any]:
        from bench.core.results import new_record

        checksum = hashlib.sha256(json.dumps([[it.id, it.prompt, it.references]
                                              for it in items]).encode()).hexdigest()
        split = settings["eval_split"]
        dataset = {"id": task.dataset_id + ("@validation" if split == "validation" else ""),
                   "checksum": f"sha256:{checksum}", "split": split,
                   "offline_stand_in": task.offline_stand_in,
                   "stands_in_for": self.datasets[0].stands_in_for if task.offline_stand_in
                   else None, "num_items": len(items)}
        config = {"preset": options.preset, **settings, "teacher": context.teacher_name,
                  "train_examples": len(context.train), **copy.deepcopy(context.config),
                  **({"loss_source": options.loss_source} if options.loss_source else {}),
                  "samples": [{"id": it.id, "response": g.text}
                              for it, g in list(zip(items, gens, strict=True))[:3]]}
        notes = list(context.notes)
        attach_baseline_bootstrap(config, notes, options, self.name, dataset["id"], "rougeL",
                                  scores, settings["baseline"])
        metrics = {"rougeL": sum(scores.values()) / len(scores),
                   "response_tokens": sum(lengths.values()) / len(lengths)}
        return new_record(
            suite=self.name, suite_version=self.version, dataset=dataset,
            method=options.method, model=model_name, seed=options.seed,
            preset=options.preset, main_score=self.main_score, metrics=metrics,
            per_item={"rougeL": scores, "response_tokens": lengths}, config=config,
            implementation=context.config.get("implementation", "full"), notes=notes,
            wall_time_s=wall, cost=cost)
