"""Student construction from a teacher: first-k-layers copies and narrower random configs.

On a 2-core CPU a student must start from a useful prior for learning to show within the
default budget, so the default student keeps the teacher's embeddings,
its first ``k`` decoder layers, the final norm and the LM head (the "layer-dropping"
initialisation used by DistilBERT and many LLM-KD papers). It shares the teacher's
tokenizer, so token-level losses compare logits over one vocabulary. A narrower, randomly
initialised student (same vocabulary, smaller width) is offered for width ablations.

Works for decoder-only Hugging Face causal LMs whose config has ``num_hidden_layers`` and
whose blocks sit in one ``...layers`` ModuleList (Llama, Qwen2/3, Mistral, Gemma, Phi-3).
"""

from __future__ import annotations

import copy
import re
from typing import Any

_PER_LAYER_LIST_ATTRS = ("layer_types",)


def _layer_list_prefix(model: Any, n_layers: int) -> str:
    """Dotted name of the ModuleList holding the decoder blocks (e.g. ``model.layers``)."""
    import torch

    candidates = [name for name, mod in model.named_modules()
                  if isinstance(mod, torch.nn.ModuleList) and len(mod) == n_layers
                  and name.split(".")[-1] in ("layers", "h", "blocks")]
    if len(candidates) != 1:
        raise ValueError(f"cannot find the decoder layer list of {type(model).__name__} "
                         f"(candidates: {candidates or 'none'})")
    return candidates[0]


def _with_num_layers(config: Any, k: int) -> Any:
    """A deep copy of ``config`` with ``k`` layers, trimming per-layer lists to match."""
    config = copy.deepcopy(config)
    n = config.num_hidden_layers
    config.num_hidden_layers = k
    for attr in _PER_LAYER_LIST_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, (list, tuple)) and len(value) == n:
            setattr(config, attr, list(value[:k]))
    if getattr(config, "max_window_layers", None) is not None:
        config.max_window_layers = min(config.max_window_layers, k)
    return config


def first_k_layers_student(teacher: Any, k: int) -> Any:
    """A new model of the teacher's class with its first ``k`` decoder layers copied.

    Embeddings, layers ``0..k-1``, final norm and LM head are copied (tied embeddings stay
    tied: the head is the student's own embedding matrix, not the teacher's). Buffers such as
    rotary frequencies are copied too, so ``k == n_layers`` reproduces the teacher exactly.
    Same dtype and device as the teacher, same training/eval mode; the teacher is untouched.
    """
    n = int(teacher.config.num_hidden_layers)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}] (the teacher's layer count), "
                         f"got {k!r}")
    prefix = _layer_list_prefix(teacher, n)
    config = _with_num_layers(teacher.config, k)
    student = type(teacher)._from_config(config, dtype=teacher.dtype)
    device = next(teacher.parameters()).device
    student.to(device)

    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")

    def keep(key: str) -> bool:
        m = pattern.match(key)
        return m is None or int(m.group(1)) < k

    state = {key: v for key, v in teacher.state_dict().items() if keep(key)}
    student.load_state_dict(state, strict=True)
    own_buffers = dict(student.named_buffers())
    for key, buf in teacher.named_buffers():  # non-persistent ones (rotary inv_freq)
        if keep(key) and key in own_buffers:
            own_buffers[key].copy_(buf)
    if getattr(config, "tie_word_embeddings", False):
        student.tie_weights()
    if getattr(teacher, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(teacher.generation_config)
    student.train(teacher.training)
    return student


def narrow_student_config(teacher_config: Any, *, hidden_size: int, intermediate_size: int,
                          num_layers: int, num_heads: int, num_kv_heads: int) -> Any:
    """The teacher's config with a smaller width/depth and the same vocabulary.

    Keeping the vocabulary (and special-token ids) is what lets token-level KD losses
    compare student and teacher logits position by position.
    """
    for label, value in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size),
                         ("num_layers", num_layers), ("num_heads", num_heads),
                         ("num_kv_heads", num_kv_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not divisible by num_kv_heads {num_kv_heads}")
    config = _with_num_layers(teacher_config, min(num_layers, teacher_config.num_hidden_layers))
    if num_layers > teacher_config.num_hidden_layers:  # deeper than the teacher: extend lists
        for attr in _PER_LAYER_LIST_ATTRS:
            value = getattr(config, attr, None)
            if isinstance(value, list) and value:
                base = list(getattr(teacher_config, attr))
                setattr(config, attr, [base[i % len(base)] for i in range(num_layers)])
    config.num_hidden_layers = num_layers
    config.hidden_size = hidden_size
    config.intermediate_size = intermediate_size
    config.num_attention_heads = num_heads
    config.num_key_value_heads = num_kv_heads
    if hasattr(config, "head_dim"):
        config.head_dim = hidden_size // num_heads
    return config


def narrow_student(teacher_config: Any, *, hidden_size: int, intermediate_size: int,
                   num_layers: int, num_heads: int, num_kv_heads: int,
                   seed: int | None = None) -> Any:
    """A randomly initialised causal LM with :func:`narrow_student_config`'s config.

    ``seed`` makes the initialisation reproducible without touching the caller's RNG state.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = narrow_student_config(
        teacher_config, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads)
    if seed is None:
        return AutoModelForCausalLM.from_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)
