"""Batched generation (greedy, or seeded sampling) with a chat template, optional top-k
logits, and a disk cache.

Used by every suite that generates (``instruct`` today; ``align``/``gsm8k``/``specbench``
later). Prompts are rendered with the tokenizer's chat template, sorted by length and
left-padded in batches (batch 32 gives ~8x the new tokens/s of batch 1 on a 2-core
CPU), decoded greedily until EOS or ``max_new_tokens``.

With ``topk=k`` the distribution behind every generated token is kept as its top k logits
(float32 values, int32 ids) plus the log-normaliser over the whole vocabulary: these are
exactly the teacher logits a token-level loss needs at
the response positions (the logits of step j condition on the prompt and the first j
generated tokens), so teacher responses and their top-k cache come from one pass.

Generations are cached per (model fingerprint, settings, prompt token ids) in a JSONL
file plus one safetensors file of top-k logits per item, written atomically, so an
interrupted run keeps every finished batch and a rerun generates only what is missing.

Sampling (:func:`sample`, used by ``align`` for preference data): ``n`` responses per prompt
with temperature / optional nucleus (top-p) sampling and no top-k cut (``top_k=0``, so a
model's own generation config cannot add one). HF ``generate`` draws from torch's global
RNG and takes no ``torch.Generator``, so each batch runs inside ``torch.random.fork_rng``
seeded from (``seed``, the batch's prompt keys): the caller's RNG state is untouched, and
the same prompts in the same batches give the same samples. Sample ``j`` of a prompt is
cached under the prompt's key salted with ``j`` (:meth:`GenerationCache.key`); greedy
entries keep their unsalted keys, so existing caches and callers are unchanged.

Several processes (``accelerate launch``): the batches are spread over the processes and
gathered (:func:`bench.core.distributed.map_sharded`), so each process returns every
generation; only the main process writes the cache. Greedy outputs equal one process's
where a prompt lands in the same batch (batched generation is not batch-invariant:
left-padding changes with the batch's longest prompt, so a different split of the
batches may change a token where two logits nearly tie).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.core.distributed import barrier, is_main, map_sharded


@dataclass
class Generation:
    prompt_ids: list[int]
    output_ids: list[int]  # generated tokens, EOS included when it was produced
    text: str
    topk_values: torch.Tensor | None = None  # [len(output_ids), k] float32
    topk_indices: torch.Tensor | None = None  # [len(output_ids), k] int32
    topk_lse: torch.Tensor | None = None  # [len(output_ids)] float32 log-sum-exp over V
    sample: int | None = None  # index j of a sampled response (None: greedy)


@dataclass(frozen=True)
class Sampling:
    """Ancestral sampling settings: temperature, optional top-p, and the base seed."""

    temperature: float = 1.0
    top_p: float | None = None
    seed: int = 0


def chat_prompt_ids(tokenizer: Any, prompt: str, *, system: str | None = None) -> list[int]:
    """Token ids of one user turn rendered with the chat template, ready to generate."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer versions
        ids = ids["input_ids"]
    return list(ids)


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a response: the generation config's EOS ids and the tokenizer's."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _trim(tokens: list[int], stop: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in stop:
            return tokens[: i + 1]
    return tokens


@torch.no_grad()
def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *,
                   max_new_tokens: int, topk: int | None = None,
                   sampling: Sampling | None = None) -> list[Generation]:
    """Greedy (or, with ``sampling``, seeded sampled) continuations of ``prompts`` (token
    ids), one left-padded batch."""
    from bench.core.hf import left_pad

    input_ids, attention_mask, _ = left_pad(prompts, tokenizer.pad_token_id)
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    stop = stop_ids(model, tokenizer)
    kwargs: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None,
                              "top_k": None}
    rng: Any = contextlib.nullcontext()
    if sampling is not None:
        kwargs = {"do_sample": True, "temperature": sampling.temperature,
                  "top_p": sampling.top_p or 1.0, "top_k": 0}
        device = model.device
        rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    with rng:
        if sampling is not None:
            batch_key = json.dumps([sampling.seed, [list(p) for p in prompts]])
            torch.manual_seed(int(hashlib.sha256(batch_key.encode()).hexdigest()[:15], 16))
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                             max_new_tokens=max_new_tokens, eos_token_id=stop,
                             pad_token_id=tokenizer.pad_token_id,
                             return_dict_in_generate=True, output_logits=topk is not None,
                             **kwargs)
    new = out.sequences[:, input_ids.shape[1]:].tolist()
    results = []
    for row, (prompt, tokens) in enumerate(zip(prompts, new, strict=True)):
        tokens = _trim(tokens, set(stop))
        gen = Generation(list(prompt), tokens,
                         tokenizer.decode(tokens, skip_special_tokens=True).strip())
        if topk is not None and tokens:
            from bench.core.topk import topk_lse_of

            logits = torch.stack([step[row] for step in out.logits[: len(tokens)]]).cpu()
            gen.topk_values, gen.topk_indices, gen.topk_lse = topk_lse_of(logits, topk)
        results.append(gen)
    return results


@torch.no_grad()
def _add_topk(model: Any, tokenizer: Any, gens: Sequence[Generation], topk: int,
              batch_size: int, cache: GenerationCache | None, progress: bool) -> None:
    """Top-k logits and normaliser of cached generations, by one teacher-forced pass."""
    from bench.core.progress import progress_bar
    from bench.core.topk import topk_lse_of

    with progress_bar(len(gens), "teacher logits (cached responses)", enabled=progress) as adv:
        for start in range(0, len(gens), batch_size):
            chunk = gens[start:start + batch_size]
            rows = [g.prompt_ids + g.output_ids for g in chunk]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
            logits = model(input_ids=ids, attention_mask=mask).logits
            for i, g in enumerate(chunk):
                p, n = len(g.prompt_ids), len(g.output_ids)
                g.topk_values, g.topk_indices, g.topk_lse = topk_lse_of(
                    logits[i, p - 1: p - 1 + n], topk)
            if cache is not None:
                cache.put(chunk)
            adv(len(chunk))


class GenerationCache:
    """Generations of one model under one setting, keyed by prompt token ids."""

    def __init__(self, root: Path, model_key: str) -> None:
        self.dir = Path(root) / hashlib.sha256(model_key.encode()).hexdigest()[:16]
        self.index = self.dir / "generations.jsonl"
        from bench.core.io import read_jsonl

        self.items: dict[str, dict[str, Any]] = {row["key"]: row for row in read_jsonl(self.index)}

    @staticmethod
    def key(prompt_ids: Sequence[int], sample: int | None = None) -> str:
        """The entry key: the prompt's ids, salted with the sample index when sampled."""
        payload = list(prompt_ids) if sample is None else [list(prompt_ids), sample]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]

    def get(self, prompt_ids: Sequence[int], topk: int | None,
            sample: int | None = None) -> Generation | None:
        row = self.items.get(self.key(prompt_ids, sample))
        if row is None:
            return None
        gen = Generation(list(prompt_ids), row["output_ids"], row["text"], sample=sample)
        if topk is not None and row["output_ids"]:
            path = self.dir / "topk" / f"{row['key']}.safetensors"
            if not path.exists():
                return None
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if tensors["values"].shape[-1] < topk or "lse" not in tensors:
                return None  # entries of older versions lack the normaliser: regenerate
            gen.topk_values = tensors["values"][:, :topk].float()
            gen.topk_indices = tensors["indices"][:, :topk]
            gen.topk_lse = tensors["lse"]
        return gen

    def put(self, gens: Sequence[Generation]) -> None:
        """Remember ``gens``; the main process also writes them (the others hold the same
        entries in memory: every process of a run puts the same gathered generations)."""
        from bench.core.io import append_jsonl, atomic_save_tensors

        writes = is_main()
        for gen in gens:
            key = self.key(gen.prompt_ids, gen.sample)
            if gen.topk_values is not None and writes:
                atomic_save_tensors({"values": gen.topk_values, "indices": gen.topk_indices,
                                     "lse": gen.topk_lse},
                                    self.dir / "topk" / f"{key}.safetensors")
            self.items[key] = {"key": key, "output_ids": gen.output_ids, "text": gen.text}
        if not writes:
            return
        # Whole lines, after the tensors: a kill loses at most the batch in flight.
        append_jsonl(self.index, [self.items[self.key(g.prompt_ids, g.sample)] for g in gens])


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, batch_size: int = 32, topk: int | None = None,
             cache: GenerationCache | None = None, label: str = "generate",
             progress: bool = True) -> list[Generation]:
    """Greedy generations for ``prompts`` in input order, batched by length, cached."""
    from bench.core.progress import progress_bar

    results: list[Generation | None] = [None] * len(prompts)
    todo, rescore = [], []
    for i, prompt in enumerate(prompts):
        hit = cache.get(prompt, topk) if cache is not None else None
        if hit is not None:
            results[i] = hit
            continue
        text_only = cache.get(prompt, None) if cache is not None and topk else None
        if text_only is not None and text_only.output_ids:
            rescore.append(i)  # tokens cached by an older version, logits missing
            results[i] = text_only
        else:
            todo.append(i)
    if rescore:
        _add_topk(model, tokenizer, [results[i] for i in rescore], topk, batch_size, cache,
                  progress)
    todo.sort(key=lambda i: (len(prompts[i]), i))  # similar lengths share a batch
    chunks = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
    with progress_bar(len(todo), label, enabled=progress and bool(todo)) as advance:
        for chunk, gens in map_sharded(chunks, lambda chunk: generate_batch(
                model, tokenizer, [prompts[i] for i in chunk], max_new_tokens=max_new_tokens,
                topk=topk)):
            if cache is not None:
                cache.put(gens)
            for i, gen in zip(chunk, gens, strict=True):
                results[i] = gen
            advance(len(chunk), new_tokens=sum(len(g.output_ids) for g in gens))
    barrier()  # the main process's cache files are complete before anyone reads them
    return [r for r in results if r is not None]


def sample(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, n: int,
           max_new_tokens: int, sampling: Sampling = Sampling(), batch_size: int = 32,
           cache: GenerationCache | None = None, label: str = "sample",
           progress: bool = True) -> list[list[Generation]]:
    """``n`` sampled responses per prompt, ``[len(prompts)][n]``, batched and cached.

    A batch holds about ``batch_size`` rows (``batch_size // n`` prompts, each repeated
    ``n`` times); see the module docstring for seeding and cache keys.
    """
    from bench.core.progress import progress_bar

    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    results: list[list[Generation | None]] = [[None] * n for _ in prompts]
    todo = []
    for i, prompt in enumerate(prompts):
        for j in range(n):
            hit = cache.get(prompt, None, j) if cache is not None else None
            if hit is not None:
                results[i][j] = hit
        if any(g is None for g in results[i]):
            todo.append(i)
    todo.sort(key=lambda i: (len(prompts[i]), i))
    per_batch = max(1, batch_size // n)
    chunks = [todo[start:start + per_batch] for start in range(0, len(todo), per_batch)]
    with progress_bar(len(todo), label, enabled=progress and bool(todo)) as advance:
        for chunk, gens in map_sharded(chunks, lambda chunk: generate_batch(
                model, tokenizer, [prompts[i] for i in chunk for _ in range(n)],
                max_new_tokens=max_new_tokens, sampling=sampling)):
            for k, gen in enumerate(gens):
                gen.sample = k % n
                results[chunk[k // n]][k % n] = gen
            if cache is not None:
                cache.put(gens)
            advance(len(chunk), new_tokens=sum(len(g.output_ids) for g in gens))
    barrier()
    return [[g for g in row if g is not None] for row in results]
