"""A stored study's front in its tables: which trials are on it (``on_front``, in the study's
own objectives), the staircase the report draws per cost axis, and the hypervolume reference
point. The front itself is results.front's. numpy and polars only.

Shapes: N points, M objectives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from omegaconf import OmegaConf

from adasparse_lab.results.front import front_mask

AUC_OBJECTIVE = "val/mean_domain_auc"
FLOPS_OBJECTIVE = "val/flops/ratio"
LATENCY_OBJECTIVE = "val/latency/ratio"
# The trials table's named column of each known objective (results.collect fills them).
OBJECTIVE_COLUMNS = {
    AUC_OBJECTIVE: "auc",
    FLOPS_OBJECTIVE: "flops_ratio",
    LATENCY_OBJECTIVE: "latency_ratio",
}
# A table without its study's objectives: those of the default study (conf/study/base.yaml).
DEFAULT_OBJECTIVES = (
    {"name": AUC_OBJECTIVE, "direction": "maximize"},
    {"name": FLOPS_OBJECTIVE, "direction": "minimize"},
)


def objective_column(trials: pl.DataFrame, name: str) -> str:
    """The column of ``trials`` holding objective ``name``: ``obj:<name>`` (the study's own
    values, store.reader.trials_table) where there is one, else the report's named column."""
    stored = f"obj:{name}"
    if stored in trials.columns or name not in OBJECTIVE_COLUMNS:
        return stored
    return OBJECTIVE_COLUMNS[name]


def _usable(frame: pl.DataFrame) -> tuple[list[str], list]:
    """(state, feasible) per row: tables without a state hold COMPLETE trials only, tables
    built without Optuna constraints have no ``feasible`` (null: feasible)."""
    n = frame.height
    states = frame["state"].to_list() if "state" in frame.columns else ["COMPLETE"] * n
    flags = frame["feasible"].to_list() if "feasible" in frame.columns else [None] * n
    return states, flags


def mark_front(
    trials: pl.DataFrame, objectives: Sequence[dict[str, str]] | None = None
) -> pl.DataFrame:
    """Adds ``on_front``: each study's front (results.front.front_mask) in ``objectives`` (the
    study's, store.reader.objectives: [{name, direction}]; None: ``DEFAULT_OBJECTIVES``), the
    driver's and Optuna's front (``study.best_trials``). Failed, running and pruned trials,
    infeasible ones (``feasible`` false: over study.flops_budget), and trials without every
    value are never on it."""
    objectives = list(objectives or DEFAULT_OBJECTIVES)
    columns = [objective_column(trials, o["name"]) for o in objectives]
    directions = [o["direction"] for o in objectives]
    if any(c not in trials.columns for c in columns):
        return trials.with_columns(on_front=pl.lit(False))  # the objectives are not stored
    flags = np.zeros(trials.height, dtype=bool)
    for study in trials["study"].unique(maintain_order=True).to_list():
        rows = np.flatnonzero((trials["study"] == study).to_numpy())
        part = trials[rows.tolist()]
        values = part.select(pl.col(columns).cast(pl.Float64)).to_numpy()
        states, feasible_flags = _usable(part)
        flags[rows] = front_mask(states, values, feasible_flags, directions)
    return trials.with_columns(on_front=pl.Series(flags))


def front_points(frame: pl.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the front of ``frame`` (one study's points) in (max ``y``, min ``x``): the
    report's staircase for one cost axis, a 2-D view of the study (the measured-latency view
    has its own), with the study's rule (front_mask: infeasible trials, over
    study.flops_budget, are never on it); sorted along x (ties by y)."""
    pts = np.column_stack([frame[y].to_numpy(), frame[x].to_numpy()]).astype(np.float64)
    pts = pts.reshape(frame.height, 2)
    states, feasible_flags = _usable(frame)
    on = front_mask(states, pts, feasible_flags, ("maximize", "minimize"))
    fx, fy = pts[on, 1], pts[on, 0]
    order = np.lexsort((fy, fx))
    return fx[order], fy[order]


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
