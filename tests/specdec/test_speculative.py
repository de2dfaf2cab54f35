"""Lossless checks of the speculative decoding engine (bench.specdec) on tiny CPU models.

Greedy speculative decoding (chain and EAGLE-2 tree) must reproduce plain greedy decoding
token for token; speculative sampling must leave the target's distribution unchanged
(exactly for one accept/reject step, and by a chi-square test end to end); KV caches must
be rolled back to exactly the committed tokens.

The lossless tests run the models in float64, so that batched verification and
token-by-token decoding cannot differ by a near-tie of float32 rounding; one test runs the
float32 chat fixture with its tokenizer and chat template.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from scipy import stats as sps

from bench.core import hf
from bench.specdec import (
    Draft,
    DraftTree,
    LMDraft,
    TreeConfig,
    autoregressive,
    build_dynamic_tree,
    residual_distribution,
    speculative,
    speculative_step_distribution,
)
from bench.specdec.engine import _verify_chain
from bench.specdec.tree import greedy_accept
from methods.instruct.token_kd import build_student

VOCAB = 23


def _tiny_llama(seed: int, *, vocab: int = VOCAB, layers: int = 3, init: float = 0.2,
                attn: str | None = None):
    model = tiny_llama(vocab, layers=layers, seed=seed, init=init, isolate_rng=True)
    if attn is not None:
        model.set_attn_implementation(attn)
    return model.eval().double()


@pytest.fixture(scope="module")
def target():
    # initializer_range 0.2: varied, non-repetitive greedy outputs (0.02 mostly repeats)
    return _tiny_llama(0)


@pytest.fixture(scope="module")
def student(target):
    """The target's first layer (embeddings, norm and head shared by copy)."""
    return build_student(target, 1).eval().double()


PROMPTS = [[5], [5, 6, 7, 8], [3, 14, 15, 9, 2, 6, 5, 3, 5], list(range(4, 20))]


def _plain(model, prompt, n, eos=()):
    return autoregressive(model, prompt, n, eos_ids=eos).tokens


# ----------------------------------------------------------------------------- greedy chain


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_chain_matches_plain(target, student, k):
    draft = LMDraft(student)
    accepted = 0
    for prompt in PROMPTS:
        for n in (1, 2, k, k + 1, 23):
            plain = _plain(target, prompt, n)
            out = speculative(target, draft, prompt, n, k=k)
            assert out.tokens == plain, (prompt, n)
            assert len(out.tokens) == n
            st = out.stats
            assert sum(st.emitted_per_pass) == n == st.new_tokens
            assert all(1 <= e <= k + 1 for e in st.emitted_per_pass)
            assert [e - a for e, a in zip(st.emitted_per_pass, st.accepted_per_pass,
                                          strict=True)] == [1] * st.target_passes
            accepted += sum(st.accepted_per_pass)
    assert accepted > 0  # some drafts are accepted, some rejected: both paths ran


def test_greedy_chain_stops_at_eos(target, student):
    draft = LMDraft(student)
    for prompt in PROMPTS:
        free = _plain(target, prompt, 30)
        for eos in {free[0], free[3], free[-1]}:
            plain = _plain(target, prompt, 30, eos=[eos])
            assert plain[-1] == eos and eos not in plain[:-1]
            for k in (2, 4):
                out = speculative(target, draft, prompt, 30, k=k, eos_ids=[eos])
                assert out.tokens == plain
                assert sum(out.stats.emitted_per_pass) == len(plain)


def test_identical_draft_accepts_everything(target):
    copy = build_student(target, target.config.num_hidden_layers).eval().double()
    k = 4
    out = speculative(target, LMDraft(copy), [5, 6, 7], 5 * (k + 1), k=k)
    assert out.tokens == _plain(target, [5, 6, 7], 5 * (k + 1))
    assert out.stats.emitted_per_pass == [k + 1] * 5
    assert out.stats.accepted_per_pass == [k] * 5
    assert out.stats.tau == k + 1 and out.stats.mean_accepted == k
    assert out.stats.acceptance_rate == 1.0


def test_decode_item_is_lossless_and_group_metrics_add_up(target, student, monkeypatch):
    """The suite's own path: each prompt decoded plainly then speculatively (greedy)."""
    from types import SimpleNamespace

    import bench.specdec.data as data
    from bench.specdec.evaluation import decode_item, group_metrics

    # Token-id prompts: the prompt of a turn is its ids as they are (no chat template).
    monkeypatch.setattr(data, "conversation_ids", lambda tok, turns, answers: list(turns[-1]))
    tok = SimpleNamespace(decode=lambda ids, skip_special_tokens=True: " ".join(map(str, ids)))
    items = [SimpleNamespace(id=f"p{i}", category="qa", turns=[p])
             for i, p in enumerate(PROMPTS[:2])]
    results = [decode_item(target, LMDraft(student), tok, it, max_new_tokens=9, eos_ids=[],
                           k=3, tree=None) for it in items]
    assert all(r.identical and r.new_tokens == r.plain_tokens == 9 for r in results)
    assert all(r.accepted <= r.drafted and r.passes >= 1 for r in results)
    metrics = group_metrics(results)
    assert metrics["speedup"] == pytest.approx(sum(r.plain_time for r in results)
                                               / sum(r.spec_time for r in results))
    assert metrics["tau"] == pytest.approx(18 / sum(r.passes for r in results))
    assert metrics["lossless"] == 1.0


def test_plain_decoding_has_tau_one(target):
    out = autoregressive(target, [5, 6], 7)
    assert out.stats.tau == 1.0 and out.stats.mean_accepted == 0.0
    assert out.stats.target_passes == 7 == out.stats.new_tokens


# ------------------------------------------------------------------------------ greedy tree


@pytest.mark.parametrize("config", [TreeConfig(60, 5, 10), TreeConfig(8, 3, 3),
                                    TreeConfig(4, 0, 4), TreeConfig(5, 4, 1)])
def test_greedy_tree_matches_plain(target, student, config):
    draft = LMDraft(student)
    accepted = 0
    for prompt in PROMPTS:
        for n in (1, 2, 19):
            out = speculative(target, draft, prompt, n, tree=config)
            assert out.tokens == _plain(target, prompt, n), (prompt, n)
            assert all(d <= config.total_tokens for d in out.stats.drafted_per_pass)
            accepted += sum(out.stats.accepted_per_pass)
    assert accepted > 0


def test_greedy_tree_eager_attention_and_eos():
    target = _tiny_llama(0, attn="eager")
    draft_model = build_student(target, 1).eval().double()
    free = _plain(target, [5, 6, 7, 8], 25)
    plain = _plain(target, [5, 6, 7, 8], 25, eos=[free[6]])
    out = speculative(target, LMDraft(draft_model), [5, 6, 7, 8], 25, eos_ids=[free[6]],
                      tree=TreeConfig(16, 3, 4))
    assert out.tokens == plain


def test_identical_draft_tree_accepts_full_depth(target):
    copy = build_student(target, target.config.num_hidden_layers).eval().double()
    # top_k 1 makes the tree a chain of depth + 1 greedy tokens, all accepted
    out = speculative(target, LMDraft(copy), [5, 6, 7], 12, tree=TreeConfig(10, 2, 1))
    assert out.tokens == _plain(target, [5, 6, 7], 12)
    assert out.stats.emitted_per_pass == [4, 4, 4]


def test_lm_draft_tree_scores_match_fresh_forward(student):
    """The draft's tree-masked level-by-level forwards give each node the cumulative
    log-probability of its path under plain forwards, and leave the cache at the context."""
    context = [3, 14, 15, 9]
    draft = LMDraft(student)
    tree = draft.propose_tree(context, TreeConfig(20, 3, 2))  # keeps all 14 candidates
    assert len(tree) == 14 and max(tree.depths) == 4
    assert hf.cache_length(draft.cache) == len(context)
    for i in range(len(tree)):
        path = [tree.tokens[a] for a in reversed(tree.ancestors(i))]
        score = sum(float(torch.log_softmax(_fresh_logits(student, context + path[:j]), -1)[t])
                    for j, t in enumerate(path))
        assert tree.scores[i] == pytest.approx(score, abs=1e-5)  # scores are float32


def test_tree_recompute_fallback(target, student, monkeypatch):
    """Caches that cannot be gathered are cropped and the accepted path recomputed."""
    monkeypatch.setattr(hf, "keep_positions", lambda cache, positions: False)
    for prompt in PROMPTS[1:3]:
        out = speculative(target, LMDraft(student), prompt, 15, tree=TreeConfig(10, 3, 3))
        assert out.tokens == _plain(target, prompt, 15)


def test_tree_sampling_not_implemented(target, student):
    with pytest.raises(NotImplementedError):
        speculative(target, LMDraft(student), [5], 4, temperature=1.0, tree=TreeConfig())


def test_dynamic_tree_structure():
    """EAGLE-2 selection on a fixed toy draft: parent-closed, BFS order, best scores."""
    torch.manual_seed(0)
    table = torch.log_softmax(torch.randn(50, 9) * 2, dim=-1)

    def expand(tree: DraftTree, idx: list[int]) -> torch.Tensor:
        return table[[(tree.tokens[i] * 7 + tree.depths[i]) % 50 for i in idx]]

    config = TreeConfig(total_tokens=20, depth=3, top_k=4)
    tree = build_dynamic_tree(table[0], expand, config)
    assert len(tree) == 20
    assert max(tree.depths) <= config.depth + 1
    for i, (parent, depth) in enumerate(zip(tree.parents, tree.depths, strict=True)):
        assert parent < i
        assert depth == (1 if parent < 0 else tree.depths[parent] + 1)
        if parent >= 0:
            assert tree.scores[i] <= tree.scores[parent]
            expected = tree.scores[parent] + float(expand(tree, [parent])[0, tree.tokens[i]])
            assert tree.scores[i] == pytest.approx(expected)
    siblings = {(p, t) for p, t in zip(tree.parents, tree.tokens, strict=True)}
    assert len(siblings) == len(tree)  # no duplicate token under one parent
    mask = tree.verify_mask()
    assert mask[:, 0].all() and mask.diagonal().all()
    assert int(mask[1:].sum()) == sum(tree.depths) + len(tree)  # root + ancestors + self
    path, bonus = greedy_accept(tree, [tree.tokens[0]] + [-1] * len(tree))
    assert path == [0] and bonus == -1


# ------------------------------------------------------------------------- KV-cache rollback


@torch.no_grad()
def _fresh_logits(model, ids):
    return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_chain_rollback_primitives(target):
    prompt, wrong = [5, 6, 7, 8, 9], [1, 2, 3, 4]
    cache = hf.new_cache(target)
    hf.forward(target, prompt[:-1], cache)
    logits, _ = hf.forward(target, [prompt[-1], *wrong], cache)  # verify 4 drafts
    assert hf.cache_length(cache) == len(prompt) + len(wrong)
    n = 1  # keep d_1, reject d_2..: commit root + d_1, then the correction c
    hf.crop_to(cache, len(prompt) + n)
    c = int(logits[n].argmax())
    nxt, _ = hf.forward(target, [c], cache)
    torch.testing.assert_close(nxt[-1], _fresh_logits(target, [*prompt, wrong[0], c]),
                               rtol=0, atol=1e-10)


def test_tree_rollback_keeps_accepted_path(target):
    prompt = [5, 6, 7, 8]
    tree = DraftTree(tokens=[3, 9, 4, 11, 12], parents=[-1, -1, 0, 1, 2],
                     depths=[1, 1, 2, 2, 3], scores=[0.0] * 5)
    prefix = len(prompt) - 1
    cache = hf.new_cache(target)
    hf.forward(target, prompt[:-1], cache)
    mask = hf.tree_attention_mask(tree.verify_mask(), prefix, torch.float64, "cpu")
    positions = torch.tensor([prefix] + [prefix + d for d in tree.depths])
    logits, _ = hf.forward(target, [prompt[-1], *tree.tokens], cache,
                           position_ids=positions, mask=mask)
    # every node's logits equal a plain forward over prefix + its path
    for i in range(len(tree)):
        path = [tree.tokens[a] for a in reversed(tree.ancestors(i))]
        torch.testing.assert_close(logits[i + 1], _fresh_logits(target, prompt + path),
                                   rtol=0, atol=1e-10)
    path = [0, 2, 4]  # tokens 3, 4, 12
    keep = torch.cat([torch.arange(prefix + 1), torch.tensor(path) + prefix + 1])
    assert hf.keep_positions(cache, keep)
    nxt, _ = hf.forward(target, [7], cache)
    torch.testing.assert_close(nxt[-1], _fresh_logits(target, prompt + [3, 4, 12, 7]),
                               rtol=0, atol=1e-10)


def test_draft_cache_resyncs_after_rejection(student):
    draft = LMDraft(student)
    draft.propose([5, 6, 7], 4, temperature=0.0)  # cache now holds 3 + 3 draft tokens
    context = [5, 6, 7, 1, 2]  # diverges from the drafted continuation
    logits = draft._sync(context)
    torch.testing.assert_close(logits, _fresh_logits(student, context), rtol=0, atol=1e-10)
    assert hf.cache_length(draft.cache) == len(context)


class _Recorder:
    """Forward hook keeping every logits tensor the target produced."""

    def __init__(self, model) -> None:
        self.calls: list[torch.Tensor] = []
        self.handle = model.register_forward_hook(
            lambda _m, _a, out: self.calls.append(out.logits[0].detach().clone()))


@pytest.mark.parametrize("tree", [None, TreeConfig(10, 3, 3)])
def test_engine_root_logits_match_plain(target, student, tree):
    """After every rollback the target's next logits equal plain decoding's."""
    prompt, n = [3, 14, 15, 9], 21
    rec = _Recorder(target)
    try:
        plain = autoregressive(target, prompt, n)
        plain_logits = [c[-1] for c in rec.calls[1:]]  # call 0 is the prefill
        rec.calls.clear()
        out = speculative(target, LMDraft(student), prompt, n, k=3, tree=tree)
    finally:
        rec.handle.remove()
    assert out.tokens == plain.tokens
    passes = rec.calls[1:]
    assert len(passes) == out.stats.target_passes
    done = 0
    for logits, emitted in zip(passes, out.stats.emitted_per_pass, strict=True):
        torch.testing.assert_close(logits[0], plain_logits[done], rtol=0, atol=1e-10)
        done += emitted


class _HiddenCheckingDraft(LMDraft):
    """An LMDraft that claims to need target features and checks what it receives."""

    needs_hidden = True

    def __init__(self, model, target) -> None:
        super().__init__(model)
        self.target, self.checked = target, 0

    def _check(self, context, target_hidden) -> None:
        assert target_hidden is not None and target_hidden.shape[0] == len(context) - 1
        full = self.target(input_ids=torch.tensor([context[:-1]]), output_hidden_states=True)
        torch.testing.assert_close(target_hidden, full.hidden_states[-1][0], rtol=0,
                                   atol=1e-10)
        self.checked += 1

    def propose(self, context, k, *, temperature, generator=None, target_hidden=None):
        self._check(context, target_hidden)
        return super().propose(context, k, temperature=temperature, generator=generator)

    def propose_tree(self, context, config, *, target_hidden=None):
        self._check(context, target_hidden)
        return super().propose_tree(context, config)


@pytest.mark.parametrize("tree", [None, TreeConfig(10, 3, 3)])
def test_feature_draft_receives_target_hidden_states(target, student, tree):
    draft = _HiddenCheckingDraft(student, target)
    assert isinstance(draft, Draft)
    out = speculative(target, draft, [3, 14, 15, 9], 15, k=3, tree=tree)
    assert out.tokens == _plain(target, [3, 14, 15, 9], 15)
    # the last pass has one token left: a plain target step, no drafting
    assert draft.checked == sum(d > 0 for d in out.stats.drafted_per_pass) > 0


# ----------------------------------------------------------------------------- sampling


def test_step_distribution_is_exactly_p():
    gen = torch.Generator().manual_seed(0)
    cases = []
    for _ in range(200):
        v = int(torch.randint(2, 40, (), generator=gen))
        p = torch.softmax(torch.randn(v, generator=gen, dtype=torch.float64) * 3, -1)
        q = torch.softmax(torch.randn(v, generator=gen, dtype=torch.float64) * 3, -1)
        cases.append((p, q))
    p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    cases += [(p, p.clone()), (p, p.flip(0)),  # equal; disjoint supports
              (p, torch.tensor([0.1, 0.0, 0.9, 0.0], dtype=torch.float64))]
    for p, q in cases:
        torch.testing.assert_close(speculative_step_distribution(p, q), p, rtol=0, atol=1e-12)
        r = residual_distribution(p, q)
        assert r.min() >= 0 and float(r.sum()) == pytest.approx(1.0)


def test_chain_verification_monte_carlo():
    """Draw d_1, d_2 ~ q, verify against p (rejection + bonus): the first two emitted
    tokens follow p exactly (chi-square over the joint of 16 cells)."""
    gen = torch.Generator().manual_seed(1)
    v, runs = 4, 8000
    p = torch.softmax(torch.randn(3, v, generator=gen) * 1.5, -1)  # p_1, p_2 (after d_1), bonus
    q = torch.softmax(torch.randn(2, v, generator=gen) * 1.5, -1)
    logits = p.log()  # temperature 1 recovers p
    counts = torch.zeros(v, v)
    for _ in range(runs):
        d = [int(torch.multinomial(q[i], 1, generator=gen)) for i in range(2)]
        n, extra = _verify_chain(logits, d, q, 1.0, gen)
        first = d[0] if n >= 1 else extra
        if n == 0:  # the second token would come from the next pass: draw it from p_2
            second = int(torch.multinomial(p[1], 1, generator=gen))
        else:
            second = d[1] if n == 2 else extra
        counts[first, second] += 1
    # p_2 is the law after any first token here (a context-free toy target)
    expected = (p[0][:, None] * p[1][None, :]).reshape(-1) * runs
    result = sps.chisquare(counts.reshape(-1).numpy(), expected.numpy())
    assert result.pvalue > 1e-3, result


def test_speculative_sampling_first_token_follows_target():
    """End to end on a tiny-vocabulary model: the first generated token under speculative
    sampling (k = 1, a different random draft) follows the target's softmax."""
    # seeds picked so that a common bug (resampling from p instead of norm(max(0, p - q))
    # after a rejection) shifts the law by ~0.22 chi-square units per run: detected
    target = _tiny_llama(1, vocab=6, layers=2, init=0.5).float()
    draft_model = _tiny_llama(7, vocab=6, layers=1, init=0.5).float()
    prompt, runs = [4], 500  # one-token prompt: no prefill, two forwards per run
    p = torch.softmax(_fresh_logits(target, prompt).double(), -1)
    q = torch.softmax(_fresh_logits(draft_model, prompt).double(), -1)
    assert float((p - q).abs().sum()) > 0.8  # the draft is wrong often: rejections happen
    gen = torch.Generator().manual_seed(0)
    draft = LMDraft(draft_model)
    counts = torch.zeros(6)
    rejected = 0
    for _ in range(runs):
        out = speculative(target, draft, prompt, 2, k=1, temperature=1.0, generator=gen)
        counts[out.tokens[0]] += 1
        rejected += out.stats.accepted_per_pass[0] == 0
    assert rejected > 40
    result = sps.chisquare(counts.numpy(), (p * runs).numpy())
    assert result.pvalue > 1e-3, (result, counts, p * runs)


# ------------------------------------------------------------- the chat fixture, float32


def test_chat_fixture_float32_greedy(tiny_chat_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.core.generation import chat_prompt_ids, stop_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    draft = LMDraft(build_student(model, 1).eval())
    eos = stop_ids(model, tokenizer)
    for text in ("the cat sat on the mat", "a dog ran in the park today"):
        prompt = chat_prompt_ids(tokenizer, text)
        plain = autoregressive(model, prompt, 12, eos_ids=eos)
        chain = speculative(model, draft, prompt, 12, k=3, eos_ids=eos)
        tree = speculative(model, draft, prompt, 12, eos_ids=eos, tree=TreeConfig(20, 3, 4))
        assert chain.tokens == plain.tokens == tree.tokens
