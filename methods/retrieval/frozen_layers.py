"""A deeper stage-1 student at the cost of a shallow one: frozen lower layers, cached states.

Depth is what moved DeAR's pointwise student towards BM25 on this CPU (docs/measurements/
beir.md), but fine-tuning every layer of a deep student does not fit ``make run``. With
``frozen_layers = F`` the student's first F decoder layers keep their pretrained weights,
so their output for a training pair never changes: it is computed once (bf16 weights, no
gradient), cached on disk, and each training step runs only layers F..L-1, the final norm
and the score head on the cached states. The same states serve every seed and every epoch.
Scoring is unchanged: the whole student runs end to end.

This departs from the DeAR paper's recipe (which fine-tunes the whole student); rows trained
this way say so in their config (``dear.frozen_layers``).

How the stack is split: the decoder (a transformers ``LlamaModel``-style module with
``layers``, ``norm`` and rotary embeddings) runs a slice of its own layers, with its final
norm switched off for the lower part, and from ``inputs_embeds`` for the upper part, so
masks and rotary positions are built by the library exactly as in a full forward
(:func:`run_layers`; a test checks lower-then-upper equals the full forward).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.core.hf import left_pad


@contextlib.contextmanager
def _sliced(decoder: Any, start: int, stop: int, final_norm: bool) -> Iterator[None]:
    """``decoder`` temporarily reduced to its layers ``start..stop-1`` (final norm on or
    off); restored afterwards, also on error."""
    layers, norm = decoder.layers, decoder.norm
    decoder.layers = torch.nn.ModuleList(list(layers)[start:stop])
    if not final_norm:
        decoder.norm = torch.nn.Identity()
    try:
        yield
    finally:
        decoder.layers, decoder.norm = layers, norm


def run_layers(decoder: Any, start: int, stop: int, *, attention_mask: torch.Tensor,
               position_ids: torch.Tensor, input_ids: torch.Tensor | None = None,
               inputs_embeds: torch.Tensor | None = None, final_norm: bool) -> torch.Tensor:
    """Hidden states ``[batch, seq, hidden]`` after decoder layers ``start..stop-1``:
    from token ids (``start`` must be 0) or from the states entering layer ``start``."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("run_layers: pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None and start != 0:
        raise ValueError("run_layers: token ids enter at layer 0")
    with _sliced(decoder, start, stop, final_norm):
        out = decoder(input_ids=input_ids, inputs_embeds=inputs_embeds,
                      attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False)
    return out.last_hidden_state


def pad_states(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor,
                                                        torch.Tensor]:
    """``(states [B, W, H], attention_mask, position_ids)``, left-padded with zeros like
    :func:`bench.core.hf.left_pad`, so the last column is each row's final token."""
    width = max(int(s.shape[0]) for s in states)
    hidden = int(states[0].shape[1])
    out = states[0].new_zeros((len(states), width, hidden))
    for i, s in enumerate(states):
        out[i, width - s.shape[0]:] = s
    _, attention, positions = left_pad([[0] * int(s.shape[0]) for s in states], 0)
    return out, attention, positions


def _lower_states(model: Any, decoder: Any, frozen: int, queries: Sequence[str],
                  docs: Sequence[str]) -> list[torch.Tensor]:
    """Unpadded states leaving ``decoder``'s first ``frozen`` layers (no final norm) for
    ``model``'s encoding of the pairs; ``decoder`` is the model's own or a copy of it."""
    enc = model.encode(queries, docs)
    hidden = run_layers(decoder, 0, frozen, input_ids=enc["input_ids"],
                        attention_mask=enc["attention_mask"],
                        position_ids=enc["position_ids"], final_norm=False)
    lengths = enc["attention_mask"].sum(-1).tolist()
    return [hidden[i, hidden.shape[1] - n:].clone() for i, n in enumerate(lengths)]


def _states_key(model: Any, frozen: int) -> tuple[str, str, int, bool]:
    """What fixes a pair's lower states: the lower layers' weights and the prompt format."""
    return (lower_fingerprint(model, frozen), model.prompt, model.max_doc_tokens, model.chat)


def compute_states(model: Any, pairs: Sequence[tuple[str, str]], frozen: int, *,
                   batch_size: int = 16, dtype: torch.dtype = torch.bfloat16,
                   progress: bool = True) -> list[torch.Tensor]:
    """The states leaving layer ``frozen`` of ``model`` (a PointwiseLM) for each (query,
    doc) pair, unpadded, in ``dtype`` (computed by a ``dtype`` copy of the lower layers)."""
    import copy

    from bench.core.progress import progress_bar

    decoder = model.lm.get_decoder()
    with _sliced(decoder, 0, frozen, final_norm=False):
        lower = copy.deepcopy(decoder).to(dtype).eval()
    states: list[torch.Tensor] = []
    with torch.no_grad(), progress_bar(len(pairs), "frozen-layer states",
                                       enabled=progress) as advance:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            states += [s.to(dtype).cpu() for s in _lower_states(
                model, lower, frozen, [q for q, _ in chunk], [d for _, d in chunk])]
            advance(len(chunk))
    return states


def lower_fingerprint(model: Any, frozen: int) -> str:
    """Fingerprint of ``model``'s embeddings and first ``frozen`` decoder layers (their
    weights and dtype): two students with equal fingerprints give equal lower states."""
    from bench.core.hf import model_fingerprint

    decoder = model.lm.get_decoder()
    return model_fingerprint(torch.nn.ModuleList(list(decoder.layers)[:frozen]), "embed",
                             model_fingerprint(decoder.embed_tokens))


def cached_states(model: Any, pairs: Sequence[tuple[str, str]], frozen: int,
                  cache_dir: Path, *, progress: bool = True) -> list[torch.Tensor]:
    """:func:`compute_states` through a safetensors cache keyed by the lower layers'
    weights, the prompt and the pairs (one flat bf16 tensor plus row offsets)."""
    from safetensors.torch import load_file

    from bench.core.io import atomic_save_tensors

    fingerprint, prompt, max_doc_tokens, chat = _states_key(model, frozen)
    key = hashlib.sha256(json.dumps([fingerprint, frozen, prompt, max_doc_tokens, chat,
                                     list(pairs)]).encode()).hexdigest()[:16]
    path = cache_dir / f"states-{key}.safetensors"
    if path.exists():
        saved = load_file(str(path))
        flat, offsets = saved["states"], saved["offsets"].tolist()
        return [flat[a:b] for a, b in zip(offsets, offsets[1:], strict=False)]
    states = compute_states(model, pairs, frozen, progress=progress)
    offsets = torch.tensor([0, *torch.tensor([len(s) for s in states]).cumsum(0).tolist()])
    atomic_save_tensors({"states": torch.cat(states), "offsets": offsets}, path)
    return states


def score_from_states(model: Any, states: Sequence[torch.Tensor], frozen: int
                      ) -> torch.Tensor:
    """Scores ``[batch]``: layers ``frozen..L-1``, final norm and head on cached states."""
    decoder = model.lm.get_decoder()
    device = model.head.weight.device
    padded, attention, positions = pad_states(states)
    dtype = decoder.embed_tokens.weight.dtype  # the trainable layers' own dtype
    hidden = run_layers(decoder, frozen, len(decoder.layers),
                        inputs_embeds=padded.to(device=device, dtype=dtype),
                        attention_mask=attention.to(device), position_ids=positions.to(device),
                        final_norm=True)[:, -1]
    return model.head(hidden.float()).squeeze(-1)


# -- scoring: the frozen layers run once per pair for every reranker that shares them -----

class SharedLowerStates:
    """The states leaving the first ``frozen`` layers, per (query, doc) text pair, kept for
    every reranker whose lower layers are the same (equal :func:`lower_fingerprint` and
    prompt). DeAR's untrained student and DeAR-P keep the same pretrained lower layers, so
    their evaluation runs those layers once per pair instead of twice (12 layers with 8
    frozen: 16 layer passes per pair instead of 24).

    In memory and bounded: past ``max_bytes`` the oldest pairs go first. The pipeline scores
    one collection's pairs with every row before the next collection, so a bound above one
    collection's states (~1 GB for 4,000 pairs of ~200 tokens at 576 bf16 dims) loses
    nothing."""

    def __init__(self, model: Any, frozen: int, *, max_bytes: int = 2 * 2**30) -> None:
        from collections import OrderedDict

        self.frozen = frozen
        self.max_bytes = max_bytes
        self.key = _states_key(model, frozen)
        self.computed = 0  # pairs whose lower states were computed (hits are the rest)
        self._memo: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._bytes = 0

    def compute(self, model: Any, queries: Sequence[str], docs: Sequence[str]
                ) -> list[torch.Tensor]:
        """Lower states of the pairs, unpadded, by ``model``'s own first layers (no memo)."""
        return _lower_states(model, model.lm.get_decoder(), self.frozen, queries, docs)

    def states(self, model: Any, queries: Sequence[str], docs: Sequence[str]
               ) -> list[torch.Tensor]:
        """Lower states of the pairs: from the memo, the missing ones computed and kept."""
        pairs = list(zip(queries, docs, strict=True))
        found = {p: self._memo[p] for p in pairs if p in self._memo}
        missing = list(dict.fromkeys(p for p in pairs if p not in found))
        if missing:
            fresh = self.compute(model, [q for q, _ in missing], [d for _, d in missing])
            self.computed += len(missing)
            for pair, state in zip(missing, fresh, strict=True):
                found[pair] = self._memo[pair] = state
                self._bytes += state.numel() * state.element_size()
        while self._bytes > self.max_bytes and self._memo:  # after the batch is collected
            _, old = self._memo.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        return [found[p] for p in pairs]


class SharedStatesReranker:
    """A :class:`~methods.retrieval.pointwise_lm.PointwiseLM` scored from
    :class:`SharedLowerStates`: its own upper layers, final norm and head on the shared
    lower states. The scores equal the model's own forward up to rounding (batches are
    padded differently); the fingerprint says which path made them, so a score cache never
    mixes the two."""

    def __init__(self, model: Any, shared: SharedLowerStates) -> None:
        if _states_key(model, shared.frozen) != shared.key:
            raise ValueError("SharedStatesReranker: this model's lower layers or prompt "
                             "differ from the shared states' model")
        self.model = model
        self.shared = shared
        self.standalone = False

    def fingerprint(self) -> str:
        return f"{self.model.fingerprint()}-shared{self.shared.frozen}"

    def forget(self) -> None:
        """From now on compute the lower states for every score, as this model would
        alone: the cost probe (bench.retrieval.costs) times the row's own cost, not a
        memo shared with another row."""
        self.standalone = True

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> list[float]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                states = (self.shared.compute if self.standalone
                          else self.shared.states)(self.model, queries, docs)
                scores = score_from_states(self.model, states, self.shared.frozen)
            return scores.float().cpu().tolist()
        finally:
            self.model.train(was_training)
