"""specbench protocol, version 2: the decoding dtype, float32 losslessness against bf16 token
agreement, the measured cost model (c, v, break-even tau), the seeded A/B order per prompt,
the defaults, and the leaderboard section's Δ / MDE table. Tiny models only."""

from __future__ import annotations

import copy
import json
import math
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_llama

from bench.cli import main
from bench.core.leaderboard import escape_md
from bench.core.results import slug
from bench.specdec import LMDraft, TreeConfig
from bench.specdec.costs import probe_costs
from bench.specdec.evaluation import (
    ItemResult,
    cast_for_decoding,
    decode_item,
    group_metrics,
    per_item_scores,
    spec_runs_first,
)
from bench.specdec.records import plain_model_name, row_model_name
from methods.instruct.token_kd import build_student

VOCAB = 23
PROMPTS = [[3, 7, 1, 9, 4, 7, 1], [5, 6, 7, 8, 5, 6], [11, 2, 11, 2, 11]]


@pytest.fixture(scope="module")
def target():
    return tiny_llama(VOCAB, layers=3, seed=1, init=0.2, isolate_rng=True)


@pytest.fixture(scope="module")
def student(target):
    return build_student(target, 1).eval()


def _token_items(monkeypatch):
    """Items whose turns are token-id prompts (no chat template) and a tokenizer stub."""
    import bench.specdec.data as data

    monkeypatch.setattr(data, "conversation_ids", lambda tok, turns, answers: list(turns[-1]))
    tok = SimpleNamespace(decode=lambda ids, skip_special_tokens=True: " ".join(map(str, ids)))
    items = [SimpleNamespace(id=f"p{i}", category="qa", turns=[p]) for i, p in enumerate(PROMPTS)]
    return tok, items


# ------------------------------------------------------------------------- settings


def test_defaults_presets_and_version():
    from bench.suite import SUITES

    meta = SUITES.entry("specbench").meta["metadata"]
    assert meta.version == "2"
    default, smoke, full = (meta.defaults(p) for p in ("default", "smoke", "full"))
    assert default["test_per_category"] == 20 and default["dtype"] == "float32"
    assert default["order_seed"] == 0 and default["sampling_speed_per_category"] == 5
    assert smoke["test_per_category"] == 2 and smoke["sampling_speed_per_category"] == 1
    assert full["test_per_category"] is None and full["sampling_speed_per_category"] is None
    assert meta.sections == "bench.specdec.tables:spec_bench_tables"


def test_dtype_setting_is_accepted_and_a_bad_value_is_a_one_line_error(tmp_path, capsys):
    from bench.contracts import resolve_recipe
    from bench.specdec.suite import SpecBenchSuite
    from bench.suite import RunOptions

    options = RunOptions(method="pld", overrides={"dtype": "bfloat16", "order_seed": 7})
    settings = SpecBenchSuite().settings(options, resolve_recipe("pld", "specbench"))
    assert settings["dtype"] == "bfloat16" and settings["order_seed"] == 7
    out = tmp_path / "results"
    code = main(["run", "--suite", "specbench", "--method", "ar", "--set", "dtype=float16",
                 "--out", str(out), "--work-dir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("bench: error: "), err
    assert "--set dtype=float16: expected one of float32, bfloat16" in err
    assert not out.exists() and not (tmp_path / "work" / "specbench").exists()


def test_row_model_names_tag_non_default_settings():
    default = {"dtype": "float32", "tree": None}
    assert row_model_name("t+pld-n3", default) == "t+pld-n3"  # committed rows keep names
    assert row_model_name("t+pld-n3", {**default, "dtype": "bfloat16"}) == "t+pld-n3-bf16"
    assert row_model_name("t+eagle-head", {"dtype": "bfloat16", "tree": "60,5,10",
                                           "draft_vocab": 8192}) == \
        "t+eagle-head-tree60.5.10-vocab8192-bf16"
    assert row_model_name("t", {**default, "tree": "60,5,10"}, draft=False) == "t"


@pytest.mark.parametrize("settings", [{"dtype": "float32", "tree": None},
                                      {"dtype": "bfloat16", "tree": None},
                                      {"dtype": "bfloat16", "tree": "60,5,10",
                                       "draft_vocab": 8192},
                                      {"dtype": "float32", "tree": "60,5,10"}])
def test_a_draft_row_is_paired_with_plain_decoding_of_its_target_in_its_dtype(settings):
    """The leaderboard measures a draft row against the ar row that ran the same target in
    the same dtype: the name ar's run records (draft=False), whatever the draft's tags."""
    plain = row_model_name("smollm2-135m-instruct", {"dtype": settings["dtype"]},
                           draft=False)  # ar takes no draft settings
    drafted = row_model_name("smollm2-135m-instruct+eagle-head", settings)
    assert plain_model_name(drafted) == plain
    assert plain_model_name(plain) == plain  # ar's own rows pair with themselves


# ---------------------------------------------------------------------- losslessness


def test_float32_stays_lossless_and_bf16_reports_token_agreement(target, student,
                                                                 monkeypatch):
    tok, items = _token_items(monkeypatch)
    exact = [decode_item(target, LMDraft(student), tok, it, max_new_tokens=9, eos_ids=[],
                         k=3, tree=None) for it in items]
    metrics = group_metrics(exact)
    assert metrics["lossless"] == 1.0 and "token_agreement" not in metrics
    assert "token_agreement" not in per_item_scores(exact)
    assert all(r.identical and r.token_agreement == 1.0 for r in exact)

    bf16_target, bf16_draft = copy.deepcopy(target), LMDraft(copy.deepcopy(student))
    cast_for_decoding(bf16_target, bf16_draft, "bfloat16")
    assert next(bf16_target.parameters()).dtype == torch.bfloat16
    assert next(bf16_draft.model.parameters()).dtype == torch.bfloat16
    halves = [decode_item(bf16_target, bf16_draft, tok, it, max_new_tokens=9, eos_ids=[],
                          k=3, tree=None) for it in items]
    metrics = group_metrics(halves, "agreement")
    assert "lossless" not in metrics and 0.0 <= metrics["token_agreement"] <= 1.0
    assert metrics["token_agreement"] == pytest.approx(
        sum(r.agreeing for r in halves) / sum(r.compared for r in halves))
    per_item = per_item_scores(halves, "agreement")["token_agreement"]
    assert per_item == {r.id: r.agreeing / r.compared for r in halves}


def test_token_agreement_is_pooled_over_positions():
    a = ItemResult("a", "qa", agreeing=3, compared=4)
    b = ItemResult("b", "qa", agreeing=1, compared=4)
    assert group_metrics([a, b], "agreement")["token_agreement"] == 0.5
    assert per_item_scores([a, b], "agreement")["token_agreement"] == {"a": 0.75, "b": 0.25}
    assert ItemResult("c", "qa").token_agreement == 1.0  # nothing compared
    with pytest.raises(ValueError, match="check must be"):
        group_metrics([a], "nearly")


# --------------------------------------------------------------------------- A/B order


def test_order_coin_is_seeded_stable_and_balanced():
    ids = [f"item-{i}" for i in range(64)]
    seed0 = [spec_runs_first(0, i) for i in ids]
    assert seed0 == [spec_runs_first(0, i) for i in ids]
    assert seed0 != [spec_runs_first(1, i) for i in ids]
    assert 16 < sum(seed0) < 48
    # pinned: a hash of (seed, item id), the same on every machine and rerun
    assert [spec_runs_first(0, i) for i in ("asdiv-1457", "nqa-1229", "quac-594")] == \
        [False, True, True]
    assert spec_runs_first(3, "asdiv-1457") is True


def test_decode_item_runs_in_the_coin_s_order_and_compares_up_to_the_shorter(monkeypatch):
    import bench.specdec as specdec
    from bench.specdec.engine import DecodeResult, DecodeStats

    tok, items = _token_items(monkeypatch)
    calls: list[str] = []

    def fake(name, tokens):
        def run(*args, **kwargs):
            calls.append(name)
            return DecodeResult(list(tokens), DecodeStats(name, new_tokens=len(tokens)))
        return run

    monkeypatch.setattr(specdec, "autoregressive", fake("plain", [1, 2, 3, 4]))
    monkeypatch.setattr(specdec, "speculative", fake("spec", [1, 9, 3]))
    for spec_first, order in ((True, ["spec", "plain"]), (False, ["plain", "spec"])):
        calls.clear()
        r = decode_item(None, object(), tok, items[0], max_new_tokens=4, eos_ids=[], k=3,
                        tree=None, spec_first=spec_first)
        assert calls == order and r.spec_first is spec_first
        assert (r.compared, r.agreeing, r.identical) == (3, 2, False)
        assert per_item_scores([r])["spec_first"] == {"p0": float(spec_first)}


# ------------------------------------------------------------------------- cost model


def test_cost_probe_conventions(target, student):
    from bench.specdec.lookup import PromptLookupDraft
    from bench.specdec.recycling import RecyclingDraft

    context = PROMPTS[0] * 3
    plain = probe_costs(target, None, context, k=3)
    assert (plain.c, plain.v, plain.break_even_tau, plain.steps) == (0.0, 0.0, 1.0, 0)
    assert plain.metrics() == {"c": 0.0, "v": 0.0, "break_even_tau": 1.0}
    assert plain.target_1_ms > 0 and plain.config()["verify_tokens"] == 1

    chain = probe_costs(target, LMDraft(student), context, k=3)
    assert (chain.steps, chain.verify_tokens, chain.proposed) == (3, 4, 3)
    assert chain.c > 0 and all(math.isfinite(x) for x in chain.metrics().values())
    assert chain.break_even_tau == pytest.approx(1 + 3 * chain.c + chain.v)
    assert 3 <= chain.reps <= 7

    tree = probe_costs(target, LMDraft(student), context, k=3, tree=TreeConfig(6, 2, 2))
    assert tree.steps == 3 and tree.verify_tokens == tree.proposed + 1 > 1

    # training-free drafts: c is the lookup's own time through propose (+ observe)
    lookup = probe_costs(target, PromptLookupDraft(VOCAB), [1, 2, 3, 4, 5, 6], k=10)
    assert lookup.proposed == 0 and lookup.verify_tokens == 11  # no match: still k + 1
    recycling = RecyclingDraft(VOCAB)
    again = probe_costs(target, recycling, context, k=3)
    assert math.isfinite(again.c) and again.c >= 0 and math.isfinite(again.v)

    bounded = probe_costs(target, None, context, k=3, reps=10_000, budget_s=0.05)
    assert 3 <= bounded.reps < 10_000  # the budget stops it, after the minimum


def test_cost_command_prints_dtypes_and_draft_vocabularies(tiny_chat_model_dir, capsys):
    from bench.specdec.costs import main as costs_main

    with pytest.raises(SystemExit) as help_exit:
        costs_main(["--help"])
    assert help_exit.value.code == 0 and "break-even" in capsys.readouterr().out
    assert costs_main(["--draft", "eagle", "--teacher", str(tiny_chat_model_dir),
                       "--prompt", "the cat sat on the mat", "--draft-vocab", "8",
                       "--reps", "3", "--budget-s", "0.1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [("float32", "full"), ("float32", "8"),
                                            ("bfloat16", "full"), ("bfloat16", "8")]
    assert all(math.isfinite(float(x)) for r in rows for x in r[2:])
    with pytest.raises(SystemExit):
        costs_main(["--dtypes", "float16"])


# ------------------------------------------------------------------------ end to end


def _all_record(out, method, model):
    (path,) = out.glob(f"specbench/offline_specbench-all_limit2-*/{method}__{slug(model)}__*")
    return json.loads(path.read_text())


@pytest.mark.slow  # reads the packaged prompts
def test_bf16_and_float32_runs_record_their_checks_costs_and_order(tiny_chat_model_dir,
                                                                   tmp_path):
    out, name = tmp_path / "results", tiny_chat_model_dir.name

    def run(method, *extra):
        assert main(["run", "--method", method, "--suite", "specbench", "--preset", "smoke",
                     "--teacher", str(tiny_chat_model_dir), "--out", str(out), "--work-dir",
                     str(tmp_path / "work"), "--limit", "2", "--set", "max_new_tokens=6",
                     "--set", "max_context_tokens=12", "--set", "sampling_runs=10",
                     *extra]) == 0

    run("ar", "--set", "dtype=bfloat16")
    plain = _all_record(out, "ar", f"{name}-bf16")
    assert plain["metrics"]["c"] == plain["metrics"]["v"] == 0.0
    assert plain["metrics"]["break_even_tau"] == 1.0

    run("pld", "--set", "dtype=bfloat16")
    bf16 = _all_record(out, "pld", f"{name}+pld-n3-bf16")
    metrics, config = bf16["metrics"], bf16["config"]
    assert config["dtype"] == "bfloat16" and config["cost_probe"]["dtype"] == "bfloat16"
    assert "lossless" not in metrics and 0.0 <= metrics["token_agreement"] <= 1.0
    assert config["lossless_check"] == "agreement" and config["lossless"] is None
    assert any("token agreement" in note and "not by exactness" in note
               for note in bf16["notes"])
    # one wording for every category's record (no per-dataset value in it), so a row's
    # joined notes say it once
    agreement_notes = {note for path in out.glob(f"specbench/*/pld__{slug(bf16['model'])}__*")
                       for note in json.loads(path.read_text())["notes"]
                       if "token agreement" in note}
    assert len(agreement_notes) == 1 and not re.search(r"\d\.\d", agreement_notes.pop())
    assert set(bf16["per_item"]["token_agreement"]) == set(bf16["per_item"]["speedup"])
    assert all(math.isfinite(metrics[m]) for m in ("c", "v", "break_even_tau"))
    assert config["cost_probe"]["steps"] == 10  # pld proposes k = 10
    assert metrics["break_even_tau"] == pytest.approx(1 + 10 * metrics["c"] + metrics["v"])
    assert config["paired_bootstrap_vs_baseline"]["baseline"] == "ar"  # the bf16 ar row
    # 12 prompts timed greedy (2 per category), the sampling pass on the first 1 of each
    assert len(bf16["per_item"]["speedup"]) == 12 and config["sampling_speed_items"] == 6
    assert len(bf16["per_item"]["tau_sampling"]) == 6
    order0 = bf16["per_item"]["spec_first"]
    assert config["order_seed"] == 0 and order0 == {i: float(spec_runs_first(0, i))
                                                    for i in order0}

    run("pld", "--set", "order_seed=1")
    fp32 = _all_record(out, "pld", f"{name}+pld-n3")
    assert fp32["config"]["dtype"] == "float32" and fp32["config"]["lossless_check"] == "exact"
    assert fp32["metrics"]["lossless"] == 1.0 and fp32["config"]["lossless"] is True
    assert "token_agreement" not in fp32["metrics"]
    assert any("no 'ar' result for this dataset/seed/preset/dtype" in note
               for note in fp32["notes"])  # the bf16 ar row is not its baseline
    order1 = fp32["per_item"]["spec_first"]
    assert order1 == {i: float(spec_runs_first(1, i)) for i in order1} != order0

    assert main(["leaderboard", "--results", str(out), "--out", str(tmp_path / "lb")]) == 0
    section = (tmp_path / "lb" / "specbench.md").read_text().split("## Spec-Bench table")[1]
    table = section.split("### Greedy speedup against ar: Δ / MDE per category")[1] \
        .split("\n## ")[0]
    assert "| qa Δ / MDE |" in table and "| all Δ / MDE |" in table
    rows = {line.split(" | ")[1]: line for line in table.splitlines() if "pld" in line}
    assert "—" not in rows[escape_md(bf16["model"])]  # compared with the bf16 ar row
    assert rows[escape_md(fp32["model"])].count("—") == 7  # no float32 ar row


def _record(method, model, category, speedups, dtype="float32"):
    return {"method": method, "model": model, "preset": "default", "seed": 0,
            "dataset": {"id": f"offline/specbench-{category}"},
            "metrics": {"speedup": sum(speedups) / len(speedups), "tau": 1.0},
            "per_item": {"speedup": {f"{category}-{i}": s for i, s in enumerate(speedups)}},
            "config": {"dtype": dtype, "target": "t", "torch_threads": 1},
            "provenance": {"hardware": {"cpu": "cpu", "accelerator": "none"},
                           "package_versions": {"torch": "2"}}}


def test_section_shows_the_mde_against_ar_per_category():
    from bench.specdec.tables import spec_bench_tables

    noise = [1.0 + 0.02 * ((i * 7) % 5 - 2) for i in range(20)]
    records = [_record("ar", "t", "qa", noise), _record("pld", "t+pld", "qa",
                                                       [s + 0.3 for s in noise[::-1]]),
               _record("ar", "t", "rag", noise[:5]), _record("pld", "t+pld", "rag",
                                                            [s + 0.3 for s in noise[:5]]),
               _record("pld", "t+pld-bf16", "qa", noise, dtype="bfloat16")]
    text = "\n".join(spec_bench_tables(records))
    assert "decode in bfloat16 / float32" in text
    table = text.split("### Greedy speedup against ar: Δ / MDE per category")[1]
    assert "| qa Δ / MDE | rag Δ / MDE | all Δ / MDE |" in table
    rows = {line.split(" | ")[1]: line.split(" | ")[2:] for line in table.splitlines()
            if line.startswith("| pld |")}
    qa, rag, overall = rows["t+pld"]
    delta, mde = qa.split(" / ")
    assert float(delta) == pytest.approx(0.3) and math.isfinite(float(mde.rstrip(" ‡")))
    assert rag.endswith("/ ∞ ‡")  # 5 prompts: the exact sign-flip test cannot reach 0.05
    assert overall == "— |"  # no "all" records here
    assert rows["t+pld-bf16"] == ["—", "—", "— |"]  # no bf16 ar row to compare with


def test_the_progress_bars_speedup_is_the_metrics_ratio_so_far_not_the_last_prompts():
    from types import SimpleNamespace

    from bench.specdec.evaluation import group_metrics
    from bench.specdec.suite import running_speedup

    timed = [SimpleNamespace(plain_time=p, spec_time=s) for p, s in ((1.0, 0.5), (3.0, 9.0))]
    assert running_speedup(timed[:1]) == 2.0
    assert running_speedup(timed) == 4.0 / 9.5  # not 1/3, the last prompt's
    full = [SimpleNamespace(**vars(t), new_tokens=1, passes=1, accepted=0, plain_tokens=1,
                            draft_time=0.0, identical=True, drafted=0) for t in timed]
    assert group_metrics(full)["speedup"] == running_speedup(timed)
