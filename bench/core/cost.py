"""Size and inference cost of the model behind a result row.

Distillation trades a little quality for a smaller, faster model, so a score alone says
half of what a row means. Every record therefore carries a ``cost`` field
(:func:`cost_entry`, schema in :mod:`bench.core.results`):

- ``parameters``: the unique parameters of the model(s) that produce the row's outputs
  (:func:`parameter_count`): tied input/output embeddings count once, a peft model counts
  its base weights plus its adapters (as it runs, unmerged), an object holding several
  models counts those it holds. ``null`` where there is no model (BM25).
- ``ms_per_item``: wall milliseconds per item on the machine in the record's provenance,
  measured with :func:`time.perf_counter` (:func:`time_per_item`), ``null`` where the suite
  does not time the row.
- ``per``: what one item is and under which conditions (tokens, decoding, batch size,
  weight dtype, and how it was timed), since a time means nothing without them.

Suites time either the work itself as it happens, where it is never cached (image
prediction, lm-eval answers, speculative decoding), or a small fixed probe after evaluation
where outputs are cached (:func:`generation_probe`; the retrieval probe of
:mod:`bench.retrieval.costs`), so a rerun served by a cache still records a real time. Each
suite's docstring and each ``per`` say which.

torch is imported inside the functions only: the module stays importable without it.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

PROBE_PROMPTS = 8  # prompts of a generation probe: one batch, seconds on a 2-core CPU
# A probe's passes: the median of up to 3, none started once 2 s are spent (cheap probes
# get a median, a real model on a CPU one pass).
PROBE_REPEATS, PROBE_BUDGET_S = 3, 2.0


def cost_entry(parameters: int | None, ms_per_item: float | None, per: str) -> dict[str, Any]:
    """The record's ``cost`` field; raises :class:`ValueError` on a negative, non-finite or
    non-numeric value, or an empty ``per``."""
    if parameters is not None and (isinstance(parameters, bool)
                                   or not isinstance(parameters, int) or parameters < 0):
        raise ValueError(f"cost parameters must be an integer >= 0 or None, got {parameters!r}")
    if ms_per_item is not None:
        if isinstance(ms_per_item, bool) or not isinstance(ms_per_item, int | float) \
                or not math.isfinite(ms_per_item) or ms_per_item < 0:
            raise ValueError(f"cost ms_per_item must be a finite number >= 0 or None, got "
                             f"{ms_per_item!r}")
        # 4 significant digits: timing noise is far larger, and a tiny positive time
        # must not round to 0
        ms_per_item = float(f"{float(ms_per_item):.4g}")
    if not isinstance(per, str) or not per.strip():
        raise ValueError("cost per must say what one item is")
    return {"parameters": parameters, "ms_per_item": ms_per_item, "per": per}


# -- parameters ---------------------------------------------------------------------------

def held_modules(obj: Any, depth: int = 2) -> list[Any]:
    """The torch modules ``obj`` is or holds: ``obj`` itself when it is a module, else the
    modules among its attributes, looking ``depth`` levels deep (a reranker holding an
    encoder object holding the model). Attribute order; ``None`` holds nothing."""
    import torch

    if obj is None:
        return []
    if isinstance(obj, torch.nn.Module):
        return [obj]
    if depth <= 0 or not hasattr(obj, "__dict__") or isinstance(obj, type):
        return []
    found: list[Any] = []
    for value in vars(obj).values():
        found += held_modules(value, depth - 1)
    return found


def _keys(modules: Iterable[Any]) -> Iterable[tuple[Any, int]]:
    """(identity, size) of every parameter: two parameters that alias one storage with the
    same shape are one parameter (tied embeddings, a draft sharing the target's head)."""
    for module in modules:
        for p in module.parameters():
            if p.device.type == "meta" or p.numel() == 0:
                yield id(p), p.numel()
            else:
                yield (p.data_ptr(), p.dtype, tuple(p.shape)), p.numel()


def parameter_count(*models: Any, exclude: Any = None) -> int:
    """Unique parameters of ``models`` (modules, or objects holding modules: see
    :func:`held_modules`; pass the evaluated model itself where an object also holds
    models that do not run), each counted once however often it is shared or tied;
    parameters of ``exclude`` (a module or object, e.g. a draft's target) are left out."""
    modules = [m for obj in models for m in held_modules(obj)]
    skip = {key for key, _ in _keys(held_modules(exclude))}
    seen: set[Any] = set()
    total = 0
    for key, size in _keys(modules):
        if key not in seen and key not in skip:
            seen.add(key)
            total += size
    return total


def weights_dtype(*models: Any) -> str:
    """The dtype that holds most parameters of ``models``, short ("bf16", "fp32", ...), for
    a cost's ``per`` ("unknown" without parameters)."""
    sizes: dict[str, int] = {}
    for module in (m for obj in models for m in held_modules(obj)):
        for p in module.parameters():
            sizes[str(p.dtype)] = sizes.get(str(p.dtype), 0) + p.numel()
    if not sizes:
        return "unknown"
    name = max(sizes, key=sizes.__getitem__).removeprefix("torch.")
    return {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}.get(name, name)


# -- time ---------------------------------------------------------------------------------

def _synchronize() -> None:
    """Wait for queued GPU work, so a wall time covers it (no-op without CUDA)."""
    from bench.core.device import cuda_available

    torch = sys.modules.get("torch")
    if torch is not None and cuda_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_per_item(run: Callable[[], object], items: int, *, repeats: int = 3,
                  budget_s: float | None = None,
                  warmup: Callable[[], object] | None = None) -> float:
    """Milliseconds per item of ``run()``, which processes ``items`` items: the median wall
    time (:func:`time.perf_counter`) of up to ``repeats`` calls divided by ``items``, after
    one untimed call of ``warmup`` (lazy initialisation, kernel selection) when given. With
    ``budget_s`` no call starts once the timed calls have taken that long, so a cheap probe
    gets the median of ``repeats`` and one that takes seconds runs once."""
    if items < 1 or repeats < 1:
        raise ValueError(f"need items >= 1 and repeats >= 1, got {items} and {repeats}")
    if warmup is not None:
        warmup()
        _synchronize()
    seconds: list[float] = []
    while len(seconds) < repeats and (budget_s is None or not seconds
                                      or sum(seconds) < budget_s):
        start = time.perf_counter()
        run()
        _synchronize()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) / items * 1000.0


def ms_per_item(seconds: float, items: int) -> float | None:
    """A directly measured wall time spread over its items (None without items)."""
    return seconds / items * 1000.0 if items > 0 else None


def generation_probe(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *,
                     max_new_tokens: int, batch_size: int) -> float:
    """Milliseconds per response of greedy generation of ``prompts`` (token ids) in
    left-padded batches of ``batch_size``, uncached, after an untimed one-token warm-up:
    the median of :data:`PROBE_REPEATS` passes, or one pass when it takes
    :data:`PROBE_BUDGET_S` or more (the usual case for a real model on a CPU)."""
    from bench.core.generation import generate_batch

    if not prompts:
        raise ValueError("a generation probe needs at least one prompt")
    chunks = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]

    def run() -> None:
        for chunk in chunks:
            generate_batch(model, tokenizer, chunk, max_new_tokens=max_new_tokens)

    return time_per_item(run, len(prompts), repeats=PROBE_REPEATS, budget_s=PROBE_BUDGET_S,
                         warmup=lambda: generate_batch(model, tokenizer, prompts[:1],
                                                       max_new_tokens=1))


def generation_cost(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *,
                    max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """The cost of a row whose items are greedy responses: ``model``'s parameters and
    :func:`generation_probe` on the first :data:`PROBE_PROMPTS` of ``prompts`` (the
    evaluated prompts in order; the evaluation's responses may have come from a cache)."""
    probe = list(prompts[:PROBE_PROMPTS])
    ms = generation_probe(model, tokenizer, probe, max_new_tokens=max_new_tokens,
                          batch_size=batch_size)
    per = (f"response of up to {max_new_tokens} new tokens, greedy, batch "
           f"{min(batch_size, len(probe))}, {weights_dtype(model)} weights (probe: the first "
           f"{len(probe)} evaluated prompts generated again, uncached, after evaluation)")
    return cost_entry(parameter_count(model), ms, per)
