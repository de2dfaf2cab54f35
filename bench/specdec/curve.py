"""The tau-against-training-steps curve of the trained draft heads (``curve_steps``).

What it measures: how a head's acceptance grows with its training budget, for ``eagle``
and ``fspad`` at the same step counts on the same prompts, so the two can be compared at
equal budgets (the leaderboard's "fspad vs eagle at equal training steps" table and its
tau-vs-steps plot, :mod:`bench.specdec.tables`, :mod:`bench.specdec.plots`).

How (all in one run, untimed):

- ``curve_steps`` (a suite setting, comma-separated, strictly increasing, each >= 1 and at
  most the run's total training steps; empty: off, the default preset) names the points.
  The recipe saves the head's weights as they were after each of those optimizer steps
  (:mod:`methods.specdec.snapshots`: one safetensors file per point in the training
  folder) and offers them on its draft as ``curve_snapshots``: objects with ``steps``,
  ``digest`` (sha256 of the weights file) and ``load()`` (a draft with those weights, in
  the run's decoding dtype). The points are intermediate heads of the one training run
  (its warm-up and cosine schedule span the whole run), not separate runs of N steps.
- Each point drafts greedily, speculative decoding only (tau needs no plain pass and no
  timing), over the first ``curve_prompts`` test prompts of each category, every turn, with
  the run's k / tree and ``max_new_tokens``. Per item tau = generated tokens / target
  passes, as the timed pass's per-item ``tau``; a point's ``tau`` is the mean of its
  items' (so Δ in the table is the difference of the plotted means).
- Resumable: each finished point is cached as JSON in ``<work dir>/curve/``, keyed by the
  weights' digest, the target's fingerprint, the decoding settings and the prompts, so a
  rerun (after a kill, or with ``--overwrite``) recomputes only the missing points.

Recorded in the ``all`` record's config (or the one record of a single-category run) as
``tau_curve: [{"steps": N, "tau": mean, "per_item": {item_id: tau}}, ...]``; the settings
``curve_steps`` and ``curve_prompts`` are in every record's config with the others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import UsageError

CURVE_FORMAT = 1
HEAD_METHODS = "eagle and fspad"  # the recipes that offer snapshots (in words, for errors)


def parse_curve_steps(value: Any, where: str = "") -> list[int]:
    """``curve_steps`` as a list: ``None``, ``""`` or ``"none"`` -> ``[]`` (off); ``"25,60"``
    (or a list) -> ``[25, 60]``; anything else, or steps that do not strictly increase
    from >= 1, a one-line :class:`UsageError` (``where``: its prefix, e.g. ``"--set "``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return []
    shown = f"{where}curve_steps={value if isinstance(value, str) else json.dumps(value)}"
    parts = value.split(",") if isinstance(value, str) else \
        [value] if isinstance(value, int) else value
    try:
        steps = [int(str(p).strip()) for p in parts]
    except (TypeError, ValueError):
        raise UsageError(f"{shown}: use training step counts separated by commas (e.g. "
                         "25,60,150), or none") from None
    if not steps:
        return steps
    if steps[0] < 1:
        raise UsageError(f"{shown}: step counts start at 1 (optimizer steps taken)")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise UsageError(f"{shown}: step counts must strictly increase")
    return steps


def check_curve_settings(settings: dict[str, Any], recipe: Any, options: Any,
                         n_train: int | None) -> list[int]:
    """The curve's steps, checked before any work: well-formed, a method that trains a
    head (it has ``planned_steps``), and no step past the run's total where that is known
    from the settings (``n_train``: at most this many training sequences; None: unknown
    until the data is read, then the recipe checks the exact total itself). ``options``:
    the run's :class:`bench.suite.RunOptions` (method and preset)."""
    where = "--set " if "curve_steps" in options.overrides else ""
    steps = parse_curve_steps(settings.get("curve_steps"), where)
    if not steps:
        return steps
    shown = f"{where}curve_steps={settings['curve_steps']}"
    planned = getattr(recipe, "planned_steps", None)
    if planned is None:
        raise UsageError(f"{shown}: method {options.method!r} trains no draft head; the tau "
                         f"curve is for {HEAD_METHODS} (use --set curve_steps=none)")
    total = planned(settings, n_train, options.preset)
    if total is not None and steps[-1] > total:
        raise UsageError(f"{shown}: step {steps[-1]} is past the run's {total} training "
                         f"steps; end the curve at or before {total}")
    return steps


def curve_items(tests: Sequence[tuple[str, Sequence[Any]]], per_category: int) -> list[Any]:
    """The curve's prompts: the first ``per_category`` test items of each category."""
    return [it for _, items in tests for it in items[:per_category]]


def spec_tau(target: Any, draft: Any, tokenizer: Any, item: Any, *, max_new_tokens: int,
             eos_ids: Sequence[int], k: int, tree: Any, max_turns: int | None = None
             ) -> float:
    """Greedy speculative decoding of every turn of ``item``: generated tokens per target
    pass. A later turn follows the earlier turns' speculative answers, which are plain
    decoding's in float32 (lossless), so the conversation is the timed pass's."""
    from bench.specdec import speculative
    from bench.specdec.data import conversation_ids

    answers: list[str] = []
    tokens = passes = 0
    turns = list(item.turns[:max_turns] if max_turns else item.turns)
    for j in range(len(turns)):
        prompt = conversation_ids(tokenizer, turns[: j + 1], answers)
        out = speculative(target, draft, prompt, max_new_tokens, k=k, tree=tree,
                          eos_ids=eos_ids)
        tokens += out.stats.new_tokens
        passes += out.stats.target_passes
        answers.append(tokenizer.decode(out.tokens, skip_special_tokens=True).strip())
    return tokens / max(1, passes)


def point_key(digest: str, target_key: str, decode: dict[str, Any], items: Sequence[Any]
              ) -> str:
    """The cache key of one point: what its per-item tau depend on."""
    tree = decode.get("tree")
    shape = None if tree is None else [tree.total_tokens, tree.depth, tree.top_k]
    blob = json.dumps([CURVE_FORMAT, digest, target_key, decode["k"], shape,
                       decode["max_new_tokens"], decode.get("max_turns"),
                       list(decode["eos_ids"]), [[it.id, list(it.turns)] for it in items]])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def tau_curve(target: Any, draft: Any, tokenizer: Any, items: Sequence[Any], steps: Sequence[int],
              *, decode: dict[str, Any], cache_dir: Path, target_key: str, notes: list[str],
              progress: Callable[..., Any] | None = None) -> list[dict[str, Any]]:
    """One point per step of ``steps`` that the draft has a snapshot for (see the module
    docstring); cached points are read back, not recomputed. ``decode``: the suite's
    ``eos_ids``, ``k``, ``tree``, ``max_turns``, ``max_new_tokens``. A step without a
    snapshot (its file removed by hand) is left out with a note."""
    from bench.core.distributed import is_main
    from bench.core.io import atomic_write_text

    snapshots = {s.steps: s for s in getattr(draft, "curve_snapshots", ())}
    points = []
    for n in steps:
        snap = snapshots.get(n)
        if snap is None:
            notes.append(f"tau curve: no head snapshot at step {n}; point left out (delete "
                         "the head's training folder to retrain with snapshots)")
            continue
        path = cache_dir / f"point-{point_key(snap.digest, target_key, decode, items)}.json"
        if path.is_file():
            points.append(json.loads(path.read_text(encoding="utf-8"))["point"])
            if progress is not None:
                progress(len(items), step=n)
            continue
        at_step = snap.load()
        per_item = {}
        for it in items:
            per_item[it.id] = spec_tau(target, at_step, tokenizer, it, **decode)
            if progress is not None:
                progress(1, step=n)
        point = {"steps": n, "tau": sum(per_item.values()) / len(per_item),
                 "per_item": per_item}
        if is_main():  # every process computes the same point; one writes it
            atomic_write_text(path, json.dumps({"format": CURVE_FORMAT, "point": point},
                                               indent=1))
        points.append(point)
    return points


def run_curve(settings: dict[str, Any], tests: Sequence[tuple[str, Sequence[Any]]],
              target: Any, draft: Any, tokenizer: Any, decode: dict[str, Any],
              work_dir: Path, notes: list[str], label: str) -> list[dict[str, Any]] | None:
    """The suite's call: the run's curve, or None when ``curve_steps`` is off."""
    from bench.core.hf import model_fingerprint
    from bench.core.progress import progress_bar

    steps = parse_curve_steps(settings.get("curve_steps"))
    if not steps or draft is None:
        return None
    items = curve_items(tests, int(settings["curve_prompts"]))
    target_key = model_fingerprint(target, str(settings.get("dtype")))
    with progress_bar(len(items) * len(steps), f"{label}: tau curve") as advance:
        return tau_curve(target, draft, tokenizer, items, steps, decode=decode,
                         cache_dir=work_dir / "curve", target_key=target_key, notes=notes,
                         progress=advance)
