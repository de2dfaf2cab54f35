"""specbench's training-budget curve: the cpu-long preset, tau against training steps for
eagle and fspad (head snapshots, cached points, resume), its plot and its fspad-vs-eagle
table. Tiny models only."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_llama

from bench.cli import main
from bench.errors import UsageError
from bench.specdec.curve import parse_curve_steps

# ------------------------------------------------------------------------ settings


def test_cpu_long_preset_is_for_the_heads_only_and_sized_as_documented():
    from bench.contracts import resolve_recipe
    from bench.specdec.suite import SpecBenchSuite
    from bench.suite import SUITES, RunOptions

    meta = SUITES.entry("specbench").meta["metadata"]
    assert meta.recipe_presets == ("cpu-long",)
    assert meta.plot == "bench.specdec.plots:spec_bench_plots"
    assert meta.defaults("default")["curve_steps"] == ""  # default rows: no curve
    suite = SpecBenchSuite()
    for method in ("eagle", "fspad"):
        recipe = resolve_recipe(method, "specbench")
        settings = suite.resolve_settings(RunOptions(method=method, preset="cpu-long"), recipe)
        assert settings["train_per_category"] == 300 and settings["epochs"] == 10
        assert parse_curve_steps(settings["curve_steps"]) == [25, 60, 150, 370, 900, 2250]
        assert settings["curve_prompts"] == 5
        # 10 epochs of 1,800 responses at batch 8, pinned: the curve ends at the last step
        assert recipe.planned_steps(settings, 1800, "cpu-long") == 2250
        assert recipe.planned_steps(settings, 1700, "cpu-long") == 2250
    with pytest.raises(UsageError, match="no longer CPU recipe"):
        suite.resolve_settings(RunOptions(method="draft-lm", preset="cpu-long"),
                               resolve_recipe("draft-lm", "specbench"))


def test_parse_curve_steps():
    assert parse_curve_steps("") == parse_curve_steps(None) == parse_curve_steps("none") == []
    assert parse_curve_steps("25, 60,150") == [25, 60, 150] == parse_curve_steps([25, 60, 150])
    assert parse_curve_steps(7) == [7] and parse_curve_steps([]) == []
    for bad, message in (("5,3", "strictly increase"), ("4,4", "strictly increase"),
                         ("0,3", "start at 1"), ("a,b", "separated by commas")):
        with pytest.raises(UsageError, match=message):
            parse_curve_steps(bad)


@pytest.mark.parametrize("argv, message", [
    (["--method", "eagle", "--set", "curve_steps=60,25"],
     "--set curve_steps=60,25: step counts must strictly increase"),
    (["--method", "fspad", "--set", "curve_steps=10,136"],
     "--set curve_steps=10,136: step 136 is past the run's 135 training steps"),
    (["--method", "eagle", "--preset", "smoke", "--set", "train_per_category=2",
      "--set", "curve_steps=1,3"], "step 3 is past the run's 2 training steps"),
    (["--method", "eagle", "--set", "curve_prompts=0"],
     "--set curve_prompts=0: expected an integer >= 1"),
    (["--method", "ar", "--set", "curve_steps=10"], "method 'ar' trains no draft head"),
    (["--method", "pld", "--preset", "cpu-long"], "no longer CPU recipe"),
])
def test_bad_curve_settings_are_one_line_errors_before_any_work(tmp_path, capsys, argv,
                                                                 message):
    out = tmp_path / "results"
    code = main(["run", "--suite", "specbench", *argv, "--out", str(out),
                 "--work-dir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("bench: error: "), err
    assert message in err
    assert not out.exists() and not (tmp_path / "work" / "specbench").exists()


# ------------------------------------------------------------------------ snapshots


def test_snapshots_are_taken_once_and_load_in_the_draft_s_dtype(tmp_path):
    from methods.specdec.heads import EagleHead, FeatureDraft, HeadConfig
    from methods.specdec.snapshots import StepSnapshots, attach

    target = tiny_llama(40, seed=3, isolate_rng=True)
    torch.manual_seed(0)
    head = EagleHead(HeadConfig.from_target(target.config))
    snaps = StepSnapshots(tmp_path / "curve", [2, 5])
    snaps.capture(1, head)  # not a curve step
    snaps.capture(2, head)
    saved = snaps.path(2).read_bytes()
    with torch.no_grad():
        head.fc.weight.add_(1.0)
    snaps.capture(2, head)  # already taken: kept as it was
    assert snaps.path(2).read_bytes() == saved and list(snaps.available()) == [2]
    draft = attach(FeatureDraft(head, target.get_input_embeddings().weight,
                                target.get_output_embeddings().weight), snaps)
    draft.cast(torch.bfloat16)  # the suite casts for decoding before the curve
    (snap,) = draft.curve_snapshots
    loaded = snap.load()
    assert snap.steps == 2 and len(snap.digest) == 64
    assert loaded.head is not draft.head and loaded.head.fc.weight.dtype == torch.bfloat16
    assert not torch.equal(loaded.head.fc.weight, draft.head.fc.weight)  # step 2's weights
    assert loaded.embed_weight is draft.embed_weight and loaded.kv is None


def test_tau_curve_points_are_the_timed_pass_s_tau_and_are_cached(tiny_chat_model_dir,
                                                                  tmp_path, monkeypatch):
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    import bench.specdec.curve as curve_module
    from bench.specdec import LMDraft
    from bench.specdec.evaluation import decode_item, per_item_scores
    from methods.instruct.token_kd import build_student

    target = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    drafts = {1: LMDraft(build_student(target, 1).eval()), 5: LMDraft(target)}
    snaps = [SimpleNamespace(steps=n, digest=f"d{n}", load=lambda n=n: drafts[n])
             for n in drafts]
    draft = SimpleNamespace(curve_snapshots=snaps)
    items = [SimpleNamespace(id="a", category="qa", turns=["the cat sat", "a dog ran"]),
             SimpleNamespace(id="b", category="qa", turns=["story of the park"])]
    decode = {"eos_ids": [2], "k": 3, "tree": None, "max_turns": 2, "max_new_tokens": 10}
    notes: list[str] = []

    def curve():
        return curve_module.tau_curve(target, draft, tok, items, [1, 3, 5], decode=decode,
                                      cache_dir=tmp_path / "curve", target_key="t",
                                      notes=notes)

    points = curve()
    assert [p["steps"] for p in points] == [1, 5] and "no head snapshot at step 3" in notes[0]
    for p in points:  # per item: the timed pass's tau of the same draft
        timed = [decode_item(target, drafts[p["steps"]], tok, it, **decode) for it in items]
        assert p["per_item"] == per_item_scores(timed)["tau"]
        assert p["tau"] == pytest.approx(sum(p["per_item"].values()) / 2)
    assert points[1]["tau"] > 2  # the target as its own draft: every token accepted
    monkeypatch.setattr(curve_module, "spec_tau", lambda *a, **k: pytest.fail("recomputed"))
    assert curve() == points  # read back from the cache
    decode["max_new_tokens"] = 9  # another setting: another key
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        curve()


# ------------------------------------------------------------------------ end to end


def _run(model_dir, tmp_path, method, work="work", *extra):
    out = tmp_path / f"results-{work}"
    argv = ["run", "--method", method, "--suite", "specbench", "--preset", "smoke",
            "--teacher", str(model_dir), "--out", str(out), "--work-dir",
            str(tmp_path / work), "--limit", "2", "--set", "max_new_tokens=6",
            "--set", "train_per_category=2", "--set", "max_context_tokens=12",
            "--set", "gen_batch_size=4", "--set", "speed_temperature=0",
            "--set", "sampling_prompts=0", "--set", "mixed_precision=no",
            "--set", "max_steps=4", "--set", "checkpoint_every=2",
            "--set", "curve_steps=1,3,4", "--set", "curve_prompts=1", "--overwrite", *extra]
    assert main(argv) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.rglob(f"{method}__*.json"))]
    return {r["dataset"]["id"].split("/")[-1]: r for r in records}


@pytest.mark.slow  # reads the packaged prompts
def test_curve_is_recorded_deterministic_and_resumes(tiny_chat_model_dir, tmp_path,
                                                     monkeypatch):
    import bench.specdec.curve as curve_module

    calls: list[str] = []
    real = curve_module.spec_tau

    def counting(target, draft, tokenizer, item, **kwargs):
        calls.append(item.id)
        return real(target, draft, tokenizer, item, **kwargs)

    monkeypatch.setattr(curve_module, "spec_tau", counting)
    records = _run(tiny_chat_model_dir, tmp_path, "eagle")
    overall = records.pop("specbench-all@limit2")
    curve = overall["config"]["tau_curve"]
    assert [p["steps"] for p in curve] == [1, 3, 4]
    # the first test prompt of each category (curve_prompts=1), the same at every point
    from transformers import AutoTokenizer

    from bench.specdec.data import offline_pools

    pools = offline_pools(AutoTokenizer.from_pretrained(tiny_chat_model_dir), 12, 2, 2)
    firsts = {test[0].id for _, test in pools.values()}
    assert len(firsts) == 6 and all(set(p["per_item"]) == firsts for p in curve)
    assert all(set(r["per_item"]["tau"]) & firsts for r in records.values())
    assert all(p["tau"] == pytest.approx(sum(p["per_item"].values()) / 6) for p in curve)
    assert all(v >= 1.0 for p in curve for v in p["per_item"].values())
    assert all("tau_curve" not in r["config"] for r in records.values())  # the all record's
    assert len(calls) == 18 and overall["config"]["seconds"]["tau_curve"] >= 0
    train_dir = next((tmp_path / "work" / "specbench" / "train").glob("eagle-*"))
    snap_dir = train_dir / "curve"
    snapshots = {p.name: p.read_bytes() for p in sorted(snap_dir.glob("*.safetensors"))}
    assert list(snapshots) == [f"step-0000000{n}.safetensors" for n in (1, 3, 4)]

    # a run killed after its step-2 checkpoint: the last checkpoint, the snapshots after
    # it and one cached point are gone; the rerun trains steps 3-4 again, takes the same
    # snapshots and computes only the missing point (the others are read back)
    import shutil

    shutil.rmtree(train_dir / "checkpoints" / "step-00000004")
    for name in ("step-00000003.safetensors", "step-00000004.safetensors"):
        (snap_dir / name).unlink()
    cached = sorted((tmp_path / "work" / "specbench" / "curve").glob("point-*.json"))
    assert len(cached) == 3
    point4 = next(p for p in cached if json.loads(p.read_text())["point"]["steps"] == 4)
    point4.unlink()
    calls.clear()
    again = _run(tiny_chat_model_dir, tmp_path, "eagle")["specbench-all@limit2"]
    assert {p.name: p.read_bytes() for p in sorted(snap_dir.glob("*.safetensors"))} == \
        snapshots
    assert len(calls) == 6 and again["config"]["tau_curve"] == curve

    # identical settings in a fresh work folder: same heads, same curve
    calls.clear()
    fresh = _run(tiny_chat_model_dir, tmp_path, "eagle", "work2")["specbench-all@limit2"]
    assert fresh["config"]["tau_curve"] == curve and len(calls) == 18
    fresh_dir = next((tmp_path / "work2" / "specbench" / "train").glob("eagle-*")) / "curve"
    assert {p.name: p.read_bytes() for p in sorted(fresh_dir.glob("*.safetensors"))} == \
        snapshots

    # fspad at the same steps and prompts; the leaderboard compares them point by point
    fspad = _run(tiny_chat_model_dir, tmp_path, "fspad")["specbench-all@limit2"]
    assert [(p["steps"], set(p["per_item"])) for p in fspad["config"]["tau_curve"]] == \
        [(p["steps"], set(p["per_item"])) for p in curve]
    results = tmp_path / "results-work"
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "lb")]) == 0
    board = (tmp_path / "lb" / "specbench.md").read_text()
    assert "### fspad vs eagle at equal training steps (tau curve)" in board
    assert "specbench_tau_vs_steps.png" in board
    assert (tmp_path / "lb" / "specbench_tau_vs_steps.png").stat().st_size > 1000
    assert (tmp_path / "lb" / "specbench_speedup_vs_tau.png").is_file()


# ------------------------------------------------------------------ plot and table


def _curve_record(method, seed, taus, *, preset="cpu-long", dataset="offline/specbench-all",
                  target="t"):
    """A synthetic ``all`` record whose curve has per-item tau ``taus[steps]``."""
    curve = [{"steps": n, "tau": sum(v) / len(v),
              "per_item": {f"i{j}": x for j, x in enumerate(v)}} for n, v in taus.items()]
    return {"suite": "specbench", "method": method, "model": f"{target}+{method}-head",
            "seed": seed, "preset": preset,
            "dataset": {"id": dataset, "offline_stand_in": True},
            "metrics": {"speedup": 0.9, "tau": 1.5}, "per_item": {},
            "config": {"dtype": "float32", "target": target, "k": 3, "tree": None,
                       "torch_threads": 1, "tau_curve": curve},
            "provenance": {"hardware": {"cpu": "cpu", "accelerator": "none"},
                           "package_versions": {"torch": "2"}}}


def _items(base, n=20, step=0.01):
    return [base + step * ((i * 7) % 5 - 2) for i in range(n)]


def test_tau_vs_steps_plot_is_written_deterministically_and_only_with_a_curve(tmp_path):
    from bench.specdec.plots import curve_lines, spec_bench_plots, tau_vs_steps

    records = [_curve_record("eagle", s, {25: _items(1.2 + s / 10), 60: _items(1.5)})
               for s in range(3)]
    records.append(_curve_record("fspad", 0, {25: _items(1.3), 60: _items(1.7)}))
    lines = curve_lines(records)
    (eagle, model, _), points = next(iter(lines.items()))
    assert eagle == "eagle [cpu-long]" and model == "t+eagle-head"
    assert points[0][0] == 25 and points[0][1] == pytest.approx(1.3)
    assert points[0][2] == pytest.approx(0.1)  # sample std over the three seeds
    assert lines[("fspad [cpu-long]", "t+fspad-head", "offline/specbench-all")][1][2] is None
    first = spec_bench_plots(records, tmp_path / "a")
    assert [p.name for p in first] == ["specbench_speedup_vs_tau.png",
                                       "specbench_tau_vs_steps.png"]
    (second,) = tau_vs_steps(records, tmp_path / "b")
    assert first[1].read_bytes() == second.read_bytes() and second.stat().st_size > 1000
    bare = [{**r, "config": {**r["config"], "tau_curve": []}} for r in records]
    assert [p.name for p in spec_bench_plots(bare, tmp_path / "c")] == \
        ["specbench_speedup_vs_tau.png"]
    assert not (tmp_path / "c" / "specbench_tau_vs_steps.png").exists()


def _table_rows(text):
    table = text.split("### fspad vs eagle at equal training steps (tau curve)")[1]
    return [line.split(" | ") for line in table.splitlines() if line.startswith("| cpu")]


def test_curve_table_matches_compare_and_needs_both_methods():
    from bench.core.stats import adjust, compare
    from bench.specdec.tables import curve_table, spec_bench_tables

    eagle = {25: _items(1.20), 60: _items(1.50), 150: _items(1.6)}
    fspad = {25: _items(1.25, step=0.02), 60: _items(1.62, step=0.03)}  # no 150 point
    one_seed = [_curve_record("eagle", 0, eagle), _curve_record("fspad", 0, fspad)]
    assert curve_table(one_seed[:1]) == [] and curve_table(one_seed[1:]) == []
    rows = _table_rows("\n".join(spec_bench_tables(one_seed)))
    assert [r[4] for r in rows] == ["25", "60"]  # steps both curves have
    expected = [compare([one_seed[1]["config"]["tau_curve"][i]["per_item"]],
                        [one_seed[0]["config"]["tau_curve"][i]["per_item"]]) for i in (0, 1)]
    adjusted = adjust([e.p_value for e in expected], "holm")
    for row, exp, p_adj in zip(rows, expected, adjusted, strict=True):
        assert exp.test == "paired t" and row[11] == exp.test  # 20 items: paired t
        assert float(row[5]) == pytest.approx(exp.mean_b, abs=5e-4)  # eagle
        assert float(row[6]) == pytest.approx(exp.mean_a, abs=5e-4)  # fspad
        assert float(row[7].rstrip(" ‡")) == pytest.approx(exp.delta, abs=5e-4)
        assert exp.delta > 0 and row[7].startswith("+")
        assert row[8] == ("<0.0001" if exp.p_value < 1e-4 else f"{exp.p_value:.4f}")
        assert row[9] == ("<0.0001" if p_adj < 1e-4 else f"{p_adj:.4f}")
        assert float(row[10]) == pytest.approx(exp.mde, abs=5e-5)
        assert row[12:] == ["20", "1 / 1 |"]

    # several seeds: Welch t on seed means, as bench.core.stats.compare decides
    seeds = [_curve_record("eagle", s, {25: _items(1.2 + 0.01 * s)}) for s in range(3)] + \
        [_curve_record("fspad", s, {25: _items(1.3 - 0.01 * s)}) for s in range(3)]
    seeds.append(_curve_record("fspad", 0, {25: _items(2.0)}, target="other"))  # unpaired
    (row,) = _table_rows("\n".join(curve_table(seeds)))
    exp = compare([r["config"]["tau_curve"][0]["per_item"] for r in seeds[3:6]],
                  [r["config"]["tau_curve"][0]["per_item"] for r in seeds[:3]])
    assert row[11] == exp.test == "Welch t on seed means" and row[13] == "3 / 3 |"
    assert float(row[7].rstrip(" ‡")) == pytest.approx(exp.delta, abs=5e-4)
    assert math.isfinite(exp.p_value) and row[8] == f"{exp.p_value:.4f}"


def test_cpu_long_rows_are_tested_against_the_default_ar_row():
    from bench.specdec.tables import speedup_against_ar

    def record(method, preset, speedups):
        return {"method": method, "model": f"t+{method}", "preset": preset, "seed": 0,
                "dataset": {"id": "offline/specbench-qa"},
                "per_item": {"speedup": {f"q{i}": s for i, s in enumerate(speedups)}},
                "config": {"dtype": "float32", "target": "t"}}

    noise = _items(1.0, step=0.02)
    out = speedup_against_ar([record("ar", "default", noise),
                              record("eagle", "cpu-long", [s + 0.3 for s in noise[::-1]]),
                              record("eagle", "smoke", noise)])
    assert out[("eagle [cpu-long]", "t+eagle")]["qa"].delta == pytest.approx(0.3)
    assert out[("eagle [smoke]", "t+eagle")] == {}  # smoke times differently: no ar row
