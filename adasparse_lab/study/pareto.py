"""Pareto fronts and the 2-D hypervolume, for any mix of maximised and minimised objectives."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_minimised(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(points, dtype=np.float64) * sign


def pareto_mask(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """True for the non-dominated rows of ``points`` [N, M] (duplicates are all kept)."""
    p = _as_minimised(np.asarray(points, dtype=np.float64).reshape(len(points), -1), directions)
    mask = np.ones(len(p), dtype=bool)
    for i in range(len(p)):
        dominated_by = np.all(p <= p[i], axis=1) & np.any(p < p[i], axis=1)
        mask[i] = not dominated_by.any()
    return mask


def hypervolume_2d(points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (a point worse than all)."""
    if len(directions) != 2:
        raise ValueError("hypervolume_2d needs exactly two objectives")
    if len(points) == 0:
        return 0.0
    p = _as_minimised(np.asarray(points, dtype=np.float64), directions)
    ref = _as_minimised(np.asarray([reference], dtype=np.float64), directions)[0]
    p = p[np.all(p < ref, axis=1)]
    if len(p) == 0:
        return 0.0
    p = p[np.argsort(p[:, 0], kind="stable")]
    area, best_y = 0.0, ref[1]
    for x, y in p:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(area)
