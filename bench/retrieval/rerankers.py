"""The retrieval suites' reference rerankers (the teachers and the LLM baseline).

- :class:`BiEncoderReranker`: cosine similarity of mean-pooled all-MiniLM-L6-v2 embeddings
  (Reimers & Gurevych 2019). Each distinct query and document is encoded once per process,
  not once per pair, so reranking 100 candidates costs ~100 encodings, not 200 per query.
  The default teacher.
- cross-encoders and RankLLaMA-style teachers, and the ``--teacher`` resolver that picks
  one of them: :mod:`bench.retrieval.teachers`.
- :class:`YesNoLLMReranker`: a zero-shot pointwise LLM reranker; relevance is the
  log-probability of "Yes" as the first assistant token after a yes/no relevance prompt
  in the model's chat template (as in Nogueira et al. 2020's monoT5 "true" token and the
  yes/no prompting of Zhuang et al. 2023). Documents are truncated to ``max_doc_tokens``.
  Batches are left-padded with explicit position ids, so a pair scores the same alone or
  in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.core.hf import left_pad, model_fingerprint

PROMPT = ("Passage: {doc}\n\nQuery: {query}\n\n"
          "Does the passage answer the query? Answer Yes or No.")


class BiEncoderReranker:
    kind = "bi-encoder"  # scores are cosines in [-1, 1], not logits (DeAR rescales them)

    def __init__(self, encoder: Any, *, max_length: int = 256, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.max_length = max_length
        self.batch_size = batch_size
        self._memo: dict[str, Any] = {}
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.encoder.model, "bi-encoder",
                                                  self.max_length)
        return self._fingerprint

    def _embed(self, texts: Sequence[str]) -> list[Any]:
        new = sorted({t for t in texts if t not in self._memo})
        if new:
            vectors = self.encoder.encode(new, batch_size=self.batch_size,
                                          max_length=self.max_length)
            self._memo.update(zip(new, vectors, strict=True))
        return [self._memo[t] for t in texts]

    def forget(self) -> None:
        """Drop the memoised embeddings, so the next scores are computed afresh (a cost
        probe times the encoding, not a dictionary lookup)."""
        self._memo = {}

    def prefetch(self, texts: Sequence[str], progress: bool = True) -> None:
        """Encode many texts in length-sorted passes (faster than pair batches)."""
        from bench.core.progress import progress_bar

        new = sorted({t for t in texts if t not in self._memo}, key=len)
        step = self.batch_size * 8
        with progress_bar(len(new), "encode", enabled=progress) as advance:
            for start in range(0, len(new), step):
                self._embed(new[start:start + step])
                advance(len(new[start:start + step]))

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> list[float]:
        q = self._embed(queries)
        d = self._embed(docs)
        return [float((a * b).sum()) for a, b in zip(q, d, strict=True)]


class YesNoLLMReranker:
    def __init__(self, model: Any, tokenizer: Any, *, max_doc_tokens: int = 128,
                 prompt: str = PROMPT, yes: str = "Yes") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_doc_tokens = max_doc_tokens
        self.prompt = prompt
        yes_ids = tokenizer.encode(yes, add_special_tokens=False)
        if len(yes_ids) != 1:
            raise ValueError(f"{yes!r} is {len(yes_ids)} tokens for this tokenizer; need one")
        self.yes_id = yes_ids[0]
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, "yes-no", self.prompt,
                                                  self.max_doc_tokens, self.yes_id)
        return self._fingerprint

    def render(self, query: str, doc: str) -> list[int]:
        return render_prompt(self.tokenizer, self.prompt, query, doc, self.max_doc_tokens)

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> list[float]:
        import torch

        input_ids, attention, positions = left_pad(
            [self.render(q, d) for q, d in zip(queries, docs, strict=True)],
            self.tokenizer.pad_token_id or 0)
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                            position_ids=positions.to(device), logits_to_keep=1).logits[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)[:, self.yes_id].cpu().tolist()


def render_prompt(tokenizer: Any, prompt: str, query: str, doc: str, max_doc_tokens: int,
                  *, chat: bool = True) -> list[int]:
    """Token ids of ``prompt`` with the doc cut to ``max_doc_tokens``: as a user turn of the
    tokenizer's chat template ending where the assistant's answer begins, or (``chat=False``)
    as plain text."""
    ids = tokenizer.encode(doc, add_special_tokens=False)
    if len(ids) > max_doc_tokens:
        doc = tokenizer.decode(ids[:max_doc_tokens])
    text = prompt.format(query=query, doc=doc)
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


# -- teachers beyond the bi-encoder: cross-encoders and RankLLaMA ----------------------
