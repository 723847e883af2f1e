"""Derived tables the figures take: per-domain points of completed trials, the reference per
domain, the gain of front trials over the dense reference per domain, and the headline
numbers. Pure polars over results.collect's tables."""

from __future__ import annotations

import polars as pl

from adasparse_lab.report.style import fmt
from adasparse_lab.results.collect import reference_domains
from adasparse_lab.results.fronts import spread_pick

GAIN_TRIALS = 8  # front trials drawn in the gain figure (spread over the front's FLOPs range)
GAIN_SCHEMA = {"study": pl.String, "number": pl.Int64, "label": pl.String, "domain": pl.String}
GAIN_SCHEMA |= {"train_rows": pl.Int64, "gain": pl.Float64, "gain_sd": pl.Float64}


def domain_points(domain_metrics: pl.DataFrame, trials: pl.DataFrame) -> pl.DataFrame:
    """Per-domain val AUC, FLOPs ratio (and measured latency ratio and the trial's method,
    where stored) of every COMPLETE trial."""
    keys = ["study", "number"]
    done = trials.filter(pl.col("state") == "COMPLETE").select(
        *keys, *(["method"] if "method" in trials.columns else [])
    )
    cols = ["domain", "val_auc", "test_auc", "flops_ratio", "sparsity", "latency_ratio"]
    per_domain = domain_metrics.filter(pl.col("kind") == "trial")
    return per_domain.join(done, on=keys, how="inner").select(
        *keys, *[c for c in cols if c in per_domain.columns], *done.columns[2:]
    )


def trial_label(row: dict, multi: bool) -> str:
    form = row.get("method") or row.get("pruner_form") or "?"
    head = f"{row['study']} " if multi else ""
    return f"{head}trial {row['number']} ({form}, FLOPs {fmt(row['flops_ratio'], '.2f')})"


def domain_gains(
    trials: pl.DataFrame,
    domain_metrics: pl.DataFrame,
    reeval_domains: pl.DataFrame,
    domains: pl.DataFrame,
    limit: int = GAIN_TRIALS,
) -> pl.DataFrame:
    """Test AUC minus the dense reference's test AUC, per front trial and domain: the mean over
    re-evaluation seeds where there is one (with its sd), else the trial's own test run.
    Columns: study, number, label, domain, train_rows, gain, gain_sd."""
    on_front = trials.filter(pl.col("on_front")).group_by("study", maintain_order=True)
    picks = [
        part[spread_pick(part["flops_ratio"].to_numpy(), limit).tolist()] for _, part in on_front
    ]
    if not picks:
        return pl.DataFrame(schema=GAIN_SCHEMA)
    front, multi = pl.concat(picks), trials["study"].n_unique() > 1
    labels = [trial_label(r, multi) for r in front.iter_rows(named=True)]
    front = front.select("study", "number", label=pl.Series(labels, dtype=pl.String))
    keys, study_domain = ["study", "number", "domain"], ["study", "domain"]
    ref = reference_domains(domain_metrics).select(*study_domain, ref_auc="test_auc")
    return (
        domain_metrics.filter(pl.col("kind") == "trial")
        .join(front, on=["study", "number"], how="inner")
        .select(*keys, "label", single_auc="test_auc")
        .join(reeval_domains.select(*keys, "test_auc_mean", "test_auc_sd"), on=keys, how="left")
        .join(ref, on=study_domain, how="inner")
        .join(domains.select(*study_domain, "train_rows"), on=study_domain, how="left")
        .with_columns(
            gain=pl.coalesce("test_auc_mean", "single_auc") - pl.col("ref_auc"),
            gain_sd=pl.col("test_auc_sd"),
        )
        .filter(pl.col("gain").is_not_null())
        .select(*GAIN_SCHEMA)
        .sort("study", "number", "train_rows")
    )


def headline(trials: pl.DataFrame, reference: pl.DataFrame, reeval: pl.DataFrame) -> list[str]:
    """Short sentences for the top of the report, one study at a time."""
    lines = []
    for (study,), t in trials.group_by("study", maintain_order=True):
        counts = dict(t.group_by("state").len().iter_rows())
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        front = t.filter(pl.col("on_front")).sort("flops_ratio")
        lines.append(
            f"<b>{study}</b>: {t.height} trials ({states}); {front.height} on the Pareto front."
        )
        ref = reference.filter(pl.col("study") == study)
        ref_auc = ref["auc"][0] if ref.height else None
        if front.height and ref_auc is not None:
            near = front.filter(pl.col("auc") >= ref_auc - 0.001)
            if near.height:
                r = near.row(0, named=True)
                lines.append(
                    f"Cheapest trial within 0.001 val AUC of the dense model ({fmt(ref_auc)}): trial "
                    f"{r['number']} ({r.get('method') or r['pruner_form']}) at FLOPs ratio {fmt(r['flops_ratio'], '.3f')}, "
                    f"AUC {fmt(r['auc'])} ({r['auc'] - ref_auc:+.4f})."
                )
            else:
                best = front.sort("auc", descending=True).row(0, named=True)
                lines.append(
                    f"No front trial reaches the dense val AUC ({fmt(ref_auc)}); the best is trial "
                    f"{best['number']} at {fmt(best['auc'])} ({best['auc'] - ref_auc:+.4f}), FLOPs "
                    f"ratio {fmt(best['flops_ratio'], '.3f')}."
                )
        rv = reeval.filter(pl.col("study") == study)
        if rv.height:
            lines.append(
                f"{rv.height} front trial(s) re-evaluated on test over "
                f"{int(rv['n_seeds'].max())} seed(s)."
            )
    return lines
