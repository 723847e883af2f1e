"""Kept neurons of a trial, from its stored keep probabilities: which neurons each domain
keeps, how much two domains' kept sets overlap (Jaccard), and the orders that make them
readable (domains by similarity, SciPy's hierarchical clustering; neurons shared-first). Read
by the structure claim (results.claims) and drawn by the report's structure figures.

Shapes: K domains, H neurons at one masked position (or all positions side by side).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

KEEP_THRESHOLD = 0.5  # a neuron counts as kept by a domain when its keep probability exceeds this


def keep_matrices(keep: pl.DataFrame, domains: list[str]) -> dict[int, np.ndarray]:
    """``keep`` (domain, position, neuron, keep_prob) -> position -> [K, H] keep
    probabilities, rows in ``domains`` order (NaN where missing)."""
    out = {}
    index = {d: i for i, d in enumerate(domains)}
    for (position,), part in keep.group_by("position", maintain_order=True):
        width = int(part["neuron"].max()) + 1
        mat = np.full((len(domains), width), np.nan)
        rows = np.array([index.get(d, -1) for d in part["domain"].to_list()])
        ok = rows >= 0
        mat[rows[ok], part["neuron"].to_numpy()[ok]] = part["keep_prob"].to_numpy()[ok]
        out[int(position)] = mat
    return dict(sorted(out.items()))


def kept_matrix(keep_prob: np.ndarray) -> np.ndarray:
    """[K, H] keep probabilities -> [K, H] bool kept flags (NaN: not kept)."""
    return np.nan_to_num(np.asarray(keep_prob, dtype=np.float64), nan=0.0) > KEEP_THRESHOLD


def kept_neurons(keep: pl.DataFrame, domains: list[str]) -> np.ndarray:
    """[K, H] kept flags, all masked positions side by side ([K, 0] without keep probabilities)."""
    mats = [kept_matrix(m) for m in keep_matrices(keep, domains).values()]
    return np.concatenate(mats, axis=1) if mats else np.zeros((len(domains), 0), bool)


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
    """A leaf order of average-linkage clustering on a [K, K] similarity (distance 1 - sim),
    with SciPy's optimal leaf ordering, so that similar domains sit next to each other."""
    k = len(sim)
    if k <= 2:
        return np.arange(k)
    dist = squareform(np.clip(1.0 - np.asarray(sim, dtype=np.float64), 0.0, None), checks=False)
    return hierarchy.leaves_list(hierarchy.optimal_leaf_ordering(hierarchy.average(dist), dist))


def neuron_order(keep_prob: np.ndarray) -> np.ndarray:
    """Column order for a [K, H] keep map (rows already in display order): neurons kept by
    most domains first (shared), then by their kept pattern read down the rows (so neurons
    kept by the same domains form blocks), then by mean keep probability."""
    kp = np.nan_to_num(np.asarray(keep_prob, dtype=np.float64), nan=0.0)
    kept = kept_matrix(kp)
    count = kept.sum(axis=0)
    # np.lexsort: the last key is the primary one.
    keys = [-kp.mean(axis=0)] + [~kept[r] for r in range(kept.shape[0] - 1, -1, -1)] + [-count]
    return np.lexsort(keys)


def structure_order(keep: pl.DataFrame, domains: pl.DataFrame) -> list[str]:
    """Domains ordered by similarity of their kept neurons (all masked positions together);
    by training size when the trial has no keep probabilities."""
    by_size = domains.sort("train_rows", descending=True, nulls_last=True)["domain"].to_list()
    present = set(keep["domain"].to_list())
    names = [d for d in by_size if d in present] or by_size
    kept = kept_neurons(keep, names)
    if not kept.shape[1]:
        return by_size
    return [names[i] for i in similarity_order(jaccard(kept))]
