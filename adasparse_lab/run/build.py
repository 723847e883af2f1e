"""Build what a run needs from the composed config: its components (pruner, schedule,
regulariser, training settings), validated before any data is read, and its model, sized from
the prepared data. Everything built takes typed arguments and is usable without Hydra.

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

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from adasparse_lab.config import instantiate
from adasparse_lab.data import PreparedData
from adasparse_lab.errors import ConfigError
from adasparse_lab.models import PrunerSpec, StaticPruning
from adasparse_lab.models.base import DEFAULT_FLOPS_REFERENCE, MultiDomainModel
from adasparse_lab.run.fit import TrainSettings
from adasparse_lab.sparsity import BandSchedule, SparsityRegularizer


@dataclass
class Components:
    """Everything validated before any data is read or any step is trained."""

    pruner: PrunerSpec | StaticPruning | None
    schedule: BandSchedule
    regularizer: SparsityRegularizer
    settings: TrainSettings


def build_components(cfg: DictConfig) -> Components:
    pruner = None if cfg.pruner.get("_target_") is None else instantiate(cfg.pruner, "pruner")
    try:
        settings = TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True))  # type: ignore[arg-type]
    except TypeError as err:
        raise ConfigError(f"train: {err}") from None
    return Components(
        pruner=pruner,
        schedule=instantiate(cfg.schedule, "schedule"),
        regularizer=instantiate(cfg.regularizer, "regularizer"),
        settings=settings,
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
    factory = instantiate(
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
