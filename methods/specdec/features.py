"""Target features for training feature-level drafts (EAGLE, FSPAD): computed once,
cached as safetensors, served as padded training pairs.

The target's last hidden states (after the final norm: the LM head's input, the feature
EAGLE's draft reads; Li et al. 2024, arXiv:2401.15077) over each training prompt +
response are computed in one batched pass of the float32 target and stored as **one**
safetensors file per (target fingerprint, token ids, storage dtype) in the work directory:
``features`` ``[total tokens, H]``, ``ids``, ``offsets`` ``[n + 1]``, ``prompt_lens``.
The whole file is loaded into memory, which suits the CPU default (360 sequences: ~80 MB
in bfloat16); paper-scale data (68k ShareGPT dialogues on a 7B target, hundreds of GB)
would need per-dialogue shards as EAGLE's ``ge_data`` writes (not implemented).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

FEATURE_FORMAT = 1


def data_key(train: list[Any]) -> str:
    """A short hash of the training token ids (cache and checkpoint keys)."""
    digest = hashlib.sha256()
    for e in train:
        digest.update(json.dumps([e.prompt_ids, e.response_ids]).encode())
    return digest.hexdigest()[:16]


class FeatureStore(torch.utils.data.Dataset):
    """Target features of training sequences: item ``i`` is a dict with ``ids`` ``[L]``,
    ``features`` ``[L, H]`` (float32) and ``prompt_len``."""

    def __init__(self, tensors: dict[str, torch.Tensor], path: Path | None = None) -> None:
        self.features, self.ids = tensors["features"], tensors["ids"]
        self.offsets, self.prompt_lens = tensors["offsets"], tensors["prompt_lens"]
        self.path = path

    def __len__(self) -> int:
        return int(self.prompt_lens.numel())

    def __getitem__(self, i: int) -> dict[str, Any]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return {"ids": self.ids[a:b], "features": self.features[a:b].float(),
                "prompt_len": int(self.prompt_lens[i])}


@torch.no_grad()
def target_features(target: Any, train: list[Any], cache_dir: Path, *, batch_size: int = 8,
                    dtype: str = "bfloat16", progress: bool = True) -> FeatureStore:
    """The target's last hidden states (after the final norm) over prompt + response of
    every training example, computed once (batched, right-padded) and cached as one
    safetensors file ``features-<key>.safetensors`` (stored in ``dtype``)."""
    from safetensors.torch import load_file

    from bench.core.hf import model_fingerprint
    from bench.core.io import atomic_save_tensors
    from bench.core.progress import progress_bar

    key = hashlib.sha256(json.dumps([FEATURE_FORMAT, model_fingerprint(target), dtype,
                                     data_key(train)]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"features-{key}.safetensors"
    if path.exists():
        return FeatureStore(load_file(str(path)), path)
    rows = [list(e.prompt_ids) + list(e.response_ids) for e in train]
    out: list[torch.Tensor | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
    base = target.base_model
    with progress_bar(len(rows), "target features (train)", enabled=progress) as advance:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(rows[i]) for i in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for j, i in enumerate(chunk):
                ids[j, : len(rows[i])], mask[j, : len(rows[i])] = torch.tensor(rows[i]), 1
            device = next(target.parameters()).device
            hidden = base(input_ids=ids.to(device),
                          attention_mask=mask.to(device)).last_hidden_state
            for j, i in enumerate(chunk):
                out[i] = hidden[j, : len(rows[i])].to(getattr(torch, dtype)).cpu()
            advance(len(chunk))
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    tensors = {"features": torch.cat(out).contiguous(),  # type: ignore[arg-type]
               "ids": torch.tensor([t for r in rows for t in r], dtype=torch.long),
               "offsets": torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
               "prompt_lens": torch.tensor([len(e.prompt_ids) for e in train],
                                           dtype=torch.long)}
    atomic_save_tensors(tensors, path)
    return FeatureStore(tensors, path)


def head_batch(items: list[dict[str, Any]], noise_std: float) -> dict[str, torch.Tensor]:
    """Right-padded training pairs: ``features`` ``[B, T, H]`` (f_t + noise), ``next_ids``
    ``[B, T]`` (x_{t+1}), ``targets`` ``[B, T, H]`` (f_{t+1}), ``mask`` ``[B, T]``."""
    from methods.specdec.heads import uniform_feature_noise

    t_max = max(len(it["ids"]) - 1 for it in items)
    hidden = items[0]["features"].shape[-1]
    b = len(items)
    feats = torch.zeros(b, t_max, hidden)
    targets = torch.zeros(b, t_max, hidden)
    next_ids = torch.zeros(b, t_max, dtype=torch.long)
    mask = torch.zeros(b, t_max, dtype=torch.bool)
    lengths = torch.zeros(b, dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it["ids"]) - 1
        feats[i, :n], targets[i, :n] = it["features"][:-1], it["features"][1:]
        next_ids[i, :n] = it["ids"][1:]
        mask[i, max(0, it["prompt_len"] - 2): n] = True
        lengths[i] = n + 1
    feats = uniform_feature_noise(feats, lengths, noise_std)
    return {"features": feats, "next_ids": next_ids, "targets": targets, "mask": mask}


