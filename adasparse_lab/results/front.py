"""A study's Pareto front and its 2-D hypervolume, for any mix of maximised and minimised
objectives. The one definition of the front (``front_mask``: COMPLETE, feasible, every value
present, non-dominated in the study's own directions, as Optuna's ``study.best_trials``) is
what the driver prints and writes (pareto.csv), re-evaluates and logs, what the report draws
(results.fronts.mark_front, front_points) and what the export serves (export.trial); and
``spread_pick`` is the one way to choose a few of its points, spread along the cost."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import optuna

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


def front_mask(
    states: Sequence[str],
    values: np.ndarray,
    feasible_flags: Sequence[bool | None],
    directions: Sequence[str],
) -> np.ndarray:
    """Which of N trials are on the study's front. ``states``: the trials' state names;
    ``values`` [N, M]: their objective values (NaN where missing); ``feasible_flags``: whether
    each met the study's constraints (None: no constraint known, feasible); ``directions``:
    the study's, one per objective. On the front: COMPLETE, feasible, no value missing, and
    not dominated by another such trial (``pareto_mask``)."""
    vals = np.asarray(values, dtype=np.float64).reshape(len(states), len(directions))
    usable = np.array(
        [s == "COMPLETE" and f is not False for s, f in zip(states, feasible_flags)], dtype=bool
    )
    usable &= ~np.isnan(vals).any(axis=1)
    mask = np.zeros(len(states), dtype=bool)
    if usable.any():
        mask[usable] = pareto_mask(vals[usable], directions)
    return mask


def pareto_front(
    trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[str]
) -> list[optuna.trial.FrozenTrial]:
    """The trials of ``trials`` on the front (``front_mask``), in their order; infeasible
    ones (their Optuna constraints, e.g. study.flops_budget) are never on it."""
    missing = [math.nan] * len(directions)
    values = [
        t.values if t.values is not None and len(t.values) == len(directions) else missing
        for t in trials
    ]
    flags = [feasible(t.constraints) for t in trials]
    mask = front_mask([t.state.name for t in trials], values, flags, directions)
    return [t for t, on in zip(trials, mask) if on]


def study_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The front of ``study`` in its own directions, in trial-number order."""
    directions = [d.name.lower() for d in study.directions]
    return pareto_front(study.get_trials(deepcopy=False), directions)


def spread_pick(values: Sequence[float], limit: int) -> np.ndarray:
    """Indices of at most ``limit`` entries spread evenly over the sorted ``values`` (ties in
    their order): the first and the last, and evenly between them by rank. The front points a
    study re-evaluates, and those the report details, are picked along the cost with it."""
    order = np.argsort(np.asarray(values, dtype=np.float64), kind="stable")
    n = len(order)
    if n <= limit:
        return order
    if limit <= 0:
        return order[:0]
    if limit == 1:
        return order[:1]
    ranks = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return order[ranks]


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


def search_curve(
    trials: Sequence, directions: Sequence[str], reference: Sequence[float]
) -> list[tuple[int, str, float, float]]:
    """(trial number, state, cumulative CPU-seconds, hypervolume) after each ended trial, in the
    order the trials ended: what the search paid (every trial's ``cpu_s`` user attribute,
    pruned and failed ones included) against what its feasible COMPLETE front reached."""
    ended = sorted(
        (t for t in trials if t.state.is_finished() and t.datetime_complete is not None),
        key=lambda t: (t.datetime_complete, t.number),
    )
    points: list = []
    total, out = 0.0, []
    for t in ended:
        total += float(t.user_attrs.get("cpu_s", 0.0))
        if t.state.name == "COMPLETE" and feasible(t.constraints):
            points.append(t.values)
        out.append((t.number, t.state.name, total, hypervolume_2d(points, directions, reference)))
    return out
