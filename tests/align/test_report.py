"""The align leaderboard's matched-KL and equal-length sections (bench.align.report)."""

import math

import numpy as np
import pytest
from scipy import stats

from bench.align.report import alignment_tables, interpolate, length_controlled


def test_interpolate_is_piecewise_linear_and_never_extrapolates():
    points = [(0.2, 0.40), (0.0, 0.30), (0.1, 0.36)]
    assert interpolate(points, 0.05) == pytest.approx(0.33)
    assert interpolate(points, 0.15) == pytest.approx(0.38)
    assert interpolate(points, 0.1) == pytest.approx(0.36)
    assert interpolate(points, 0.0) == pytest.approx(0.30)
    assert interpolate(points, 0.2) == pytest.approx(0.40)
    assert interpolate(points, 0.21) is None and interpolate(points, -0.01) is None
    assert interpolate([(0.1, 0.2), (0.1, 0.4)], 0.1) == pytest.approx(0.3)  # averaged
    assert interpolate([], 0.1) is None


def test_length_controlled_delta_is_the_ols_intercept():
    rng = np.random.default_rng(0)
    n = 50
    d_len = rng.normal(0, 5, n)
    d_r = 0.04 + 0.01 * d_len + rng.normal(0, 0.02, n)
    ids = [f"q{i}" for i in range(n)]
    base_r = dict.fromkeys(ids, 0.3)
    base_t = dict.fromkeys(ids, 20.0)
    reward = {i: 0.3 + d for i, d in zip(ids, d_r, strict=True)}
    tokens = {i: 20.0 + d for i, d in zip(ids, d_len, strict=True)}
    delta, p, slope, items = length_controlled(reward, tokens, base_r, base_t)
    fit = stats.linregress(d_len, d_r)
    assert items == n
    assert delta == pytest.approx(fit.intercept) and slope == pytest.approx(fit.slope)
    t = fit.intercept / fit.intercept_stderr
    assert p == pytest.approx(2 * stats.t.sf(abs(t), n - 2))
    assert 0.0 < p < 0.05 and slope == pytest.approx(0.01, abs=0.002)


def test_length_controlled_without_length_variation_has_no_p():
    ids = ["a", "b", "c"]
    delta, p, slope, n = length_controlled(
        {"a": 0.4, "b": 0.5, "c": 0.6}, dict.fromkeys(ids, 10.0),
        dict.fromkeys(ids, 0.4), dict.fromkeys(ids, 10.0))
    assert delta == pytest.approx(0.1) and math.isnan(p) and math.isnan(slope) and n == 3
    assert math.isnan(length_controlled({"a": 1.0}, {"a": 1.0}, {"a": 0.0}, {"a": 2.0})[1])


def _record(method, model, seed, kl, rewards, tokens, beta=None, preset="default"):
    ids = [f"q{i}" for i in range(len(rewards))]
    per = {"gold_reward": dict(zip(ids, rewards, strict=True)),
           "response_tokens": dict(zip(ids, tokens, strict=True)),
           "kl_to_ref": dict.fromkeys(ids, kl)}
    return {"suite": "align", "method": method, "model": model, "seed": seed,
            "preset": preset, "dataset": {"id": "offline/qa-mix"},
            "main_score": "gold_reward",
            "metrics": {k: float(np.mean(list(v.values()))) for k, v in per.items()},
            "per_item": per,
            "config": {"train": {"recipe": {"beta": beta}}} if beta else {}}


def test_alignment_tables_read_rows_off_the_dpo_sweep():
    rng = np.random.default_rng(1)
    n = 20

    def noisy(mean):
        return list(mean + rng.normal(0, 0.01, n))

    records = [_record("dpo", "m-lora", s, 0.01, noisy(0.40), [30.0] * n, beta=0.1)
               for s in range(3)]
    records += [_record("dpo", "m-lora-beta0.01", s, 0.30, noisy(0.44), [25.0] * n,
                        beta=0.01) for s in range(3)]
    records += [_record("dpo", "m-lora-lr0.001-ep4", 0, 0.40, noisy(0.45), [24.0] * n,
                        beta=0.1)]  # a learning-rate / epochs point of the same curve
    records += [_record("aligndistil", "m-lora", s, 0.2, noisy(0.46), [20.0] * n)
                for s in range(3)]
    records += [_record("aligndistil-on", "m-lora", 0, 0.5, noisy(0.47), [19.0] * n)]
    records += [_record("dpo", "m-lora", 0, 0.01, noisy(0.1), [30.0] * n, beta=0.1,
                        preset="smoke")]  # another preset: no sweep there, no section
    lines = alignment_tables(records)
    text = "\n".join(lines)
    assert text.count("against DPO at matched KL") == 1
    assert text.count("against DPO at equal length") == 1
    assert "(`beta0.01`, `lr0.001-ep4`; KL 0.0100 to 0.4000" in text
    row = next(line for line in lines if line.startswith("| aligndistil (m-lora) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # KL 0.2 lies 19/29 of the way from the default β's 0.01 to β 0.01's 0.30
    assert float(cells[3]) == pytest.approx(0.40 + 0.04 * 19 / 29, abs=0.01)
    assert float(cells[4]) == pytest.approx(0.46 - 0.40 - 0.04 * 19 / 29, abs=0.01)
    assert cells[5].startswith("m-lora-beta0.01 (0.3000)")  # nearest in KL
    assert "Welch" in cells[9]
    on = next(line for line in lines if line.startswith("| aligndistil-on (m-lora) |"))
    assert "| outside |" in on  # KL 0.5 is beyond the sweep: not extrapolated
    assert not any(line.startswith("| dpo") for line in lines)
    assert alignment_tables([r for r in records if r["method"] != "dpo"]) == []


def test_sweep_names_round_trip_between_the_method_and_the_report():
    from dataclasses import asdict

    from bench.align.report import sweep_point
    from methods.align.dpo import DPOConfig, sweep_suffix

    default = asdict(DPOConfig())
    assert sweep_suffix(default, "default") == ""
    assert sweep_suffix({**default, "beta": 0.01}, "default") == "-beta0.01"
    assert sweep_suffix({**default, "lr": 1e-3, "epochs": 4}, "default") == "-lr0.001-ep4"
    # the preset's own values are its default: full fine-tuning at lr 1e-6 is not a sweep
    full = {**default, "lora_r": 0, "lr": 1e-6, "epochs": 1}
    assert sweep_suffix(full, "full") == ""
    assert sweep_suffix(full, "default") == "-lr1e-06-ep1"
    for model, point in [("smollm2-135m-instruct-lora", ""),
                         ("smollm2-135m-instruct-lora-beta0.01", "beta0.01"),
                         ("m-lora-lr1e-06-ep1", "lr1e-06-ep1"), ("m-full-beta1", "beta1")]:
        assert sweep_point(model) == point
