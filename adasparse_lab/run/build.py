"""Build what a run needs from the composed config: its components (pruner, schedule,
regulariser, training settings), validated before any data is read, and its model, sized from
the prepared data. Everything built takes typed arguments and is usable without Hydra.
The config subtrees it reads are drawn in ``run/pipeline.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from adasparse_lab.config import domain_metrics_max, instantiate
from adasparse_lab.data import PreparedData
from adasparse_lab.errors import ConfigError
from adasparse_lab.models import Fields, PrunerSpec, StaticPruning
from adasparse_lab.models.base import DEFAULT_FLOPS_REFERENCE, MultiDomainModel
from adasparse_lab.models.init import InitSettings, initialise
from adasparse_lab.run.fit import TrainSettings
from adasparse_lab.run.naming import LABEL
from adasparse_lab.sparsity import BandSchedule, SparsityRegularizer

# Keys of a model config that are not constructor arguments: its name, and the fields that
# configs stored before models took a Fields object left to the data as ???.
NOT_ARGS = ("name", "vocab_sizes", "n_dense", "domain_fields", "init")


@dataclass
class Components:
    """Everything validated before any data is read or any step is trained."""

    pruner: PrunerSpec | StaticPruning | None
    schedule: BandSchedule
    regularizer: SparsityRegularizer
    settings: TrainSettings


def build_components(cfg: DictConfig) -> Components:
    pruner = None
    if cfg.pruner.get("_target_") is not None:  # its label names the method, not an argument
        args = OmegaConf.masked_copy(cfg.pruner, [k for k in cfg.pruner if k != LABEL])
        pruner = instantiate(args, "pruner")
    try:
        settings = TrainSettings(**OmegaConf.to_container(cfg.train, resolve=True))  # type: ignore[arg-type]
    except TypeError as err:
        raise ConfigError(f"train: {err}") from None
    InitSettings.from_config(cfg.model.get("init"))  # a bad model.init fails before the data
    if cfg.get("tracking") is not None and cfg.tracking.enabled:
        domain_metrics_max(cfg.tracking)
    return Components(
        pruner=pruner,
        schedule=instantiate(cfg.schedule, "schedule"),
        regularizer=instantiate(cfg.regularizer, "regularizer"),
        settings=settings,
    )


def data_fields(data: PreparedData) -> Fields:
    """The field schema every model is built for: the prepared data's vocabularies, dense
    features and domain-aware field positions."""
    return Fields(data.vocab_sizes, len(data.schema.dense), data.domain_feature_index())


def build_model(
    model_cfg: DictConfig,
    data: PreparedData,
    pruner: PrunerSpec | StaticPruning | None,
    flops_reference=DEFAULT_FLOPS_REFERENCE,
) -> MultiDomainModel:
    """The model of ``model_cfg`` (any conf/model entry, models/base.py); ``flops_reference``:
    the hidden dims of the dense MLP whose FLOPs are the denominator of every FLOPs ratio."""
    # The fields (from the data) and the pruner object are passed after instantiation (OmegaConf
    # would turn a dataclass into a config; it cannot merge one holding a union of gate types).
    # Configs stored before the fields left conf/model still carry their ??? keys: dropped.
    reference = tuple(int(h) for h in flops_reference)
    if not reference or min(reference) < 1:
        raise ConfigError(f"flops_reference={list(reference)} must be non-empty and positive")
    init = InitSettings.from_config(model_cfg.get("init"))  # checked before anything is built
    model_cfg = OmegaConf.masked_copy(model_cfg, [k for k in model_cfg if k not in NOT_ARGS])
    factory = instantiate(model_cfg, "model", _partial_=True)
    try:
        model = factory(data_fields(data), pruner=pruner)
    except TypeError as err:
        raise ConfigError(f"model: {err}") from None
    model.flops_reference = reference
    return model if init is None else initialise(model, init)
