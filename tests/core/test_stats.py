"""bench.core.stats: exact small-n tests, the seed-aware rule, corrections and MDEs,
checked against scipy and by simulation (rejection rate under the null ~ alpha, power at
the MDE ~ 0.8)."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from bench.core.stats import adjust, compare, items_needed, seeds_needed


def _run(values, prefix="i"):
    return {f"{prefix}{k}": float(v) for k, v in enumerate(values)}


def test_five_items_all_positive_give_the_exact_0_0625():
    c = compare([_run([0.3, 0.1, 0.2, 0.5, 0.4])], [_run([0.0] * 5)])
    assert c.test == "exact sign-flip" and c.p_value == pytest.approx(0.0625)
    assert math.isinf(c.mde) and not c.detectable  # 5 items can never reach 0.05
    # the old shift-bootstrap gave p ~ 1/10,001 here; asking for it now falls back
    boot = compare([_run([0.3, 0.1, 0.2, 0.5, 0.4])], [_run([0.0] * 5)], test="bootstrap")
    assert boot.p_value == pytest.approx(0.0625) and "30 items" in boot.note


def test_exact_sign_flip_equals_a_hand_enumeration():
    d = np.array([0.5, -0.2, 0.3, 0.1, 0.4, -0.1, 0.2])
    signs = np.array(np.meshgrid(*[[-1, 1]] * len(d))).reshape(len(d), -1).T
    means = (signs * d).mean(axis=1)
    expect = np.mean(np.abs(means) >= abs(d.mean()) - 1e-12)
    assert compare([_run(d)], [_run([0] * 7)]).p_value == pytest.approx(expect)


def test_item_paired_t_equals_scipy_beyond_16_items():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.5, 0.2, 40), rng.normal(0.45, 0.2, 40)
    c = compare([_run(a)], [_run(b)])
    assert c.test == "paired t" and c.n_items == 40
    assert c.p_value == pytest.approx(sps.ttest_rel(a, b).pvalue)


def test_seeds_are_the_unit_when_a_side_has_several():
    rng = np.random.default_rng(0)
    a = [_run(rng.normal(0.6 + s, 0.1, 30)) for s in (0.0, 0.01, -0.02)]
    b = [_run(rng.normal(0.5 + s, 0.1, 30)) for s in (0.0, 0.02)]
    c = compare(a, b)
    ma = [np.mean(list(r.values())) for r in a]
    mb = [np.mean(list(r.values())) for r in b]
    assert c.test == "Welch t on seed means" and c.n_seeds == (3, 2)
    assert c.p_value == pytest.approx(sps.ttest_ind(ma, mb, equal_var=False).pvalue)
    one = compare(a, [b[0]])
    assert one.test.startswith("one-sample t")
    assert one.p_value == pytest.approx(sps.ttest_1samp(ma, np.mean(mb[:1])).pvalue)


def test_holm_and_bh():
    ps = [0.01, 0.04, 0.03, 0.005, math.nan]
    holm = adjust(ps, "holm")
    assert holm[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(holm[4])
    assert adjust(ps, "bh")[:4] == pytest.approx(list(sps.false_discovery_control(ps[:4])))
    assert adjust(ps, "none")[:4] == ps[:4]
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(ps, "bonferroni")


def _rejections(make, n_sims, alpha=0.05):
    return np.mean([compare(*make(np.random.default_rng(s))).p_value < alpha
                    for s in range(n_sims)])


def test_null_rejection_rate_is_alpha():
    n_sims = 500
    paired = _rejections(lambda r: ([_run(r.normal(0, 1, 30))], [_run(np.zeros(30))]), n_sims)
    exact = _rejections(lambda r: ([_run(r.normal(0, 1, 10))], [_run(np.zeros(10))]), n_sims)
    seeds = _rejections(lambda r: (
        [_run(r.normal(0, 1, 20) + r.normal(0, 0.5)) for _ in range(3)],
        [_run(r.normal(0, 1, 20) + r.normal(0, 0.5)) for _ in range(3)]), n_sims)
    # 500 simulations: a binomial standard error of ~0.01 around 0.05
    assert 0.025 <= paired <= 0.08, paired
    assert exact <= 0.08, exact  # exact tests are at most alpha (discrete, conservative)
    assert seeds <= 0.08, seeds  # Welch with 2-4 df is conservative here


def test_power_at_the_mde_is_0_8():
    from bench.core.stats import _mde_t

    n, sd = 30, 1.0
    mde = _mde_t(sd / math.sqrt(n), n - 1, 0.05, 0.8)
    power = _rejections(lambda r: ([_run(r.normal(mde, sd, n))], [_run(np.zeros(n))]), 500)
    assert 0.72 <= power <= 0.88, power
    c = compare([_run(np.random.default_rng(9).normal(0, sd, n))], [_run(np.zeros(n))])
    assert c.mde == pytest.approx(mde, rel=0.35)  # from the sample's sd, close to the truth


def test_items_and_seeds_needed_invert_the_mde():
    from bench.core.stats import _mde_t

    k = items_needed(0.1, 0.3)
    assert _mde_t(0.3 / math.sqrt(k), k - 1, 0.05, 0.8) <= 0.1
    assert _mde_t(0.3 / math.sqrt(k - 1), k - 2, 0.05, 0.8) > 0.1
    s = seeds_needed(0.05, 0.02, 0.03)
    assert s is not None and s >= 2 and seeds_needed(0.05, 0.02, 0.03, max_seeds=s - 1) is None
    assert items_needed(0.0, 0.3) is None and seeds_needed(0.1, 0.0, 0.0) is None


def test_seeds_that_score_exactly_alike_give_welchs_p_without_a_warning(recwarn):
    """Two seeds at 0.02 each (ASDiv's answer-only cell): that side's variance is 0, which
    Welch's formula handles; scipy's ttest_ind warns about cancellation there."""
    items = [f"q{i}" for i in range(100)]

    def run(right: int) -> dict[str, float]:
        return {q: float(i < right) for i, q in enumerate(items)}

    a = [run(2), run(2)]
    b = [run(0), run(1), run(0)]
    c = compare(a, b)
    mb = np.array([0.0, 0.01, 0.0])
    se = math.sqrt(mb.var(ddof=1) / 3)
    t = (0.02 - mb.mean()) / se
    assert c.test == "Welch t on seed means"
    assert c.p_value == pytest.approx(2 * sps.t.sf(t, 2))  # df = (vb)^2 / (vb^2 / 2) = 2
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
