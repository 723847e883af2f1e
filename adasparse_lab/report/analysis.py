"""Orderings that make the report's figures readable: front points along a line, domains
by similarity of their kept neurons, neurons shared-first. numpy only (scipy is not a
dependency). The numbers themselves (front, kept sets, Jaccard) are adasparse_lab.results'.

Shapes: N points, K domains, H neurons at one masked position.
"""

from __future__ import annotations

import numpy as np

from adasparse_lab.results.keep import kept_matrix


def front_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices that sort front points along x (ties by y), for drawing the front as a line."""
    return np.lexsort((np.asarray(y), np.asarray(x)))


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
    kept = kept_matrix(kp)
    count = kept.sum(axis=0)
    # np.lexsort: the last key is the primary one.
    keys = [-kp.mean(axis=0)] + [~kept[r] for r in range(kept.shape[0] - 1, -1, -1)] + [-count]
    return np.lexsort(keys)
