import copy
import json
import os

import pytest

from bench.core import results
from bench.core.io import atomic_write_text
from bench.core.results import ResultStore, new_record, validate
from bench.errors import ResultExistsError, SchemaError


def make(**overrides):
    kwargs = dict(
        suite="beir", suite_version="1",
        dataset={"id": "offline/boolq", "checksum": "sha256:" + "a" * 64, "split": "test",
                 "offline_stand_in": True, "stands_in_for": "BEIR", "num_items": 3},
        method="bm25", model="none", seed=0, preset="default", main_score="ndcg@10",
        metrics={"ndcg@10": 0.5, "mrr@10": 0.4},
        per_item={"ndcg@10": {"q1": 0.0, "q2": 0.5, "q3": 1.0}},
        config={"k1": 0.9, "b": 0.4}, wall_time_s=1.5, command="bench run --method bm25",
    )
    kwargs.update(overrides)
    return new_record(**kwargs)


def test_round_trip(tmp_path):
    store = ResultStore(tmp_path)
    record = make()
    path = store.write(record)
    assert path.parent.parent == tmp_path / "beir"
    assert path.name == "bm25__none__seed0.json"
    assert ResultStore.read(path) == record
    assert store.load("beir") == [record]
    assert store.load("other") == []


def test_provenance_fields_present():
    prov = make()["provenance"]
    for key in ("git_commit", "package_versions", "hardware", "wall_time_s", "date"):
        assert key in prov
    assert prov["wall_time_s"] == 1.5
    assert "cpu_count" in prov["hardware"]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.pop("metrics"), "(top level)"),
        (lambda r: r["metrics"].update({"ndcg@10": "high"}), "metrics/ndcg@10"),
        (lambda r: r["dataset"].update({"checksum": "md5:abc"}), "dataset/checksum"),
        (lambda r: r["dataset"].pop("offline_stand_in"), "dataset"),
        (lambda r: r.update({"seed": 1.5}), "seed"),
        (lambda r: r.update({"implementation": "mostly"}), "implementation"),
        (lambda r: r.update({"main_score": "map"}), "main_score"),
        (lambda r: r.update({"extra": 1}), "(top level)"),
        (lambda r: r["per_item"]["ndcg@10"].update({"q9": None}), "per_item/ndcg@10/q9"),
    ],
)
def test_malformed_records_rejected_with_field_name(mutate, field):
    record = copy.deepcopy(make())
    mutate(record)
    with pytest.raises(SchemaError) as info:
        validate(record, source="x.json")
    assert str(info.value).startswith("x.json: field '")
    assert field in str(info.value)


def test_non_finite_metric_rejected():
    record = make()
    record["metrics"]["ndcg@10"] = float("nan")
    with pytest.raises(SchemaError, match="metrics/ndcg@10"):
        validate(record)


def test_read_rejects_bad_json_and_bad_schema(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SchemaError, match="bad.json: not valid JSON"):
        ResultStore.read(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"suite": "beir"}))
    with pytest.raises(SchemaError, match="wrong.json: field"):
        ResultStore.read(wrong)


def test_never_overwrites_silently(tmp_path):
    store = ResultStore(tmp_path)
    first = make()
    path = store.write(first)
    second = make(metrics={"ndcg@10": 0.9})
    with pytest.raises(ResultExistsError, match="--overwrite"):
        store.write(second)
    assert ResultStore.read(path)["metrics"]["ndcg@10"] == 0.5
    store.write(second, overwrite=True)
    assert ResultStore.read(path)["metrics"]["ndcg@10"] == 0.9
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_distinct_names_stay_distinct(tmp_path):
    store = ResultStore(tmp_path)
    a = store.path_for(make(model="org/model"))
    b = store.path_for(make(model="org_model"))
    assert a != b


def test_a_non_default_preset_does_not_collide_with_the_default_result(tmp_path):
    store = ResultStore(tmp_path)
    default = store.write(make())
    long_run = store.write(make(preset="cpu-long"))
    assert default.name == "bm25__none__seed0.json"
    assert long_run.name == "bm25__none__seed0__cpu-long.json"
    assert sorted(r["preset"] for r in store.load("beir")) == ["cpu-long", "default"]


def test_atomic_write_crash_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    atomic_write_text(target, "old\n")

    def crash(*args, **kwargs):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(results.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_text(target, "new content that must not appear half-written\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_write_crash_during_write_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "fresh.json"

    def crash(fd):
        raise OSError("disk died mid-write")

    monkeypatch.setattr(results.os, "fsync", crash)
    with pytest.raises(OSError, match="disk died"):
        atomic_write_text(target, "x" * 100_000, overwrite=False)
    assert os.listdir(tmp_path) == []


def test_file_checksum(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"abc")
    assert results.file_checksum([f]) == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_git_state_is_read_once_per_process(monkeypatch):
    """Records name the code a run started with: edits made while it runs do not flip
    ``git_dirty`` in its results."""
    import subprocess

    from bench.core import results

    results.git_state.cache_clear()
    calls = []
    real_run = subprocess.run

    def counting_run(*args, **kwargs):
        calls.append(args[0])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(results.subprocess, "run", counting_run)
    results.git_state_at_start()
    first = results.collect_provenance(1.0)
    second = results.collect_provenance(2.0)
    assert len(calls) == 2  # rev-parse and status, once
    assert (first["git_commit"], first["git_dirty"]) == (second["git_commit"],
                                                          second["git_dirty"])
    results.git_state.cache_clear()


def test_cost_is_optional_and_checked():
    from bench.core.cost import cost_entry

    assert "cost" not in make()  # records without it (most committed ones) stay valid
    entry = cost_entry(4_521_984, 3.5, "query: top 20 BM25 candidates reranked, batch 32")
    record = make(cost=entry)
    assert record["cost"] == entry
    validate(copy.deepcopy(record))
    validate({**copy.deepcopy(record), "cost": cost_entry(None, None, "query: BM25")})


@pytest.mark.parametrize("cost, field", [
    ({"parameters": -1, "ms_per_item": 1.0, "per": "x"}, "cost/parameters"),
    ({"parameters": 1.5, "ms_per_item": 1.0, "per": "x"}, "cost/parameters"),
    ({"parameters": "135M", "ms_per_item": 1.0, "per": "x"}, "cost/parameters"),
    ({"parameters": 1, "ms_per_item": -2.0, "per": "x"}, "cost/ms_per_item"),
    ({"parameters": 1, "ms_per_item": "fast", "per": "x"}, "cost/ms_per_item"),
    ({"parameters": 1, "ms_per_item": float("nan"), "per": "x"}, "cost/ms_per_item"),
    ({"parameters": 1, "ms_per_item": 1.0, "per": ""}, "cost/per"),
    ({"parameters": 1, "ms_per_item": 1.0}, "cost"),
    ({"parameters": 1, "ms_per_item": 1.0, "per": "x", "gpu": True}, "cost"),
    ([1, 2.0, "x"], "cost"),
])
def test_malformed_cost_rejected_with_field_name(cost, field):
    record = copy.deepcopy(make())
    record["cost"] = cost
    with pytest.raises(SchemaError) as info:
        validate(record, source="x.json")
    assert f"field '{field}'" in str(info.value)
