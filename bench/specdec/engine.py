"""Plain and speculative decoding of one prompt (batch size 1) with KV caches.

Both engines share one structure so that their wall times compare fairly: a *prefill*
runs the target over ``prompt[:-1]`` (no token is emitted), then every target *pass*
feeds the last committed token (the "root") plus whatever the draft proposes and emits at
least one token. Plain decoding (:func:`autoregressive`) is the special case with no
draft: one token per pass.

Speculative decoding (:func:`speculative`; Leviathan et al. 2023, arXiv:2211.17192;
Chen et al. 2023, arXiv:2302.01318):

- chain: the draft proposes ``k`` tokens; the target scores ``[root, d_1..d_k]`` in one
  cached forward; the longest acceptable prefix ``d_1..d_n`` is kept (greedy: ``d_i`` equals
  the target's argmax; sampling: the rejection rule of :mod:`bench.specdec.sampling`),
  then one more token from the target: the correction at the first rejection, or the
  bonus token after ``d_k`` when all were accepted. The target's cache is cropped back to
  the committed tokens (``DynamicCache.crop``); the draft reconciles its own cache on its
  next call;
- tree (``tree=TreeConfig(...)``, EAGLE-2, arXiv:2406.16858; :mod:`bench.specdec.tree`):
  the draft grows a dynamic tree, the target verifies all nodes in one forward with a tree
  attention mask and position ids ``prefix + depth``, the longest greedy-matching path is
  accepted, and the target cache keeps the prefix, the root and the accepted path's
  entries (gathered in place; keys are stored after RoPE at their final positions, so
  this is exact; caches that cannot be gathered are cropped and the path recomputed).
  **Greedy only**: tree speculative *sampling* (EAGLE's recursive multi-candidate
  rejection, SpecInfer) is not implemented and raises ``NotImplementedError``.

Near the ``max_new_tokens`` limit the chain is shortened (and the tree cut in depth) so a
pass never emits more than the tokens left; a pass with one token left is a plain target
step (no drafting), in chain and tree mode alike. Emitted tokens are cut after the first EOS. So the output has exactly the
length plain decoding would produce, and with greedy decoding the same tokens.

Statistics (:class:`DecodeStats`) and the tau convention: ``tau`` is the mean over target
verification passes of the tokens emitted per pass, **including** the correction/bonus
token from the target (EAGLE's "average acceptance length": accepted draft tokens + 1,
SafeAILab/EAGLE issues #132, #195; Spec-Bench's ``accept_lengths``), so plain decoding has
tau = 1 and a chain of ``k`` that is always accepted has tau = k + 1.
``mean_accepted`` is the other convention (draft tokens accepted per pass, no bonus);
``acceptance_rate`` is accepted / drafted tokens. Passes cut short by EOS or the token
limit count the tokens actually emitted. The prefill is not a pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from bench.core import hf
from bench.specdec.drafts import Draft
from bench.specdec.sampling import (
    accept_draft_token,
    choose,
    is_greedy,
    probs,
    residual_distribution,
    sample,
)
from bench.specdec.tree import TreeConfig, greedy_accept


@dataclass
class DecodeStats:
    """Per-prompt counters and timings (seconds, wall clock, CUDA-synchronised)."""

    mode: str
    new_tokens: int = 0
    emitted_per_pass: list[int] = field(default_factory=list)
    accepted_per_pass: list[int] = field(default_factory=list)
    drafted_per_pass: list[int] = field(default_factory=list)
    prefill_time: float = 0.0
    draft_time: float = 0.0
    verify_time: float = 0.0
    wall_time: float = 0.0

    @property
    def target_passes(self) -> int:
        """Target forward passes after the prefill (verification passes)."""
        return len(self.emitted_per_pass)

    @property
    def tau(self) -> float:
        """Mean tokens emitted per target pass, bonus/correction token included."""
        return sum(self.emitted_per_pass) / max(1, self.target_passes)

    @property
    def mean_accepted(self) -> float:
        """Mean draft tokens accepted per target pass (bonus token excluded)."""
        return sum(self.accepted_per_pass) / max(1, self.target_passes)

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / proposed draft tokens (NaN without drafts)."""
        drafted = sum(self.drafted_per_pass)
        return sum(self.accepted_per_pass) / drafted if drafted else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_time if self.wall_time > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(target_passes=self.target_passes, tau=self.tau,
                   mean_accepted=self.mean_accepted, acceptance_rate=self.acceptance_rate,
                   tokens_per_second=self.tokens_per_second)
        return out


@dataclass
class DecodeResult:
    tokens: list[int]  # generated tokens, EOS included when produced
    stats: DecodeStats


class _Clock:
    """Wall-clock intervals, synchronising CUDA so GPU work is attributed correctly."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def _prompt_list(input_ids: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 2:
            if input_ids.shape[0] != 1:
                raise ValueError("batch size 1 only: pass one prompt at a time")
            input_ids = input_ids[0]
        ids = [int(t) for t in input_ids.tolist()]
    else:
        ids = [int(t) for t in input_ids]
    if not ids:
        raise ValueError("empty prompt")
    return ids


def _cut(tokens: list[int], eos: set[int], room: int) -> tuple[list[int], bool]:
    """``tokens`` cut after the first EOS and to ``room`` tokens; whether EOS was hit."""
    tokens = tokens[:room]
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1], True
    return tokens, False


class _Target:
    """The target model with its cache holding ``context[:-1]`` between passes."""

    def __init__(self, model: Any, prompt: list[int], hidden: bool) -> None:
        self.model, self.want_hidden = model, hidden
        self.cache = hf.new_cache(model)
        self.hidden: torch.Tensor | None = None  # [len(context) - 1, H] when wanted
        if len(prompt) > 1:
            _, h = hf.forward(model, prompt[:-1], self.cache, hidden=hidden, last_only=True)
            self.hidden = h

    def add_hidden(self, h: torch.Tensor | None) -> None:
        if h is not None:
            self.hidden = h if self.hidden is None else torch.cat([self.hidden, h])


@torch.no_grad()
def autoregressive(target: Any, input_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
                   *, temperature: float = 0.0, eos_ids: Iterable[int] = (),
                   generator: torch.Generator | None = None) -> DecodeResult:
    """Plain decoding with a KV cache: one target forward per token (batch size 1).

    Greedy for ``temperature <= 0``, else ancestral sampling at ``temperature`` drawn with
    ``generator``. Stops after an EOS id (kept in the output) or ``max_new_tokens``.
    """
    context, eos = _prompt_list(input_ids), set(eos_ids)
    stats = DecodeStats("autoregressive")
    clock = _Clock(hf.model_device(target))
    start = clock.now()
    state = _Target(target, context, hidden=False)
    stats.prefill_time = clock.now() - start
    out: list[int] = []
    while len(out) < max_new_tokens:
        t0 = clock.now()
        logits, _ = hf.forward(target, context[-1:], state.cache)
        token = choose(logits[-1], temperature, generator)
        stats.verify_time += clock.now() - t0
        out.append(token)
        context.append(token)
        stats.emitted_per_pass.append(1)
        stats.accepted_per_pass.append(0)
        stats.drafted_per_pass.append(0)
        if token in eos:
            break
    stats.new_tokens = len(out)
    stats.wall_time = clock.now() - start
    return DecodeResult(out, stats)


def _verify_chain(logits: torch.Tensor, proposal_tokens: list[int], q: torch.Tensor | None,
                  temperature: float, generator: torch.Generator | None,
                  ) -> tuple[int, int]:
    """(number of accepted draft tokens n, the correction/bonus token) for one chain.

    ``logits[i]`` is the target's next-token logits after the root and ``d_1..d_i``.
    """
    k = len(proposal_tokens)
    if is_greedy(temperature):
        choice = logits.argmax(-1).tolist()
        n = 0
        while n < k and proposal_tokens[n] == choice[n]:
            n += 1
        return n, choice[n]
    p = probs(logits, temperature)
    if k == 0:
        return 0, sample(p[0], generator)
    if q is None:
        raise ValueError("sampling needs the draft's distributions (Proposal.probs)")
    if q.shape[-1] != p.shape[-1]:
        raise ValueError(f"draft vocabulary {q.shape[-1]} != target vocabulary "
                         f"{p.shape[-1]}: speculative sampling needs one token space")
    q = q.to(p.device, p.dtype)
    for i, token in enumerate(proposal_tokens):
        if not accept_draft_token(p[i], q[i], token, generator):
            return i, sample(residual_distribution(p[i], q[i]), generator)
    return k, sample(p[k], generator)


def _observe(draft: Draft, tokens: list[int], logits: torch.Tensor, clock: _Clock) -> float:
    """Show the draft the target's logits at ``tokens`` (drafts that learn from them, such
    as Token Recycling, define ``observe``); returns the seconds it took."""
    observe = getattr(draft, "observe", None)
    if observe is None:
        return 0.0
    t0 = clock.now()
    observe(tokens, logits)
    return clock.now() - t0


def _verify_tree(target: Any, state: _Target, draft: Draft, context: list[int],
                 config: TreeConfig, room: int, stats: DecodeStats, clock: _Clock,
                 ) -> list[int]:
    """One tree pass (greedy): draft a tree, verify it, keep the accepted path's cache."""
    t0 = clock.now()
    tree = draft.propose_tree(context, config, target_hidden=state.hidden)
    tree = tree.truncated(room - 1)
    t1 = clock.now()
    stats.draft_time += t1 - t0
    prefix = len(context) - 1
    dtype, device = hf.model_dtype(target), hf.model_device(target)
    mask = hf.tree_attention_mask(tree.verify_mask(), prefix, dtype, device)
    positions = torch.tensor([prefix] + [prefix + d for d in tree.depths])
    logits, hidden = hf.forward(target, [context[-1], *tree.tokens], state.cache,
                                position_ids=positions, mask=mask, hidden=state.want_hidden)
    observed = _observe(draft, [context[-1], *tree.tokens], logits, clock)
    stats.draft_time += observed
    path, bonus = greedy_accept(tree, logits.argmax(-1).tolist())
    rows = [0] + [i + 1 for i in path]  # input rows to keep: root and the accepted path
    keep = torch.cat([torch.arange(prefix + 1), torch.tensor(rows[1:], dtype=torch.long)
                      + prefix])
    if not hf.keep_positions(state.cache, keep):  # fallback: crop and recompute the path
        hf.crop_to(state.cache, prefix + 1)
        if path:
            hf.forward(target, [tree.tokens[i] for i in path], state.cache)
    if hidden is not None:
        state.add_hidden(hidden[rows])
    stats.verify_time += clock.now() - t1 - observed
    stats.drafted_per_pass.append(len(tree))
    stats.accepted_per_pass.append(len(path))
    return [tree.tokens[i] for i in path] + [bonus]


@torch.no_grad()
def speculative(target: Any, draft: Draft, input_ids: Sequence[int] | torch.Tensor,
                max_new_tokens: int, *, k: int = 4, temperature: float = 0.0,
                eos_ids: Iterable[int] = (), generator: torch.Generator | None = None,
                tree: TreeConfig | None = None) -> DecodeResult:
    """Speculative decoding of one prompt (batch size 1); see the module docstring.

    ``k``: draft chain length (ignored with ``tree``). ``temperature <= 0``: greedy, the
    output is token for token plain greedy decoding's; ``> 0``: speculative sampling, the
    output follows the target's tempered distribution. ``tree``: EAGLE-2 dynamic tree
    (greedy only).
    """
    if k < 1 and tree is None:
        raise ValueError(f"k must be >= 1, got {k}")
    if tree is not None:
        if not is_greedy(temperature):
            raise NotImplementedError("tree speculative sampling is not implemented; use a "
                                      "chain (tree=None) for temperature > 0")
        hf.check_tree_attention(target)
    context, eos = _prompt_list(input_ids), set(eos_ids)
    stats = DecodeStats("speculative-tree" if tree is not None else "speculative-chain")
    clock = _Clock(hf.model_device(target))
    start = clock.now()
    draft.reset()
    state = _Target(target, context, hidden=bool(getattr(draft, "needs_hidden", False)))
    stats.prefill_time = clock.now() - start
    out: list[int] = []
    while len(out) < max_new_tokens:
        room = max_new_tokens - len(out)
        if tree is not None and room > 1:
            emitted = _verify_tree(target, state, draft, context, tree, room, stats, clock)
        else:
            k_now = min(k, room - 1)
            t0 = clock.now()
            proposal = (draft.propose(context, k_now, temperature=temperature,
                                      generator=generator, target_hidden=state.hidden)
                        if k_now > 0 else None)
            t1 = clock.now()
            drafted = proposal.tokens if proposal is not None else []
            logits, hidden = hf.forward(target, [context[-1], *drafted], state.cache,
                                        hidden=state.want_hidden)
            observed = _observe(draft, [context[-1], *drafted], logits, clock)
            n, extra = _verify_chain(logits, drafted,
                                     proposal.probs if proposal is not None else None,
                                     temperature, generator)
            hf.crop_to(state.cache, len(context) + n)  # context[:-1] + root + d_1..d_n
            if hidden is not None:
                state.add_hidden(hidden[: n + 1])
            stats.draft_time += t1 - t0 + observed
            stats.verify_time += clock.now() - t1 - observed
            stats.drafted_per_pass.append(len(drafted))
            stats.accepted_per_pass.append(n)
            emitted = drafted[:n] + [extra]
        kept, stop = _cut(emitted, eos, room)
        if len(kept) < len(emitted):  # cut by EOS: the bonus/correction was not emitted
            stats.accepted_per_pass[-1] = min(stats.accepted_per_pass[-1], len(kept))
        stats.emitted_per_pass.append(len(kept))
        out.extend(kept)
        context.extend(kept)
        if stop:
            break
    stats.new_tokens = len(out)
    stats.wall_time = clock.now() - start
    return DecodeResult(out, stats)
