"""Build everything a run needs from the composed config and run it: the one function that
takes ``cfg``. Everything it calls takes typed arguments and is usable without Hydra.

Expected config (conf/config.yaml)::

    data:      {source: {_target_...}, schema: {...}, min_freq, dense_log1p}
    model:     {_target_: AdaSparseModel, vocab_sizes: ???, n_dense: ???, domain_fields: ???, ...}
    pruner:    {_target_: PrunerSpec, gate: {...}, ...}  |  {gate: null} for the dense model
    schedule:  {_target_: <BandSchedule>, r_min, r_max, ...}
    regularizer: {_target_: SparsityRegularizer, ...}
    train:     TrainSettings fields
    tracking:  {enabled, uri, artifact_root}
    paths:     {studies, cache, data}
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from adasparse_lab.data import PreparedData, Schema, prepare
from adasparse_lab.data.prepare import MAX_VOCAB
from adasparse_lab.errors import ConfigError, DataError
from adasparse_lab.evaluation import Evaluation, evaluate
from adasparse_lab.latency import LatencySettings, measure_latency
from adasparse_lab.metrics import safe_name
from adasparse_lab.models import AdaSparseModel, PrunerSpec, StaticPruning
from adasparse_lab.models.base import DEFAULT_FLOPS_REFERENCE, MultiDomainModel
from adasparse_lab.sparsity import BandSchedule, SparsityRegularizer
from adasparse_lab.trainer import EpochRecord, FitResult, TrainSettings, fit

log = logging.getLogger(__name__)


def _instantiate(node: DictConfig, key: str, **kwargs):
    """hydra.utils.instantiate, with our own config/data errors surfaced as they are."""
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ConfigError, DataError)):
            raise cause from None
        raise ConfigError(f"{key}: {err}") from None


def pruner_form(pruner_cfg: DictConfig) -> str:
    """'fusion', 'binarization', 'scaling' (the gate class without 'Gate'), a pruning rival's
    method ('magnitude', ...) or 'none'."""
    if pruner_cfg.get("method"):
        return str(pruner_cfg.method)
    gate = pruner_cfg.get("gate")
    return "none" if gate is None else gate._target_.rsplit(".", 1)[-1].removesuffix("Gate").lower()


MLP_NAMES = ("mlp", "adasparse")  # model=adasparse is the old name of model=mlp


def model_name(model_cfg: DictConfig | None) -> str:
    """The ``name:`` of a conf/model entry; 'mlp' for the MLP tower (also under
    model=adasparse) and for a config without a model."""
    if model_cfg is None:
        return "mlp"
    name = str(model_cfg.get("name") or model_cfg._target_.rsplit(".", 1)[-1].lower())
    return "mlp" if name in MLP_NAMES or name == "adasparsemodel" else name


def method_name(pruner_cfg: DictConfig, model_cfg: DictConfig | None = None) -> str:
    """The method a run uses, as reports and tables name it. On the MLP tower: 'dense';
    'adasparse-<form>' with '-domain' for the domain-only pruner input and '-r<rank>' for a
    low-rank pruner; or a pruning rival's own name ('magnitude', ...). On another model the
    model's name, then '+<that name>' for a pruner: 'mmoe', 'dcnv2+adasparse-fusion'."""
    model = model_name(model_cfg)
    name = _pruner_method(pruner_cfg)
    if model == "mlp":
        return name
    return model if name == "dense" else f"{model}+{name}"


def _pruner_method(pruner_cfg: DictConfig) -> str:
    if pruner_cfg.get("method"):
        return str(pruner_cfg.method)
    form = pruner_form(pruner_cfg)
    if form == "none":
        return "dense"
    name = f"adasparse-{form}"
    if pruner_cfg.get("inputs") == "domain":
        name += "-domain"
    if pruner_cfg.get("rank"):
        name += f"-r{pruner_cfg.rank}"
    return name


@dataclass
class Components:
    """Everything validated before any data is read or any step is trained."""

    pruner: PrunerSpec | StaticPruning | None
    schedule: BandSchedule
    regularizer: SparsityRegularizer
    settings: TrainSettings


def build_components(cfg: DictConfig) -> Components:
    pruner = None if cfg.pruner.get("_target_") is None else _instantiate(cfg.pruner, "pruner")
    try:
        settings = TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True))  # type: ignore[arg-type]
    except TypeError as err:
        raise ConfigError(f"train: {err}") from None
    return Components(
        pruner=pruner,
        schedule=_instantiate(cfg.schedule, "schedule"),
        regularizer=_instantiate(cfg.regularizer, "regularizer"),
        settings=settings,
    )


def build_data(data_cfg: DictConfig, cache_dir: str | None) -> PreparedData:
    source = _instantiate(data_cfg.source, "data.source")
    try:
        schema = Schema.from_config(**OmegaConf.to_container(data_cfg.schema, resolve=True))  # type: ignore[arg-type]
    except TypeError as err:
        raise ConfigError(f"data.schema: {err}") from None
    return prepare(
        source,
        schema,
        cache_dir,
        data_cfg.min_freq,
        data_cfg.dense_log1p,
        max_vocab=data_cfg.get("max_vocab", MAX_VOCAB),
        storage=data_cfg.get("storage", "auto"),
    )


def build_model(
    model_cfg: DictConfig,
    data: PreparedData,
    pruner: PrunerSpec | StaticPruning | None,
    flops_reference=DEFAULT_FLOPS_REFERENCE,
) -> MultiDomainModel:
    """The model of ``model_cfg`` (any conf/model entry, models/base.py); ``flops_reference``:
    the hidden dims of the dense MLP whose FLOPs are the denominator of every FLOPs ratio."""
    # The ??? sizes come from the data; the pruner object is passed after instantiation
    # (OmegaConf cannot merge a dataclass holding a union of gate types).
    reference = tuple(int(h) for h in flops_reference)
    if not reference or min(reference) < 1:
        raise ConfigError(f"flops_reference={list(reference)} must be non-empty and positive")
    model_cfg = OmegaConf.masked_copy(model_cfg, [k for k in model_cfg if k != "name"])
    factory = _instantiate(
        model_cfg,
        "model",
        vocab_sizes=data.vocab_sizes,
        n_dense=len(data.schema.dense),
        domain_fields=data.domain_feature_index(),
        _partial_=True,
    )
    try:
        model = factory(pruner=pruner)
    except TypeError as err:
        raise ConfigError(f"model: {err}") from None
    model.flops_reference = reference
    return model


@dataclass
class RunResult:
    metrics: dict[str, float]  # val/..., test/... (Evaluation.as_dict), best_epoch, fit_seconds
    domains: pl.DataFrame  # one row per domain: sizes, AUCs, oracle, sparsity, FLOPs
    val: Evaluation
    test: Evaluation
    fit: FitResult
    model: MultiDomainModel
    data: PreparedData


def _train_pos_rate(data: PreparedData) -> np.ndarray:
    """[K] positive rate of each domain's training rows (NaN for a domain without any)."""
    train = data.splits["train"]
    rows = np.bincount(train.domain.numpy(), minlength=data.n_domains)
    pos = np.bincount(train.domain.numpy(), weights=train.label.numpy(), minlength=data.n_domains)
    return np.divide(pos, rows, out=np.full(data.n_domains, np.nan), where=rows > 0)


def domain_table(
    data: PreparedData, val: Evaluation, test: Evaluation, params: list[int] | None = None
) -> pl.DataFrame:
    """Per-domain summary used by metrics.json, the printed table and the reports. Every
    count and rate names its split (train_rows, train_pos_rate, test_rows, test_pos_rate);
    ``params``: per domain, the parameters of its served network (embedding table excluded)."""
    train_rows = data.rows_per_domain("train")
    train_pos = _train_pos_rate(data)
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
    files[3].write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.save(result.model.state_dict(), files[4])  # state_dict (alpha included), not a pt2 model
    return files


def train_and_evaluate(
    cfg: DictConfig,
    data: PreparedData | None = None,
    on_epoch=None,
    components: Components | None = None,
) -> RunResult:
    """Fit on train, select on val, evaluate the selected model on val and test."""
    parts = components or build_components(cfg)
    latency = LatencySettings.from_config(cfg.get("latency"))  # checked before training
    data = data or build_data(cfg.data, cfg.paths.cache)
    torch.manual_seed(parts.settings.seed)  # the initial weights depend on the seed too
    reference = cfg.get("flops_reference", DEFAULT_FLOPS_REFERENCE)
    model = build_model(cfg.model, data, parts.pruner, reference)
    fitted = fit(model, data, parts.settings, parts.regularizer, parts.schedule, on_epoch=on_epoch)
    device = parts.settings.torch_device()
    val = evaluate(model, data, "val", parts.settings.eval_batch_size, device)
    test = evaluate(model, data, "test", parts.settings.eval_batch_size, device)
    # Every number under its split (val/..., test/...): selection on val, claims on test.
    metrics = {**val.as_dict("val", data.domain_names), **test.as_dict("test", data.domain_names)}
    metrics["best_epoch"] = float(fitted.best_epoch)
    metrics["fit_seconds"] = fitted.seconds
    metrics |= parameter_counts(model)
    if latency.enabled:  # measured serving cost beside the analytic FLOPs (latency.py)
        dense = partial(reference_model, model, data)
        metrics |= measure_latency(model, dense, data, latency).as_dict()
    params = [model.domain_params(k + 1) for k in range(data.n_domains)]
    metrics |= {f"params/{safe_name(d)}": float(n) for d, n in zip(data.domain_names, params)}
    return RunResult(metrics, domain_table(data, val, test, params), val, test, fitted, model, data)


def reference_model(model: MultiDomainModel, data: PreparedData) -> AdaSparseModel:
    """The dense reference MLP of ``model`` (the FLOPs ratio's denominator, models/base.py):
    the same embedding, hidden dims ``model.reference_dims()``, no pruner. Latency's dense."""
    return AdaSparseModel(
        data.vocab_sizes,
        len(data.schema.dense),
        data.domain_feature_index(),
        embedding_dim=model.embedding.embedding_dim,
        hidden_dims=model.reference_dims(),
    )


def parameter_counts(model: MultiDomainModel) -> dict[str, float]:
    """``params``: every trained parameter; ``params/network``: without the embedding (and,
    in train_and_evaluate, ``params/<domain>``: the domain's served network, ditto)."""
    table = {id(p) for p in model.embedding.parameters()}
    every = list(model.parameters())
    return {
        "params": float(sum(p.numel() for p in every)),
        "params/network": float(sum(p.numel() for p in every if id(p) not in table)),
    }


def epoch_logger(tracker, run_id: str):
    """An on_epoch callback: an epoch's train and val metrics in one batch, under ``epoch/``
    (step = epoch). The un-prefixed names hold the selected model's final values only."""

    def log_epoch(record: EpochRecord) -> None:
        values = {
            "train/loss": record.train_loss,
            "train/reg": record.train_reg,
            "train/samples_per_s": record.samples_per_s,
            "train/alpha": record.alpha,
            "train/lambda_hat": record.lambda_hat,
            "train/band_lo": record.band[0],
            "train/band_hi": record.band[1],
            **record.val,
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
