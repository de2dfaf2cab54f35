"""Cached top-k teacher logits (as DistillKit does) and the top-k support they define.

A full-vocabulary logit cache is infeasible (DESIGN §3: ~200 GB for 500 steps of a 49k
vocabulary); the top k logits per position are not (k = 64: ~0.25% of it). With a cache,
a token-level loss compares teacher and student **on the teacher's top-k support only,
renormalised**: p_k = softmax(teacher_topk), q_k = softmax(student logits gathered at the
same k ids). This is an approximation of the full-vocabulary loss whose error vanishes as
the teacher's mass outside its top k does; with k = V it is exact (tested).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch


def topk_support(student_logits: torch.Tensor, teacher_values: torch.Tensor,
                 teacher_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(student_on_support, teacher_values)``, both ``[..., k]``, ready for any loss of
    ``methods.losses`` (which softmax-normalise over the last dimension).

    ``student_logits`` ``[B, S, V]``; ``teacher_values`` / ``teacher_indices`` ``[B, S, k]``.
    """
    if teacher_values.shape != teacher_indices.shape:
        raise ValueError("teacher top-k values and indices must have the same shape")
    gathered = torch.gather(student_logits, -1, teacher_indices.long())
    return gathered, teacher_values.to(gathered.dtype)


def topk_of(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k values (bf16, to halve the cache) and int32 ids along the vocabulary."""
    values, indices = torch.topk(teacher_logits.float(), k=min(k, teacher_logits.shape[-1]),
                                 dim=-1)
    return values.to(torch.bfloat16), indices.to(torch.int32)


class TopKLogitCache:
    """One safetensors file per example under ``root``, keyed by a caller-chosen string
    (e.g. the teacher fingerprint plus the example's token ids). Writes are atomic."""

    def __init__(self, root: str | os.PathLike[str], k: int) -> None:
        self.root = Path(root)
        self.k = k

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(f"{self.k}\0{key}".encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.safetensors"

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        from safetensors.torch import load_file

        path = self._path(key)
        if not path.exists():
            return None
        tensors = load_file(str(path))
        return tensors["values"], tensors["indices"]

    def put(self, key: str, values: torch.Tensor, indices: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"values": values.contiguous().cpu(),
                       "indices": indices.contiguous().cpu()}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
