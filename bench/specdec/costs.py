"""The cost model of speculative decoding, measured: ``c``, ``v`` and the break-even tau.

A speculative pass runs ``k`` draft steps and one target forward over ``k + 1`` tokens
(the root and the drafts) and emits ``tau`` tokens on average; plain decoding runs a
one-token target forward per token. In units of that one-token forward ``t_1``:

- ``c`` = one draft step's time / ``t_1`` (a chain's ``propose(context, k)`` divided by
  ``k``, plus ``observe`` for drafts that learn from the target's logits, as the engine
  counts it; a tree: ``propose_tree`` divided by its ``depth + 1`` draft levels);
- ``v`` = (``t_{k+1}`` - ``t_1``) / ``t_1``, ``t_{k+1}`` the target forward over ``k + 1``
  tokens on top of the context's KV cache (a tree: the root plus its nodes, with the tree
  attention mask and positions of the engine);
- ``break_even_tau`` = 1 + ``steps`` * c + v (``steps``: k, or depth + 1), so
  speedup ~ tau / (1 + steps * c + v): a method needs tau above it to gain anything.

For plain decoding (``ar``) c = v = 0 by definition and break_even_tau = 1 (recorded so,
not omitted, so every row of the leaderboard's all-metrics table has the three columns);
its probe times ``t_1`` only. Training-free drafts (``pld``, ``recycling``) are timed the
same way through ``propose``: their c is the lookup's own cost, small but not zero.

:func:`probe_costs` runs the probe: a KV cache of ``context[:-1]`` as in decoding, then
the one-token forward, the verification forward and the draft's pass interleaved
(so load drifts hit all three alike) after ``warmup`` untimed rounds, up to ``reps`` timed
rounds, fewer (at least ``min_reps``) once ``budget_s`` seconds are spent; medians.
``v`` can come out slightly negative from noise when the verification costs no more than
one token (tiny models). The timings are the machine's: on a loaded CPU they move with the
load, which is why the suite measures them in the same process as its speedups.

``python -m bench.specdec.costs --help`` (:func:`main`): c and v of one draft in float32
and bfloat16 and, for the feature heads, with the full and an FR-Spec draft vocabulary
(``draft_vocab``). Costs depend on a draft's shape, not on its weights, so the command
times untrained drafts of the suite's shapes (no training data needed).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bench.core import hf


@dataclass(frozen=True)
class CostProbe:
    """What :func:`probe_costs` measured (milliseconds are medians)."""

    c: float
    v: float
    steps: int  # draft steps per pass: k of a chain, depth + 1 of a tree, 0 without draft
    verify_tokens: int  # tokens of the verification forward: k + 1 / tree nodes + 1 / 1
    target_1_ms: float
    target_verify_ms: float
    draft_ms: float  # one pass's drafting
    proposed: int  # tokens the draft proposed at the probe's context
    context_tokens: int
    reps: int
    dtype: str

    @property
    def break_even_tau(self) -> float:
        return 1.0 + self.steps * self.c + self.v

    def metrics(self) -> dict[str, float]:
        """The record metrics ``c``, ``v`` and ``break_even_tau``."""
        return {"c": self.c, "v": self.v, "break_even_tau": self.break_even_tau}

    def config(self) -> dict[str, Any]:
        """The probe's details, for the record's config."""
        return {**asdict(self), "break_even_tau": self.break_even_tau,
                "method": "median of interleaved timings after warm-up, KV cache of the "
                          "context as in decoding (bench.specdec.costs)"}


def _timer(device: torch.device) -> Callable[[], float]:
    cuda = device.type == "cuda"

    def now() -> float:
        if cuda:  # GPU work is asynchronous: wait for it so it is attributed to its step
            torch.cuda.synchronize()
        return time.perf_counter()

    return now


@torch.no_grad()
def probe_costs(target: Any, draft: Any, context: Sequence[int], *, k: int,
                tree: Any = None, warmup: int = 2, reps: int = 7, min_reps: int = 3,
                budget_s: float = 3.0) -> CostProbe:
    """Measure ``c`` and ``v`` of ``draft`` (None: plain decoding) on ``target`` at
    ``context`` (prompt ids, >= 2 tokens) for a chain of ``k`` or ``tree``; see the module
    docstring. Drafts are called greedily; a stateful draft is reset before and after."""
    context = [int(t) for t in context]
    if len(context) < 2:
        raise ValueError("the probe needs a context of at least 2 tokens")
    now = _timer(hf.model_device(target))
    hidden = bool(getattr(draft, "needs_hidden", False))
    cache = hf.new_cache(target)
    _, target_hidden = hf.forward(target, context[:-1], cache, hidden=hidden, last_only=True)
    base, root = len(context) - 1, context[-1]

    def target_pass(tokens: list[int], want_hidden: bool = hidden, **kwargs: Any
                    ) -> torch.Tensor:
        logits, _ = hf.forward(target, [root, *tokens], cache, hidden=want_hidden, **kwargs)
        hf.crop_to(cache, base)  # back to the committed context, as after a rejection
        return logits

    # t_1 is plain decoding's step (no hidden states); verification runs as the engine's
    tasks: dict[str, Callable[[], Any]] = {"target_1": lambda: target_pass([], False)}
    steps, proposed, verify_tokens = 0, 0, 1
    if draft is not None:
        draft.reset()
        observe = getattr(draft, "observe", None)
        if tree is None:
            drafted = draft.propose(context, k, temperature=0.0,
                                    target_hidden=target_hidden).tokens
            # a lookup may propose fewer than k (none at all without a match): pad with
            # context tokens so the verification is always timed at k + 1 tokens
            fill = (drafted + context * (k // len(context) + 1))[:k]
            verify_logits = target_pass(fill)
            tasks["verify"] = lambda: target_pass(fill)

            def draft_pass() -> None:
                out = draft.propose(context, k, temperature=0.0, target_hidden=target_hidden)
                if observe is not None:
                    observe([root, *out.tokens], verify_logits[: len(out.tokens) + 1])

            steps, verify_tokens = k, k + 1
        else:
            shape = draft.propose_tree(context, tree, target_hidden=target_hidden)
            drafted = shape.tokens
            positions = torch.tensor([base] + [base + d for d in shape.depths])
            mask = hf.tree_attention_mask(shape.verify_mask(), base, hf.model_dtype(target),
                                          hf.model_device(target))
            verify_logits = target_pass(drafted, position_ids=positions, mask=mask)
            tasks["verify"] = lambda: target_pass(drafted, position_ids=positions, mask=mask)

            def draft_pass() -> None:
                out = draft.propose_tree(context, tree, target_hidden=target_hidden)
                if observe is not None:
                    observe([root, *out.tokens], verify_logits[: len(out.tokens) + 1])

            steps, verify_tokens = tree.depth + 1, len(drafted) + 1
        proposed = len(drafted)
        tasks["draft"] = draft_pass
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(warmup):
        for fn in tasks.values():
            fn()
    start = now()
    while True:
        for name, fn in tasks.items():
            t0 = now()
            fn()
            times[name].append(now() - t0)
        n = len(times["target_1"])
        if n >= reps or (n >= min_reps and now() - start > budget_s):
            break
    if draft is not None:
        draft.reset()
    ms = {name: statistics.median(values) * 1000.0 for name, values in times.items()}
    t1 = ms["target_1"]
    c = ms["draft"] / steps / t1 if draft is not None else 0.0
    v = (ms["verify"] - t1) / t1 if draft is not None else 0.0
    return CostProbe(c=c, v=v, steps=steps, verify_tokens=verify_tokens, target_1_ms=t1,
                     target_verify_ms=ms.get("verify", t1), draft_ms=ms.get("draft", 0.0),
                     proposed=proposed, context_tokens=len(context), reps=n,
                     dtype=str(hf.model_dtype(target)).removeprefix("torch."))


# ----------------------------------------------------------------------- the command

DRAFTS = ("ar", "pld", "recycling", "draft-lm", "eagle", "fspad")


def probe_draft(kind: str, target: Any, context: Sequence[int], *, draft_vocab: int = 0,
                draft_layers: int = 4, max_ngram: int = 3, candidates: int = 8) -> Any:
    """An untrained draft of ``kind`` shaped as the suite's recipe builds it, in the
    target's dtype (None for ``ar``). ``draft_vocab`` keeps the first N token ids: which N
    rows of the LM head a draft step multiplies does not change its cost."""
    vocab = int(target.get_output_embeddings().weight.shape[0])
    if kind == "ar":
        return None
    if kind == "pld":
        from bench.specdec.lookup import PromptLookupDraft

        return PromptLookupDraft(vocab, max_ngram=max_ngram)
    if kind == "recycling":
        from bench.specdec.recycling import RecyclingDraft

        draft = RecyclingDraft(vocab, candidates=candidates)
        logits, _ = hf.forward(target, list(context), hf.new_cache(target))
        draft.observe(list(context), logits)  # a warm matrix, as after the first prompts
        return draft
    if kind == "draft-lm":
        from bench.specdec.drafts import LMDraft
        from methods.instruct.token_kd import build_student

        return LMDraft(build_student(target, draft_layers).to(hf.model_dtype(target)).eval())
    from methods.specdec.heads import HEADS, FeatureDraft, HeadConfig

    torch.manual_seed(0)
    head = HEADS[kind](HeadConfig.from_target(target.config))
    head = head.to(hf.model_device(target), hf.model_dtype(target)).eval()
    out = target.get_output_embeddings()
    subset = torch.arange(min(draft_vocab, vocab)) if draft_vocab else None
    return FeatureDraft(head, target.get_input_embeddings().weight, out.weight,
                        getattr(out, "bias", None), subset)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.specdec.costs``: print c, v and the break-even tau of a draft."""
    import argparse

    from bench.core.assets import load_causal_lm
    from bench.core.hf import inference_copy
    from bench.specdec.data import CATEGORIES, CATEGORY_NAMES, category_pools, conversation_ids
    from bench.specdec.tree import TreeConfig

    parser = argparse.ArgumentParser(
        prog="python -m bench.specdec.costs",
        description="Speculative decoding's cost model on this machine: c (a draft step / "
                    "a one-token target forward), v (extra cost of verifying k+1 tokens) and "
                    "break-even tau = 1 + k*c + v, for float32 and bfloat16 and, for eagle "
                    "and fspad, the full and an FR-Spec draft vocabulary. Untrained drafts "
                    "of the suite's shapes (costs do not depend on the weights).")
    parser.add_argument("--draft", choices=DRAFTS, default="eagle")
    parser.add_argument("--teacher", default="smollm2-135m-instruct", help="the target")
    parser.add_argument("--k", type=int, default=3, help="chain length (pld: 10 in the suite)")
    parser.add_argument("--tree", help="EAGLE-2 tree total,depth,top_k instead of a chain")
    parser.add_argument("--draft-vocab", type=int, default=8192,
                        help="FR-Spec vocabulary compared with the full one (0: full only)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--prompt", help="a user turn; default: the first test prompt of "
                        "--category")
    parser.add_argument("--category", choices=CATEGORY_NAMES, default="summarization")
    parser.add_argument("--max-context-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--budget-s", type=float, default=3.0)
    args = parser.parse_args(argv)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if args.k < 1 or any(d not in ("float32", "bfloat16") for d in dtypes):
        parser.error("--k must be >= 1 and --dtypes a list of float32, bfloat16")
    try:
        tree = TreeConfig(*(int(x) for x in args.tree.split(","))) if args.tree else None
    except (TypeError, ValueError):
        parser.error(f"--tree {args.tree}: use total,depth,top_k (e.g. 60,5,10)")
    target, tokenizer = load_causal_lm(args.teacher)
    if args.prompt is None:
        def cut(text: str) -> str:
            ids = tokenizer.encode(text, add_special_tokens=False)
            return text if len(ids) <= args.max_context_tokens else \
                tokenizer.decode(ids[: args.max_context_tokens]) + " ..."

        category = CATEGORIES[CATEGORY_NAMES.index(args.category)]
        turn = category_pools(category, cut, 0, 1)[1][0].turns[0]
    else:
        turn = args.prompt
    context = conversation_ids(tokenizer, [turn], [])
    vocabs = [0, args.draft_vocab] if args.draft in ("eagle", "fspad") and args.draft_vocab \
        else [0]
    print(f"draft {args.draft}, {'tree ' + args.tree if tree else f'chain k={args.k}'}, "
          f"target {args.teacher}, context {len(context)} tokens, "
          f"{torch.get_num_threads()} torch thread(s)")
    print(f"{'dtype':<9} {'draft_vocab':>11} {'c':>7} {'v':>7} {'break_even':>10} "
          f"{'t_1 ms':>8} {'t_verify ms':>11} {'draft ms':>9} {'reps':>4}")
    for dtype in dtypes:
        model = inference_copy(target, dtype)
        for vocab in vocabs:
            draft = probe_draft(args.draft, model, context, draft_vocab=vocab)
            p = probe_costs(model, draft, context, k=args.k, tree=tree, reps=args.reps,
                            budget_s=args.budget_s)
            print(f"{dtype:<9} {vocab or 'full':>11} {p.c:>7.4f} {p.v:>7.3f} "
                  f"{p.break_even_tau:>10.3f} {p.target_1_ms:>8.1f} "
                  f"{p.target_verify_ms:>11.1f} {p.draft_ms:>9.1f} {p.reps:>4}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
