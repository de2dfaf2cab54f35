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
