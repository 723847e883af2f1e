"""What a run leaves for its user and for the report: the per-domain table, the keep
probabilities, the files of its output folder, its per-epoch MLflow metrics and the printed
summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf

from adasparse_lab.config import redacted
from adasparse_lab.data import PreparedData
from adasparse_lab.metrics import FLOPS_AGGREGATES, safe_name
from adasparse_lab.models.base import MultiDomainModel
from adasparse_lab.run.evaluation import Evaluation
from adasparse_lab.run.fit import EpochRecord, FitResult


@dataclass
class RunResult:
    metrics: dict[str, float]  # val/..., test/... (Evaluation.as_dict), best_epoch, fit_seconds
    domains: pl.DataFrame  # one row per domain: sizes, AUCs, oracle, sparsity, FLOPs
    val: Evaluation
    test: Evaluation
    fit: FitResult
    model: MultiDomainModel
    data: PreparedData


def domain_table(
    data: PreparedData, val: Evaluation, test: Evaluation, params: list[int] | None = None
) -> pl.DataFrame:
    """Per-domain summary used by metrics.json, the printed table and the reports. Every
    count and rate names its split (train_rows, train_pos_rate, test_rows, test_pos_rate);
    ``params``: per domain, the parameters of its served network (embedding table excluded)."""
    train_rows = data.rows_per_domain("train")
    train_pos = data.pos_rate_per_domain("train")
    rows = []
    val_by_name = {d.name: d for d in val.metrics.domains}
    test_by_name = {d.name: d for d in test.metrics.domains}
    for k, name in enumerate(data.domain_names):
        vm, tm = val_by_name.get(name), test_by_name.get(name)
        rows.append(
            {
                "domain": name,
                "group": None if data.domain_groups is None else data.domain_groups.get(name),
                "train_rows": int(train_rows[k]),
                "train_pos_rate": None if np.isnan(train_pos[k]) else float(train_pos[k]),
                "test_rows": tm.rows if tm else 0,
                "test_pos_rate": tm.pos_rate if tm else None,
                "val_auc": vm.auc if vm else None,
                "test_auc": tm.auc if tm else None,
                "test_logloss": tm.logloss if tm else None,
                "oracle_auc": tm.oracle_auc if tm else None,
                "sparsity": float(test.sparsity.domain_overall()[k]),
                "flops": float(test.flops.per_domain[k]),
                "flops_ratio": float(test.flops.per_domain[k] / test.flops.dense),
                "params": None if params is None else int(params[k]),
            }
        )
    return pl.DataFrame(rows)


def keep_table(data: PreparedData, evaluation: Evaluation) -> pl.DataFrame:
    """Long table of keep probabilities: domain, position, neuron, keep_prob."""
    frames = []
    for j, pos in enumerate(evaluation.sparsity.positions):
        kp = evaluation.sparsity.keep_prob[j]
        K, H = kp.shape
        frames.append(
            pl.DataFrame(
                {
                    "domain": np.repeat(np.array(data.domain_names, dtype=object), H).tolist(),
                    "position": np.full(K * H, pos, dtype=np.int32),
                    "neuron": np.tile(np.arange(H, dtype=np.int32), K),
                    "keep_prob": kp.reshape(-1).astype(np.float64),
                }
            )
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "domain": pl.String,
                "position": pl.Int32,
                "neuron": pl.Int32,
                "keep_prob": pl.Float64,
            }
        )
    return pl.concat(frames)


def write_outputs(out_dir: Path, cfg: DictConfig, result: RunResult) -> list[Path]:
    """metrics.json, domains.csv, keep_prob.parquet, the resolved config and the weights."""
    out_dir.mkdir(parents=True, exist_ok=True)
    history = [
        {
            "epoch": r.epoch,
            "step": r.step,
            "train_loss": r.train_loss,
            "train_reg": r.train_reg,
            "samples_per_s": r.samples_per_s,
            "alpha": r.alpha,
            "lambda_hat": r.lambda_hat,
            "band": list(r.band),
            "eligible": r.eligible,
            **r.val,
        }
        for r in result.fit.history
    ]
    payload = {
        "metrics": result.metrics,
        "data_key": result.data.key,  # the prepared store trained on (export checks it)
        "domains": result.domains.to_dicts(),
        "best_epoch": result.fit.best_epoch,
        "fit_seconds": result.fit.seconds,
        "steps": result.fit.steps,
        "history": history,
    }
    files = [
        out_dir / "metrics.json",
        out_dir / "domains.csv",
        out_dir / "keep_prob.parquet",
        out_dir / "config.yaml",
        out_dir / "model_state.pt",
    ]
    files[0].write_text(json.dumps(payload, indent=1, default=float))
    result.domains.write_csv(files[1])
    keep_table(result.data, result.test).write_parquet(files[2])
    files[3].write_text(OmegaConf.to_yaml(redacted(cfg)))  # no password: an MLflow artifact
    torch.save(result.model.state_dict(), files[4])  # state_dict (alpha included), not a pt2 model
    return files


EPOCH_DOMAIN_METRICS = ("auc", "logloss")  # per-domain learning curves, kept per epoch


def logged_per_epoch(key: str, domains: bool = True) -> bool:
    """Whether an epoch's val metric ``key`` goes to MLflow every epoch: every aggregate, and
    (with ``domains``) each domain's AUC and log loss. A domain's sparsity per layer, FLOPs and
    oracle AUC (8 of the 10 metrics a domain has per epoch with two masked layers) stay in the
    run's metrics.json history and its final values: a 1,000-domain run would otherwise send
    MLflow 8,000 rows per epoch."""
    parts = key.split("/")
    if len(parts) <= 2:
        return True
    metric, rest = parts[1], parts[2:]
    if metric == "sparsity":
        return len(rest) == 1  # sparsity/overall, sparsity/l<k>
    if metric == "flops":
        return rest[0] in FLOPS_AGGREGATES
    return domains and metric in EPOCH_DOMAIN_METRICS


def epoch_logger(tracker, run_id: str, domains: bool = True):
    """An on_epoch callback: an epoch's train and val metrics, in batches of up to
    MAX_METRICS_PER_BATCH (store.tracking), under ``epoch/`` (step = epoch); each domain's AUC
    and log loss too with ``domains`` (store.tracking.Tracker.domains_as_metrics). The
    un-prefixed names hold the selected model's final values only."""

    def log_epoch(record: EpochRecord) -> None:
        values = {
            "train/loss": record.train_loss,
            "train/reg": record.train_reg,
            "train/samples_per_s": record.samples_per_s,
            "train/alpha": record.alpha,
            "train/lambda_hat": record.lambda_hat,
            "train/band_lo": record.band[0],
            "train/band_hi": record.band[1],
            **{k: v for k, v in record.val.items() if logged_per_epoch(k, domains)},
        }
        tracker.log_metrics(run_id, {f"epoch/{k}": v for k, v in values.items()}, step=record.epoch)

    return log_epoch


def format_summary(domains: pl.DataFrame, metrics: dict[str, float]) -> str:
    """The per-domain table a run prints for its user; each count and rate under its split."""
    has_oracle = domains["oracle_auc"].null_count() < domains.height
    head = f"{'domain':<14}{'train rows':>11}{'train pos':>10}{'test rows':>10}{'test pos':>9}"
    head += f"{'val AUC':>9}{'test AUC':>9}"
    head += f"{'oracle':>8}{'gap':>7}" if has_oracle else ""
    head += f"{'sparsity':>9}{'FLOPs':>10}{'ratio':>7}{'params':>10}"
    lines = [head, "-" * len(head)]

    def fmt(x, spec=".4f"):
        return "-" if x is None else format(x, spec)

    for r in domains.iter_rows(named=True):
        line = f"{safe_name(r['domain'])[:13]:<14}{r['train_rows']:>11,}"
        line += f"{fmt(r['train_pos_rate'], '.3f'):>10}{r['test_rows']:>10,}"
        line += f"{fmt(r['test_pos_rate'], '.3f'):>9}"
        line += f"{fmt(r['val_auc']):>9}{fmt(r['test_auc']):>9}"
        if has_oracle:
            gap = (
                None
                if r["oracle_auc"] is None or r["test_auc"] is None
                else r["oracle_auc"] - r["test_auc"]
            )
            line += f"{fmt(r['oracle_auc']):>8}{fmt(gap, '.3f'):>7}"
        line += f"{r['sparsity']:>9.3f}{r['flops']:>10,.0f}{r['flops_ratio']:>7.3f}"
        line += f"{fmt(r.get('params'), ','):>10}"
        lines.append(line)
    lines.append("-" * len(head))
    lines.append(
        f"mean per-domain AUC: val {metrics['val/mean_domain_auc']:.4f}  test {metrics['test/mean_domain_auc']:.4f}"
        f" | overall test AUC {metrics['test/auc']:.4f} logloss {metrics['test/logloss']:.4f}"
        + (f" GAUC {metrics['test/gauc']:.4f}" if "test/gauc" in metrics else "")
        + f" | FLOPs ratio {metrics['test/flops/ratio']:.3f} (dense {metrics['test/flops/dense']:,.0f}/sample)"
        + (f" | params {metrics['params']:,.0f}" if "params" in metrics else "")
    )
    return "\n".join(lines)
