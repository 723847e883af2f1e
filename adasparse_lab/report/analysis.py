"""Small numerical pieces of the report: the front per study, kept-neuron overlap, and the
orderings that make structure maps readable. numpy only (scipy is not a dependency).

Shapes: N points, M objectives, K domains, H neurons at one masked position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from omegaconf import OmegaConf

from adasparse_lab.pareto import pareto_mask

KEEP_THRESHOLD = 0.5  # a neuron counts as kept by a domain when its keep probability exceeds this


def front_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices that sort front points along x (ties by y), for drawing the front as a line."""
    return np.lexsort((np.asarray(y), np.asarray(x)))


def kept_matrix(keep_prob: np.ndarray) -> np.ndarray:
    """[K, H] keep probabilities -> [K, H] bool kept flags."""
    return np.nan_to_num(np.asarray(keep_prob, dtype=np.float64), nan=0.0) > KEEP_THRESHOLD


def jaccard(kept: np.ndarray) -> np.ndarray:
    """[K, H] bool -> [K, K] Jaccard index of kept sets (1 where both sets are empty)."""
    k = np.asarray(kept, dtype=np.float64)
    inter = k @ k.T
    size = k.sum(axis=1)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)
    return out


def similarity_order(sim: np.ndarray) -> np.ndarray:
    """A leaf order of average-linkage agglomerative clustering on a [K, K] similarity, so
    that similar domains sit next to each other. When two clusters merge, the one whose end
    is more similar to the other's start is placed first (a cheap seriation). O(K^3), fine
    for the tens of domains a study has."""
    s = np.asarray(sim, dtype=np.float64)
    k = s.shape[0]
    if k <= 2:
        return np.arange(k)
    clusters: list[list[int]] = [[i] for i in range(k)]
    while len(clusters) > 1:
        best, pair = -np.inf, (0, 1)
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                link = s[np.ix_(clusters[a], clusters[b])].mean()
                if link > best + 1e-12:
                    best, pair = link, (a, b)
        a, b = pair
        left, right = clusters[a], clusters[b]
        # Of the four ways to join two leaf sequences, keep the one with the most similar seam.
        options = [
            (left + right, s[left[-1], right[0]]),
            (left + right[::-1], s[left[-1], right[-1]]),
            (left[::-1] + right, s[left[0], right[0]]),
            (right + left, s[right[-1], left[0]]),
        ]
        merged = max(options, key=lambda o: o[1])[0]
        clusters = [c for i, c in enumerate(clusters) if i not in pair] + [merged]
    return np.array(clusters[0])


def neuron_order(keep_prob: np.ndarray) -> np.ndarray:
    """Column order for a [K, H] keep map (rows already in display order): neurons kept by
    most domains first (shared), then by their kept pattern read down the rows (so neurons
    kept by the same domains form blocks), then by mean keep probability."""
    kp = np.nan_to_num(np.asarray(keep_prob, dtype=np.float64), nan=0.0)
    kept = kp > KEEP_THRESHOLD
    count = kept.sum(axis=0)
    # np.lexsort: the last key is the primary one.
    keys = [-kp.mean(axis=0)] + [~kept[r] for r in range(kept.shape[0] - 1, -1, -1)] + [-count]
    return np.lexsort(keys)


def reference_point(
    values: np.ndarray, directions: Sequence[str], margin: float = 0.05
) -> list[float]:
    """A hypervolume reference point just worse than every observed value [N, M]."""
    vals = np.asarray(values, dtype=np.float64)
    out = []
    for j, d in enumerate(directions):
        col = vals[:, j][~np.isnan(vals[:, j])]
        lo, hi = (float(col.min()), float(col.max())) if col.size else (0.0, 1.0)
        pad = margin * (hi - lo) if hi > lo else margin * max(abs(hi), 1e-3)
        out.append(hi + pad if d == "minimize" else lo - pad)
    return out


def study_reference_point(
    attrs: dict, values: np.ndarray, directions: Sequence[str]
) -> tuple[list[float], str]:
    """The hypervolume reference point of a study and where it came from. The driver stores
    the configured point (study.hypervolume_reference) as the study attr
    ``hypervolume_reference`` and measures ``study/hypervolume`` against it. Older studies:
    the point in their stored resolved config (attr ``config``), else one derived from the
    data (``reference_point``), which no logged number used."""
    stored = attrs.get("hypervolume_reference")
    if isinstance(stored, list) and len(stored) == len(directions):
        return [float(v) for v in stored], "configured"
    try:
        config = OmegaConf.to_container(OmegaConf.create(attrs.get("config") or "{}"))
        stored = (config.get("study") or {}).get("hypervolume_reference")
    except Exception:  # an unreadable stored config: fall through to the data
        stored = None
    if isinstance(stored, list) and len(stored) == len(directions):
        return [float(v) for v in stored], "configured, read from the study's config"
    return reference_point(values, directions), "derived from the data: none stored"


FRONT_DIRECTIONS = ("maximize", "minimize")  # (mean per-domain AUC, FLOPs ratio)


def mark_front(trials: pl.DataFrame, x: str = "flops_ratio", y: str = "auc") -> pl.DataFrame:
    """Adds ``on_front``: COMPLETE trials not dominated in (max ``y``, min ``x``) within their
    study: the driver's and Optuna's front (``study.best_trials``). Failed, running and pruned
    trials, infeasible ones (``feasible`` false: over study.flops_budget), and trials without
    both values are never on it."""
    flags = np.zeros(trials.height, dtype=bool)
    ok = (trials["state"] == "COMPLETE") & trials[x].is_not_null() & trials[y].is_not_null()
    if "feasible" in trials.columns:  # tables built without Optuna constraints have none
        ok = ok & trials["feasible"].fill_null(True)
    for study in trials["study"].unique(maintain_order=True).to_list():
        rows = np.flatnonzero((ok & (trials["study"] == study)).to_numpy())
        if rows.size:
            pts = np.column_stack([trials[y].to_numpy()[rows], trials[x].to_numpy()[rows]])
            flags[rows] = pareto_mask(pts, FRONT_DIRECTIONS)
    return trials.with_columns(on_front=pl.Series(flags))


def spread_pick(values: np.ndarray, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` entries spread evenly over the sorted ``values``."""
    order = np.argsort(values, kind="stable")
    if len(order) <= limit:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, limit).round().astype(int))]
