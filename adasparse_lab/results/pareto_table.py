"""The Pareto table a study ends with (study.finish prints it and writes it as pareto.csv):
the driver's front trials (results.front.study_front) with their objectives, key params and
test AUC over the re-evaluation seeds, and the dense reference, read from the study's storage
by results.collect: the same tables the report draws."""

from __future__ import annotations

import math

import optuna
import polars as pl

from adasparse_lab.metrics import safe_name
from adasparse_lab.results.collect import ReportData, reference_domains
from adasparse_lab.results.runs import RUN_METRICS


def _mean_sd(seeds: dict | None) -> tuple[float | None, float | None]:
    """(mean, sd) of the test AUC in one row of a re-evaluation table (results.collect's
    reeval or reeval_domains); no sd from a single seed, nothing without a row."""
    if seeds is None:
        return None, None
    return seeds["test_auc_mean"], seeds["test_auc_sd"] if seeds["n_seeds"] > 1 else None


def pareto_table(
    front: list[optuna.trial.FrozenTrial],
    metrics: list[str],
    domains: list[str],
    data: ReportData,
) -> pl.DataFrame:
    """Front trials with objectives, key params and test AUC, overall and per domain (mean
    and std over the re-evaluation seeds of ``data``, the study read back from storage)."""
    by_trial = {r["number"]: r for r in data.reeval.iter_rows(named=True)}
    by_domain = {(r["number"], r["domain"]): r for r in data.reeval_domains.iter_rows(named=True)}
    rows = []
    for t in front:
        row: dict = {"trial": t.number, **{m: v for m, v in zip(metrics, t.values)}}
        row["method"] = t.user_attrs.get("method", t.user_attrs.get("pruner_form"))
        band = t.user_attrs.get("band") or [None, None]
        row["band"] = f"[{band[0]:.2f},{band[1]:.2f}]" if band[0] is not None else None
        row["seeds"] = by_trial[t.number]["n_seeds"] if t.number in by_trial else 0
        found = {"test/mean_domain_auc": by_trial.get(t.number)} | {
            f"test/auc/{safe_name(d)}": by_domain.get((t.number, d)) for d in domains
        }
        for key, seeds in found.items():
            row[f"{key}:mean"], row[f"{key}:std"] = _mean_sd(seeds)
        row["params"] = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(t.params.items()))
        rows.append(row)
    return pl.DataFrame(rows)


def reference_metrics(data: ReportData, domains: list[str]) -> dict[str, float] | None:
    """The dense reference (pruner=none) of ``data``, averaged over its seeds, keyed by MLflow
    metric name (the run metrics results.runs reads, ``test/auc/<domain>``) plus 'seeds'."""
    if not data.reference.height:
        return None
    ref = data.reference.row(0, named=True)
    out = {key: ref[c] for c, key in RUN_METRICS.items() if ref.get(c) is not None}
    per_domain = reference_domains(data.domain_metrics).filter(pl.col("domain").is_in(domains))
    for domain, auc in zip(per_domain["domain"], per_domain["test_auc"]):
        if auc is not None:
            out[f"test/auc/{safe_name(domain)}"] = auc
    out["seeds"] = float(ref["n_seeds"])
    return out


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
