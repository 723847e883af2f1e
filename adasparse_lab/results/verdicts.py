"""Verdicts between methods measured over the same seeds: mean and 95% interval per method,
paired differences with their interval and p-value (scipy's paired t-test), Holm's correction
over the family of comparisons, and the verdict in words.

A comparison is paired: seed ``s`` of method A and seed ``s`` of method B share the data split
and the initialisation seed, so the seed-to-seed noise they share cancels in A - B. The family
is every comparison made for one cost level (each method against dense and against the best
method); Holm's step-down keeps the chance of any false "better" or "worse" in that family at
``alpha``. A comparison with fewer than 2 paired seeds has no interval and no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

BETTER, WORSE, SAME, UNKNOWN = "better", "worse", "indistinguishable", "too few seeds"


@dataclass(frozen=True)
class Estimate:
    """Mean and two-sided ``level`` t-interval of one method's values over seeds."""

    n: int
    mean: float
    low: float
    high: float


def estimate(values: Sequence[float], level: float = 0.95) -> Estimate:
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        mean = float(x.mean()) if n else math.nan
        return Estimate(n, mean, math.nan, math.nan)
    low, high = stats.t.interval(level, n - 1, loc=x.mean(), scale=stats.sem(x))
    return Estimate(n, float(x.mean()), float(low), float(high))


@dataclass(frozen=True)
class Comparison:
    """``method`` minus ``against`` over their shared seeds."""

    method: str
    against: str
    n: int  # paired seeds
    diff: float  # mean paired difference (positive: ``method`` higher)
    low: float
    high: float
    p: float
    p_holm: float = math.nan
    verdict: str = UNKNOWN


def paired(
    method: str, a: Mapping[int, float], against: str, b: Mapping[int, float], level: float = 0.95
) -> Comparison:
    """The paired comparison of ``a`` and ``b`` ({seed: value}) on the seeds both have."""
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    if len(d) < 2:
        return Comparison(method, against, len(d), float(d.mean()) if len(d) else math.nan,
                          math.nan, math.nan, math.nan)  # fmt: skip
    if np.all(d == d[0]):  # no spread: the t-test is undefined; a constant 0 is no difference
        p = 1.0 if d[0] == 0 else 0.0
        return Comparison(method, against, len(d), float(d[0]), float(d[0]), float(d[0]), p)
    test = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    ci = test.confidence_interval(level)
    return Comparison(
        method, against, len(d), float(d.mean()), float(ci.low), float(ci.high), float(test.pvalue)
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(pvalues, dtype=float)
    known = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), math.nan)
    m, running = len(known), 0.0
    for rank, i in enumerate(known[np.argsort(p[known], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def decide(comparisons: Sequence[Comparison], alpha: float = 0.05) -> list[Comparison]:
    """The family ``comparisons`` with Holm-adjusted p-values and verdicts."""
    adjusted = holm([c.p for c in comparisons])
    out = []
    for c, p in zip(comparisons, adjusted):
        if math.isnan(p):
            verdict = UNKNOWN
        elif p < alpha:
            verdict = BETTER if c.diff > 0 else WORSE
        else:
            verdict = SAME
        out.append(Comparison(**{**c.__dict__, "p_holm": p, "verdict": verdict}))
    return out


def verdicts(
    results: Mapping[str, Mapping[int, float]],
    baseline: str = "dense",
    best: str | None = None,
    alpha: float = 0.05,
) -> tuple[dict[str, Estimate], list[Comparison]]:
    """Per method its estimate; each other method against ``baseline`` and against ``best``,
    as one Holm family. ``results``: {method: {seed: value}} (test numbers). ``best`` should be
    chosen on other numbers (validation): picking it as the highest test mean and then testing
    against it favours it (winner's curse: 5.75% family-wise error instead of <= 5% in the
    simulation of tests/test_verdicts.py); None does exactly that, for a quick look only."""
    est = {m: estimate(list(v.values())) for m, v in results.items()}
    best = best or max(est, key=lambda m: (est[m].mean, m))
    family = [
        paired(m, results[m], baseline, results[baseline])
        for m in results
        if m != baseline and baseline in results
    ]
    # (the best against the baseline is already in the family, the other way round)
    if best != baseline:  # (else the family above is already every method against it)
        family += [
            paired(m, results[m], best, results[best]) for m in results if m not in (best, baseline)
        ]
    return est, decide(family, alpha)
