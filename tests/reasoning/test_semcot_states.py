"""SemCoT's implicit states reach the frozen teacher: at evaluation (``answer``), in the
training CE (``answer_ce``) at the same place, and the state ablation's variants."""

import pytest
import torch
from conftest import tiny_llama, word_tokenizer

from methods.reasoning.cot_distill import DIRECT_ANSWER_PROMPT
from methods.reasoning.semcot import (
    STATE_VARIANTS,
    Generator,
    SemCoTConfig,
    SemCoTPipeline,
    TeacherAnswers,
    answer_ce,
    implicit_state_ablation,
    replace_states,
)

WORDS = "Question: Answer Answer: directly: #### * 12 34 56 78 408 4368 7 8".split()
CONTEXTS = ["Question: 12 * 34\nAnswer:", "Question: 56 * 78\nAnswer:"]
GOLDS = ["408", "4368"]


@pytest.fixture
def pipeline():
    """A tiny frozen teacher and a tiny (untrained) generator, as SemCoT wires them."""
    tok = word_tokenizer(WORDS)
    # init 0.2: a random tiny Llama whose outputs visibly depend on its inputs
    teacher = tiny_llama(len(tok), init=0.2, eos_token_id=2, pad_token_id=0)
    student = tiny_llama(len(tok), layers=1, seed=1, init=0.2, eos_token_id=2, pad_token_id=0)
    generator = Generator(student, teacher.config.hidden_size, SemCoTConfig(lora_r=2))
    return SemCoTPipeline(generator, teacher, tok, 1, DIRECT_ANSWER_PROMPT)


def _first_step_logits(pipe, context):
    """The teacher's logits for the first answer token, captured inside ``answer`` (the
    evaluation's code path, generation included)."""
    seen = []
    hook = pipe.teacher.lm_head.register_forward_hook(
        lambda module, args, out: seen.append(out[0, -1].detach().clone()))
    try:
        pipe.answer(context, 3, ["Question:"])
    finally:
        hook.remove()
    return seen[0]


def test_answer_logits_depend_on_the_implicit_states(pipeline, monkeypatch):
    """Fails on any version whose evaluation drops, masks out or zero-scales the states."""
    trained = _first_step_logits(pipeline, CONTEXTS[0])
    q_ids, _ = pipeline.encode(CONTEXTS[0])
    state = pipeline.states(q_ids)
    assert state.shape == (1, pipeline.teacher.config.hidden_size)
    assert state.norm() > 0
    for other in (torch.zeros_like(state), -state, 3 * state):
        monkeypatch.setattr(pipeline, "states", lambda q, s=other: s)
        assert (_first_step_logits(pipeline, CONTEXTS[0]) - trained).abs().max() > 1e-3
    # the teacher-direct path (no states) is another input again
    direct = TeacherAnswers(pipeline.teacher, pipeline.tokenizer, DIRECT_ANSWER_PROMPT)
    assert (_first_step_logits(direct, CONTEXTS[0]) - trained).abs().max() > 1e-3
    # and the answer-position logits (teacher forced) move with the states too
    _, p_ids = pipeline.encode(CONTEXTS[0])
    answer = pipeline.tokenizer(" #### 408", add_special_tokens=False)["input_ids"] + [2]
    a = pipeline.answer_logits(q_ids, state, p_ids, answer)
    b = pipeline.answer_logits(q_ids, torch.zeros_like(state), p_ids, answer)
    assert a.shape == (len(answer), pipeline.teacher.config.vocab_size)
    assert ((a - b).abs().amax(-1) > 1e-3).all()  # at every answer position
    torch.testing.assert_close(a[0], trained)  # the same logits generation starts from


def test_evaluation_and_training_put_the_states_in_the_same_place(pipeline):
    """``answer_ce`` (the training CE) and ``answer_logits`` (evaluation's input) give the
    same answer logits for the same states, and the CE has a gradient into the states."""
    tok = pipeline.tokenizer
    q_ids, p_ids = pipeline.encode(CONTEXTS[1])
    answer = tok(" #### 4368", add_special_tokens=False)["input_ids"] + [2]
    states = pipeline.generator([q_ids], 3)[0].detach().requires_grad_(True)
    batch = [{"query_ids": q_ids, "prompt_ids": p_ids, "answer_ids": answer}]
    logits, ids, mask = answer_ce(pipeline.teacher, batch, states[None])
    assert ids[0].tolist() == answer and mask.all()
    with torch.no_grad():
        torch.testing.assert_close(logits[0], pipeline.answer_logits(q_ids, states, p_ids,
                                                                     answer))
    torch.nn.functional.cross_entropy(logits[0], ids[0]).backward()
    assert states.grad is not None and states.grad.abs().sum() > 0


def test_replace_states():
    states = [torch.randn(1, 8), torch.randn(1, 8), torch.randn(1, 8)]
    assert replace_states(states, "trained") == states
    assert all(not s.any() for s in replace_states(states, "zeros"))
    assert replace_states(states, "other-question") == [states[1], states[2], states[0]]
    rand = replace_states(states, "random-same-norm", seed=3)
    for r, s in zip(rand, states, strict=True):
        torch.testing.assert_close(r.norm(dim=-1), s.norm(dim=-1))
        assert not torch.allclose(r, s)
    torch.testing.assert_close(replace_states(states, "random-same-norm", seed=3)[0], rand[0])
    assert replace_states(states, "none") == [None, None, None]
    with pytest.raises(ValueError, match="unknown state variant"):
        replace_states(states, "shuffled")


def test_implicit_state_ablation_on_a_tiny_pipeline(pipeline):
    from bench.reasoning.problem import answers_match

    out = implicit_state_ablation(pipeline, CONTEXTS, GOLDS, correct=answers_match,
                                  max_new_tokens=3)
    rows = {r["variant"]: r for r in out["variants"]}
    assert list(rows) == list(STATE_VARIANTS)
    assert rows["trained"]["changed"] == 0 and rows["trained"]["logit_diff"] == 0.0
    for variant in ("zeros", "other-question", "random-same-norm", "none"):
        assert rows[variant]["logit_diff"] > 1e-3, variant
        assert 0 <= rows[variant]["changed"] <= 2
    assert all(r["gold_logprob"] < 0 for r in rows.values())
    assert out["items"] == 2 and out["state_norm"] > 0 and out["token_embedding_norm"] > 0
    q = [pipeline.states(pipeline.encode(c)[0])[0] for c in CONTEXTS]
    assert out["state_cosine"] == pytest.approx(
        torch.nn.functional.cosine_similarity(q[0], q[1], dim=0).item(), abs=1e-5)
    # "trained" is what evaluation answers, "none" what teacher-direct answers (lm-eval
    # cuts answers at the stop strings, as the ablation does)
    direct = TeacherAnswers(pipeline.teacher, pipeline.tokenizer, DIRECT_ANSWER_PROMPT)
    for i, context in enumerate(CONTEXTS):
        for variant, pipe in (("trained", pipeline), ("none", direct)):
            expected = pipe.answer(context, 3, ["Question:"])[0].split("Question:")[0]
            assert out["outputs"][variant][i] == expected, variant
    with pytest.raises(ValueError, match="inserts no implicit states"):
        implicit_state_ablation(direct, CONTEXTS, GOLDS, correct=answers_match)


@pytest.mark.slow
def test_ablation_script_on_a_tiny_run(tiny_chat_model_dir, tmp_path, capsys, monkeypatch):
    """``scripts/semcot_ablation.py`` trains (or loads) SemCoT through ``bench run`` and
    ablates its states on the dataset's first test questions; nothing reaches a results
    store."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "semcot_ablation.py"
    spec = importlib.util.spec_from_file_location("semcot_ablation", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.strict_match("x #### 1,200.", "1200") and not script.strict_match("1200", "1200")
    extra = ["--teacher", str(tiny_chat_model_dir)]
    for kv in ("n_train=6", "n_test=3", "teacher_train=6", "max_gen_toks=6",
               "rationales=gold", "k_train=2"):
        extra += ["--set", kv]
    out = script.ablation(preset="smoke", dataset="offline/arith-2x2",
                          work_dir=str(tmp_path / "work"), items=2, max_new_tokens=4, seed=0,
                          extra=extra)
    assert out["items"] == 2 and out["dataset"] == "offline/arith-2x2"
    assert [r["variant"] for r in out["variants"]] == list(STATE_VARIANTS)
    assert len(out["ids"]) == 2 and all(i.startswith("arith-2x2-") for i in out["ids"])
    table = script.markdown(out)
    assert table.count("\n| ") == len(STATE_VARIANTS) and "mean norm" in table
    json.dumps(out)  # JSON-ready
    assert not (tmp_path / "work" / "gsm8k" / "results").exists()

    # A second run finds every stage trained: it loads them without recomputing the
    # teacher's hidden states of the rationales, and ablates the same model.
    def no_hidden_states(*args, **kwargs):
        raise AssertionError("teacher_hidden called although every stage is trained")

    monkeypatch.setattr("methods.reasoning.semcot.teacher_hidden", no_hidden_states)
    again = script.ablation(preset="smoke", dataset="offline/arith-2x2",
                            work_dir=str(tmp_path / "work"), items=2, max_new_tokens=4, seed=0,
                            extra=extra)
    assert again["variants"] == out["variants"]
    assert "already trained" in capsys.readouterr().out
