"""Kept neurons of a trial, from its stored keep probabilities: which neurons each domain
keeps, and how much two domains' kept sets overlap (Jaccard). Read by the structure claim
(results.claims) and drawn by the report's structure figures.

Shapes: K domains, H neurons at one masked position (or all positions side by side).
"""

from __future__ import annotations

import numpy as np
import polars as pl

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
