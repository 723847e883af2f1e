"""One run: fit on train, select on val, evaluate the selected model on val and test, and
measure its serving cost. ``train_and_evaluate`` is the one function that takes ``cfg``::

    data:      {source: {_target_...}, schema: {...}, min_freq, dense_log1p}
    model:     {_target_: AdaSparseModel, embedding_dim, ...}  (the fields come from the data)
    pruner:    {_target_: PrunerSpec, gate: {...}, ...}  |  {gate: null} for the dense model
    schedule:  {_target_: <BandSchedule>, r_min, r_max, ...}
    regularizer: {_target_: SparsityRegularizer, ...}
    train:     TrainSettings fields
    latency:   LatencySettings fields (optional)
    paths:     {cache}
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from adasparse_lab.data import PreparedData
from adasparse_lab.data.build import build_data
from adasparse_lab.metrics import safe_name
from adasparse_lab.models import AdaSparseModel
from adasparse_lab.models.base import DEFAULT_FLOPS_REFERENCE, MultiDomainModel
from adasparse_lab.run.build import Components, build_components, build_model, data_fields
from adasparse_lab.run.checkpoint import Checkpointing, config_key
from adasparse_lab.run.evaluation import evaluate
from adasparse_lab.run.fit import RungCallback, fit
from adasparse_lab.run.latency import LatencySettings, measure_latency
from adasparse_lab.run.outputs import RunResult, domain_table

# The config groups that decide what a fit computes: a checkpoint of another setting of any of
# them is not resumed.
FIT_KEYS = ("data", "model", "pruner", "schedule", "regularizer", "train", "seed")
NOT_COMPUTED = ("progress", "checkpoint_every_s")  # train keys that change no number


def train_and_evaluate(
    cfg: DictConfig,
    data: PreparedData | None = None,
    on_epoch=None,
    components: Components | None = None,
    rungs: Sequence[float] = (),
    on_rung: RungCallback | None = None,
    checkpoint: Path | None = None,
) -> RunResult:
    """Fit on train, select on val, evaluate the selected model on val and test (``rungs``,
    ``on_rung``: where a study may stop the fit part-way, run/fit.py). ``checkpoint``: the
    fit's checkpoint file (run/checkpoint.py; none when ``train.checkpoint_every_s`` is
    null): a fit killed part-way goes on from it when run again with the same config."""
    parts = components or build_components(cfg)
    latency = LatencySettings.from_config(cfg.get("latency"))  # checked before training
    data = data or build_data(cfg.data, cfg.paths.cache)
    torch.manual_seed(parts.settings.seed)  # the initial weights depend on the seed too
    reference = cfg.get("flops_reference", DEFAULT_FLOPS_REFERENCE)
    model = build_model(cfg.model, data, parts.pruner, reference)
    fitted = fit(
        model,
        data,
        parts.settings,
        parts.regularizer,
        parts.schedule,
        on_epoch=on_epoch,
        rungs=rungs,
        on_rung=on_rung,
        checkpoint=_checkpointing(cfg, parts, checkpoint),
    )
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


def _checkpointing(cfg: DictConfig, parts: Components, path: Path | None) -> Checkpointing | None:
    every_s = parts.settings.checkpoint_every_s
    if path is None or every_s is None:
        return None
    computes = {  # what the fit computes, resolved against the whole config
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k in FIT_KEYS
        if (v := cfg.get(k)) is not None
    }
    computes["train"] = {k: v for k, v in computes["train"].items() if k not in NOT_COMPUTED}
    key = config_key(computes)
    return Checkpointing(Path(path), key, every_s)


def reference_model(model: MultiDomainModel, data: PreparedData) -> AdaSparseModel:
    """The dense reference MLP of ``model`` (the FLOPs ratio's denominator, models/base.py):
    the same embedding, hidden dims ``model.reference_dims()``, no pruner. Latency's dense."""
    return AdaSparseModel(
        data_fields(data),
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
