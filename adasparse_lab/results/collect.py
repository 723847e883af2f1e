"""Read what a study stored (Optuna storage + MLflow) into plain polars tables: the only input
of the report's figures and of the sweep's end-of-study summary (results.pareto_table). Never touches
a trainer object, so it works on finished and running studies alike.

Tables (each has a ``study`` column; ``number`` is the Optuna trial number):
  trials          one per trial: state, duration_s, auc (val mean per-domain AUC), flops_ratio,
                  latency_ratio (measured, null without latency metrics), method (the
                  run's tag, else the trial's attr, else derived from pruner_form), test_auc,
                  sparsity, pruner_form, pruner_inputs, band_lo, band_hi, run_id,
                  fail_reason, feasible, on_front (the front in the study's own
                  objectives, results.fronts.mark_front), ``obj:<objective>``, ``param:<name>``
  domain_metrics  one per (run, domain): kind (trial|reeval|reference), number, seed, run_id,
                  domain, val_auc, test_auc, flops_ratio, sparsity, latency_ratio; trial
                  runs of COMPLETE trials only, no row without a single metric
  layer_sparsity  one per (COMPLETE trial's run, domain, masked position): number, domain, position, sparsity
  reeval          one per re-evaluated trial: number, n_seeds, test_auc_mean, test_auc_sd,
                  flops_ratio_mean, latency_ratio_mean
  reeval_domains  one per (re-evaluated trial, domain): number, domain, n_seeds, test_auc_mean,
                  test_auc_sd
  reference       0 or 1 per study: run_id, auc, test_auc, flops_ratio, latency_ratio
  domains         one per domain: domain, group, train_rows, pos_rate (train split),
                  oracle_auc
  keep            one per (structure trial, domain, position, neuron): number, domain, position,
                  neuron, keep_prob (front trials only; position 0 = input embedding)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

import optuna
import polars as pl

from adasparse_lab.errors import ConfigError
from adasparse_lab.results.front import spread_pick
from adasparse_lab.results.fronts import (
    AUC_OBJECTIVE,
    FLOPS_OBJECTIVE,
    LATENCY_OBJECTIVE,
    mark_front,
)
from adasparse_lab.results.runs import RunTables, read_artifact_tables, read_runs
from adasparse_lab.store.reader import load_study, objectives, trials_table
from adasparse_lab.store.tracking import stored_uri

log = logging.getLogger(__name__)
DOMAINS_SCHEMA = {
    "domain": pl.String,
    "group": pl.Int64,
    "train_rows": pl.Int64,
    "pos_rate": pl.Float64,
    "oracle_auc": pl.Float64,
}
KEEP_SCHEMA = {
    "number": pl.Int64,
    "domain": pl.String,
    "position": pl.Int64,
    "neuron": pl.Int64,
    "keep_prob": pl.Float64,
}


@dataclass
class StudyInfo:
    """One study's identity and stored context (config, machine, start time, ...)."""

    name: str
    storage: str
    study: optuna.Study
    objectives: list[dict[str, str]]
    attrs: dict
    warnings: list[str] = field(default_factory=list)
    runs: RunTables = field(default_factory=RunTables)  # its MLflow runs, for their artifacts


@dataclass
class ReportData:
    studies: list[StudyInfo]
    trials: pl.DataFrame
    domain_metrics: pl.DataFrame
    layer_sparsity: pl.DataFrame
    reeval: pl.DataFrame
    reeval_domains: pl.DataFrame
    reference: pl.DataFrame
    domains: pl.DataFrame
    keep: pl.DataFrame


def _objective_column(objs: list[dict[str, str]], name: str, direction: str) -> str | None:
    by_name = [o["name"] for o in objs if o["name"] == name]
    if by_name:
        return f"obj:{by_name[0]}"
    known = {AUC_OBJECTIVE, FLOPS_OBJECTIVE, LATENCY_OBJECTIVE}
    unnamed = [o["name"] for o in objs if o["direction"] == direction and o["name"] not in known]
    return f"obj:{unnamed[0]}" if unnamed and unnamed[0].startswith("objective ") else None


def _enrich_trials(
    trials: pl.DataFrame, objs: list[dict[str, str]], runs: pl.DataFrame
) -> pl.DataFrame:
    """Adds auc, flops_ratio, latency_ratio (Optuna values first, MLflow second), test_auc,
    sparsity, and the run's method tag where the trial has no method."""
    trial_runs = runs.filter(pl.col("kind") == "trial")
    by_id = trial_runs.select(
        "run_id", "auc", "flops_ratio", "latency_ratio", "method", "test_auc", "sparsity"
    )
    # Trials that did not record their run id: the latest run tagged with their number.
    by_number = (
        trial_runs.sort("start_ms").group_by("number").last().select("number", alt_run_id="run_id")
    )
    out = (
        trials.join(by_number, on="number", how="left")
        .with_columns(run_id=pl.coalesce("run_id", "alt_run_id"))
        .drop("alt_run_id")
        .join(by_id, on="run_id", how="left", suffix="_run")
    )

    def optuna_first(column: str, objective: str | None) -> pl.Expr:
        return pl.coalesce(objective, column) if objective in out.columns else pl.col(column)

    return out.with_columns(
        auc=optuna_first("auc", _objective_column(objs, AUC_OBJECTIVE, "maximize")),
        flops_ratio=optuna_first(
            "flops_ratio", _objective_column(objs, FLOPS_OBJECTIVE, "minimize")
        ),
        latency_ratio=optuna_first("latency_ratio", f"obj:{LATENCY_OBJECTIVE}"),
        method=pl.coalesce("method_run", "method"),
    ).drop("method_run")


def reeval_tables(runs: pl.DataFrame, domains: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Finished re-evaluation runs over seeds: per trial (number, n_seeds, test_auc_mean,
    test_auc_sd (0 for one seed), flops_ratio_mean, latency_ratio_mean), and per (trial,
    domain) (number, domain, n_seeds, test_auc_mean, test_auc_sd)."""
    finished = runs.filter(
        (pl.col("kind") == "reeval")
        & (pl.col("status") == "FINISHED")
        & pl.col("number").is_not_null()
    )
    seeds = {
        "n_seeds": pl.len(),
        "test_auc_mean": pl.col("test_auc").mean(),
        "test_auc_sd": pl.col("test_auc").std().fill_null(0.0),
    }
    summary = finished.group_by("number").agg(
        **seeds,
        flops_ratio_mean=pl.col("flops_ratio").mean(),
        latency_ratio_mean=pl.col("latency_ratio").mean(),
    )
    per_domain = domains.join(finished.select("run_id"), on="run_id", how="semi")
    per_domain = per_domain.group_by("number", "domain").agg(**seeds)
    return summary.sort("number"), per_domain.sort("number", "domain")


def reference_runs(runs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The dense reference's finished runs (the study's seed and the re-evaluation seeds), and
    one row of their means (no row without a run)."""
    refs = runs.filter((pl.col("kind") == "reference") & (pl.col("status") == "FINISHED"))
    refs = refs.sort("start_ms").select("run_id", "auc", "test_auc", "flops_ratio", "latency_ratio")
    if refs.height == 0:
        return refs, refs
    return refs, refs.select(
        pl.col("run_id").first(), pl.exclude("run_id").mean(), n_seeds=pl.len()
    )


def reference_domains(domain_metrics: pl.DataFrame) -> pl.DataFrame:
    """The dense reference per domain, averaged over its seeds: study, domain and the means
    of val_auc, test_auc, flops_ratio, latency_ratio (those ``domain_metrics`` has)."""
    cols = [
        c
        for c in ("val_auc", "test_auc", "flops_ratio", "latency_ratio")
        if c in domain_metrics.columns
    ]
    return (
        domain_metrics.filter(pl.col("kind") == "reference")
        .group_by("study", "domain", maintain_order=True)
        .agg(pl.col(cols).mean())
    )


def _domains(attrs: dict, tables: RunTables, fallback_runs: list[str]) -> pl.DataFrame:
    stored = attrs.get("domains")
    if isinstance(stored, list) and stored:
        return pl.DataFrame(
            [{c: d.get(c) for c in DOMAINS_SCHEMA} for d in stored], schema=DOMAINS_SCHEMA
        )
    found = pl.DataFrame({"domain": tables.domains["domain"].unique(maintain_order=True)})
    for run_id in fallback_runs:  # older studies: the domain table of one of their runs
        if run_id in (csv := read_artifact_tables(tables, [run_id], "domains.csv")):
            found = csv[run_id]
            if "train_pos_rate" in found.columns:  # the run table names each rate by its split
                found = found.drop("pos_rate", strict=False).rename({"train_pos_rate": "pos_rate"})
            break
    known = found.select(c for c in DOMAINS_SCHEMA if c in found.columns)
    return pl.concat([pl.DataFrame(schema=DOMAINS_SCHEMA), known], how="diagonal_relaxed").cast(
        DOMAINS_SCHEMA
    )


def _keep(tables: RunTables, trials: pl.DataFrame, max_trials: int) -> pl.DataFrame:
    front = trials.filter(pl.col("on_front") & pl.col("run_id").is_not_null())
    picked = front[spread_pick(front["flops_ratio"].to_numpy(), max_trials).tolist()]
    found = read_artifact_tables(tables, picked["run_id"].to_list(), "keep_prob.parquet")
    frames = [
        found[run_id].with_columns(number=pl.lit(number)).select(*KEEP_SCHEMA).cast(KEEP_SCHEMA)
        for number, run_id in zip(picked["number"], picked["run_id"])
        if run_id in found
    ]
    return pl.concat([pl.DataFrame(schema=KEEP_SCHEMA), *frames])


def collect_study(
    name: str, storage=None, studies_dir: Path = Path("studies"), max_structure_trials: int = 12
) -> ReportData:
    """Everything the report shows about study ``name`` (see the module docstring)."""
    study, where = load_study(name, storage, studies_dir)
    attrs = dict(study.user_attrs)
    info = StudyInfo(name, where, study, objectives(study), attrs)
    uri = attrs.get("mlflow_uri") and stored_uri(attrs["mlflow_uri"], studies_dir)
    tables = (
        read_runs(
            uri,
            attrs.get("mlflow_experiment", name),
            [d["domain"] for d in attrs.get("domains") or []],
        )
        if uri
        else RunTables(warnings=["no mlflow_uri in the study's attrs: Optuna values only"])
    )
    info.warnings += tables.warnings
    info.runs = tables
    trials = _enrich_trials(trials_table(name, study), info.objectives, tables.runs)
    trials = mark_front(trials, info.objectives)  # the study's own front
    ref_runs, reference = reference_runs(tables.runs)
    # Per-domain and per-layer rows of COMPLETE trials only: a failed or pruned trial's run
    # measured nothing to compare (its rows would be nulls, or numbers of a broken run).
    done = trials.filter(pl.col("state") == "COMPLETE")
    trial_ids = done.select("run_id", trial_number="number").drop_nulls()
    dm = tables.domains
    per_trial = (
        dm.filter(pl.col("kind") == "trial")
        .join(trial_ids, on="run_id", how="inner")
        .with_columns(number=pl.col("trial_number"))
        .drop("trial_number")
    )
    domain_metrics = pl.concat(
        [
            per_trial,
            dm.filter(pl.col("kind") == "reeval"),
            dm.join(ref_runs.select("run_id"), on="run_id", how="semi"),
        ]
    )
    reeval, reeval_domains = reeval_tables(tables.runs, dm)
    layers = tables.layers.join(trial_ids, on="run_id", how="inner").rename(
        {"trial_number": "number"}
    )
    fallback = (
        reference["run_id"].to_list()
        + trials.filter(pl.col("state") == "COMPLETE")["run_id"].drop_nulls().to_list()[:1]
    )
    study_col = pl.lit(name).alias("study")
    return ReportData(
        studies=[info],
        trials=trials,
        domain_metrics=domain_metrics.with_columns(study_col),
        layer_sparsity=layers.select(study_col, "number", "domain", "position", "sparsity"),
        reeval=reeval.with_columns(study_col),
        reeval_domains=reeval_domains.with_columns(study_col),
        reference=reference.with_columns(study_col),
        domains=_domains(attrs, tables, fallback).with_columns(study_col),
        keep=_keep(tables, trials, max_structure_trials).with_columns(study_col),
    )


def merge(parts: list[ReportData]) -> ReportData:
    """Several studies in one report: their tables stacked (columns unioned)."""
    if len(parts) == 1:
        return parts[0]
    tables = [f.name for f in fields(ReportData) if f.name != "studies"]
    return ReportData(
        studies=[s for p in parts for s in p.studies],
        **{n: pl.concat([getattr(p, n) for p in parts], how="diagonal_relaxed") for n in tables},
    )


def collect(
    names: list[str],
    storages: list | None = None,
    studies_dir: Path = Path("studies"),
    max_structure_trials: int = 12,
) -> ReportData:
    storages = storages or [None] * len(names)
    if len(storages) != len(names):
        raise ConfigError(
            f"{len(names)} studies but {len(storages)} storages: give one storage per study"
        )
    return merge(
        [collect_study(n, s, studies_dir, max_structure_trials) for n, s in zip(names, storages)]
    )
