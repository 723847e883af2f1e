"""Shared fixtures: the real Hydra configs, composed and shrunk for tests (tmp paths)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FIXTURES = ROOT / "tests" / "fixtures"

# A synthetic dataset small enough for unit tests but with every domain present in every split
# (the root `synthetic` block: other data configs ignore it), and a small model.
TINY = [
    "synthetic.n_rows=20000",
    "synthetic.n_users=500",
    "synthetic.n_items=300",
    "model.hidden_dims=[32,16]",
    "model.embedding_dim=8",
    "train.epochs=2",
    "train.progress=false",
]


def compose_config(overrides: list[str], tmp: Path, tiny: bool = True) -> DictConfig:
    """Compose conf/config.yaml with overrides; every path points into ``tmp``."""
    shrink = TINY if tiny else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*shrink, *overrides], return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.studies = str(tmp / "studies")
        cfg.paths.cache = str(tmp / "cache")
        cfg.paths.data = str(FIXTURES)
        if cfg.tracking.enabled:
            cfg.tracking.uri = f"sqlite:///{tmp / 'mlflow.db'}"
            cfg.tracking.artifact_root = str(tmp / "mlartifacts")
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        return compose_config(list(overrides), tmp_path, tiny)

    return make


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Prepared tiny synthetic data, shared by the model tests."""
    from adasparse_lab.experiment import build_data

    tmp = tmp_path_factory.mktemp("tiny")
    cfg = compose_config(["tracking=none"], tmp)
    return build_data(cfg.data, cfg.paths.cache)
