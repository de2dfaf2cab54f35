"""bench.core.hf: fingerprints of loaded models, padding, the transformers shims, RoPE."""

import pytest
import torch

from bench.core import hf


@pytest.fixture
def loaded(tiny_chat_model_dir, tmp_path, monkeypatch):
    from bench.core.assets import load_causal_lm

    monkeypatch.setenv("DISTILLBENCH_CACHE", str(tmp_path / "cache"))
    model, _ = load_causal_lm(str(tiny_chat_model_dir), dtype="float32")
    return model


def test_an_unmodified_model_keeps_its_fingerprint_and_the_memo_is_used(loaded, tmp_path,
                                                                        monkeypatch):
    full = hf._parameter_hash(loaded, ("x", 1))
    assert hf.model_fingerprint(loaded, "x", 1) == full  # same key as hashing every weight
    assert (tmp_path / "cache" / "fingerprints.json").exists()
    calls = []
    monkeypatch.setattr(hf, "_parameter_hash", lambda m, e: calls.append(e) or "other")
    assert hf.model_fingerprint(loaded, "x", 1) == full  # from the memo: no second pass
    assert calls == []


def test_a_trained_or_copied_model_is_hashed_again(loaded):
    before = hf.model_fingerprint(loaded)
    with torch.no_grad():
        next(loaded.parameters()).add_(1.0)  # an in-place update, as an optimizer step
    assert hf.model_fingerprint(loaded) != before
    assert hf._unmodified_source(loaded) is None
    copy = hf.inference_copy(loaded, "float32")
    assert hf._unmodified_source(copy) is None  # new storage: hashed, never trusted
    assert hf.model_fingerprint(copy) == hf._parameter_hash(loaded, ())


def test_left_pad_positions_count_real_tokens():
    ids, mask, pos = hf.left_pad([[5, 6, 7], [9]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_output_cache_reads_either_attribute():
    from types import SimpleNamespace

    assert hf.output_cache(SimpleNamespace(cache="v5", past_key_values="v4")) == "v5"
    assert hf.output_cache(SimpleNamespace(past_key_values="v4")) == "v4"


@pytest.mark.parametrize("scaling", [None, {"rope_type": "llama3", "factor": 8.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 64}])
def test_rotary_embedding_equals_the_targets_own(scaling):
    """A draft head's RoPE must be its target's, Llama-3 scaling included."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = {"rope_type": "default", "rope_theta": 50000.0, **(scaling or {})}
    target = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=16,
                         max_position_embeddings=256, rope_parameters=params)
    positions = torch.arange(200)[None]
    x = torch.zeros(1, 200, 16)
    want = LlamaRotaryEmbedding(config=target)(x, positions)
    got = hf.rotary_embedding(hf.rope_parameters(target), hidden_size=64, num_heads=4,
                              head_dim=16, max_positions=256)(x, positions)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    if scaling:  # and it differs from unscaled RoPE, so the check has teeth
        plain = hf.rotary_embedding({"rope_type": "default", "rope_theta": 50000.0},
                                    hidden_size=64, num_heads=4, head_dim=16)(x, positions)
        assert not torch.allclose(plain[0], want[0])
