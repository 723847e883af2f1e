"""Pareto fronts and the 2-D hypervolume, for any mix of maximised and minimised objectives.
Shared by the study driver (which trials to re-evaluate, the hypervolume it logs) and the
reports (what to draw), so that both say the same."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adasparse_lab.store.reader import feasible


def _as_minimised(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(points, dtype=np.float64) * sign


def pareto_mask(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Non-dominated rows of ``points`` [N, M]; ``directions`` holds 'maximize'/'minimize' per
    column. A point is dominated when another is at least as good in every objective and
    strictly better in one; duplicates of a front point are all kept. Rows with NaN are never
    on the front."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != len(directions):
        raise ValueError(f"points {pts.shape} do not match {len(directions)} directions")
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    bad = [d for d in directions if d not in ("minimize", "maximize")]
    if bad:
        raise ValueError(f"directions must be 'minimize' or 'maximize', got {bad}")
    cost = pts * signs  # everything minimised
    valid = ~np.isnan(cost).any(axis=1)
    mask = np.zeros(len(cost), dtype=bool)
    idx = np.flatnonzero(valid)
    sub = cost[idx]
    for i, row in zip(idx, sub):
        no_worse = (sub <= row).all(axis=1)
        better = (sub < row).any(axis=1)
        mask[i] = not (no_worse & better).any()
    return mask


def hypervolume_2d(
    points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]
) -> float:
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


def hypervolume_history(
    trials: Sequence, directions: Sequence[str], reference: Sequence[float]
) -> list[tuple[int, float]]:
    """(trial number, hypervolume) after each COMPLETE trial, in number order: the area that
    the feasible COMPLETE trials so far dominate within ``reference`` (hypervolume_2d).
    The study's one definition: the driver logs it as MLflow ``study/hypervolume`` (step =
    trial number) and the report draws it, both against the reference point stored with the
    study. ``trials``: Optuna FrozenTrials (state, number, values, constraints)."""
    done = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.number)
    points: list = []
    out = []
    for t in done:
        if feasible(t.constraints):
            points.append(t.values)
        out.append((t.number, hypervolume_2d(points, directions, reference)))
    return out
