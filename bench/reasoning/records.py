"""The ``gsm8k`` suite's result record of one method on one dataset: metrics per item,
the dataset's identity (``<id>@validation`` when validation items were scored), the recipe,
the teacher, the evaluation protocol and the cost per answer."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from bench.contracts import recipe_option, resolve_recipe
from bench.reasoning.lm_eval_tasks import validation_task_name
from bench.reasoning.splits import Dataset
from bench.suite import RunOptions, Suite, attach_baseline_bootstrap

METRICS = ("exact_match", "exact_match_flexible", "generated_tokens", "latency_s")


def scored_dataset_id(ds: Dataset, split: str) -> str:
    """The recorded dataset id: validation scores are their own dataset, so they never
    share a leaderboard cell or a baseline comparison with test scores."""
    return ds.id + ("@validation" if split == "validation" else "")


def gsm8k_record(suite: Suite, options: RunOptions, settings: dict[str, Any], ds: Dataset,
                 rows: list[dict[str, Any]], model_name: str, context: Any,
                 teacher_info: dict[str, Any], protocol: dict[str, Any],
                 seconds: dict[str, float], wall: float, cost: dict[str, Any]
                 ) -> dict[str, Any]:
    from bench.core.results import new_record

    split = settings["eval_split"]
    dataset_id = scored_dataset_id(ds, split)
    per_item = {m: {r["id"]: r[m] for r in rows if m in r} for m in METRICS}
    metrics = {m: sum(v.values()) / len(v) for m, v in per_item.items() if v}
    checksum = hashlib.sha256(json.dumps([[r["id"], r["question"], r["target"]]
                                          for r in rows]).encode()).hexdigest()
    dataset = {"id": dataset_id, "checksum": f"sha256:{checksum}", "split": split,
               "offline_stand_in": ds.offline,
               "stands_in_for": "GSM8K" if ds.offline else None, "num_items": len(rows)}
    task = validation_task_name(ds.task) if split == "validation" else ds.task
    config = {"preset": options.preset, **settings, "lm_eval_task": task,
              "teacher": teacher_info, "eval_protocol": protocol, "seconds": seconds,
              **copy.deepcopy(context.config),
              # every answer (lm-eval's log_samples): lets a reader see how rows fail
              "samples": [{"id": r["id"], "output": r["output"]} for r in rows]}
    notes = list(context.notes)
    attach_baseline_bootstrap(config, notes, options, suite.name, dataset_id, "exact_match",
                              per_item["exact_match"], settings["baseline"])
    recipe_impl = recipe_option(resolve_recipe(options.method, suite.name), "implementation")
    return new_record(
        suite=suite.name, suite_version=suite.version, dataset=dataset,
        method=options.method, model=model_name, seed=options.seed,
        preset=options.preset, main_score=suite.main_score, metrics=metrics,
        per_item=per_item, config=config, implementation=recipe_impl, notes=notes,
        wall_time_s=wall, cost=cost)


def answer_cost(model: Any, rows: list[dict[str, Any]], protocol: dict[str, Any],
                split: str = "test") -> dict[str, Any]:
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
        how = f"every {split} answer timed one at a time during evaluation"
    else:
        how = f"the first {len(timed)} {split} answers timed one at a time during evaluation"
    per = (f"answer of up to {protocol['max_gen_toks']} new tokens, greedy, batch 1, "
           f"{dtype} weights ({how})")
    ms = sum(timed) / len(timed) * 1000.0 if timed else None
    return cost_entry(parameter_count(model), ms, per)
