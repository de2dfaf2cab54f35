"""A decoder-LM pointwise reranker: a score read from the last token's hidden state.

RankLLaMA (Ma et al., 2023, arXiv:2310.08319) scores a (query, passage) pair with a linear
head on the final hidden state of the last token. This module does the same on any causal
LM, with one addition for small CPU budgets: the head can start as the LM's own yes/no
log-odds, ``w = W_out["Yes"] − W_out["No"]`` (``head_init="yes-no"``), so that the
untrained student already is the zero-shot yes/no reranker of ``bench.retrieval`` on the
same prompt, and distillation starts from a ranking prior instead of random order (a
random head can stay near random order within a CPU budget; docs/measurements/beir.md).
``head_init="random"`` gives RankLLaMA's plain linear head (normal, std 0.02).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bench.core.hf import left_pad, model_fingerprint
from bench.retrieval.rerankers import PROMPT, render_prompt


class PointwiseLM(torch.nn.Module):
    def __init__(self, lm: Any, tokenizer: Any, *, head_init: str = "yes-no",
                 prompt: str = PROMPT, max_doc_tokens: int = 128, yes: str = "Yes",
                 no: str = "No", chat: bool = True) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_doc_tokens = max_doc_tokens
        self.chat = chat
        hidden = int(lm.config.hidden_size)
        self.head = torch.nn.Linear(hidden, 1, dtype=torch.float32)
        torch.nn.init.zeros_(self.head.bias)
        if head_init == "yes-no":
            ids = [tokenizer.encode(w, add_special_tokens=False) for w in (yes, no)]
            if any(len(i) != 1 for i in ids):
                raise ValueError(f"{yes!r}/{no!r} must be single tokens for a yes-no head")
            out = lm.get_output_embeddings().weight.detach().float()
            with torch.no_grad():
                self.head.weight.copy_((out[ids[0][0]] - out[ids[1][0]]).unsqueeze(0))
        elif head_init in ("random", "probe"):  # "probe": the caller fits it (see dear.py)
            torch.nn.init.normal_(self.head.weight, std=0.02)
        else:
            raise ValueError(f"head_init must be 'yes-no' or 'random', got {head_init!r}")
        self.head_init = head_init

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        """Scores ``[batch]`` for left-padded inputs (see ``left_pad``)."""
        hidden = self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                       position_ids=position_ids).last_hidden_state[:, -1]
        return self.head(hidden.float()).squeeze(-1)

    def encode(self, queries: Sequence[str], docs: Sequence[str]) -> dict[str, torch.Tensor]:
        rows = [render_prompt(self.tokenizer, self.prompt, q, d, self.max_doc_tokens,
                              chat=self.chat) for q, d in zip(queries, docs, strict=True)]
        input_ids, attention, positions = left_pad(rows, self.tokenizer.pad_token_id or 0)
        device = self.head.weight.device
        return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device),
                "position_ids": positions.to(device)}

    # -- the PointwiseReranker protocol of bench.retrieval.rerank ----------------------
    def fingerprint(self) -> str:
        return model_fingerprint(self, "pointwise-lm", self.prompt, self.max_doc_tokens,
                                 self.chat)

    def score(self, queries: Sequence[str], docs: Sequence[str]) -> list[float]:
        was_training = self.training
        self.eval()
        try:
            return self(**self.encode(queries, docs)).float().cpu().tolist()
        finally:
            self.train(was_training)
