"""Thin helpers over Hugging Face models: the one place that knows ``transformers``' API.

Padding (:func:`left_pad`), weight fingerprints for cache keys (:func:`model_fingerprint`),
inference copies (:func:`inference_copy`), RoPE parameters and the Llama rotary embedding
(:func:`rope_parameters`, :func:`rotary_embedding`), and for cached decoding: KV caches,
cropping, gathering, tree masks and one cached forward (:func:`forward`). Every version
difference of ``transformers`` is handled here, so API drift stays in one place. Facts
checked against transformers 5.25 (the pinned CPU environment); the 4.x fallbacks below
are written from the 4.46 API but untested:

- the forward's cache argument is ``cache`` in transformers 5 (``past_key_values`` is a
  deprecated alias until 5.40) and ``past_key_values`` before, and so is the output's
  attribute; :func:`cache_kwargs` and :func:`output_cache` use whichever the model names;
- RoPE settings are ``config.rope_parameters`` (one dict with ``rope_type`` and
  ``rope_theta``) in transformers 5 and ``rope_theta`` + ``rope_scaling`` before;
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

import contextlib
import functools
import hashlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch


@functools.cache
def _forward_params(model_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_type.forward).parameters)


def _cache_kwarg(model: Any) -> str:
    return "cache" if "cache" in _forward_params(type(model)) else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The forward keyword arguments that pass ``cache`` to ``model`` and ask for one back."""
    return {_cache_kwarg(model): cache, "use_cache": True}


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned (``cache`` in transformers 5, ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


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
    kwargs: dict[str, Any] = cache_kwargs(model, cache)
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


# ------------------------------------------------------------------ padding and copies


def quiet_progress() -> None:
    """Turn off transformers' own per-call progress bars ("Loading weights", "Writing
    model shards"): runs show their phases with bench's progress bars, and a bar per
    checkpoint or model load is noise in a normal run."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """Silence the FutureWarning transformers raises when peft reads its deprecated
    ``is_gradient_checkpointing`` while wrapping a model (a library-internal deprecation a
    user can do nothing about: noise in every LoRA run and adapter load)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        yield


def with_lora(model: Any, config: Any) -> Any:
    """``peft.get_peft_model(model, config)`` under :func:`peft_quietly`."""
    from peft import get_peft_model

    with peft_quietly():
        return get_peft_model(model, config)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """``(input_ids, attention_mask, position_ids)`` left-padded so the last column is each
    row's final token; positions count real tokens only, so padding changes no score."""
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows])
    attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention, positions


def inference_copy(model: Any, dtype: str | torch.dtype = "bfloat16") -> Any:
    """A copy of ``model`` in ``dtype`` and eval mode, for generation or scoring (bf16:
    ~1.5-2x the tokens/s of fp32 on the CPUs measured, docs/measurements); the original
    keeps training in its own dtype."""
    import copy

    target = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return copy.deepcopy(model).to(target).eval()


# ------------------------------------------------------------------ fingerprints

SOURCE_ATTR = "_distillbench_source"


def mark_source(model: Any, source_key: str) -> None:
    """Remember where ``model``'s weights came from (a hub revision or the weight files),
    with each parameter's storage and version counter, so :func:`model_fingerprint` can
    tell that the model is still exactly as loaded."""
    state = {name: (t.data_ptr(), t._version, str(t.dtype))
             for name, t in model.state_dict().items()}
    setattr(model, SOURCE_ATTR, (source_key, state))


def _unmodified_source(model: Any) -> str | None:
    mark = getattr(model, SOURCE_ATTR, None)
    if mark is None:
        return None
    source_key, state = mark
    now = {name: (t.data_ptr(), t._version, str(t.dtype))
           for name, t in model.state_dict().items()}
    return source_key if now == state else None


def _parameter_hash(model: Any, extra: tuple[object, ...]) -> str:
    digest = hashlib.sha256(repr(extra).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def model_fingerprint(model: Any, *extra: object) -> str:
    """sha256 over parameter bytes and settings: a changed weight changes the cache key.

    Hashing every parameter as float32 costs a pass over the weights (~28 GB for a 7B
    model), so for a model that is exactly as loaded (:func:`mark_source`: same storage,
    no in-place update since) the hash is computed once per weight source and kept in the
    cache folder; the key is the same either way.
    """
    source = _unmodified_source(model)
    if source is None:
        return _parameter_hash(model, extra)
    import json

    from bench.core.assets import cache_dir
    from bench.core.io import atomic_write_text

    memo_key = hashlib.sha256(json.dumps([source, repr(extra)]).encode()).hexdigest()
    memo_path = cache_dir() / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if memo_key not in memo:
        memo[memo_key] = _parameter_hash(model, extra)
        try:
            atomic_write_text(memo_path, json.dumps(memo, sort_keys=True))
        except OSError:  # a read-only cache only makes the next call slower
            pass
    return memo[memo_key]


def weights_source_key(source: str, local: bool, model: Any) -> str:
    """What identifies a loaded model's weights without reading them: the hub revision,
    or the weight files' names, sizes and modification times, plus the loaded dtype."""
    import json
    from pathlib import Path

    dtype = str(next(model.parameters()).dtype)
    if not local:
        revision = getattr(model.config, "_commit_hash", None)
        return json.dumps(["hub", source, revision, dtype])
    files = sorted(p for p in Path(source).rglob("*")
                   if p.suffix in (".safetensors", ".bin", ".gguf", ".pt") and p.is_file())
    return json.dumps(["local", str(Path(source).resolve()), dtype,
                       [(str(p.relative_to(source)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in files]])


# ------------------------------------------------------------------ RoPE


def rope_parameters(config: Any) -> dict[str, Any]:
    """The model's RoPE settings as one dict (``rope_type``, ``rope_theta`` and any
    scaling keys such as Llama-3's ``factor``), in either transformers generation."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params:
        out = dict(params)
    else:
        out = dict(getattr(config, "rope_scaling", None) or {})
        out.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    out.setdefault("rope_type", out.pop("type", None) or "default")
    out.setdefault("rope_theta", 10000.0)
    return out


def rotary_embedding(params: dict[str, Any], *, hidden_size: int, num_heads: int,
                     head_dim: int, max_positions: int = 8192) -> torch.nn.Module:
    """transformers' ``LlamaRotaryEmbedding`` for ``params`` (:func:`rope_parameters`):
    ``forward(x, position_ids) -> (cos, sin)`` ``[B, T, head_dim]``, with the scaling the
    target model uses (e.g. Llama-3.x's), so a draft head rotates exactly as its target."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = dict(params)
    common = dict(hidden_size=hidden_size, num_attention_heads=num_heads, head_dim=head_dim,
                  max_position_embeddings=max_positions)
    try:  # transformers 5: one rope_parameters dict
        config = LlamaConfig(**common, rope_parameters=params)
    except TypeError:  # 4.x: theta and scaling apart
        theta = params.pop("rope_theta")
        scaling = params if params.get("rope_type", "default") != "default" else None
        config = LlamaConfig(**common, rope_theta=theta, rope_scaling=scaling)
    return LlamaRotaryEmbedding(config=config)
