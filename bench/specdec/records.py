"""Result records of the ``specbench`` suite (assembled from :mod:`bench.specdec.evaluation`).

One record per category and one over all prompts (see :mod:`bench.specdec.suite`). What a
record holds beyond the timing metrics:

- the decoding ``dtype`` in its config and, when it is not the default float32, in its
  model name (:func:`row_model_name`: ``…-bf16``), because the leaderboard groups rows by
  (method, model): float32 and bfloat16 rows must never be averaged as seeds of one row;
- the losslessness check of that dtype: float32 ``lossless`` (token-exact), bfloat16
  ``token_agreement`` with plain bf16 decoding (config ``lossless_check`` says which,
  and a bf16 record's notes say so in words);
- the A/B order: per item ``spec_first`` (1: speculative ran first) and ``order_seed``;
- the cost model of :mod:`bench.specdec.costs`: metrics ``c``, ``v`` and
  ``break_even_tau`` (one probe per run, the same in every record of the run), the probe's
  details in config ``cost_probe``;
- with ``curve_steps`` (eagle, fspad), the ``all`` record's config ``tau_curve``: tau of
  the head after each of those training steps, per item (:mod:`bench.specdec.curve`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.suite import RunOptions

DEFAULT_DTYPE = "float32"
DTYPE_TAGS = {"bfloat16": "bf16"}


def row_model_name(model_name: str, settings: dict[str, Any], *, draft: bool = True) -> str:
    """The record's model name: the recipe's, plus a tag for each non-default setting that
    changes what is timed, so such runs form rows (and result files) of their own:
    ``-tree<total>.<depth>.<top_k>`` for an EAGLE-2 tree (only with a ``draft``: plain
    decoding has no tree), ``-vocab<N>`` for an FR-Spec draft vocabulary, ``-bf16`` for
    bfloat16 decoding. Runs at the defaults keep their names."""
    from bench.specdec.suite import parse_tree

    tree = parse_tree(settings.get("tree"))
    if tree is not None and draft:
        model_name += f"-tree{tree.total_tokens}.{tree.depth}.{tree.top_k}"
    if settings.get("draft_vocab"):
        model_name += f"-vocab{settings['draft_vocab']}"
    dtype = settings.get("dtype", DEFAULT_DTYPE)
    if dtype != DEFAULT_DTYPE:
        model_name += f"-{DTYPE_TAGS.get(dtype, dtype)}"
    return model_name


def plain_model_name(model: str) -> str:
    """The model name of the ``ar`` row a draft row ``model`` is timed against: its target
    (the part before ``+``) decoded in the same dtype (``-bf16`` kept, draft-only tags such
    as ``-tree…`` and ``-vocab…`` dropped). The leaderboard's ``baseline_model``."""
    target = model.split("+", 1)[0]
    if target == model:
        return model
    for tag in DTYPE_TAGS.values():
        if model.endswith(f"-{tag}"):
            return f"{target}-{tag}"
    return target


def lossless_check(settings: dict[str, Any]) -> str:
    """``"exact"`` in float32, ``"agreement"`` in bfloat16 (see the module docstring)."""
    return "exact" if settings.get("dtype", DEFAULT_DTYPE) == DEFAULT_DTYPE else "agreement"


@dataclass
class RunParts:
    """What every record of one run shares."""

    suite: Any  # the SpecBenchSuite
    options: RunOptions
    settings: dict[str, Any]
    offline: bool
    model_name: str
    context: Any  # SpecContext
    wall: float
    tree: Any
    probe: Any  # bench.specdec.costs.CostProbe


def build_record(run: RunParts, dataset_id: str, category: str, items: list[Any],
                 results: list[Any], sampled: list[Any], check: dict[str, Any] | None,
                 cost: dict[str, Any], *, tau_curve: list[dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
    """The record of one group of items (a category, or all); ``tau_curve`` (the ``all``
    record's, :mod:`bench.specdec.curve`) goes into its config."""
    import torch

    from bench.core.results import new_record
    from bench.specdec import evaluation as ev
    from bench.specdec.data import CATEGORIES, items_checksum

    settings, options = run.settings, run.options
    mode = lossless_check(settings)
    stands_in = {c.name: c.stands_in_for for c in CATEGORIES}
    dataset = {"id": dataset_id, "split": "test", "offline_stand_in": run.offline,
               "checksum": items_checksum(items),
               "stands_in_for": (stands_in.get(category, "Spec-Bench overall")
                                 if run.offline else None), "num_items": len(results)}
    metrics = ev.group_metrics(results, mode)
    if sampled:
        metrics |= {f"{name}_sampling": value
                    for name, value in ev.group_metrics(sampled).items()
                    if name != "lossless"}
    if check is not None and check["p_value"] is not None:
        metrics["sampling_p"] = check["p_value"]
    metrics |= run.probe.metrics()
    exact = all(r.identical for r in results)
    config = {"preset": options.preset, **settings, "target": run.context.target_name,
              "decoding": "tree" if run.tree is not None else "chain",
              "torch_threads": torch.get_num_threads(), **run.context.config,
              "lossless_check": mode,
              "lossless": exact if mode == "exact" else None,
              "identical": {r.id: r.identical for r in results},
              "samples": [{"id": r.id, "plain_output": r.text} for r in results[:2]],
              "sampling_speed_items": len(sampled), "cost_probe": run.probe.config()}
    if mode == "agreement":
        config["token_agreement"] = metrics["token_agreement"]
    if check is not None:
        config["sampling_check"] = check
    if tau_curve is not None:
        config["tau_curve"] = tau_curve
    notes = list(run.context.notes)
    if mode == "exact" and not exact:
        notes.append("LOSSLESS CHECK FAILED: some greedy outputs differ from plain "
                     "decoding (see config.identical)")
    if mode == "agreement":
        # the same words in every category's record (the value is the token_agreement
        # metric): a row's notes are joined over its records and should read once
        notes.append(f"{settings['dtype']} row: checked by token agreement with plain "
                     f"{settings['dtype']} decoding (the token_agreement metric), not by "
                     "exactness: a batched verification forward may round differently from "
                     "a one-token forward and flip a near-tied greedy token")
    if check is not None and check["passed"] is False:
        notes.append(f"sampling check rejected the target distribution "
                     f"(p = {check['p_value']:.2g})")
    per_item = ev.per_item_scores(results, mode)
    if sampled:
        per_item |= {f"{name}_sampling": scores for name, scores in
                     ev.per_item_scores(sampled).items() if name in ("speedup", "tau")}
    _attach_bootstrap(config, notes, options, run.suite.name, dataset_id,
                      per_item["speedup"], settings["baseline"], settings["dtype"])
    return new_record(
        suite=run.suite.name, suite_version=run.suite.version, dataset=dataset,
        method=options.method, model=run.model_name, seed=options.seed,
        preset=options.preset, main_score=run.suite.main_score, metrics=metrics,
        per_item=per_item, config=config,
        implementation=run.context.config.get("implementation", "full"), notes=notes,
        wall_time_s=run.wall, cost=cost)


def _attach_bootstrap(config: dict[str, Any], notes: list[str], options: RunOptions,
                      suite: str, dataset_id: str, scores: dict[str, float], baseline: str,
                      dtype: str) -> None:
    """:func:`bench.suite.attach_baseline_bootstrap` against the baseline's result of the
    same decoding dtype only (a result without one is float32, suite version 1)."""
    import math

    from bench.core.results import ResultStore
    from bench.core.stats import bootstrap_ci
    from bench.suite import limited_id

    if baseline == options.method:
        return
    wanted = limited_id(dataset_id, options.limit)
    base = [r for r in ResultStore(options.out).load(suite)
            if r["method"] == baseline and r["dataset"]["id"] == wanted
            and r["seed"] == options.seed and r["preset"] == options.preset
            and r["config"].get("dtype", DEFAULT_DTYPE) == dtype]
    if not base:
        notes.append(f"no {baseline!r} result for this dataset/seed/preset/dtype in "
                     f"{options.out} yet: no bootstrap interval against it")
        return
    delta, lo, hi = bootstrap_ci(scores, base[0]["per_item"]["speedup"])
    if not all(math.isfinite(v) for v in (delta, lo, hi)):
        notes.append(f"fewer than 2 items shared with the {baseline!r} result: no interval")
        return
    config["paired_bootstrap_vs_baseline"] = {"baseline": baseline, "delta": delta,
                                              "ci95": [lo, hi], "n_resamples": 10000}
