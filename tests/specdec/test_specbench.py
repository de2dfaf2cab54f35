"""The specbench suite: EAGLE / FSPAD draft heads, their losses, the feature cache, the
data, the lossless checks with feature-level drafts, and tiny end-to-end runs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_speculative import _tiny_llama

from bench.specdec import TreeConfig, autoregressive, speculative
from methods.losses.spec import eagle_loss, feature_smooth_l1, fspad_loss, soft_token_ce
from methods.specdec.heads import (
    EagleHead,
    FeatureDraft,
    FSPADHead,
    HeadConfig,
    uniform_feature_noise,
)

CFG = HeadConfig(hidden_size=8, num_heads=2, num_kv_heads=1, head_dim=4,
                 intermediate_size=12, rms_eps=1e-6, rope_theta=10000.0)


def _head(kind: type, seed: int = 0, cfg: HeadConfig = CFG):
    torch.manual_seed(seed)
    return kind(cfg).double()


# ------------------------------------------------------------------------------- heads


@pytest.mark.parametrize("kind", [EagleHead, FSPADHead])
def test_head_shapes_and_halves(kind):
    head = _head(kind)
    f, e = torch.randn(3, 5, 8, dtype=torch.float64), torch.randn(3, 5, 8, dtype=torch.float64)
    positions = torch.arange(5).expand(3, 5)
    logit_h, feat, (k, v) = head(f, e, positions)
    assert logit_h.shape == feat.shape == (3, 5, 8)
    assert k.shape == v.shape == (3, 1, 5, 4)
    assert head.fc.weight.shape == (8, 16) and head.fc.bias is not None
    assert head.layer.down_proj.weight.shape == (8 * (2 if kind is FSPADHead else 1), 12)
    if kind is EagleHead:
        assert torch.equal(logit_h, feat)  # EAGLE: one vector for both roles
    else:
        assert not torch.allclose(logit_h, feat)
    # causal: the first position ignores the later ones
    f2 = f.clone()
    f2[:, 3:] += 1.0
    assert torch.allclose(head(f2, e, positions)[0][:, :3], logit_h[:, :3])


def test_fspad_feature_sampling_and_halves_by_hand():
    head = _head(FSPADHead, seed=3)
    f, e = torch.randn(1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 8, dtype=torch.float64)
    W = head.fc.weight
    x = torch.cat([e, f], -1) @ W.T + head.fc.bias  # x = W_fc [e; f]
    norm_x = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6) * head.fs_norm.weight
    gate = e @ head.fs_gate.weight.T
    z = x + (gate * torch.sigmoid(gate) * (norm_x @ head.fs_up.weight.T)) @ head.fs_down.weight.T
    torch.testing.assert_close(head.fuse(f, e), z)
    # one position: attention returns v, so the layer is computable by hand
    lay = head.layer
    v = (z @ lay.v_proj.weight.T).repeat(1, 1, 2)  # 1 kv head shared by 2 heads
    h = z + v @ lay.o_proj.weight.T
    n = h / torch.sqrt((h ** 2).mean(-1, keepdim=True) + 1e-6) * lay.post_attention_layernorm.weight
    mlp = (F.silu(n @ lay.gate_proj.weight.T) * (n @ lay.up_proj.weight.T)) @ lay.down_proj.weight.T
    logit_h, feat, _ = head(f, e, torch.zeros(1, 1, dtype=torch.long))
    torch.testing.assert_close(logit_h, h + mlp[..., :8])  # logit half (LM head reads it)
    torch.testing.assert_close(feat, h + mlp[..., 8:])  # feature half (fed back)


def test_eagle_fuses_embedding_first():
    head = _head(EagleHead, seed=4)
    f, e = torch.randn(2, 8, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    torch.testing.assert_close(head.fuse(f, e), torch.cat([e, f], -1) @ head.fc.weight.T
                               + head.fc.bias)


def test_head_rope_is_the_targets_own_with_llama3_scaling():
    """A Llama-3.x target rotates with scaled RoPE; its head must rotate the same way."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    target = LlamaConfig(hidden_size=8, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=4, intermediate_size=12, max_position_embeddings=512,
                         rope_parameters={"rope_theta": 500000.0, **scaling})
    cfg = HeadConfig.from_target(target)
    assert cfg.rope_scaling["rope_type"] == "llama3"
    layer = EagleHead(cfg).layer
    x, positions = torch.zeros(1, 300, 4), torch.arange(300)[None]
    for ours, theirs in zip(layer.rotary(x, positions),
                            LlamaRotaryEmbedding(config=target)(x, positions), strict=True):
        torch.testing.assert_close(ours, theirs)
    assert HeadConfig(**{k: v for k, v in cfg.as_dict().items() if k != "rope_scaling"}
                      ).rope() == {"rope_type": "default", "rope_theta": 500000.0}


def test_uniform_noise_follows_eagle_scaling():
    x = torch.zeros(2, 64, 8)
    torch.manual_seed(0)
    noisy = uniform_feature_noise(x, torch.tensor([512, 64]), std=0.2)
    assert noisy[0].abs().max() <= 0.1 and noisy[0].abs().max() > 0.09  # 0.2 * 512 / 512 / 2
    assert noisy[1].abs().max() <= 0.8 and noisy[1].abs().max() > 0.7  # 0.2 * 512 / 64 / 2
    assert torch.equal(uniform_feature_noise(x, torch.tensor([5, 5]), std=0.0), x)


# ------------------------------------------------------------------------------ losses


def test_losses_by_hand():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    d = (pred - target)[mask]
    smooth = torch.where(d.abs() < 1, 0.5 * d ** 2, d.abs() - 0.5)
    assert feature_smooth_l1(pred, target, mask) == pytest.approx(float(smooth.mean(-1).mean()))
    W = torch.randn(6, 4)
    p = torch.softmax(target[mask] @ W.T, -1)
    logq = torch.log_softmax(pred[mask] @ W.T, -1)
    ce = float(-(p * logq).sum(-1).mean())
    assert soft_token_ce(pred, target, W, mask) == pytest.approx(ce, rel=1e-6)
    out = eagle_loss(pred, target, W, mask)
    assert float(out.loss) == pytest.approx(float(out.feature) + 0.1 * ce, rel=1e-6)
    other = torch.randn(2, 3, 4)  # FSPAD: the logit half gets the CE, the feature half L1
    out = fspad_loss(other, pred, target, W, mask, token_weight=0.5)
    logq2 = torch.log_softmax(other[mask] @ W.T, -1)
    ce2 = float(-(p * logq2).sum(-1).mean())
    assert float(out.token) == pytest.approx(ce2, rel=1e-6)
    assert float(out.feature) == pytest.approx(float(smooth.mean(-1).mean()), rel=1e-6)
    assert float(out.loss) == pytest.approx(float(out.feature) + 0.5 * ce2, rel=1e-6)


def test_chunked_ce_equals_plain_and_empty_mask_is_zero():
    torch.manual_seed(1)
    W = torch.randn(50, 8)
    target = torch.randn(3, 7, 8)
    a = torch.randn(3, 7, 8, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    mask = torch.rand(3, 7) > 0.3
    plain = soft_token_ce(a, target, W, mask)
    chunked = soft_token_ce(b, target, W, mask, chunk_size=4)
    plain.backward()
    chunked.backward()
    torch.testing.assert_close(plain, chunked)
    torch.testing.assert_close(a.grad, b.grad)
    empty = torch.zeros(3, 7, dtype=torch.bool)
    zero = eagle_loss(a, target, W, empty).loss
    assert float(zero.detach()) == 0.0 and zero.requires_grad


# ------------------------------------------------------------- drafts in the engine


@pytest.fixture(scope="module")
def target():
    return _tiny_llama(0)


def _draft(target, kind, seed=1, subset=None):
    head = _head(kind, seed, HeadConfig.from_target(target.config))
    return FeatureDraft(head, target.get_input_embeddings().weight,
                        target.get_output_embeddings().weight, vocab_subset=subset)


@pytest.mark.parametrize("kind", [EagleHead, FSPADHead])
def test_feature_drafts_are_lossless(target, kind):
    for prompt in ([5], [5, 6, 7, 8], list(range(4, 20))):
        plain = autoregressive(target, prompt, 21).tokens
        for draft in (_draft(target, kind), _draft(target, kind, subset=torch.arange(3, 15))):
            assert speculative(target, draft, prompt, 21, k=3).tokens == plain
            assert speculative(target, draft, prompt, 21, tree=TreeConfig(10, 3, 3)).tokens \
                == plain


class _Fresh(FeatureDraft):
    """Checks every proposal against a draft that starts from an empty cache."""

    def __init__(self, target, kind):
        d = _draft(target, kind)
        super().__init__(d.head, d.embed_weight, d.head_weight)
        self.twin, self.calls = _draft(target, kind), 0

    def propose(self, context, k, *, temperature, generator=None, target_hidden=None):
        out = super().propose(context, k, temperature=temperature, target_hidden=target_hidden)
        self.twin.reset()
        fresh = self.twin.propose(context, k, temperature=temperature,
                                  target_hidden=target_hidden)
        assert out.tokens == fresh.tokens
        self.calls += 1
        return out

    def propose_tree(self, context, config, *, target_hidden=None):
        out = super().propose_tree(context, config, target_hidden=target_hidden)
        self.twin.reset()
        fresh = self.twin.propose_tree(context, config, target_hidden=target_hidden)
        assert out.tokens == fresh.tokens and out.parents == fresh.parents
        assert out.scores == pytest.approx(fresh.scores, abs=1e-9)
        self.calls += 1
        return out


@pytest.mark.parametrize("kind", [EagleHead, FSPADHead])
def test_feature_draft_cache_reuse_equals_fresh_drafting(target, kind):
    for tree in (None, TreeConfig(8, 2, 3)):
        draft = _Fresh(target, kind)
        speculative(target, draft, [3, 14, 15, 9], 20, k=3, tree=tree)
        assert draft.calls > 2


def test_sampling_check_accepts_a_correct_sampler():
    from bench.specdec.evaluation import sampling_check

    small = _tiny_llama(1, vocab=6, layers=2, init=0.5).float()
    head = _head(EagleHead, 2, HeadConfig.from_target(small.config)).float()
    draft = FeatureDraft(head, small.get_input_embeddings().weight,
                         small.get_output_embeddings().weight)
    check = sampling_check(small, draft, [[4, 2], [1, 3, 5]], runs=150)
    assert check["dof"] > 2 and check["passed"], check
    assert check["draft_rejection_rate"] > 0.1  # the rejection path was exercised


def test_sampled_decode_item_is_seeded_and_samples_on_a_chain(tiny_chat_model_dir):
    """The suite's sampling pass: same seed, same draws (so reruns agree); a tree config
    falls back to a chain of k (trees are greedy-only); another seed draws differently."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.specdec import LMDraft
    from bench.specdec.evaluation import decode_item

    target = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    draft = LMDraft(target)  # the target as its own draft: every draft token is accepted
    item = SimpleNamespace(id="x", category="qa", turns=["hello there", "and then"])

    def run(seed, tree=None):
        r = decode_item(target, draft, tok, item, max_new_tokens=12, eos_ids=[], k=3,
                        tree=tree, temperature=1.0, seed=seed)
        return r.text, r.new_tokens, r.passes, r.accepted, r.drafted

    first = run(0)
    assert run(0) == first
    assert run(0, tree=TreeConfig(6, 2, 2)) == first  # chain, not tree, when sampling
    assert first[3] == first[4] > 0  # a perfect draft: all drafted tokens accepted
    assert first[1] / first[2] > 1
    assert {run(s)[0] for s in range(1, 6)} != {first[0]}


# ------------------------------------------------------------- features and batches


def test_feature_cache_round_trip(tiny_chat_model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from methods.instruct.token_kd import TrainExample
    from methods.specdec.features import head_batch, target_features

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval()
    train = [TrainExample([4, 5, 6], [7, 8, 2]), TrainExample([9, 4], [5, 6, 7, 8, 2])]
    store = target_features(model, train, tmp_path, dtype="float32", progress=False)
    assert store.path.exists() and len(store) == 2
    for i, e in enumerate(train):
        ids = e.prompt_ids + e.response_ids
        full = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        torch.testing.assert_close(store[i]["features"], full.hidden_states[-1][0],
                                   atol=1e-5, rtol=1e-5)
        assert store[i]["ids"].tolist() == ids and store[i]["prompt_len"] == len(e.prompt_ids)
    monkeypatch.setattr(type(model.base_model), "forward",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = target_features(model, train, tmp_path, dtype="float32", progress=False)
    assert again.path == store.path and torch.equal(again.features, store.features)
    batch = head_batch([store[0], store[1]], noise_std=0.0)
    assert batch["features"].shape == (2, 6, 32) and batch["next_ids"][0, :5].tolist() == \
        [5, 6, 7, 8, 2]
    torch.testing.assert_close(batch["targets"][1, :6], store[1]["features"][1:])
    # loss rows: from the pair whose next token is the last prompt token to the end
    assert batch["mask"][0].tolist() == [False, True, True, True, True, False]
    assert batch["mask"][1].tolist() == [True] * 6


# ------------------------------------------------------------------------------ data


def test_question_file_and_conversation(tmp_path, tiny_chat_model_dir):
    from transformers import AutoTokenizer

    from bench.specdec.data import conversation_ids, question_file, split

    path = tmp_path / "mt_bench" / "question.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps({"question_id": i, "category": c, "turns": t})
                              for i, (c, t) in enumerate([("writing", ["the cat", "a dog"]),
                                                          ("math", ["sat on"])])) + "\n")
    name, items = question_file(path)
    assert name == "mt_bench" and [it.category for it in items] == ["writing", "math"]
    tok = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    ids = conversation_ids(tok, ["the cat", "a dog"], ["sat on"])
    assert tok.decode(ids) == "the cat sat on a dog :"
    train, test = split(items * 1)
    assert len(train) + len(test) == 2 and not set(train) & set(test)


def test_train_file_reads_sharegpt_and_question_files(tmp_path):
    from bench.specdec.data import train_file

    share = tmp_path / "sharegpt.json"
    share.write_text(json.dumps([
        {"id": "a", "conversations": [{"from": "human", "value": "hi"},
                                      {"from": "gpt", "value": "hello"}]},
        {"id": "b", "conversations": [{"from": "gpt", "value": "orphan"}]}]))
    items = train_file(share)
    assert [(it.turns, it.reference) for it in items] == [(("hi",), "hello")]
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "category": "x", "turns": ["t1"]}))
    assert train_file(questions)[0].turns == ("t1",)


@pytest.mark.slow
def test_offline_categories_have_fixed_disjoint_pools(tiny_chat_model_dir):
    from transformers import AutoTokenizer

    from bench.specdec.data import CATEGORY_NAMES, offline_pools

    tok = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    pools = offline_pools(tok, 16, 40, 20)
    assert tuple(pools) == CATEGORY_NAMES
    for _cat, (train, test) in pools.items():
        assert len(test) == 20 and len(train) == 40
        assert not {it.group for it in train} & {it.group for it in test}
    assert all(len(it.turns) == 2 for it in pools["multi-turn"][1])
    assert offline_pools(tok, 16, 2, 3)["qa"][1] == pools["qa"][1][:3]
    long = next(it for it in pools["summarization"][1])
    assert long.turns[0].endswith(" ...")  # articles are cut to 16 tokens


# ----------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("method,extra", [
    ("ar", []),
    ("draft-lm", ["--set", "draft_layers=1", "--set", "kd_steps=2",
                  "--set", "mixed_precision=no"]),
    ("eagle", ["--set", "max_steps=3", "--set", "mixed_precision=no"]),
    ("fspad", ["--set", "max_steps=3", "--set", "tree=6,2,2", "--set", "mixed_precision=no"]),
    ("pld", ["--set", "max_ngram=2"])])
def test_tiny_end_to_end(tiny_chat_model_dir, tmp_path, method, extra):
    from bench.cli import main

    out = tmp_path / "results"
    common = ["--suite", "specbench", "--preset", "smoke", "--teacher", str(tiny_chat_model_dir),
              "--out", str(out), "--work-dir", str(tmp_path / "work"), "--limit", "1",
              "--set", "max_new_tokens=6", "--set", "train_per_category=2",
              "--set", "max_context_tokens=12", "--set", "sampling_runs=10",
              "--set", "gen_batch_size=4"]
    assert main(["run", "--method", method, *common, *extra]) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))]
    assert len(records) == 7  # six categories + all
    overall = next(r for r in records if r["dataset"]["id"] == "offline/specbench-all@limit1")
    assert overall["config"]["lossless"] is True and overall["metrics"]["lossless"] == 1.0
    assert len(overall["per_item"]["speedup"]) == 6
    assert overall["metrics"]["speedup"] > 0 and overall["metrics"]["tau"] >= 1
    sampling = overall["metrics"]  # the temperature-1 timing pass, same items
    assert sampling["speedup_sampling"] > 0 and sampling["tau_sampling"] >= 1
    assert len(overall["per_item"]["tau_sampling"]) == 6
    assert "lossless_sampling" not in sampling
    # the draft's own size (none for ar and pld) and the speculative time per prompt
    cost = overall["cost"]
    assert cost["ms_per_item"] > 0 and "batch 1" in cost["per"]
    assert (cost["parameters"] == 0) == (method in ("ar", "pld"))
    if method == "ar":
        assert overall["metrics"]["tau"] == 1.0 and "sampling_check" not in overall["config"]
        assert sampling["tau_sampling"] == 1.0
        from bench.core.plots import speedup_vs_tau

        (png,) = speedup_vs_tau(records, tmp_path / "plots")  # greedy and sampling points
        assert png.name == "specbench_speedup_vs_tau.png" and png.stat().st_size > 1000
        assert main(["leaderboard", "--results", str(out), "--out", str(tmp_path / "lb")]) == 0
        board = (tmp_path / "lb" / "specbench.md").read_text()
        greedy, sampled = board.split("### Greedy")[1].split("### Sampling")
        # rows are named as in the main table: a smoke run is "ar [smoke]"
        assert r"| ar \[smoke\] | tiny" in greedy and "| 1.00 |" in greedy  # plain decoding's tau
        assert r"| ar \[smoke\] | tiny" in sampled and board.index("## Spec-Bench table") < \
            board.index("## Datasets")
    else:
        check = overall["config"]["sampling_check"]
        assert check["runs_per_prompt"] == 10  # p-value None when one cell holds all mass
        assert check["p_value"] is None or 0 <= check["p_value"] <= 1
    if method in ("eagle", "fspad"):
        assert overall["config"]["train_steps"] == 3
        assert overall["config"]["decoding"] == ("tree" if method == "fspad" else "chain")
    if method == "eagle":  # a rerun reuses responses, features and the final checkpoint
        metrics = next((tmp_path / "work").rglob("eagle-*/metrics.jsonl"))
        before = metrics.read_text()
        features = list((tmp_path / "work").rglob("features-*.safetensors"))
        assert len(features) == 1
        assert main(["run", "--method", method, *common, *extra, "--overwrite"]) == 0
        assert metrics.read_text() == before
        assert list((tmp_path / "work").rglob("features-*.safetensors")) == features
