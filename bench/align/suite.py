"""``align``: preference alignment judged by a gold reward, with the KL it costs (DPO,
Rafailov et al. 2023, arXiv:2305.18290; AlignDistil, Zhang et al. 2025, arXiv:2503.02832).

Offline default (a stand-in for AlpacaEval-2 / MT-Bench / Arena-Hard, labelled so in every
result): prompts from three packaged QA sets with reference answers, each with a fixed
train/test split (:func:`bench.instruct.suite.split`: content-hash order, 30% test,
NarrativeQA split by story): NQ-open, TruthfulQA (its correct answers as references) and
NarrativeQA (story cut to ``max_context_tokens`` in the prompt). The reference policy is
SmolLM2-135M-Instruct as shipped (``--student`` names another).

Preference data, made the way reward-model studies make it with a gold reward
(:mod:`bench.align.evaluation`): ``samples_per_prompt`` responses per training prompt
sampled from the reference policy (temperature 1, no top-k/top-p, seeded by ``pref_seed``,
independent of ``--seed`` so every method and seed sees the same pairs), scored by the gold
reward (MiniLM similarity to the reference answers, max over references), best = chosen,
worst = rejected. Samples and pairs are cached under ``<work>/align``.

Evaluation on the pooled test prompts of the three sets, **one record per run** (dataset
``offline/qa-mix``; pooled so the paired bootstrap has ~120 prompts; the per-set figures are
in the record's config): greedy responses (bf16 weights) of the method's policy and of the
reference policy; ``gold_reward`` (the main score: continuous, so it separates methods
on ~120 prompts where the binary win rate needs several hundred) and ``win_rate`` (ties
0.5) under the gold reward, ``ref_gold_reward`` of the reference policy on the same
prompts, ``kl_to_ref`` (mean per-token KL(π ‖ π_ref) on the policy's own responses,
fp32), ``response_tokens``; with ``--judge MODEL`` also ``judge_win_rate``. Each record
carries a paired bootstrap interval of the main score against ``dpo``; the leaderboard runs
its own tests (:mod:`bench.core.stats`) and two confound checks (:mod:`bench.align.report`):
each row against DPO at matched KL, read off DPO's sweep over β, learning rate and epochs
(``--set beta=B`` / ``lr=L`` / ``epochs=E``: ``dpo`` rows whose model is named ``…-betaB``,
``…-lrL``, ``…-epE``), and at equal response length.

Cost (the record's ``cost``, :mod:`bench.core.cost`): the parameters of the policy as it
generates (LoRA policies are merged after training, so they have the reference's size) and
its milliseconds per response from a probe after evaluation, since a rerun takes the responses
from the generation cache: the first 8 test prompts generated once more, uncached, greedy,
up to ``max_new_tokens`` new tokens, in batches of ``gen_batch_size``, bf16 weights as in
evaluation; after a one-token warm-up, the median of up to 3 passes, none started once 2 s
are spent (so one pass for a real model on a CPU).

Budget: the default preset is sized so that each method fits 30 minutes on 2 cores once
the preference data is cached; ``aligndistil*`` reuse the ``dpo`` and ``dpo-reverse``
models (and train them first when none are cached). The sizing probe and the measured
wall times per method: docs/measurements/align.md.

Presets (recorded in every result; sizes per QA set):

=========  =====  ====  =====================================================================
preset     train  test  notes
=========  =====  ====  =====================================================================
smoke      8      6     minutes; for trying the pipeline
default    50     40    150 prompts x 4 samples, 48 new tokens, LoRA r=16; each method
                        within 30 min on 2 cores with the preference data cached
full       all    all   paper scale for GPUs: ``--dataset ultrafeedback`` (HuggingFaceH4/
                        ultrafeedback_binarized ``train_prefs`` pairs as they are; test
                        prompts from ``test_prefs`` with their chosen response as the gold
                        reward's reference) and Qwen2.5-1.5B-Instruct as the reference
                        policy by default; full fine-tuning, lr 1e-6, batch 128 (2 x 64
                        accumulated), 1 epoch, 1,024 new tokens (the official scripts)
=========  =====  ====  =====================================================================

The paper's full recipe (needs DISTILLBENCH_ONLINE=1 and GPUs; add ``--judge`` to judge)::

    accelerate launch -m bench run --method dpo --suite align --preset full
    ... --method dpo-reverse ...; ... --method aligndistil ...; ... --method aligndistil-on
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from bench.contracts import AlignContext, recipe_option, resolve_recipe
from bench.core.hf import inference_copy
from bench.errors import UsageError
from bench.instruct.suite import Item, split
from bench.suite import (
    DatasetSpec,
    RunOptions,
    Setting,
    Suite,
    SuiteMetadata,
    attach_baseline_bootstrap,
)

METADATA = SuiteMetadata(
    name="align", version="2", family="align",
    summary="preference alignment: gold reward and win rate vs the reference policy, KL "
            "to it (offline: NQ-open, TruthfulQA, NarrativeQA with a MiniLM gold reward)",
    citation="Rafailov et al. 2023 (DPO), arXiv:2305.18290; Zhang et al. 2025 "
             "(AlignDistil), arXiv:2503.02832",
    main_score="gold_reward", baseline="dpo",
    plot="bench.core.plots:reward_kl_frontier",
    sections="bench.align.report:alignment_tables",
    description="Offline default (CPU budget): SmolLM2-135M-Instruct is the reference "
                "policy (`sft` row); preference pairs are the best/worst of 4 samples per "
                "training prompt under a gold reward (MiniLM cosine to the reference "
                "answers). The tested main score is that gold reward of the greedy "
                "responses (continuous, so a difference of a few hundredths is detectable "
                "on 120 prompts); win rate against the reference policy's responses (ties "
                "0.5) is a column beside it. KL is per token to the reference policy. "
                "`dpo` rows of another model name (`-betaB`, `-lrL`, `-epE`) are DPO's "
                "sweep over β, learning rate and epochs, its gold-reward-vs-KL curve: the "
                "matched-KL table reads every row against that curve, and the equal-length "
                "table controls for response length. The plot shows gold reward against "
                "KL per row. Version 2: gold reward replaced win rate as the main score. "
                "Measurement logs: docs/measurements/align.md.",
    datasets=(DatasetSpec("offline/qa-mix", "NQ-open, TruthfulQA, NarrativeQA prompts with "
                          "reference answers; MiniLM gold reward",
                          stands_in_for="AlpacaEval-2 / MT-Bench / Arena-Hard",
                          licence="CC-BY-SA-3.0 (NQ-open); Apache-2.0 (TruthfulQA, "
                                  "NarrativeQA)"),
              DatasetSpec("ultrafeedback", "UltraFeedback binarized (train_prefs pairs, "
                          "test_prefs prompts)", licence="MIT (UltraFeedback)")),
    settings=(
        Setting("train_per_task", "int", 50, "training prompts per source (null: all)", min=1,
                nullable=True),
        Setting("test_per_task", "int", 40, "test prompts per source (null: all)", min=1,
                nullable=True),
        Setting("max_new_tokens", "int", 48, "tokens generated per response", min=1),
        Setting("max_context_tokens", "int", 128, "prompts are cut to this many tokens",
                min=1),
        Setting("samples_per_prompt", "int", 4, "samples per training prompt for the "
                "preference pairs", min=2),
        Setting("sample_temperature_pref", "float", 1.0, "temperature of those samples",
                min=0),
        Setting("pref_seed", "int", 0, "seed of those samples", min=0),
        Setting("min_margin", "float", 1e-3, "least gold-reward gap of a kept pair", min=0),
        Setting("baseline", "str", "dpo", "method the result's bootstrap interval is against"),
        Setting("gen_batch_size", "int", 32, "prompts generated per batch", min=1),
        Setting("eval_batch_size", "int", 8, "sequences per scoring batch", min=1),
        Setting("reward_model", "str", "all-minilm-l6-v2", "the gold reward's bi-encoder"),
        Setting("dataset", "str", None, "set by --dataset", nullable=True, settable=False),
        Setting("policy_model", "str", "smollm2-135m-instruct", "set by --student",
                settable=False),
    ),
    presets={
        "smoke": {"train_per_task": 8, "test_per_task": 6, "max_new_tokens": 32},
        "default": {},
        "full": {"train_per_task": None, "test_per_task": None, "max_new_tokens": 1024,
                 "max_context_tokens": 1024, "eval_batch_size": 2, "dataset": "ultrafeedback",
                 "policy_model": "Qwen/Qwen2.5-1.5B-Instruct"},
    },
)

SOURCES = ("nq-open", "truthfulqa", "narrativeqa")

def qa_items(source: str, tokenizer: Any, max_context_tokens: int) -> list[Item]:
    """The prompts of one packaged QA set, with reference answers."""
    from bench.core.assets import data_file

    rows = [json.loads(line) for line in
            data_file(source).read_text(encoding="utf-8").splitlines() if line]
    items = []
    for i, row in enumerate(rows):
        refs = tuple(str(a) for a in row["answer"] if str(a).strip())
        if not refs:
            continue
        if source == "narrativeqa":
            ids = tokenizer.encode(row["passage"], add_special_tokens=False)
            story = row["passage"] if len(ids) <= max_context_tokens else \
                tokenizer.decode(ids[:max_context_tokens]) + " ..."
            items.append(Item(f"nqa-{i}", f"Read the story and answer the question.\n\n"
                              f"Story: {story}\n\nQuestion: {row['question']}", refs,
                              row["passage"]))
        else:
            tag = "truthfully" if source == "truthfulqa" else "briefly"
            items.append(Item(f"{source}-{i}", f"Answer the following question {tag}.\n\n"
                              f"Question: {row['question']}", refs, row["question"]))
    return items


class AlignSuite(Suite):
    metadata = METADATA

    def settings(self, options: RunOptions, recipe: Any) -> dict[str, Any]:
        settings = self.resolve_settings(options, recipe)
        if options.limit is not None:
            settings["test_per_task"] = options.limit
        settings["dataset"] = options.dataset or settings["dataset"]
        settings["policy_model"] = options.student or settings["policy_model"]
        return settings

    def run(self, options: RunOptions) -> list[dict[str, Any]]:
        from bench.align.evaluation import GoldReward
        from bench.core.assets import cache_dir, load_bi_encoder, load_causal_lm
        from bench.core.cost import generation_cost
        from bench.core.device import current as current_policy
        from bench.core.generation import chat_prompt_ids

        start = time.perf_counter()
        if options.teacher:
            raise UsageError("--teacher: suite 'align' has no teacher flag; the reference "
                             "policy is --student (AlignDistil's teachers are trained from it)")
        recipe = resolve_recipe(options.method, self.name)
        settings = self.settings(options, recipe)
        work_dir = Path(options.work_dir or cache_dir() / "runs") / "align"
        ref_name = settings["policy_model"]
        reference, tokenizer = load_causal_lm(ref_name, dtype="float32")
        reference = reference.to(current_policy().device)
        reward = GoldReward(load_bi_encoder(settings["reward_model"]))
        dataset_id, pairs, prompts, test, pref_stats = self._data(
            options, settings, reference, tokenizer, reward, work_dir)
        context = AlignContext(options=options, settings=settings, work_dir=work_dir,
                               base_name=ref_name, base=reference,
                               tokenizer=tokenizer, pairs=pairs, prompts=prompts)
        seconds = {"setup_and_preferences": round(time.perf_counter() - start, 1)}
        t0 = time.perf_counter()
        model, model_name = recipe.build_model(context)
        seconds["train"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        scores, gens = self._evaluate(options, settings, model, reference, tokenizer, test,
                                      reward, work_dir)
        seconds["evaluate"] = round(time.perf_counter() - t0, 1)
        context.config.update({"seconds": seconds, "preferences": pref_stats})
        cost = generation_cost(inference_copy(model), tokenizer,
                               [chat_prompt_ids(tokenizer, it.prompt) for it in test],
                               max_new_tokens=settings["max_new_tokens"],
                               batch_size=settings["gen_batch_size"])
        return [self._record(options, settings, dataset_id, test, model_name, scores, gens,
                             context, time.perf_counter() - start, cost)]

    def _data(self, options: RunOptions, settings: dict[str, Any], reference: Any,
              tokenizer: Any, reward: Any, work_dir: Path
              ) -> tuple[str, list[Any], list[list[int]], list[Item], dict[str, Any]]:
        from bench.core.generation import chat_prompt_ids

        dataset = settings["dataset"]
        if dataset == "ultrafeedback":
            from bench.align.evaluation import ultrafeedback

            pairs, test = ultrafeedback(tokenizer, settings)
            prompts = [p.prompt_ids for p in pairs]
            return "ultrafeedback", pairs, prompts, test, {"pairs": len(pairs),
                                                           "source": "ultrafeedback"}
        if dataset in (None, "offline/qa-mix"):
            sources = SOURCES
        elif dataset.removeprefix("offline/") in SOURCES:
            sources = (dataset.removeprefix("offline/"),)
        else:
            raise UsageError(f"--dataset {dataset!r}: not a dataset of suite 'align'; "
                             "choose offline/qa-mix (default), offline/nq-open, "
                             "offline/truthfulqa, offline/narrativeqa or ultrafeedback")
        train, test = [], []
        for source in sources:
            pool_train, pool_test = split(qa_items(source, tokenizer,
                                                   settings["max_context_tokens"]))
            train += pool_train[: settings["train_per_task"]]
            test += pool_test[: settings["test_per_task"]]
        prompts = [chat_prompt_ids(tokenizer, it.prompt) for it in train]
        pairs, stats = self._preferences(settings, reference, tokenizer, reward, train,
                                         prompts, work_dir)
        dataset_id = "offline/qa-mix" if len(sources) > 1 else f"offline/{sources[0]}"
        return dataset_id, pairs, prompts, test, stats

    @staticmethod
    def _preferences(settings: dict[str, Any], reference: Any, tokenizer: Any, reward: Any,
                     train: list[Item], prompts: list[list[int]], work_dir: Path
                     ) -> tuple[list[Any], dict[str, Any]]:
        """Sample, score, pick best/worst; the samples and the pairs are cached."""
        from bench.align.evaluation import GoldReward, preference_pairs
        from bench.core.generation import GenerationCache, Sampling, sample
        from bench.core.hf import model_fingerprint
        from methods.align.dpo import PreferencePair

        n = int(settings["samples_per_prompt"])
        sampling = Sampling(float(settings["sample_temperature_pref"]), None,
                            int(settings["pref_seed"]))
        gen_key = json.dumps([model_fingerprint(reference), "sample", n,
                              settings["max_new_tokens"], sampling.temperature, sampling.seed])
        key = hashlib.sha256(json.dumps([gen_key, settings["reward_model"], GoldReward.rule,
                                         settings["min_margin"], [it.id for it in train]]
                                        ).encode()).hexdigest()[:16]
        path = work_dir / "preferences" / f"{key}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            return [PreferencePair(**p) for p in saved["pairs"]], saved["stats"]
        cache = GenerationCache(work_dir / "generations", gen_key)
        samples = sample(inference_copy(reference), tokenizer, prompts, n=n,
                         max_new_tokens=settings["max_new_tokens"], sampling=sampling,
                         batch_size=settings["gen_batch_size"], cache=cache,
                         label="reference samples (preference data)")
        pairs, stats = preference_pairs([it.id for it in train], prompts, samples,
                                        [it.references for it in train], reward,
                                        float(settings["min_margin"]))
        stats["samples_per_prompt"] = n
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pairs": [p.__dict__ for p in pairs], "stats": stats}))
        tmp.replace(path)
        return pairs, stats

    @staticmethod
    def _evaluate(options: RunOptions, settings: dict[str, Any], model: Any, reference: Any,
                  tokenizer: Any, test: list[Item], reward: Any, work_dir: Path
                  ) -> tuple[dict[str, dict[str, float]], list[Any]]:
        from bench.align.evaluation import kl_to_reference, win_scores
        from bench.core.generation import GenerationCache, chat_prompt_ids, generate
        from bench.core.hf import model_fingerprint

        prompts = [chat_prompt_ids(tokenizer, it.prompt) for it in test]
        outputs = {}
        for role, net in (("reference", reference), ("policy", model)):
            if role == "policy" and model is reference:
                outputs[role] = outputs["reference"]
                continue
            cache = GenerationCache(work_dir / "generations", json.dumps(
                [model_fingerprint(net), "greedy", settings["max_new_tokens"]]))
            outputs[role] = generate(inference_copy(net), tokenizer, prompts,
                                     max_new_tokens=settings["max_new_tokens"],
                                     batch_size=settings["gen_batch_size"], cache=cache,
                                     label=f"{role} responses (test)")
        pol, ref = outputs["policy"], outputs["reference"]
        refs = [it.references for it in test]
        rewards = reward([g.text for g in pol] + [g.text for g in ref], refs + refs)
        r_pol, r_ref = rewards[: len(test)], rewards[len(test):]
        wins = win_scores(r_pol, r_ref, [g.text for g in pol], [g.text for g in ref])
        kls = kl_to_reference(model, reference, [(g.prompt_ids, g.output_ids) for g in pol],
                              tokenizer.pad_token_id, int(settings["eval_batch_size"]))
        ids = [it.id for it in test]
        scores = {"win_rate": dict(zip(ids, wins, strict=True)),
                  "gold_reward": dict(zip(ids, r_pol, strict=True)),
                  "ref_gold_reward": dict(zip(ids, r_ref, strict=True)),
                  "kl_to_ref": dict(zip(ids, kls, strict=True)),
                  "response_tokens": {i: float(len(g.output_ids))
                                     for i, g in zip(ids, pol, strict=True)}}
        judge = getattr(options, "judge", None)
        if judge:
            from bench.align.evaluation import PairwiseJudge
            from bench.core.assets import load_causal_lm

            j_model, j_tok = load_causal_lm(judge)
            j_model = j_model.to(next(reference.parameters()).device)
            probs = PairwiseJudge(j_model, j_tok, judge, int(settings["eval_batch_size"])
                                  ).win_probabilities(
                [it.prompt for it in test], [g.text for g in pol], [g.text for g in ref])
            scores["judge_win_rate"] = dict(zip(ids, probs, strict=True))
        return scores, pol

    def _record(self, options: RunOptions, settings: dict[str, Any], dataset_id: str,
                test: list[Item], model_name: str, scores: dict[str, dict[str, float]],
                gens: list[Any], context: Any, wall: float, cost: dict[str, Any]
                ) -> dict[str, Any]:
        from bench.align.evaluation import GoldReward
        from bench.core.results import new_record

        checksum = hashlib.sha256(json.dumps([[it.id, it.prompt, it.references]
                                              for it in test]).encode()).hexdigest()
        stand_in = dataset_id.startswith("offline/")
        dataset = {"id": dataset_id, "checksum": f"sha256:{checksum}", "split": "test",
                   "offline_stand_in": stand_in,
                   "stands_in_for": self.datasets[0].stands_in_for if stand_in else None,
                   "num_items": len(test)}
        metrics = {m: sum(v.values()) / len(v) for m, v in scores.items()}
        def source_of(item_id: str) -> str:  # offline ids are "<set>-<row>"
            return item_id.rsplit("-", 1)[0] if stand_in else dataset_id

        by_source: dict[str, dict[str, float]] = {}
        for source in sorted({source_of(it.id) for it in test}):
            keys = [it.id for it in test if source_of(it.id) == source]
            by_source[source] = {"n": len(keys), **{m: sum(v[k] for k in keys) / len(keys)
                                                    for m, v in scores.items()}}
        config = {"preset": options.preset, **settings, "reference_policy":
                  context.reference_name, "gold_reward": GoldReward.rule,
                  "judge": getattr(options, "judge", None), "per_source": by_source,
                  **copy.deepcopy(context.config),
                  "samples": [{"id": it.id, "response": g.text}
                              for it, g in list(zip(test, gens, strict=True))[:3]]}
        notes = list(context.notes)
        attach_baseline_bootstrap(config, notes, options, self.name, dataset_id,
                                  self.main_score, scores[self.main_score],
                                  settings["baseline"])
        return new_record(
            suite=self.name, suite_version=self.version, dataset=dataset,
            method=options.method, model=model_name, seed=options.seed,
            preset=options.preset, main_score=self.main_score, metrics=metrics,
            per_item=scores, config=config,
            implementation=recipe_option(resolve_recipe(options.method, self.name),
                                         "implementation"),
            notes=notes, wall_time_s=wall, cost=cost)
