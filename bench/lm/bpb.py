"""Bits per byte of a causal LM on whole documents, comparable across tokenizers.

For a document d tokenized by the model's own tokenizer into t_1 … t_n (no special tokens),
with a prefix token t_0 so that t_1 is scored too:

    bpb(d) = Σ_{j=1..n} −log₂ p(t_j | t_0 … t_{j−1}) / (UTF-8 bytes of d)

The numerator is the code length of the document under the model, whatever its
vocabulary, and the denominator does not depend on the tokenizer, so models with
different tokenizers are compared on the same scale (lower is better).

- The prefix t_0 is the tokenizer's BOS when it adds one to every text (Gemma's
  ``<bos>``), else its EOS token (lm-eval's ``loglikelihood_rolling`` convention: the
  end-of-text token that precedes a new document; for SmolLM2-Instruct ``<|im_end|>``).
- Long documents are scored in windows of ``window`` tokens, ``stride`` new tokens per
  window after the first (Hugging Face's "perplexity of fixed-length models" scheme):
  every token is scored exactly once, the first ``window`` with all preceding tokens as
  context and later ones with at least ``window − stride`` tokens of context. Documents
  no longer than the window are scored in one pass, exactly.
- Logits go through the LM head ``head_chunk`` positions at a time (a 262,144-entry
  vocabulary makes a full [window, V] float32 block ~0.5 GB), float32 throughout.

A dataset's ``bits_per_byte`` is the mean of its documents' values (each document weighs
the same, as in the paired per-document tests); ``bits_per_byte_pooled`` (total bits over
total bytes) is recorded beside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

LN2 = math.log(2.0)


def prefix_id(tokenizer: Any) -> int:
    """The token every document is conditioned on (see the module docstring)."""
    probe = tokenizer("a")["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and probe and probe[0] == bos:
        return int(bos)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    if bos is not None:
        return int(bos)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to start a document")


def windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first scored)`` per window over a sequence of ``n`` ids (the prefix
    at 0): inputs ``ids[begin:end]``, targets ``first .. end − 1`` (each target once)."""
    if not 0 < stride < window:
        raise ValueError(f"need 0 < stride < window, got stride {stride}, window {window}")
    out, begin, scored = [], 0, 1
    while scored < n:
        end = min(begin + window, n)
        out.append((begin, end, scored))
        scored = end
        begin += stride
    return out


@torch.no_grad()
def token_nll(model: Any, batch: torch.Tensor, attention: torch.Tensor,
              head_chunk: int = 128) -> torch.Tensor:
    """Natural-log NLL ``[B, L-1]`` of ``batch[:, 1:]`` given the preceding ids."""
    hidden = model.base_model(input_ids=batch, attention_mask=attention).last_hidden_state
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    targets = batch[:, 1:]
    out = torch.empty(targets.shape, dtype=torch.float32)
    for start in range(0, targets.shape[1], head_chunk):
        stop = start + head_chunk
        logits = head(hidden[:, start:min(stop, targets.shape[1])]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        picked = logits.gather(-1, targets[:, start:stop].unsqueeze(-1)).squeeze(-1)
        out[:, start:stop] = torch.logsumexp(logits, -1) - picked
    return out


@dataclass
class DocScore:
    bits: float
    bytes: int
    tokens: int

    @property
    def bpb(self) -> float:
        return self.bits / self.bytes


def score_documents(model: Any, tokenizer: Any, texts: Sequence[str], *, window: int,
                    stride: int, batch_size: int = 4, head_chunk: int = 128,
                    progress: bool = True) -> tuple[list[DocScore], float]:
    """Per-document scores (in the order of ``texts``) and the seconds the forward passes
    took. Windows of all documents are batched by length (right padding, which a causal
    model never attends to)."""
    from bench.core.progress import progress_bar

    first = prefix_id(tokenizer)
    device = next(model.parameters()).device
    docs = [[first, *tokenizer(t, add_special_tokens=False)["input_ids"]] for t in texts]
    jobs = [(d, *w) for d, ids in enumerate(docs) for w in windows(len(ids), window, stride)]
    jobs.sort(key=lambda j: -(j[2] - j[1]))
    nats = [0.0] * len(docs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else first
    start_time = time.perf_counter()
    with progress_bar(len(jobs), "bits per byte", enabled=progress) as advance:
        for at in range(0, len(jobs), batch_size):
            chunk = jobs[at:at + batch_size]
            width = max(end - begin for _, begin, end, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros_like(ids)
            for row, (d, begin, end, _) in enumerate(chunk):
                ids[row, : end - begin] = torch.tensor(docs[d][begin:end])
                attention[row, : end - begin] = 1
            nll = token_nll(model, ids.to(device), attention.to(device), head_chunk)
            for row, (d, begin, end, scored) in enumerate(chunk):
                # target index t (absolute) sits at column t - begin - 1
                nats[d] += float(nll[row, scored - begin - 1: end - begin - 1].double().sum())
            advance(len(chunk))
    seconds = time.perf_counter() - start_time
    scores = [DocScore(n / LN2, len(t.encode("utf-8")), len(ids) - 1)
              for n, t, ids in zip(nats, texts, docs, strict=True)]
    return scores, seconds


def summary(scores: Sequence[DocScore], seconds: float) -> dict[str, float]:
    """The record's metrics for one dataset."""
    tokens = sum(s.tokens for s in scores)
    total_bytes = sum(s.bytes for s in scores)
    return {"bits_per_byte": sum(s.bpb for s in scores) / len(scores),
            "bits_per_byte_pooled": sum(s.bits for s in scores) / total_bytes,
            "tokens_per_byte": tokens / total_bytes,
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0}
