"""DeAR stage 1 end to end on a tiny random Llama: groups, cached teacher, train, resume."""

import json

import pytest
import torch
from conftest import save_tiny_lm

from methods.retrieval.dear import DeARConfig, build_groups, train_stage1

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
         "pi rho sigma tau upsilon phi chi psi omega query passage").split()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-llama"), [":", *WORDS], eos=False)


class OverlapTeacher:
    """Word overlap as a stand-in teacher (the real one is MiniLM)."""

    calls = 0

    def fingerprint(self):
        return "overlap"

    def score(self, queries, docs):
        OverlapTeacher.calls += 1
        return [len(set(q.split()) & set(d.split())) / 5 for q, d in zip(queries, docs,
                                                                          strict=True)]


def toy_data():
    docs = {f"d{i}": " ".join(WORDS[i:i + 5]) for i in range(15)}
    queries = {f"q{i}": " ".join(WORDS[i:i + 2]) for i in range(6)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(6)}
    candidates = {q: {d: float(-abs(int(d[1:]) - int(q[1:]))) for d in docs} for q in queries}
    return docs, queries, qrels, candidates


def test_groups_put_the_positive_first_and_skip_judged_negatives():
    docs, queries, qrels, candidates = toy_data()
    qrels["q0"]["d1"] = 0  # judged non-relevant: not used as a negative
    groups = build_groups(queries, qrels, candidates, group_size=3, negatives_depth=10)
    assert len(groups) == 6
    qid, group = groups[0]
    assert qid == "q0" and group[0] == "d0" and "d1" not in group and len(group) == 3


def test_stage1_trains_and_resumes(tiny_model_dir, tmp_path):
    docs, queries, qrels, candidates = toy_data()
    groups = build_groups(queries, qrels, candidates, group_size=3, negatives_depth=10)
    cfg = DeARConfig(student=str(tiny_model_dir), student_layers=2, train_queries=6,
                     group_size=3, batch_queries=2, epochs=2, checkpoint_every=2,
                     mixed_precision="no", max_doc_tokens=8)
    model = train_stage1(cfg, queries=queries, docs=docs, groups=groups,
                         teacher=OverlapTeacher(), work_dir=tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "stage1" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(r["loss"] == r["loss"] for r in rows)  # finite, not NaN
    scores = model.score(["alpha beta"], ["alpha beta gamma delta epsilon"])
    assert len(scores) == 1
    calls = OverlapTeacher.calls
    again = train_stage1(cfg, queries=queries, docs=docs, groups=groups,
                         teacher=OverlapTeacher(), work_dir=tmp_path, progress=False)
    assert OverlapTeacher.calls == calls  # teacher scores came from the cache
    torch.testing.assert_close(again.head.weight, model.head.weight)
    assert json.loads((tmp_path / "stage1" / "dear_config.json").read_text())["epochs"] == 2


def test_bench_run_dear_yields_three_rows_through_both_stages(tiny_model_dir, tmp_path):
    from bench.cli import main
    from bench.core.results import ResultStore

    out = tmp_path / "results"
    argv = ["run", "--method", "dear", "--suite", "beir", "--dataset", "offline/fiqa",
            "--limit", "4", "--student", str(tiny_model_dir), "--set", "student_layers=2",
            "--set", "train_queries=6", "--set", "max_doc_tokens=8",
            "--set", "stage2_windows=4", "--set", "stage2_doc_tokens=6", "--set", "window=3",
            "--set", "stride=2", "--set", "stage2_depth=5", "--set", "stage2_rank=4",
            "--out", str(out), "--work-dir", str(tmp_path / "work")]
    assert main(argv) == 0
    records = {r["method"]: r for r in ResultStore(out).load("beir")}
    assert set(records) == {"dear-student-init", "dear-p", "dear-l"}
    for record in records.values():
        assert record["implementation"] == "partial"
        assert any("DeAR is partial" in note for note in record["notes"])
        assert record["config"]["train_collection"] == "offline/boolq"
        assert record["config"]["rerank_seconds_per_query"] >= 0
        assert record["config"]["dear_p"]["train_seconds"] > 0  # per-stage training time
        assert record["dataset"]["num_items"] == 4
    for record in records.values():
        assert record["cost"]["parameters"] > 0 and record["cost"]["ms_per_item"] > 0
    # DeAR-L runs DeAR-P first, then its own (merged) listwise LM: both count
    costs = {method: record["cost"] for method, record in records.items()}
    assert costs["dear-p"]["parameters"] == costs["dear-student-init"]["parameters"]
    assert costs["dear-l"]["parameters"] > costs["dear-p"]["parameters"]
    assert costs["dear-l"]["ms_per_item"] > costs["dear-p"]["ms_per_item"]
    assert "first stage" in costs["dear-l"]["per"] and "probe" in costs["dear-p"]["per"]
    listwise = records["dear-l"]["config"]
    assert listwise["window"] == 3 and listwise["dear_l"]["depth"] == 5
    assert listwise["listwise_repairs"]["windows"] == 4 * 2  # spans [2, 5) and [0, 3)
    assert "listwise_repairs" not in records["dear-p"]["config"]
    adapters = list((tmp_path / "work" / "dear").glob("*/stage2-*/adapter"))
    assert len(adapters) == 1 and (adapters[0] / "adapter_model.safetensors").exists()
    assert main([*argv, "--overwrite"]) == 0  # the rerun resumes both stages from disk
    again = {r["method"]: r for r in ResultStore(out).load("beir")}
    assert again["dear-l"]["metrics"] == records["dear-l"]["metrics"]
    assert again["dear-l"]["config"]["dear_l"] == listwise["dear_l"]


def test_cpu_long_preset_is_dear_only_and_set_overrides_it(tmp_path, capsys):
    from bench.cli import main
    from methods.retrieval.dear import CPU_LONG, DeAR

    settings = DeAR().recipe_settings("cpu-long", {"n_queries": 200, "epochs": 3})
    assert settings == {**CPU_LONG, "n_queries": 200, "epochs": 3}
    assert DeAR().recipe_settings("default", {"depth": 20}) == {"depth": 20}
    assert DeAR().recipe_settings("smoke", {})["train_queries"] == 64
    out = ["--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work")]
    assert main(["run", "--method", "bm25", "--suite", "beir", "--preset", "cpu-long",
                 *out]) == 2
    assert "method 'bm25' has no longer CPU recipe" in capsys.readouterr().err
    assert main(["run", "--method", "kd", "--suite", "instruct", "--preset", "cpu-long",
                 *out]) == 2
    assert "suite 'instruct' has presets smoke, default, full" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_lower_then_upper_layers_equal_the_full_forward(tiny_model_dir):
    from methods.retrieval.dear import build_student
    from methods.retrieval.frozen_layers import pad_states, run_layers

    model = build_student(DeARConfig(student=str(tiny_model_dir), student_layers=2,
                                     max_doc_tokens=8))
    enc = model.encode(["alpha beta", "gamma"], ["alpha beta gamma delta", "pi rho"])
    decoder = model.lm.get_decoder()
    with torch.no_grad():
        full = decoder(**enc).last_hidden_state
        lower = run_layers(decoder, 0, 1, input_ids=enc["input_ids"], final_norm=False,
                           attention_mask=enc["attention_mask"],
                           position_ids=enc["position_ids"])
        # unpad then re-pad, as the cache stores rows: padding changes nothing
        rows = [lower[i, lower.shape[1] - int(n):] for i, n in
                enumerate(enc["attention_mask"].sum(-1))]
        padded, attention, positions = pad_states(rows)
        upper = run_layers(decoder, 1, 2, inputs_embeds=padded, attention_mask=attention,
                           position_ids=positions, final_norm=True)
    torch.testing.assert_close(upper[:, -1], full[:, -1], rtol=1e-5, atol=1e-5)
    assert len(decoder.layers) == 2  # the slice is undone
    with pytest.raises(ValueError, match="exactly one"):
        run_layers(decoder, 0, 1, attention_mask=attention, position_ids=positions,
                   final_norm=True)


def test_frozen_layers_stay_pretrained_and_their_states_are_cached(tiny_model_dir, tmp_path):
    from methods.retrieval.dear import build_student

    docs, queries, qrels, candidates = toy_data()
    groups = build_groups(queries, qrels, candidates, group_size=3, negatives_depth=10)
    cfg = DeARConfig(student=str(tiny_model_dir), student_layers=2, frozen_layers=1,
                     train_queries=6, group_size=3, batch_queries=2, epochs=1,
                     checkpoint_every=2, mixed_precision="no", max_doc_tokens=8)
    init = build_student(cfg)
    model = train_stage1(cfg, queries=queries, docs=docs, groups=groups,
                         teacher=OverlapTeacher(), work_dir=tmp_path / "seed0", progress=False,
                         states_dir=tmp_path / "frozen-states")
    layers, before = model.lm.get_decoder().layers, init.lm.get_decoder().layers
    for a, b in zip(layers[0].parameters(), before[0].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # frozen: untouched
    assert any(not torch.equal(a, b) for a, b in zip(layers[1].parameters(),
                                                      before[1].parameters(), strict=True))
    cache = list((tmp_path / "frozen-states").glob("states-*.safetensors"))
    assert len(cache) == 1
    # another seed reuses the states (same pretrained lower layer, same pairs)
    stamp = cache[0].stat().st_mtime_ns
    other = DeARConfig(**{**cfg.__dict__, "seed": 1})
    train_stage1(other, queries=queries, docs=docs, groups=groups, teacher=OverlapTeacher(),
                 work_dir=tmp_path / "seed1", progress=False,
                 states_dir=tmp_path / "frozen-states")
    assert list((tmp_path / "frozen-states").glob("*")) == cache
    assert cache[0].stat().st_mtime_ns == stamp
    # resumed from its final checkpoint, the run gives the same weights
    again = train_stage1(cfg, queries=queries, docs=docs, groups=groups,
                         teacher=OverlapTeacher(), work_dir=tmp_path / "seed0",
                         progress=False, states_dir=tmp_path / "frozen-states")
    torch.testing.assert_close(again.head.weight, model.head.weight)


def test_frozen_layers_must_leave_a_layer_to_train(tmp_path, capsys):
    from bench.cli import main

    code = main(["run", "--method", "dear", "--suite", "beir", "--preset", "smoke",
                 "--set", "frozen_layers=4", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "frozen_layers=4" in err[0] and "below student_layers (4)" in err[0]


def test_validation_without_a_dev_split_is_refused_before_any_work(tmp_path, capsys):
    from bench.cli import main

    code = main(["run", "--method", "bm25", "--suite", "beir", "--set",
                 "eval_split=validation", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "offline/fiqa has no dev split" in err[0] and "--dataset offline/boolq" in err[0]
    assert not list(tmp_path.rglob("*.json"))  # nothing ran, not even the other datasets


def test_shared_lower_states_score_as_each_model_alone(tiny_model_dir):
    from methods.retrieval.dear import build_student, for_inference
    from methods.retrieval.frozen_layers import SharedLowerStates, SharedStatesReranker

    cfg = DeARConfig(student=str(tiny_model_dir), student_layers=2, frozen_layers=1,
                     max_doc_tokens=8)
    init, trained = build_student(cfg), build_student(cfg)
    with torch.no_grad():  # "trained": same frozen layer, another upper layer and head
        for p in trained.lm.get_decoder().layers[1].parameters():
            p.add_(0.05 * torch.randn_like(p))
        trained.head.weight.mul_(-2.0)
    queries = ["alpha beta", "gamma", "alpha beta", "pi rho sigma"]
    docs = ["alpha beta gamma delta", "pi rho", "tau upsilon", "alpha beta gamma delta"]
    shared = SharedLowerStates(trained, 1)
    rows = [SharedStatesReranker(m, shared) for m in (init, trained)]
    for row, model in zip(rows, (init, trained), strict=True):
        torch.testing.assert_close(torch.tensor(row.score(queries, docs)),
                                   torch.tensor(model.score(queries, docs)),
                                   rtol=1e-5, atol=1e-5)
    assert shared.computed == 4  # the second model found every pair's states in the memo
    assert rows[0].fingerprint() != init.fingerprint()  # its own score-cache key
    assert rows[0].score(queries[::-1], docs[::-1]) == rows[0].score(queries, docs)[::-1]

    rows[1].forget()  # the cost probe: the whole student runs again, the memo is not read
    rows[1].score(queries[:2], docs[:2])
    assert shared.computed == 4

    small = SharedLowerStates(trained, 1, max_bytes=1)  # keeps nothing, still scores right
    torch.testing.assert_close(torch.tensor(SharedStatesReranker(trained, small).score(
        queries, docs)), torch.tensor(trained.score(queries, docs)), rtol=1e-5, atol=1e-5)
    assert not small._memo

    fast = [for_inference(m) for m in (init, trained)]  # bf16, as DeAR scores
    shared16 = SharedLowerStates(fast[1], 1)
    for model in fast:
        torch.testing.assert_close(torch.tensor(SharedStatesReranker(model, shared16).score(
            queries, docs)), torch.tensor(model.score(queries, docs)), rtol=0.02, atol=0.02)

    other = build_student(DeARConfig(**{**cfg.__dict__, "max_doc_tokens": 4}))
    with pytest.raises(ValueError, match="lower layers or prompt differ"):
        SharedStatesReranker(other, shared)
    with torch.no_grad():
        init.lm.get_decoder().layers[0].mlp.up_proj.weight.add_(1.0)
    with pytest.raises(ValueError, match="lower layers or prompt differ"):
        SharedStatesReranker(init, shared)
