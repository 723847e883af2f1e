"""Tables derived from results.collect's, for the report's figures and headline: completed
trials, per-domain points, the gain of front trials over the dense reference per domain, the
cheapest front trial near the dense model, and a study's wall time. Pure polars."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from adasparse_lab.results.collect import StudyInfo, reference_domains
from adasparse_lab.results.front import spread_pick

GAIN_TRIALS = 8  # front trials drawn in the gain figure (spread over the front's FLOPs range)
GAIN_SCHEMA = {"study": pl.String, "number": pl.Int64, "label": pl.String, "domain": pl.String}
GAIN_SCHEMA |= {"train_rows": pl.Int64, "gain": pl.Float64, "gain_sd": pl.Float64}


def completed(trials: pl.DataFrame, x: str = "flops_ratio", y: str = "auc") -> pl.DataFrame:
    """COMPLETE trials with both plotted values (failed, running, pruned ones left out)."""
    return trials.filter(
        (pl.col("state") == "COMPLETE") & pl.col(x).is_not_null() & pl.col(y).is_not_null()
    )


def band_varies(trials: pl.DataFrame) -> bool:
    """Whether the completed trials were given more than one target sparsity band."""
    return completed(trials).select("band_lo", "band_hi").drop_nulls().unique().height > 1


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


def domains_by_size(domains: pl.DataFrame) -> list[tuple[str, int | None]]:
    """(domain, train rows) by decreasing training size (largest rows over studies)."""
    sizes = domains.group_by("domain", maintain_order=True).agg(pl.col("train_rows").max())
    ordered = sizes.sort(["train_rows", "domain"], descending=[True, False], nulls_last=True)
    return list(zip(ordered["domain"].to_list(), ordered["train_rows"].to_list()))


def trial_label(row: dict, multi: bool) -> str:
    """ "[study ]trial N (method, FLOPs r)" for one trials row; the study when several."""
    form = row.get("method") or row.get("pruner_form") or "?"
    head = f"{row['study']} " if multi else ""
    flops = "-" if row["flops_ratio"] is None else f"{row['flops_ratio']:.2f}"
    return f"{head}trial {row['number']} ({form}, FLOPs {flops})"


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


def domain_facts(domains: pl.DataFrame, domain_metrics: pl.DataFrame, study: str) -> pl.DataFrame:
    """The domains of ``study``, largest training set first, with the dense reference's test
    AUC and its gap to the oracle AUC (synthetic data)."""
    ref = reference_domains(domain_metrics).filter(pl.col("study") == study)
    return (
        domains.filter(pl.col("study") == study)
        .join(ref.select("domain", "test_auc"), on="domain", how="left")
        .sort("train_rows", descending=True, nulls_last=True)
        .with_columns(gap=pl.col("oracle_auc") - pl.col("test_auc"))
    )


def near_reference(front: pl.DataFrame, ref_auc: float, tolerance: float = 0.001) -> dict:
    """The cheapest front trial within ``tolerance`` val AUC of the dense model, with
    ``near`` True; else the front's best-AUC trial with ``near`` False (``front`` not empty)."""
    near = front.filter(pl.col("auc") >= ref_auc - tolerance).sort("flops_ratio")
    if near.height:
        return near.row(0, named=True) | {"near": True}
    return front.sort("auc", descending=True).row(0, named=True) | {"near": False}


@dataclass
class WallTime:
    """From a study's start (or its first trial's) to its last finished trial."""

    first: dt.datetime | None
    last: dt.datetime | None
    busy_minutes: float  # the trials' durations summed
    running: bool  # a trial still RUNNING

    @property
    def minutes(self) -> float | None:
        return None if self.first is None else (self.last - self.first).total_seconds() / 60


def _moments(texts: Iterable[object]) -> list[dt.datetime]:
    """ISO times as aware datetimes (naive ones, Optuna's, are local time); others left out."""
    out = []
    for text in texts:
        try:
            moment = dt.datetime.fromisoformat(str(text))
        except (TypeError, ValueError):
            continue
        out.append(moment if moment.tzinfo is not None else moment.astimezone())
    return out


def wall_time(info: StudyInfo, trials: pl.DataFrame) -> WallTime:
    """The wall time of study ``info`` from its stored start and its trials' times."""
    t = trials.filter(pl.col("study") == info.name)
    busy = t["duration_s"].drop_nulls().sum() / 60
    starts = _moments([info.attrs.get("started_at"), *t["started"].drop_nulls()])
    ends = _moments(t["finished"].drop_nulls())
    running = bool((t["state"] == "RUNNING").any())
    if not starts or not ends:
        return WallTime(None, None, busy, running)
    return WallTime(min(starts), max(ends), busy, running)


PICKER_K = (5, 10, 25, 100)  # the picker's "k largest / k smallest" choices (those below n)


def domain_picker_table(
    points: pl.DataFrame, domains: pl.DataFrame, reference: pl.DataFrame, x: str = "flops_ratio"
) -> dict:
    """The per-domain points as one compact table for the report's domain picker: domains by
    decreasing training size, one column per COMPLETE trial (``study``, ``number``, ``key``:
    method or study), ``x``/``y`` (cost and val AUC, domain x trial, None where missing), the
    dense reference's per study and domain (``ref_x``, ``ref_y``), and the true groups' domain
    indices (``groups``, synthetic data)."""
    order = domains_by_size(domains)
    names = [d for d, _ in order]
    trials = points.select("study", "number", *(["method"] if "method" in points.columns else []))
    trials = trials.unique(["study", "number"], maintain_order=True).sort("study", "number")
    studies = trials["study"].unique(maintain_order=True).to_list()
    one = len(studies) == 1 and "method" in trials.columns and trials["method"].null_count() == 0
    keys = trials["method"] if one else trials["study"]
    cols = {(s, n): j for j, (s, n) in enumerate(trials.select("study", "number").iter_rows())}
    at = {d: i for i, d in enumerate(names)}
    grid_x = [[None] * trials.height for _ in names]
    grid_y = [[None] * trials.height for _ in names]
    for r in points.select("study", "number", "domain", x, "val_auc").iter_rows():
        if r[2] in at and r[3] is not None and r[4] is not None:
            grid_x[at[r[2]]][cols[(r[0], r[1])]] = round(r[3], 4)
            grid_y[at[r[2]]][cols[(r[0], r[1])]] = round(r[4], 4)
    ref = {(r["study"], r["domain"]): r for r in reference.iter_rows(named=True)}
    ref_x = [[_round(ref.get((s, d), {}).get(x)) for d in names] for s in studies]
    ref_y = [[_round(ref.get((s, d), {}).get("val_auc")) for d in names] for s in studies]
    return {
        "domains": names,
        "rows": [n for _, n in order],
        "studies": studies,
        "study": [studies.index(s) for s in trials["study"]],
        "number": trials["number"].to_list(),
        "key": keys.to_list(),
        "x": grid_x,
        "y": grid_y,
        "ref_x": ref_x,
        "ref_y": ref_y,
        "groups": _group_indices(domains, at),
        "k": [k for k in PICKER_K if k < len(names)],
    }


def _round(v: float | None) -> float | None:
    return None if v is None or v != v else round(v, 4)


def _group_indices(domains: pl.DataFrame, at: dict[str, int]) -> dict[str, list[int]]:
    """True group (as text) -> indices of its domains in size order (synthetic data only)."""
    known = domains.filter(pl.col("group").is_not_null()).unique("domain", maintain_order=True)
    out: dict[str, list[int]] = {}
    for d, g in known.select("domain", "group").iter_rows():
        out.setdefault(str(g), []).append(at[d])
    return {g: sorted(v) for g, v in sorted(out.items(), key=lambda kv: str(kv[0]))}


def picker_means(table: dict, picked: list[int]) -> dict:
    """Each trial's mean cost and val AUC over the ``picked`` domains (indices into
    ``table['domains']``; None where a trial has none), and each study's reference mean.
    The page's script computes the same for the picker's other choices."""

    def mean(values: list) -> float | None:
        kept = [v for v in values if v is not None]
        return round(sum(kept) / len(kept), 4) if kept else None

    n = len(table["number"])
    return {
        "x": [mean([table["x"][d][j] for d in picked]) for j in range(n)],
        "y": [mean([table["y"][d][j] for d in picked]) for j in range(n)],
        "ref_x": [mean([rx[d] for d in picked]) for rx in table["ref_x"]],
        "ref_y": [mean([ry[d] for d in picked]) for ry in table["ref_y"]],
    }
