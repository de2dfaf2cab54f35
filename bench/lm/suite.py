"""``lm``: language modelling on held-out domain text, scored in bits per byte, so that
students distilled across tokenizers are compared on one scale.

Teacher: Gemma-3-270M (base, 262,144-token vocabulary; installed on the suite's first use
and converted once, :mod:`bench.core.assets.install`). Student: SmolLM2-135M-Instruct
(pretrained, 49,152 tokens) by default, or its first k layers (``--set student_layers=8``).
Every method trains the student on the same training segments of the training documents
and is scored on the test documents of each set (one record per set):

- data: :mod:`bench.lm.data` (legal contracts and clinical dialogues from the packaged
  data, fixed content-hash splits, 30% of documents held out; ``--dataset hf:NAME[:CONFIG]``
  for any Hugging Face text dataset, e.g. ``hf:Salesforce/wikitext:wikitext-103-raw-v1``,
  with DISTILLBENCH_ONLINE=1);
- score: :mod:`bench.lm.bpb` (bits per byte, lower is better; per-document values in
  ``per_item`` for paired tests; tokens/s of the scoring pass);
- methods: :mod:`methods.lm` (``teacher``, ``student-init``, ``ce``, ``sft``, ``fkl``,
  ``uld``, ``gold``; ``bench run --loss FILE.py:FN --suite lm`` trains with a user's loss
  against the same-tokenizer teacher).

Methods that need one vocabulary (``fkl``, user losses) check the teacher against the
student before any work and stop with one line when they differ.

Cost: each record's ``cost`` has the scored model's parameters and its milliseconds per
test document in the scoring pass itself (float32, ``window``/``stride``, batch
``eval_batch_size``), timed as it happens: nothing of the scoring is cached.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.suite import DatasetSpec, RunOptions, Setting, Suite, SuiteMetadata

METADATA = SuiteMetadata(
    name="lm", version="1", family="generation",
    summary="language modelling on held-out legal and clinical text, bits per byte "
            "(cross-tokenizer distillation: Gemma-3-270M into SmolLM2-135M)",
    citation="Gao et al. 2020 (The Pile, bits per byte), arXiv:2101.00027; Boizard et al. "
             "2024 (ULD), arXiv:2402.12030",
    main_score="bits_per_byte", higher_is_better=False, baseline="ce", user_loss=True,
    baseline_model="bench.lm.context:baseline_student",
    plot="bench.core.plots:main_score_bars",
    description="Bits per byte (lower is better) of each model on held-out documents, its "
                "own tokenizer's code length over the document's UTF-8 bytes, so models "
                "with different vocabularies share one scale. Teacher: Gemma-3-270M (base); "
                "students: SmolLM2-135M-Instruct trained on the same training segments of "
                "the training documents; each row is tested against `ce` (the student "
                "fine-tuned on the text alone, no teacher). A student distilled from Gemma "
                "(`sft`, `uld`, `gold`) is a model derivative under the Gemma Terms of Use "
                "(https://ai.google.dev/gemma/terms). Measurement logs: "
                "docs/measurements/lm.md.",
    datasets=(
        DatasetSpec("offline/contracts", "Consumer contracts (terms of service), LegalBench",
                    stands_in_for="held-out domain text (WikiText-103 via --dataset hf:...)",
                    licence="see upstream: https://github.com/HazyResearch/legalbench "
                            "(consumer_contracts_qa)"),
        DatasetSpec("offline/clinical-dialogues",
                    "Doctor-patient visit dialogues, ACI-Bench",
                    stands_in_for="held-out domain text (WikiText-103 via --dataset hf:...)",
                    licence="see upstream: https://github.com/wyim/aci-bench (ACI-Bench)"),
    ),
    settings=(
        Setting("train_segments", "int", 80, "training segments (all methods train on the "
                "same ones)", min=1),
        Setting("segment_tokens", "int", 256, "student tokens per training segment", min=8),
        Setting("test_docs", "int", 32, "test documents per set (null: all)", min=1,
                nullable=True),
        Setting("window", "int", 1024, "context window when scoring (tokens)", min=2),
        Setting("stride", "int", 768, "new tokens scored per window after the first (later "
                "windows keep window - stride tokens of context)", min=1),
        Setting("eval_batch_size", "int", 2, "windows per scoring batch", min=1),
        Setting("topk", "int", 64, "teacher probabilities cached per position (plus the "
                "rest mass)", min=1),
        Setting("text_field", "str", "text", "text field of a --dataset hf:... dataset"),
        Setting("min_chars", "int", 200, "shorter rows of a --dataset hf:... are skipped",
                min=1),
    ),
    presets={"smoke": {"train_segments": 8, "segment_tokens": 64, "test_docs": 3,
                       "window": 256, "stride": 128},
             "default": {},
             "full": {"train_segments": 20000, "segment_tokens": 1024, "test_docs": None,
                      "window": 2048, "stride": 1024, "eval_batch_size": 8}},
)
INTERLEAVE = "round-robin over the sets, in their fixed order"


def same_tokenizer(teacher: str, student: str) -> tuple[bool, str]:
    """Whether two models share a vocabulary, and how they differ when not, without loading
    any model: two packaged model assets compare by name (each has its own tokenizer), any
    other pair by loading both tokenizers."""
    from bench.core.assets import ASSETS

    if teacher in ASSETS and student in ASSETS:
        return teacher == student, "different packaged models"
    from methods.lm.common import load_tokenizer

    toks = [load_tokenizer(teacher), load_tokenizer(student)]
    same = len(toks[0]) == len(toks[1]) and toks[0].get_vocab() == toks[1].get_vocab()
    return same, f"{len(toks[0])} vs {len(toks[1])} tokens"


def check_shared_vocabulary(method: str, teacher: str, student: str) -> None:
    same, how = same_tokenizer(teacher, student)
    if not same:
        raise UsageError(f"method {method!r} needs one vocabulary but teacher {teacher!r} and "
                         f"student {student!r} use different tokenizers ({how}); use a "
                         "cross-tokenizer method (uld, gold) or a --teacher with the "
                         "student's tokenizer")


class LMSuite(Suite):
    metadata = METADATA

    def truncated_model(self, options: RunOptions, settings: dict[str, Any]) -> str:
        from bench.lm.context import STUDENT

        return options.student or STUDENT

    def resolve_settings(self, options: RunOptions, recipe: Any) -> dict[str, Any]:
        """The shared checks, then the suite's own, all before any work: a stride below
        the window, and no ``--teacher`` for a method that would ignore it."""
        from bench.contracts import recipe_option

        settings = super().resolve_settings(options, recipe)
        if options.teacher and not recipe_option(recipe, "uses_teacher"):
            raise UsageError(f"--teacher {options.teacher}: method {options.method!r} uses no "
                             "teacher on suite 'lm'; drop --teacher (it would be ignored)")
        if not settings["stride"] < settings["window"]:
            raise UsageError(f"--set stride={settings['stride']}: must be below window "
                             f"({settings['window']})")
        return settings

    def settings(self, options: RunOptions, recipe: Any) -> dict[str, Any]:
        settings = self.resolve_settings(options, recipe)
        if options.limit is not None:
            settings["test_docs"] = options.limit
        return settings

    def user_loss_recipe(self, options: RunOptions) -> Any:
        from methods.lm.common import lm_user_loss_recipe

        return lm_user_loss_recipe(options)

    def run(self, options: RunOptions) -> list[dict[str, Any]]:
        from bench.contracts import recipe_option, resolve_recipe
        from bench.core.assets import cache_dir, load_causal_lm
        from bench.lm.context import STUDENT, LMContext
        from bench.lm.data import segments

        start = time.perf_counter()
        recipe = (self.user_loss_recipe(options) if options.loss_fn is not None
                  else resolve_recipe(options.method, self.name))
        settings = self.settings(options, recipe)
        student_name = options.student or STUDENT
        default_teacher = recipe_option_teacher(recipe)
        teacher_name = options.teacher or default_teacher
        if recipe_option(recipe, "uses_teacher") and getattr(recipe, "shared_vocabulary",
                                                              False):
            check_shared_vocabulary(options.method, teacher_name, student_name)
        corpora = self._corpora(options)
        if teacher_name is not None and recipe_option(recipe, "uses_teacher"):
            from bench.core.assets import ASSETS
            from bench.core.assets.install import ensure_installed

            if teacher_name in ASSETS:
                ensure_installed(teacher_name)
        work_dir = Path(options.work_dir or cache_dir() / "runs") / "lm"
        student, tokenizer = load_causal_lm(student_name)
        test_sets, per_set = [], []
        from bench.lm.data import pools

        for corpus in corpora:
            train_pool, test_pool = pools(corpus, settings)
            test_sets.append((corpus, test_pool[: settings["test_docs"]]))
            per_set.append(segments(train_pool, tokenizer, settings["segment_tokens"],
                                    settings["train_segments"]))
        train = [s for group in _round_robin(per_set) for s in group][
            : settings["train_segments"]]
        context = LMContext(options=options, settings=settings, work_dir=work_dir,
                            student_name=student_name, student=student, tokenizer=tokenizer,
                            teacher_name=teacher_name if recipe_option(recipe, "uses_teacher")
                            else None, train=train)
        context.config["seconds"] = {"setup": round(time.perf_counter() - start, 1)}
        t_train = time.perf_counter()
        model, model_name = recipe.build_model(context)
        context.config["seconds"]["train"] = round(time.perf_counter() - t_train, 1)
        eval_tokenizer = context.eval_tokenizer or tokenizer
        return [self._evaluate(options, settings, corpus, docs, model, model_name,
                               eval_tokenizer, context, start)
                for corpus, docs in test_sets]

    def _evaluate(self, options: RunOptions, settings: dict[str, Any], corpus: Any,
                  docs: list[Any], model: Any, model_name: str, tokenizer: Any,
                  context: Any, start: float) -> dict[str, Any]:
        import copy

        from bench.core.cost import cost_entry, parameter_count
        from bench.core.results import new_record
        from bench.lm.bpb import score_documents, summary
        from bench.suite import attach_baseline_bootstrap

        scores, seconds = score_documents(
            model, tokenizer, [d.text for d in docs], window=settings["window"],
            stride=settings["stride"], batch_size=settings["eval_batch_size"],
            progress=True)
        per_doc = {d.id: s.bpb for d, s in zip(docs, scores, strict=True)}
        metrics = summary(scores, seconds)
        checksum = hashlib.sha256(json.dumps([[d.id, d.text] for d in docs]).encode()
                                  ).hexdigest()
        dataset = {"id": corpus.dataset_id, "checksum": f"sha256:{checksum}", "split": "test",
                   "offline_stand_in": corpus.offline_stand_in,
                   "stands_in_for": self.datasets[0].stands_in_for
                   if corpus.offline_stand_in else None, "num_items": len(docs)}
        config = {"preset": options.preset, **settings, "student": context.student_name,
                  "teacher": context.teacher_name, "train_segments_used": len(context.train),
                  "train_interleave": INTERLEAVE, **copy.deepcopy(context.config),
                  **({"loss_source": options.loss_source} if options.loss_source else {})}
        notes = list(context.notes)
        attach_baseline_bootstrap(config, notes, options, self.name, dataset["id"],
                                  "bits_per_byte", per_doc, self.baseline)
        cost = cost_entry(parameter_count(model), 1000 * seconds / len(docs),
                          f"test document scored for bits per byte, float32, window "
                          f"{settings['window']} stride {settings['stride']}, batch "
                          f"{settings['eval_batch_size']}; timed on the scoring pass itself")
        return new_record(
            suite=self.name, suite_version=self.version, dataset=dataset,
            method=options.method, model=model_name, seed=options.seed,
            preset=options.preset, main_score=self.main_score, metrics=metrics,
            per_item={"bits_per_byte": per_doc}, config=config,
            implementation=context.config.get("implementation", "full"), notes=notes,
            wall_time_s=time.perf_counter() - start, cost=cost)

    @staticmethod
    def _corpora(options: RunOptions) -> tuple[Any, ...]:
        from bench.lm.data import CORPORA, Corpus

        if options.dataset is None:
            return CORPORA
        for corpus in CORPORA:
            if corpus.dataset_id == options.dataset:
                return (corpus,)
        if options.dataset.startswith("hf:") and len(options.dataset) > 3:
            return (Corpus(options.dataset, f"Hugging Face dataset {options.dataset[3:]}",
                           options.dataset, offline_stand_in=False),)
        raise UsageError(f"--dataset {options.dataset!r}: not a dataset of suite 'lm'; choose "
                         f"one of {', '.join(c.dataset_id for c in CORPORA)} or "
                         "hf:NAME[:CONFIG] (a Hugging Face text dataset)")


def recipe_option_teacher(recipe: Any) -> str | None:
    """The teacher a recipe uses when ``--teacher`` is not given (None: no teacher)."""
    return getattr(recipe, "default_teacher", None)


def _round_robin(lists: list[list[Any]]) -> list[list[Any]]:
    """[[a0, b0], [a1, b1], ...]: one item of each list in turn (shorter lists run out)."""
    longest = max((len(x) for x in lists), default=0)
    return [[x[i] for x in lists if i < len(x)] for i in range(longest)]
