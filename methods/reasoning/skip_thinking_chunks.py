"""Skip-Thinking data components: rationale chunkers, chunk-wise examples, skippable chunks.

Skip-Thinking (Chen, Zhou, Liang, Sun, Liu 2025, "Skip-Thinking: Chunk-wise Chain-of-Thought
Distillation Enable Smaller Language Models to Reason Better and Faster", arXiv:2505.18642,
EMNLP 2025) has two stages:

- **chunk-wise training (CWT)**: the teacher's rationale is divided into chunks and the
  student (SLM) "learns from only one chunk per iteration", the preceding chunks given as
  context, so the few core reasoning tokens are not averaged away among many easy tokens of
  one long target. Chunks come from a *chunk data generator*: **average chunking (AC)** or
  **search-based chunking (SBC)**, "a heuristic search to divide the rationale into internal
  semantically coherent chunks" (abstract); the paper reports SBC usually beats AC and names
  possible local optima of SBC as a limitation.
- **skip-thinking training (STT)**: a *skip data generator* finds the non-reasoning middle
  ("medium") chunks the student can omit while still answering correctly, and the student
  learns to skip them, so it reaches the answer with fewer generated tokens.

What we could and could not read. Offline we had the abstract (arXiv, ACL Anthology
2025.emnlp-main.610) and secondary summaries; the method section's equations and
hyperparameters were not available, and we found no official code. The summaries state
that SBC starts from existing boundaries and uses the current student's loss as its
heuristic signal, adjusting boundaries greedily toward internally coherent, easier-to-learn
chunks, and that STT removes chunks one at a time and keeps a removal only if the CWT-trained
student still answers correctly. Our interpretations, each marked [ours]:

- **units** [ours]: every chunker works on any sequence of units (token ids, token strings
  or sentences/lines); the recipe chooses. Chunks are contiguous, non-empty, cover the
  rationale in order, and the final answer line stays in the last chunk.
- **AC**: ``n_chunks`` contiguous chunks of near-equal size (sizes differ by at most one,
  the longer ones first), or consecutive chunks of ``chunk_size`` units (last one shorter).
- **SBC** [ours in detail]: start from the AC boundaries and run steepest-descent local
  search over the interior boundaries: each step tries moving every boundary by up to
  ``max_shift`` units either way (chunk sizes kept within ``[min_size, max_size]``) and
  applies the single move that lowers the objective most; stop when no move lowers it (a
  local optimum, as the paper's limitation says). The objective is the sum over chunks of
  ``cost_fn(context, chunk)``, where ``context`` is every unit before the chunk. The number
  of chunks stays that of AC. The default cost for an LM is :func:`lm_chunk_cost`: the
  student's mean token negative log-likelihood of the chunk given the question and the
  preceding chunks, i.e. how hard that chunk is to learn in its CWT iteration (the loss
  signal the summaries describe); any callable can replace it (e.g. a coherence score).
- **CWT schedule** [ours]: :func:`chunk_training_examples` turns one rationale into one
  example per chunk (prompt = question + previous chunks, loss only on the chunk); the
  trainer shuffles examples, so each optimizer step learns one chunk per sample.
- **skippability** (:func:`skippable_chunks`): a middle chunk (never the first, never the
  last, which holds the answer) is skippable iff the student, given the question and the
  kept chunks without it, still produces the correct answer. Candidates are tried left to
  right and removals accumulate (a chunk is removed only if the answer stays correct with
  every earlier removal applied), so the resulting skip rationale is verified as a whole
  [ours; ``cumulative=False`` tests each chunk alone]. If the student is wrong even with
  the full rationale, nothing is marked skippable [ours].
- **STT data** [ours]: the skip rationale (kept chunks) is the new target, learned
  chunk-wise with the same :func:`chunk_training_examples`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# cost_fn(context, chunk) -> float: lower is a better chunk. ``context`` = all units before it.
ChunkCost = Callable[[Sequence[Any], Sequence[Any]], float]


def average_sizes(n_units: int, n_chunks: int | None = None, *,
                  chunk_size: int | None = None) -> list[int]:
    """Chunk sizes of average chunking; exactly one of ``n_chunks`` / ``chunk_size``.

    ``n_chunks`` larger than ``n_units`` gives ``n_units`` chunks of one unit (no empty chunk).
    """
    if (n_chunks is None) == (chunk_size is None):
        raise ValueError("give exactly one of n_chunks and chunk_size")
    if n_units <= 0:
        return []
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        full, rest = divmod(n_units, chunk_size)
        return [chunk_size] * full + ([rest] if rest else [])
    assert n_chunks is not None
    if n_chunks < 1:
        raise ValueError(f"n_chunks must be >= 1, got {n_chunks}")
    k = min(n_chunks, n_units)
    base, extra = divmod(n_units, k)
    return [base + 1] * extra + [base] * (k - extra)


def cuts_from_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Interior boundaries (start index of chunks 2..k) of chunks with these sizes."""
    cuts, pos = [], 0
    for size in sizes[:-1]:
        pos += size
        cuts.append(pos)
    return tuple(cuts)


def chunks_from_cuts(units: Sequence[T], cuts: Sequence[int]) -> list[list[T]]:
    """Split ``units`` at the interior boundaries ``cuts`` (strictly increasing, in range)."""
    bounds = [0, *cuts, len(units)]
    if any(b >= e for b, e in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"cuts {list(cuts)} do not give non-empty chunks of {len(units)} units")
    return [list(units[b:e]) for b, e in zip(bounds, bounds[1:], strict=False)]


def average_chunks(units: Sequence[T], n_chunks: int | None = None, *,
                   chunk_size: int | None = None) -> list[list[T]]:
    """Average chunking (AC): contiguous chunks of near-equal size (see module docstring)."""
    sizes = average_sizes(len(units), n_chunks, chunk_size=chunk_size)
    return chunks_from_cuts(units, cuts_from_sizes(sizes)) if sizes else []


@dataclass(frozen=True)
class ChunkSearch(Generic[T]):
    """Outcome of :func:`search_cuts`: the chunks, their boundaries and the search trace."""

    chunks: list[list[T]]
    cuts: tuple[int, ...]
    cost: float
    initial_cost: float
    moves: int
    evaluations: int  # distinct (start, end) spans given to cost_fn


def search_cuts(units: Sequence[T], n_chunks: int, cost_fn: ChunkCost, *,
                max_shift: int | None = None, min_size: int = 1, max_size: int | None = None,
                max_moves: int = 1000, tol: float = 1e-12) -> ChunkSearch[T]:
    """Search-based chunking (SBC): local search over AC's boundaries (module docstring).

    ``max_shift`` defaults to half the average chunk size (at least 1). ``cost_fn`` is
    called once per distinct span (memoized), with ``(units[:start], units[start:end])``.
    """
    n = len(units)
    if n == 0:
        return ChunkSearch([], (), 0.0, 0.0, 0, 0)
    sizes = average_sizes(n, n_chunks)
    k = len(sizes)
    max_size = n if max_size is None else max_size
    if min_size < 1 or min_size * k > n or max_size * k < n or max_size < min_size:
        raise ValueError(f"no chunking of {n} units into {k} chunks of size "
                         f"[{min_size}, {max_size}]")
    if max_shift is None:
        max_shift = max(1, n // k // 2)
    memo: dict[tuple[int, int], float] = {}

    def span_cost(start: int, end: int) -> float:
        if (start, end) not in memo:
            memo[(start, end)] = float(cost_fn(units[:start], units[start:end]))
        return memo[(start, end)]

    def fits(start: int, end: int) -> bool:
        return min_size <= end - start <= max_size

    # AC always fits the size limits checked above: its sizes are floor(n/k) and ceil(n/k).
    bounds = [0, *cuts_from_sizes(sizes), n]
    initial = sum(span_cost(b, e) for b, e in zip(bounds, bounds[1:], strict=False))
    moves = 0
    while moves < max_moves:
        best_gain, best = tol, None
        for j in range(1, k):  # interior boundary j separates chunk j-1 and chunk j
            prev, cur, nxt = bounds[j - 1], bounds[j], bounds[j + 1]
            old = span_cost(prev, cur) + span_cost(cur, nxt)
            for shift in range(-max_shift, max_shift + 1):
                new = cur + shift
                if shift == 0 or not (fits(prev, new) and fits(new, nxt)):
                    continue
                gain = old - (span_cost(prev, new) + span_cost(new, nxt))
                if gain > best_gain:
                    best_gain, best = gain, (j, new)
        if best is None:
            break
        bounds[best[0]] = best[1]
        moves += 1
    cuts = tuple(bounds[1:-1])
    final = sum(span_cost(b, e) for b, e in zip(bounds, bounds[1:], strict=False))
    return ChunkSearch(chunks_from_cuts(units, cuts), cuts, final, initial, moves, len(memo))


def search_chunks(units: Sequence[T], n_chunks: int, cost_fn: ChunkCost,
                  **kwargs: Any) -> list[list[T]]:
    """The chunks found by :func:`search_cuts` (same arguments)."""
    return search_cuts(units, n_chunks, cost_fn, **kwargs).chunks


def lm_chunk_cost(model: Any, prompt_ids: Sequence[int]) -> ChunkCost:
    """SBC cost for token-id units: the model's mean NLL (nats/token) of the chunk tokens
    given ``prompt_ids`` (the question) followed by the context tokens.

    One forward pass per call (no gradient); ``model(input_ids)`` must return an object with
    ``.logits`` of shape ``[1, seq, vocab]`` (any HF causal LM).
    """
    import torch

    prompt = [int(t) for t in prompt_ids]

    def cost(context: Sequence[Any], chunk: Sequence[Any]) -> float:
        ids = prompt + [int(t) for t in context] + [int(t) for t in chunk]
        start = len(ids) - len(chunk)
        if start < 1:
            raise ValueError("the chunk needs at least one token before it (a prompt)")
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else "cpu"
        with torch.no_grad():
            logits = model(torch.tensor([ids], device=device)).logits[0, start - 1:-1]
            targets = torch.tensor(ids[start:], device=logits.device)
            return float(torch.nn.functional.cross_entropy(logits.float(), targets))

    return cost


@dataclass(frozen=True)
class ChunkExample(Generic[T]):
    """One CWT example: learn ``target`` (chunk ``index`` of ``n_chunks``) after ``context``."""

    question: str
    context: list[T]  # the preceding chunks, concatenated (no loss)
    target: list[T]  # this chunk (the loss is taken here only)
    index: int
    n_chunks: int


def chunk_training_examples(question: str, chunks: Sequence[Sequence[T]]) -> list[ChunkExample[T]]:
    """One example per chunk: prompt = question + chunks before it, target = the chunk."""
    out: list[ChunkExample[T]] = []
    context: list[T] = []
    for i, chunk in enumerate(chunks):
        out.append(ChunkExample(question, list(context), list(chunk), i, len(chunks)))
        context.extend(chunk)
    return out


def skippable_chunks(model_answer_fn: Callable[[str, list[Any]], str], question: str,
                     chunks: Sequence[Any], answer: str, *,
                     is_correct: Callable[[str, str], bool] | None = None,
                     cumulative: bool = True) -> list[int]:
    """Indices of the middle chunks the student can skip and still answer correctly.

    ``model_answer_fn(question, kept_chunks)`` returns the student's generation after the
    question and the kept chunks (in order); ``is_correct(generation, answer)`` defaults to
    :func:`bench.reasoning.problem.answers_match` (final-number comparison, lm-eval GSM8K
    style). First and last chunks are never candidates; see the module docstring for the
    order and the cumulative rule. Calls ``model_answer_fn`` at most ``len(chunks) - 1`` times.
    """
    if is_correct is None:
        from bench.reasoning.problem import answers_match

        is_correct = answers_match
    chunk_list = list(chunks)
    if len(chunk_list) < 3:
        return []
    if not is_correct(model_answer_fn(question, chunk_list), answer):
        return []
    kept = list(range(len(chunk_list)))
    skippable: list[int] = []
    for j in range(1, len(chunk_list) - 1):
        base = kept if cumulative else list(range(len(chunk_list)))
        trial = [i for i in base if i != j]
        if is_correct(model_answer_fn(question, [chunk_list[i] for i in trial]), answer):
            skippable.append(j)
            if cumulative:
                kept = trial
    return skippable


def skip_chunks(chunks: Sequence[T], skippable: Sequence[int]) -> list[T]:
    """The STT target: ``chunks`` without the skippable ones, in order."""
    drop = set(skippable)
    return [c for i, c in enumerate(chunks) if i not in drop]
