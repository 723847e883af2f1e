"""Ranking and calibration metrics, overall and per domain, computed with polars group-bys.

AUC is the Mann-Whitney statistic with average ranks for ties:
    AUC = (sum of positive ranks - P (P + 1) / 2) / (P N).
GAUC is the impression-weighted mean of per-user AUC over users that have both classes.
A domain with a single class in a split has no AUC: it is excluded from means with a warning
that names it, never turned into a silent NaN.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl

log = logging.getLogger(__name__)
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./ ]")
FLOPS_AGGREGATES = ("dense", "mean", "ratio")  # <split>/flops/<these> are not domains


def safe_name(name: str) -> str:
    """A domain name as it appears in metric keys (MLflow's character set; others become '_')."""
    return _BAD_KEY_CHARS.sub("_", str(name))


def _grouped_auc(frame: pl.DataFrame, score: str, by: str) -> pl.DataFrame:
    """Per-group AUC of ``score`` against ``label``; null where a group has one class."""
    ranked = frame.with_columns(rank=pl.col(score).rank("average").over(by))
    stats = ranked.group_by(by).agg(
        n=pl.len(),
        pos=pl.col("label").sum(),
        rank_pos=(pl.col("rank") * pl.col("label")).sum(),
    )
    neg = pl.col("n") - pl.col("pos")
    auc = (pl.col("rank_pos") - pl.col("pos") * (pl.col("pos") + 1) / 2) / (pl.col("pos") * neg)
    return stats.with_columns(
        auc=pl.when((pl.col("pos") > 0) & (neg > 0)).then(auc).otherwise(None)
    )


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Overall AUC; NaN only when the labels hold a single class."""
    frame = pl.DataFrame(
        {
            "label": np.asarray(labels, dtype=np.float64),
            "score": np.asarray(scores, dtype=np.float64),
            "g": 0,
        }
    )
    value = _grouped_auc(frame, "score", "g").get_column("auc")[0]
    return float("nan") if value is None else float(value)


def domain_auc(labels: np.ndarray, scores: np.ndarray, domain: np.ndarray) -> dict[int, float]:
    """{domain code: AUC of its rows}, for the domains whose rows hold both classes."""
    frame = pl.DataFrame(
        {
            "label": np.asarray(labels, dtype=np.float64),
            "score": np.asarray(scores, dtype=np.float64),
            "domain": np.asarray(domain, dtype=np.int64),
        }
    )
    per_domain = _grouped_auc(frame, "score", "domain").drop_nulls("auc")
    return dict(zip(per_domain["domain"].to_list(), per_domain["auc"].to_list()))


@dataclass
class DomainMetrics:
    name: str
    rows: int
    pos_rate: float
    auc: float | None  # None: single class in this split
    logloss: float
    oracle_auc: float | None = None  # AUC of the true click probability (synthetic data)


@dataclass
class EvalMetrics:
    auc: float
    logloss: float
    mean_domain_auc: float
    domains: list[DomainMetrics]
    gauc: float | None = None
    excluded: list[str] = field(default_factory=list)

    def as_dict(self, prefix: str) -> dict[str, float]:
        out = {
            f"{prefix}/auc": self.auc,
            f"{prefix}/logloss": self.logloss,
            f"{prefix}/mean_domain_auc": self.mean_domain_auc,
        }
        if self.gauc is not None:
            out[f"{prefix}/gauc"] = self.gauc
        for d in self.domains:
            name = safe_name(d.name)
            if d.auc is not None:
                out[f"{prefix}/auc/{name}"] = d.auc
            out[f"{prefix}/logloss/{name}"] = d.logloss
            if d.oracle_auc is not None:
                out[f"{prefix}/oracle_auc/{name}"] = d.oracle_auc
        return out


def _logloss(label: np.ndarray, logit: np.ndarray) -> np.ndarray:
    # Stable binary cross-entropy from logits, per row.
    return np.maximum(logit, 0) - logit * label + np.log1p(np.exp(-np.abs(logit)))


def _domain_logloss(domain: np.ndarray, loss: np.ndarray) -> pl.DataFrame:
    """Mean loss per domain, summed in row order: a polars group_by mean sums in a
    thread-dependent order, so its last bits change from call to call."""
    codes, inverse = np.unique(domain.astype(np.int64), return_inverse=True)
    mean = np.bincount(inverse, weights=loss) / np.bincount(inverse)
    return pl.DataFrame({"domain": codes, "logloss": mean})


def _per_domain(frame: pl.DataFrame, domain: np.ndarray) -> pl.DataFrame:
    """One row per domain code: n, pos, auc, logloss, and oracle (AUC of p_true) if known."""
    per_domain = _grouped_auc(frame, "logit", "domain").join(
        _domain_logloss(domain, frame["loss"].to_numpy()), on="domain"
    )
    if "p_true" in frame.columns:
        oracle = _grouped_auc(frame, "p_true", "domain").select("domain", oracle=pl.col("auc"))
        per_domain = per_domain.join(oracle, on="domain")
    return per_domain.sort("domain")


def _domain_metrics(per_domain: pl.DataFrame, domain_names: list[str]) -> list[DomainMetrics]:
    return [
        DomainMetrics(
            name=domain_names[row["domain"]],
            rows=row["n"],
            pos_rate=row["pos"] / row["n"],
            auc=row["auc"],
            logloss=row["logloss"],
            oracle_auc=row.get("oracle"),
        )
        for row in per_domain.iter_rows(named=True)
    ]


def _gauc(frame: pl.DataFrame, user: np.ndarray) -> float | None:
    """Impression-weighted mean of per-user AUC; None when no user has both classes."""
    per_user = _grouped_auc(frame.with_columns(pl.Series("user", user)), "logit", "user")
    # sorted: group_by's order depends on threads, and a float sum on its order
    valid = per_user.filter(pl.col("auc").is_not_null()).sort("user")
    if not valid.height:
        return None
    return math.fsum((valid["auc"] * valid["n"]).to_list()) / valid["n"].sum()


def evaluate_scores(
    label: np.ndarray,
    logit: np.ndarray,
    domain: np.ndarray,
    domain_names: list[str],
    user: np.ndarray | None = None,
    p_true: np.ndarray | None = None,
    split: str = "eval",
) -> EvalMetrics:
    """All metrics of one split from per-row labels, logits and domain indices."""
    frame = pl.DataFrame(
        {
            "label": label.astype(np.float64),
            "logit": logit.astype(np.float64),
            "domain": domain.astype(np.int64),
            "loss": _logloss(label.astype(np.float64), logit.astype(np.float64)),
        }
    )
    if p_true is not None:
        frame = frame.with_columns(pl.Series("p_true", p_true.astype(np.float64)))
    domains = _domain_metrics(_per_domain(frame, domain), domain_names)
    excluded = [d.name for d in domains if d.auc is None]
    if excluded:
        log.warning(
            "%s split: domain(s) %s have a single class; excluded from AUC means", split, excluded
        )
    aucs = [d.auc for d in domains if d.auc is not None]
    overall = _grouped_auc(frame.with_columns(g=pl.lit(0)), "logit", "g")["auc"][0]
    return EvalMetrics(
        auc=float("nan") if overall is None else float(overall),
        logloss=float(np.mean(frame["loss"].to_numpy())),
        mean_domain_auc=float(np.mean(aucs)) if aucs else math.nan,
        domains=domains,
        gauc=None if user is None else _gauc(frame, user),
        excluded=excluded,
    )
