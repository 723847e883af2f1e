"""The end of a study: the Pareto table (printed and written as CSV), read back from MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import polars as pl

from adasparse_lab.metrics import safe_name
from adasparse_lab.report.runs import search_runs
from adasparse_lab.tracking import Tracker


def reeval_table(tracker: Tracker) -> pl.DataFrame:
    """One row per finished re-evaluation run: trial, seed and every final metric."""
    runs = search_runs(tracker.client, tracker.experiment_id, "reeval", "FINISHED")
    rows = [
        {
            "trial": int(r.data.tags["trial_number"]),
            "seed": int(r.data.tags["seed"]),
            **r.data.metrics,
        }
        for r in runs
    ]
    return (
        pl.DataFrame(rows) if rows else pl.DataFrame(schema={"trial": pl.Int64, "seed": pl.Int64})
    )


def reference_metrics(tracker: Tracker) -> dict[str, float] | None:
    """Final metrics of the study's dense reference (pruner=none), averaged over its seeds."""
    runs = search_runs(tracker.client, tracker.experiment_id, "reference", "FINISHED")
    if not runs:
        return None
    keys = set.intersection(*(set(r.data.metrics) for r in runs))
    out = {k: float(np.mean([r.data.metrics[k] for r in runs])) for k in keys}
    out["seeds"] = float(len(runs))
    return out


def pareto_table(
    front: list[optuna.trial.FrozenTrial],
    metrics: list[str],
    domains: list[str],
    reeval: pl.DataFrame,
) -> pl.DataFrame:
    """Front trials with objectives, key params and per-domain test AUC (mean and std over seeds)."""
    rows = []
    for t in front:
        row: dict = {"trial": t.number, **{m: v for m, v in zip(metrics, t.values)}}
        row["method"] = t.user_attrs.get("method", t.user_attrs.get("pruner_form"))
        band = t.user_attrs.get("band") or [None, None]
        row["band"] = f"[{band[0]:.2f},{band[1]:.2f}]" if band[0] is not None else None
        sub = reeval.filter(pl.col("trial") == t.number) if reeval.height else reeval
        row["seeds"] = sub.height
        for key in ["test/mean_domain_auc", *(f"test/auc/{safe_name(d)}" for d in domains)]:
            values = sub[key].drop_nulls().to_numpy() if key in sub.columns else np.array([])
            row[f"{key}:mean"] = float(values.mean()) if len(values) else None
            row[f"{key}:std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        row["params"] = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(t.params.items()))
        rows.append(row)
    return pl.DataFrame(rows)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pm(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" + (f"±{std:.4f}" if std is not None and not math.isnan(std) else "")


def format_pareto(
    table: pl.DataFrame,
    metrics: list[str],
    domains: list[str],
    reference: dict[str, float] | None = None,
) -> str:
    if table.height == 0:
        return "no COMPLETE trial: no Pareto front"
    ref = reference or {}
    lines = ["Pareto front (selected on validation; test = mean±std over re-evaluation seeds)"]
    head = (
        f"{'trial':>5}  "
        + "".join(f"{m:>22}" for m in metrics)
        + f"{'test mean AUC':>20}  {'method':<28}{'band':<13}params"
    )
    lines += [head, "-" * len(head)]
    for r in table.iter_rows(named=True):
        line = f"{r['trial']:>5}  " + "".join(f"{r[m]:>22.4f}" for m in metrics)
        line += f"{_pm(r['test/mean_domain_auc:mean'], r['test/mean_domain_auc:std']):>20}  "
        line += f"{(r['method'] or '-'):<28}{(r['band'] or '-'):<13}{r['params']}"
        lines.append(line)
    if ref:
        line = "  ref  " + "".join(f"{ref.get(m, math.nan):>22.4f}" for m in metrics)
        lines.append(
            line + f"{_pm(ref.get('test/mean_domain_auc'), None):>20}  {'dense':<28}"
            f"{'':<13}mean over {int(ref['seeds'])} seed(s)"
        )
    lines += [
        "",
        "Per-domain test AUC of the front trials (mean over seeds) and of the dense reference:",
    ]
    head = (
        f"{'domain':<14}"
        + "".join(f"{'#' + str(t):>10}" for t in table["trial"])
        + (f"{'dense':>10}" if ref else "")
    )
    lines += [head, "-" * len(head)]
    for d in domains:
        key = f"test/auc/{safe_name(d)}:mean"
        cells = (
            "".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in table[key])
            if key in table.columns
            else ""
        )
        dense = ref.get(f"test/auc/{safe_name(d)}")
        cells += f"{dense:>10.4f}" if dense is not None else (f"{'-':>10}" if ref else "")
        lines.append(f"{safe_name(d)[:13]:<14}{cells}")
    return "\n".join(lines)


def write_pareto(table: pl.DataFrame, folder: Path) -> Path:
    path = folder / "pareto.csv"
    folder.mkdir(parents=True, exist_ok=True)
    table.write_csv(path)
    return path
