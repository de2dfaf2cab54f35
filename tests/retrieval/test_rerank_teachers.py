"""Teacher rerankers beyond the MiniLM bi-encoder: a local cross-encoder, a RankLLaMA-style
peft adapter over a decoder classifier, the one ``--teacher`` resolver, and DeAR stage 1
with a cross-encoder teacher. Tiny random models; offline."""

import json
import shutil

import pytest
import torch
from conftest import save_tiny_lm, tiny_llama

from bench.core.assets import asset_path, is_prepared, prepared_dir, spec
from bench.errors import AssetMissingError, UsageError
from bench.retrieval.rerankers import BiEncoderReranker
from bench.retrieval.teachers import (
    CrossEncoderReranker,
    DecoderReranker,
    classify_reranker,
    describe_reranker,
    load_teacher_reranker,
    pair_scores,
)

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
         "pi rho sigma tau upsilon phi chi psi omega query passage").split()
QUERIES = ["what is a llama", "capital of france", "who wrote hamlet", "boiling point of water"]
DOCS = ["The llama is a domesticated South American camelid.",
        "Paris is the capital and most populous city of France, on the Seine.",
        "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601.",
        "Water boils at 100 degrees Celsius at sea level; the boiling point falls with "
        "altitude because the air pressure is lower. " * 20]


def _asset_dir(name):
    try:
        return asset_path(name)
    except AssetMissingError:
        pytest.skip(f"{name} not installed")


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    """A 2-layer random BertForSequenceClassification (one label) with MiniLM's tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    minilm = _asset_dir("all-minilm-l6-v2")
    path = tmp_path_factory.mktemp("tiny-cross-encoder")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, path / name)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1,
                        max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def _smollm2_tokenizer():
    """SmolLM2's tokenizer: the converted copy when prepared, else read from the GGUF (~9 s)."""
    from transformers import AutoTokenizer

    name = "smollm2-135m-instruct"
    if is_prepared(name):
        return AutoTokenizer.from_pretrained(prepared_dir(name))
    return AutoTokenizer.from_pretrained(_asset_dir(name), gguf_file=spec(name).meta["gguf_file"])


@pytest.fixture(scope="module")
def rankllama_dirs(tmp_path_factory):
    """(base dir, adapter dir): a tiny random LlamaForSequenceClassification over SmolLM2's
    vocabulary, and a LoRA adapter on it saved the way RankLLaMA's is (task SEQ_CLS, the
    score head in the adapter's weights, no tokenizer files next to the adapter)."""
    from peft import LoraConfig
    from transformers import LlamaForSequenceClassification

    from bench.core.hf import with_lora

    tokenizer = _smollm2_tokenizer()
    base_dir = tmp_path_factory.mktemp("tiny-llama-cls")
    tiny_llama(len(tokenizer), tied=False, max_positions=512, num_labels=1,
               model_cls=LlamaForSequenceClassification).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    base = LlamaForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    peft_model = with_lora(base, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                            target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change something
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "score" in name:
                param.normal_(std=0.5)
    adapter_dir = tmp_path_factory.mktemp("tiny-rankllama-lora")
    peft_model.save_pretrained(adapter_dir)
    return base_dir, adapter_dir


def test_pair_scores_reads_one_logit_or_the_two_label_log_odds():
    torch.testing.assert_close(pair_scores(torch.tensor([[1.5], [-2.0]])),
                               torch.tensor([1.5, -2.0]))
    torch.testing.assert_close(pair_scores(torch.tensor([[1.0, 3.0], [2.0, 0.5]])),
                               torch.tensor([2.0, -1.5]))
    with pytest.raises(ValueError, match="1 or 2 labels"):
        pair_scores(torch.zeros(2, 3))


def test_kind_rule_from_config_files():
    assert classify_reranker({"architectures": ["BertForSequenceClassification"],
                              "model_type": "bert"}) == "cross-encoder"
    assert classify_reranker({"architectures": ["XLMRobertaForSequenceClassification"],
                              "model_type": "xlm-roberta"}) == "cross-encoder"
    assert classify_reranker({"architectures": ["LlamaForSequenceClassification"],
                              "model_type": "llama"}) == "decoder"
    assert classify_reranker({"architectures": ["BertModel"], "model_type": "bert"}) \
        == "bi-encoder"
    assert classify_reranker(None, sentence_transformers=True) == "bi-encoder"
    assert classify_reranker({"architectures": ["LlamaForCausalLM"],
                              "model_type": "llama"}) is None
    assert describe_reranker("all-minilm-l6-v2").kind == "bi-encoder"


def test_cross_encoder_is_resolved_and_scores_deterministically(cross_encoder_dir):
    described = describe_reranker(str(cross_encoder_dir))
    assert described.kind == "cross-encoder" and described.local
    teacher = load_teacher_reranker(str(cross_encoder_dir), device="cpu")
    assert isinstance(teacher, CrossEncoderReranker) and teacher.kind == "cross-encoder"
    scores = teacher.score(QUERIES, DOCS)
    assert len(scores) == len(QUERIES) and all(isinstance(s, float) for s in scores)
    assert len(set(scores)) == len(scores)  # a random head still separates the pairs
    again = load_teacher_reranker(str(cross_encoder_dir), device="cpu")
    assert again.score(QUERIES, DOCS) == scores and again.fingerprint() == teacher.fingerprint()
    # Batch-invariant: one pair at a time, and shuffled batches, give the same scores.
    teacher.batch_size = 1
    single = [teacher.score([q], [d])[0] for q, d in zip(QUERIES, DOCS, strict=True)]
    teacher.batch_size = 3
    reversed_scores = teacher.score(QUERIES[::-1], DOCS[::-1])[::-1]
    torch.testing.assert_close(torch.tensor(single), torch.tensor(scores), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(reversed_scores), torch.tensor(scores),
                               atol=1e-5, rtol=0)
    # Matches a plain forward pass of the classifier on the tokenizer's pair encoding.
    batch = teacher.tokenizer(QUERIES[:1], DOCS[:1], return_tensors="pt")
    with torch.no_grad():
        direct = teacher.model(**batch).logits[0, 0].item()
    assert scores[0] == pytest.approx(direct, abs=1e-5)


def test_rankllama_adapter_loads_offline_merged_and_scores_the_last_eos(rankllama_dirs):
    base_dir, adapter_dir = rankllama_dirs
    assert json.loads((adapter_dir / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == str(base_dir)
    described = describe_reranker(str(adapter_dir))
    assert described.kind == "decoder" and described.adapter is not None
    assert described.base is not None and described.base.source == str(base_dir)
    teacher = load_teacher_reranker(str(adapter_dir), dtype="float32", device="cpu")
    assert isinstance(teacher, DecoderReranker) and teacher.kind == "decoder"
    eos = teacher.tokenizer.eos_token
    ids = teacher.render("capital of france", "Paris")
    assert teacher.tokenizer.decode(ids) == f"query: capital of france{eos}document: Paris{eos}"
    scores = teacher.score(QUERIES, DOCS)
    assert len(scores) == 4 and len(set(scores)) == 4
    teacher.batch_size = 1
    single = teacher.score(QUERIES, DOCS)
    torch.testing.assert_close(torch.tensor(single), torch.tensor(scores), atol=1e-5, rtol=0)
    # The adapter is applied: the bare base classifier scores differently.
    base = load_teacher_reranker(str(base_dir), dtype="float32", device="cpu")
    assert isinstance(base, DecoderReranker)
    assert not torch.allclose(torch.tensor(base.score(QUERIES, DOCS)), torch.tensor(scores))
    assert base.fingerprint() != teacher.fingerprint()
    # Equals the merged classifier's own last-token score on an unpadded pair.
    with torch.no_grad():
        hidden = teacher.model.base_model(input_ids=torch.tensor([ids])).last_hidden_state
        direct = teacher.model.score(hidden[:, -1])[0, 0].item()
    assert teacher.score(["capital of france"], ["Paris"])[0] == pytest.approx(direct, abs=1e-5)


def test_offline_hub_id_is_a_usage_error_naming_the_flag(monkeypatch):
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    with pytest.raises(UsageError, match="--teacher.*DISTILLBENCH_ONLINE=1") as info:
        load_teacher_reranker("distillbench-test/no-such-cross-encoder")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="--teacher '/no/such/dir': no such directory"):
        describe_reranker("/no/such/dir")


def test_adapter_over_a_hub_base_offline_says_how_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTILLBENCH_ONLINE", raising=False)
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "distillbench-test/no-such-base", "peft_type": "LORA"}))
    with pytest.raises(UsageError, match="DISTILLBENCH_ONLINE=1.*base_model_name_or_path"):
        describe_reranker(str(tmp_path))


def test_causal_lm_is_not_a_teacher_reranker(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    with pytest.raises(UsageError, match="not a reranker"):
        describe_reranker(str(tmp_path))


def test_default_teacher_is_the_minilm_bi_encoder():
    _asset_dir("all-minilm-l6-v2")
    teacher = load_teacher_reranker(None)
    assert isinstance(teacher, BiEncoderReranker) and teacher.max_length == 256


def test_dear_stage1_with_a_cross_encoder_teacher(cross_encoder_dir, tmp_path):
    """A tiny DeAR stage-1 run with the cross-encoder as teacher: its logits are used as
    they are (teacher_scale 1), not multiplied like the bi-encoder's cosines."""
    from methods.retrieval.dear import DeARConfig, build_groups, teacher_scale_for, train_stage1

    docs, queries, qrels, candidates = toy_data()
    groups = build_groups(queries, qrels, candidates, group_size=3, negatives_depth=10)
    teacher = load_teacher_reranker(str(cross_encoder_dir), device="cpu")
    assert teacher_scale_for(teacher, {}) == 1.0
    assert teacher_scale_for(load_teacher_reranker(None), {}) == DeARConfig.teacher_scale
    assert teacher_scale_for(teacher, {"teacher_scale": 5}) == 5.0
    student_dir = tmp_path / "student"
    _tiny_student(student_dir)
    cfg = DeARConfig(student=str(student_dir), student_layers=2, train_queries=6,
                     group_size=3, batch_queries=3, epochs=1, checkpoint_every=10,
                     mixed_precision="no", max_doc_tokens=8, teacher_scale=1.0)
    model = train_stage1(cfg, queries=queries, docs=docs, groups=groups, teacher=teacher,
                         work_dir=tmp_path / "work", progress=False)
    cache = tmp_path / "work" / f"teacher-{teacher.fingerprint()}.jsonl"
    assert cache.is_file() and len(cache.read_text().splitlines()) >= 1
    assert len(model.score(["alpha beta"], ["alpha beta gamma"])) == 1


def toy_data():
    docs = {f"d{i}": " ".join(WORDS[i:i + 5]) for i in range(15)}
    queries = {f"q{i}": " ".join(WORDS[i:i + 2]) for i in range(6)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(6)}
    candidates = {q: {d: float(-abs(int(d[1:]) - int(q[1:]))) for d in docs} for q in queries}
    return docs, queries, qrels, candidates


def _tiny_student(path):
    save_tiny_lm(path, [":", *WORDS], eos=False)


def test_bench_run_rerank_teacher_row_with_a_cross_encoder(cross_encoder_dir, tmp_path, capsys):
    from bench.cli import main
    from bench.core.results import ResultStore

    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["run", "--suite", "beir", "--dataset", "offline/fiqa", "--limit", "3",
            "--teacher", str(cross_encoder_dir), "--out", str(out), "--work-dir", str(work)]
    assert main([*argv, "--method", "rerank-teacher"]) == 0
    (record,) = ResultStore(out).load("beir")
    assert record["method"] == "rerank-teacher" and record["model"] == cross_encoder_dir.name
    assert record["config"]["teacher"] == str(cross_encoder_dir)
    assert record["config"]["teacher_kind"] == "cross-encoder"
    assert main([*argv, "--method", "minilm"]) == 2  # the MiniLM row takes bi-encoders only
    assert "use --method rerank-teacher" in capsys.readouterr().err
