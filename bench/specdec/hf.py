"""Thin helpers over Hugging Face causal LMs: KV caches, cropping, gathering, tree masks.

Everything the decoding engine needs from ``transformers`` goes through this module, so
API drift stays in one place. Facts checked against transformers 5.24 (the pinned CPU
environment); the 4.x fallbacks below are written from the 4.46 API but untested:

- the forward's cache argument is ``cache`` in transformers 5 (``past_key_values`` is a
  deprecated alias until 5.40) and ``past_key_values`` before; :func:`forward` passes
  whichever the model's signature names;
- ``DynamicCache.crop(n)`` takes a *negative* ``n`` (tokens to remove) in transformers 5;
  a positive absolute length raises. Negative values also work in 4.x, so :func:`crop_to`
  always passes ``-(tokens to remove)``;
- a 4D ``attention_mask`` is handed to the attention kernels as-is
  (``masking_utils._preprocess_mask_arguments`` returns early), and eager attention *adds*
  it to the scores, so tree masks are float additive masks (0 = attend, dtype min =
  blocked) of shape ``[1, 1, q_len, cache_len + q_len]``; verified for ``eager`` and
  ``sdpa``. Flash-attention kernels ignore such masks: tree mode refuses them;
- ``output_hidden_states=True`` returns the last decoder layer's output *after* the final
  norm as ``hidden_states[-1]`` (``lm_head(hidden_states[-1]) == logits`` for Llama), the
  feature EAGLE's draft consumes.

Only full-attention ``DynamicLayer`` caches are supported (Llama, Qwen, Mistral without
sliding window, ...): a sliding-window layer forgets states that a rollback would need.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch


@functools.cache
def _forward_params(model_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_type.forward).parameters)


def _cache_kwarg(model: Any) -> str:
    return "cache" if "cache" in _forward_params(type(model)) else "past_key_values"


def _logits_kwarg(model: Any) -> str | None:
    params = _forward_params(type(model))
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def new_cache(model: Any) -> Any:
    """An empty ``DynamicCache`` for ``model`` (per-layer types from its config in v5)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers 4.x: no config argument
        return DynamicCache()


def cache_length(cache: Any) -> int:
    """Number of positions held by ``cache``."""
    return int(cache.get_seq_length())


def crop_to(cache: Any, length: int) -> None:
    """Drop cached positions beyond ``length`` (no-op when the cache is not longer)."""
    extra = cache_length(cache) - length
    if extra > 0:
        cache.crop(-extra)


def _kv_lists(cache: Any) -> list[tuple[Any, str, str]] | None:
    """(holder, key attribute, value attribute) per layer, or None when unsupported."""
    if hasattr(cache, "layers"):  # transformers >= 4.56 / 5.x
        out = []
        for layer in cache.layers:
            if type(layer).__name__ != "DynamicLayer" or getattr(layer, "keys", None) is None:
                return None
            out.append((layer, "keys", "values"))
        return out
    return None


def keep_positions(cache: Any, positions: torch.Tensor) -> bool:
    """Keep only the cached ``positions`` (in order), e.g. the prefix plus an accepted tree
    path. Keys are stored after RoPE, so this is exact when every kept entry was computed
    at the position it ends up in (true for a tree path: position = prefix + depth).
    Returns False (cache untouched) for cache types this does not support."""
    layers = _kv_lists(cache)
    if layers is None:
        return False
    for holder, k_attr, v_attr in layers:
        keys, values = getattr(holder, k_attr), getattr(holder, v_attr)
        idx = positions.to(keys.device)
        setattr(holder, k_attr, keys.index_select(-2, idx))
        setattr(holder, v_attr, values.index_select(-2, idx))
    return True


def tree_attention_mask(ancestors: torch.Tensor, prefix_len: int, dtype: torch.dtype,
                        device: torch.device | str) -> torch.Tensor:
    """Additive 4D mask for ``q`` new tokens after ``prefix_len`` cached ones.

    ``ancestors`` is a bool ``[q, kv_new]`` matrix over the *non-prefix* keys (previously
    fed tree nodes plus the ``q`` new ones, in cache order): True where the query may
    attend. Every query attends to the whole prefix.
    """
    q, kv_new = ancestors.shape
    allowed = torch.ones(q, prefix_len + kv_new, dtype=torch.bool, device=device)
    allowed[:, prefix_len:] = ancestors.to(device)
    mask = torch.zeros(q, prefix_len + kv_new, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def model_dtype(model: Any) -> torch.dtype:
    return next(model.parameters()).dtype


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def check_tree_attention(model: Any) -> None:
    """Raise when the model's attention kernel would ignore a custom 4D float mask."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in ("eager", "sdpa"):
        raise NotImplementedError(
            f"tree verification needs a custom 4D attention mask; attention implementation "
            f"{impl!r} is not supported (load the model with attn_implementation='sdpa' or "
            f"'eager')")


def forward(model: Any, ids: list[int] | torch.Tensor, cache: Any, *,
            position_ids: torch.Tensor | None = None, mask: torch.Tensor | None = None,
            hidden: bool = False, last_only: bool = False,
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One cached forward of ``ids`` (batch 1) after the positions already in ``cache``.

    Returns (logits ``[n, V]`` float32, last hidden states ``[n, H]`` or None); with
    ``last_only`` only the last position's logits are computed (``[1, V]``).
    """
    device = model_device(model)
    if not isinstance(ids, torch.Tensor):
        ids = torch.tensor(ids, dtype=torch.long)
    ids = ids.to(device).reshape(1, -1)
    kwargs: dict[str, Any] = {_cache_kwarg(model): cache, "use_cache": True}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids.to(device).reshape(1, -1)
    if mask is not None:
        kwargs["attention_mask"] = mask
    if hidden:
        kwargs["output_hidden_states"] = True
    name = _logits_kwarg(model)
    if last_only and name is not None and not hidden:
        kwargs[name] = 1
    out = model(input_ids=ids, **kwargs)
    logits = out.logits[0].float()
    if last_only:
        logits = logits[-1:]
    return logits, (out.hidden_states[-1][0] if hidden else None)
