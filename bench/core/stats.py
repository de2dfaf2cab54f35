"""Paired significance tests over per-item scores (queries, prompts, images).

Both systems are compared on the items they share; the caller is told how many that is.
The t-test is ``scipy.stats.ttest_rel`` (two-sided), the same test ranx's ``compare`` runs;
the bootstrap and Fisher randomization tests are the usual two-sided paired versions
(Smucker et al., CIKM 2007) with a fixed seed so leaderboards are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

TESTS = ("ttest", "bootstrap", "randomization")


@dataclass(frozen=True)
class PairedTest:
    test: str
    n_items: int
    mean_a: float
    mean_b: float
    p_value: float

    @property
    def delta(self) -> float:
        return self.mean_a - self.mean_b


def paired_arrays(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    common = sorted(set(a) & set(b))
    return (np.array([a[i] for i in common], dtype=float),
            np.array([b[i] for i in common], dtype=float))


def paired_test(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    test: str = "ttest",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedTest:
    """Two-sided paired test of system ``a`` against system ``b`` on their shared items.

    Identical score vectors give p = 1. Fewer than two shared items give p = nan.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    x, y = paired_arrays(a, b)
    n = len(x)
    mean_a = float(x.mean()) if n else float("nan")
    mean_b = float(y.mean()) if n else float("nan")
    if n < 2:
        return PairedTest(test, n, mean_a, mean_b, float("nan"))
    d = x - y
    if np.allclose(d, 0.0):
        return PairedTest(test, n, mean_a, mean_b, 1.0)
    rng = np.random.default_rng(seed)
    if test == "ttest":
        from scipy import stats

        p = float(stats.ttest_rel(x, y).pvalue)
    elif test == "bootstrap":
        # Shift the differences to mean zero (the null) and count resampled means at least
        # as extreme as the observed one.
        observed = abs(d.mean())
        centred = d - d.mean()
        idx = rng.integers(0, n, size=(n_resamples, n))
        means = centred[idx].mean(axis=1)
        p = float((np.sum(np.abs(means) >= observed) + 1) / (n_resamples + 1))
    else:
        observed = abs(d.mean())
        signs = rng.choice(np.array([-1.0, 1.0]), size=(n_resamples, n))
        means = (signs * d).mean(axis=1)
        p = float((np.sum(np.abs(means) >= observed - 1e-12) + 1) / (n_resamples + 1))
    return PairedTest(test, n, mean_a, mean_b, p)


def bootstrap_ci(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    level: float = 0.95,
    n_resamples: int = 10_000,
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
