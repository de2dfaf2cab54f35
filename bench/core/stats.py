"""Significance for leaderboards and ``bench compare``: which test, its p, what it could detect.

A comparison is system A against a baseline B on a suite's items, possibly over several
training seeds of each. The rule (``test="auto"``, the default everywhere):

1. **Trained rows with seeds** (A or B has >= 2 runs): the unit is the seed, not the item.
   Each run is reduced to its mean over the items every run shares; the seed means are
   compared with Welch's t-test (``scipy.stats.ttest_ind``, unequal variances), or with a
   one-sample t-test against the single value when one side has one run (treated as
   fixed, e.g. an untrained baseline). Training randomness is then in the variance; the
   items are the fixed test set the leaderboard is about.
2. **One run each** (deterministic rows, or one seed so far): the unit is the item, paired.
   With n <= 16 shared items the exact sign-flip permutation test of the mean difference
   (``scipy.stats.permutation_test``, all 2^n sign patterns), whose p can never fall below
   the 2 / 2^n that n allows; with more items the paired t-test (``scipy.stats.ttest_rel``,
   as ranx), whose t approximation is good at that size for bounded scores.

Explicit tests: ``ttest`` (paired t on items, seeds averaged), ``permutation`` (sign flips;
exact up to 16 items, else 10,000 seeded random flips with p = (hits + 1) / (10,001)) and
``bootstrap`` (the paired percentile-shift bootstrap; items are resampled, so it is only
offered with >= 30 items and falls back to ``permutation`` below).

**Minimum detectable effect** (MDE): the smallest |Δ| the same test detects with
probability ``power`` (0.8) at level ``alpha`` (0.05), from the noncentral t distribution
with the observed standard deviation (of the paired item differences, or of the seed
means). For the exact test it uses the t approximation, and is infinite when even a
perfectly consistent effect could not reach ``alpha`` (e.g. 5 items: p >= 0.0625).

**Multiple comparisons**: :func:`adjust` applies Holm's step-down correction (default;
hand-written: scipy has none, and it is six lines) or Benjamini-Hochberg
(``scipy.stats.false_discovery_control``) to the p-values of one table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bench.suite import CORRECTIONS, TESTS

EXACT_MAX_ITEMS = 16  # 2^16 sign patterns: exact in well under a second
BOOTSTRAP_MIN_ITEMS = 30
N_RESAMPLES = 10_000


@dataclass(frozen=True)
class Comparison:
    """A against B: the test actually run, its p-value and what it could have detected."""

    test: str  # e.g. "exact sign-flip", "paired t", "Welch t on seed means"
    n_items: int
    n_seeds: tuple[int, int]
    mean_a: float
    mean_b: float
    p_value: float  # nan when nothing can be tested (< 2 items, no variance to use)
    mde: float  # minimum detectable |delta| (alpha, power); inf when unreachable
    note: str = ""

    @property
    def delta(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def detectable(self) -> bool:
        """Whether |delta| reaches the MDE (if not, "not significant" is not "no effect")."""
        return math.isfinite(self.mde) and abs(self.delta) >= self.mde


def paired_arrays(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    common = sorted(set(a) & set(b))
    return (np.array([a[i] for i in common], dtype=float),
            np.array([b[i] for i in common], dtype=float))


def compare(a_runs: Sequence[Mapping[str, float]], b_runs: Sequence[Mapping[str, float]], *,
            test: str = "auto", alpha: float = 0.05, power: float = 0.8,
            seed: int = 0) -> Comparison:
    """Two-sided comparison of system A (one per-item score map per seed) with B."""
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    if not a_runs or not b_runs:
        raise ValueError("compare: each system needs at least one run")
    shared = sorted(set.intersection(*(set(r) for r in (*a_runs, *b_runs))))
    n, seeds = len(shared), (len(a_runs), len(b_runs))
    if n == 0:
        return Comparison(test, 0, seeds, math.nan, math.nan, math.nan, math.inf,
                          "no shared items")
    a = np.array([[r[i] for i in shared] for r in a_runs], dtype=float)
    b = np.array([[r[i] for i in shared] for r in b_runs], dtype=float)
    mean_a, mean_b = float(a.mean()), float(b.mean())
    if test == "auto" and max(seeds) >= 2:
        return _seed_level(a.mean(axis=1), b.mean(axis=1), n, mean_a, mean_b, alpha, power)
    d = a.mean(axis=0) - b.mean(axis=0)  # seeds averaged per item, then paired
    if test == "randomization":
        test = "permutation"
    note = ""
    if test == "bootstrap" and n < BOOTSTRAP_MIN_ITEMS:
        test, note = "permutation", f"bootstrap needs >= {BOOTSTRAP_MIN_ITEMS} items"
    if test == "auto":
        test = "permutation" if n <= EXACT_MAX_ITEMS else "ttest"
    p, name = _item_p(d, test, seed)
    mde = _mde_paired(d, alpha, power, exact=name.startswith("exact"))
    return Comparison(name, n, seeds, mean_a, mean_b, p, mde, note)


def _item_p(d: np.ndarray, test: str, seed: int) -> tuple[float, str]:
    from scipy import stats

    n = len(d)
    if n < 2:
        return math.nan, "none (< 2 items)"
    if np.allclose(d, 0.0):
        return 1.0, {"ttest": "paired t", "bootstrap": "paired bootstrap"}.get(
            test, "exact sign-flip" if n <= EXACT_MAX_ITEMS else "sign-flip")
    if test == "ttest":
        return float(stats.ttest_rel(d, np.zeros_like(d)).pvalue), "paired t"
    if test == "bootstrap":
        rng = np.random.default_rng(seed)
        centred = d - d.mean()
        means = centred[rng.integers(0, n, size=(N_RESAMPLES, n))].mean(axis=1)
        hits = np.sum(np.abs(means) >= abs(d.mean()))
        return float((hits + 1) / (N_RESAMPLES + 1)), "paired bootstrap"
    exact = n <= EXACT_MAX_ITEMS
    res = stats.permutation_test(
        (d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=np.inf if exact else N_RESAMPLES,
        alternative="two-sided", random_state=np.random.default_rng(seed))
    return float(min(1.0, res.pvalue)), "exact sign-flip" if exact else "sign-flip"


def _seed_level(ma: np.ndarray, mb: np.ndarray, n: int, mean_a: float, mean_b: float,
                alpha: float, power: float) -> Comparison:
    seeds = (len(ma), len(mb))
    if len(ma) >= 2 and len(mb) >= 2:
        name = "Welch t on seed means"
        va, vb = ma.var(ddof=1) / len(ma), mb.var(ddof=1) / len(mb)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / ((va ** 2 / (len(ma) - 1)) + (vb ** 2 / (len(mb) - 1))) \
            if va + vb > 0 else len(ma) + len(mb) - 2
        # Welch's t from the se and df above, as scipy's ttest_ind(equal_var=False) computes
        # it; scipy's own call warns ("catastrophic cancellation") when one side's seeds
        # score exactly alike, a case the formula handles.
        p = _two_sided_t(ma.mean() - mb.mean(), se, df) if se > 0 else \
            (1.0 if ma.mean() == mb.mean() else 0.0)
    else:
        many, one = (ma, mb) if len(ma) >= 2 else (mb, ma)
        name = "one-sample t on seed means (single run fixed)"
        se = float(many.std(ddof=1) / math.sqrt(len(many)))
        df = len(many) - 1
        p = _two_sided_t(many.mean() - float(one[0]), se, df) if se > 0 else \
            (1.0 if many.mean() == one[0] else 0.0)
    mde = _mde_t(se, df, alpha, power) if se > 0 else math.inf
    note = "" if se > 0 else "no seed-to-seed variance: no MDE"
    return Comparison(name, n, seeds, mean_a, mean_b, p, mde, note)


def _two_sided_t(diff: float, se: float, df: float) -> float:
    """Two-sided p of t = diff / se under Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(min(1.0, 2.0 * stats.t.sf(abs(diff) / se, df)))


def _mde_t(se: float, df: float, alpha: float, power: float) -> float:
    """Smallest delta with P(|T| > t_crit) >= power, T ~ noncentral t(df, delta / se)."""
    from scipy import optimize, stats

    if not (se > 0 and df > 0 and math.isfinite(se)):
        return math.inf
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(nc: float) -> float:
        reject = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        if not math.isfinite(reject):  # scipy's nct loses precision far in the tail
            reject = stats.norm.sf(crit - nc)
        return float(reject) - power

    hi = crit + stats.norm.ppf(power)
    while shortfall(hi) < 0:
        hi *= 2
    return float(optimize.brentq(shortfall, 0.0, hi) * se)


def _mde_paired(d: np.ndarray, alpha: float, power: float, *, exact: bool) -> float:
    n = len(d)
    if n < 2 or (exact and 2.0 ** (1 - n) > alpha):
        return math.inf  # the exact test cannot reach alpha with this few items
    sd = float(d.std(ddof=1))
    return _mde_t(sd / math.sqrt(n), n - 1, alpha, power) if sd > 0 else math.inf


def adjust(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """p-values of one table adjusted for multiple comparisons (nan stays nan)."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    idx = [i for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    out = [math.nan if p is None else float(p) for p in p_values]
    if method == "none" or not idx:
        return out
    ps = np.array([p_values[i] for i in idx], dtype=float)
    if method == "bh":
        from scipy.stats import false_discovery_control

        adjusted = false_discovery_control(ps, method="bh")
    else:  # Holm 1979: step-down, p_(k) * (m - k + 1), cumulative max, capped at 1
        order = np.argsort(ps, kind="stable")
        m = len(ps)
        stepped = np.maximum.accumulate(ps[order] * (m - np.arange(m)))
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
    for i, p in zip(idx, adjusted, strict=True):
        out[i] = float(p)
    return out


def items_needed(delta: float, sd: float, *, alpha: float = 0.05, power: float = 0.8,
                 max_items: int = 1_000_000) -> int | None:
    """Fewest paired items for which the paired t-test detects ``delta`` (item-difference
    standard deviation ``sd``); None beyond ``max_items``."""
    if delta == 0 or not sd > 0:
        return None
    lo, hi = 2, 2
    while _mde_t(sd / math.sqrt(hi), hi - 1, alpha, power) > abs(delta):
        lo, hi = hi, hi * 2
        if hi > max_items:
            return None
    while lo < hi:  # smallest n in (lo, hi] that detects it
        mid = (lo + hi) // 2
        if _mde_t(sd / math.sqrt(mid), mid - 1, alpha, power) <= abs(delta):
            hi = mid
        else:
            lo = mid + 1
    return hi


def seeds_needed(delta: float, sd_a: float, sd_b: float, *, alpha: float = 0.05,
                 power: float = 0.8, max_seeds: int = 1000) -> int | None:
    """Fewest seeds per system for which Welch's t on seed means detects ``delta``, given
    each system's seed-to-seed standard deviation of the mean score; None beyond the cap."""
    if delta == 0 or not (sd_a > 0 or sd_b > 0):
        return None
    for k in range(2, max_seeds + 1):
        va, vb = sd_a ** 2 / k, sd_b ** 2 / k
        df = (va + vb) ** 2 / ((va ** 2 + vb ** 2) / (k - 1))
        if _mde_t(math.sqrt(va + vb), df, alpha, power) <= abs(delta):
            return k
    return None


def paired_test(a: Mapping[str, float], b: Mapping[str, float], *, test: str = "auto",
                seed: int = 0) -> Comparison:
    """:func:`compare` of one run each (the item-paired case)."""
    return compare([a], [b], test=test, seed=seed)


def bootstrap_ci(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    level: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean(a - b), low, high)``: percentile bootstrap interval of the paired mean
    difference over the shared items (Efron & Tibshirani 1993, §13); nan when < 2 items."""
    x, y = paired_arrays(a, b)
    d = x - y
    if len(d) < 2:
        return (float(d.mean()) if len(d) else float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_resamples, len(d)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(d.mean()), float(low), float(high)
