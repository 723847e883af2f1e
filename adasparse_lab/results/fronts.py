"""The numbers a stored study's front gives: which trials are on it, which of them to show
when there are many, and the hypervolume reference point. numpy and polars only.

Shapes: N points, M objectives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from omegaconf import OmegaConf

from adasparse_lab.results.front import pareto_mask

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


def front_points(frame: pl.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the front of ``frame`` (one study's points), sorted along x (ties by y) for a
    staircase line. Recomputed per cost axis by the report (the measured-latency view has its
    own front); infeasible trials (over study.flops_budget) are never on it, as in
    ``mark_front``."""
    if "feasible" in frame.columns:
        frame = frame.filter(pl.col("feasible").fill_null(True))
    pts = np.column_stack([frame[y].to_numpy(), frame[x].to_numpy()]).astype(np.float64)
    on = pareto_mask(pts, FRONT_DIRECTIONS) if len(pts) else np.zeros(0, dtype=bool)
    fx, fy = pts[on, 1], pts[on, 0]
    order = np.lexsort((fy, fx))
    return fx[order], fy[order]


def spread_pick(values: np.ndarray, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` entries spread evenly over the sorted ``values``."""
    order = np.argsort(values, kind="stable")
    if len(order) <= limit:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, limit).round().astype(int))]


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
