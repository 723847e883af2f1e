"""Orderings that make the report's figures readable: front points along a line, domains
by similarity of their kept neurons (SciPy's hierarchical clustering), neurons shared-first.
The numbers themselves (front, kept sets, Jaccard) are adasparse_lab.results'.

Shapes: N points, K domains, H neurons at one masked position.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from adasparse_lab.results.keep import kept_matrix


def front_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices that sort front points along x (ties by y), for drawing the front as a line."""
    return np.lexsort((np.asarray(y), np.asarray(x)))


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
