"""The name of the method a run uses, as tables, reports and MLflow show it, derived once from
its model and pruner configs, unless the pruner config names it (``pruner.label``)."""

from __future__ import annotations

from omegaconf import DictConfig

from adasparse_lab.methods import method_of


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


# A pruner config key that is not a constructor argument: the method's name as given by the
# user (``+pruner.label=dense_long``), for variants that differ outside the pruner (more epochs,
# another learning rate) or not at all (the same method under two names).
LABEL = "label"


def method_name(pruner_cfg: DictConfig, model_cfg: DictConfig | None = None) -> str:
    """The method a run uses, as reports and tables name it: ``pruner.label`` when the config
    gives one (a study space's choice may set it); else derived. On the MLP tower: 'dense';
    'adasparse-<form>' with '-domain' for the domain-only pruner input and '-r<rank>' for a
    low-rank pruner; or a pruning rival's own name ('magnitude', ...). On another model the
    model's name, then '+<that name>' for a pruner: 'mmoe', 'dcnv2+adasparse-fusion'."""
    if pruner_cfg.get(LABEL):
        return str(pruner_cfg[LABEL])
    model = model_name(model_cfg)
    name = _pruner_method(pruner_cfg)
    if model == "mlp":
        return name
    return model if name == "dense" else f"{model}+{name}"


def _pruner_method(pruner_cfg: DictConfig) -> str:
    if pruner_cfg.get("method"):
        return str(pruner_cfg.method)
    return method_of(pruner_form(pruner_cfg), pruner_cfg.get("inputs"), pruner_cfg.get("rank"))
