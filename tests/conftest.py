"""Shared fixtures: the real Hydra configs, composed and shrunk for tests (tmp paths), and one
tiny real study run by the driver, shared by the report tests."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
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
    "flops_reference=[32,16]",  # the FLOPs ratio's dense reference: the tiny tower
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
    from adasparse_lab.data.build import build_data

    tmp = tmp_path_factory.mktemp("tiny")
    cfg = compose_config(["tracking=none"], tmp)
    return build_data(cfg.data, cfg.paths.cache)


# A real study run by the driver (adasparse_lab.sweep.run_study), the report tests' input: a
# change in what the driver stores must break them. Five pinned trials (study.enqueue) on tiny
# data: four methods that complete, one the driver records as FAIL (injected error), then the
# dense reference (study seed + re-evaluation seed) and one re-evaluation seed of the front.
REAL_STUDY = "real"
REAL_METHODS = {
    "fusion": ["pruner=fusion"],
    "fusion_domain": ["pruner=fusion", "pruner.inputs=domain"],
    "magnitude": ["pruner=magnitude", "schedule=agp", "pruner.update_every=2"],
    "random": ["pruner=random", "schedule=agp"],
}
REAL_TARGETS = {
    "t15": ["schedule.r_min=0.1", "schedule.r_max=0.2"],
    "t40": ["schedule.r_min=0.35", "schedule.r_max=0.45"],
}
REAL_TRIALS = [
    {"method": "fusion", "target": "t15"},
    {"method": "random", "target": "t40"},  # fails: see FAILING_METHOD
    {"method": "fusion_domain", "target": "t40"},
    {"method": "magnitude", "target": "t15"},
    {"method": "magnitude", "target": "t40"},
]
FAILING_METHOD = "random"
# A tiny tower trained one epoch, timed briefly: real studies in seconds.
TINY_RUN = [
    "model.hidden_dims=[16,8]",
    "flops_reference=[16,8]",  # the FLOPs ratio's reference: this tower
    "model.embedding_dim=4",
    "train.epochs=1",
    "train.batch_size=256",
    "train.lr=0.01",  # 19 steps: enough to learn something at this rate (test AUC > 0.5)
    "train.device=cpu",
    "latency.batch_sizes=[256,1]",
    "latency.repeats=1",
    "latency.budget_s=0.1",
]
# Small synthetic data for real studies in tests: 6,000 rows over 6 domains in 2 groups, the
# largest domain 8 times the smallest.
SIX_DOMAINS = [
    "synthetic.n_rows=6000",
    "data.source.n_domains=6",
    "data.source.n_groups=2",
    "data.source.size_ratio=8.0",
]
REAL_OVERRIDES = [
    "+study=quick",
    f"study.name={REAL_STUDY}",
    "study.n_trials=4",
    "study.reeval.seeds=[1]",
    "study.reeval.max_trials=2",
    "study.poll_s=0.1",
    "study.flops_budget=1.3",
    *SIX_DOMAINS,
    *TINY_RUN,
]


@dataclass
class RealStudy:
    """Where the driver left the study: Optuna storage URL, MLflow store, studies folder."""

    name: str
    root: Path
    storage: str
    mlflow_uri: str
    parent_run_id: str
    printed: str  # what the sweep printed for its user (the finish summary)


def run_real_study(root: Path) -> RealStudy:
    """Run the tiny study in-process through the sweep's own entry (``run_study``)."""
    import adasparse_lab.study.trials as trials_mod
    from adasparse_lab.sweep import run_study

    overrides = [
        *REAL_OVERRIDES,
        f"paths.studies={root}/studies",
        f"paths.reports={root}/reports",
        f"paths.cache={root}/cache",
    ]
    real = trials_mod.train_and_evaluate

    def failing(cfg, data, on_epoch=None, components=None, **rungs):
        if cfg.pruner.get("method") == FAILING_METHOD:
            raise RuntimeError("injected failure")
        return real(cfg, data, on_epoch, components, **rungs)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        with open_dict(base):  # the space and the pinned trials: no YAML file for a test study
            base.study.space = {
                "method": {"type": "categorical", "choices": list(REAL_METHODS)},
                "target": {"type": "categorical", "choices": list(REAL_TARGETS)},
            }
            base.study.space.method.overrides = REAL_METHODS
            base.study.space.target.overrides = REAL_TARGETS
            base.study.enqueue = REAL_TRIALS
        with pytest.MonkeyPatch.context() as patch, redirect_stdout(io.StringIO()) as printed:
            patch.setattr(trials_mod, "train_and_evaluate", failing)
            outcome = run_study(base, overrides)
    outcome.study.ask()  # a trial still RUNNING: reports are built while workers run
    return RealStudy(
        REAL_STUDY,
        root / "studies",
        outcome.storage_desc,
        outcome.tracker.uri,
        outcome.parent_run_id,
        printed.getvalue(),
    )


@pytest.fixture(scope="session")
def real_study(tmp_path_factory) -> RealStudy:
    """The tiny real study, run once per test session (about 20 s on 2 cores)."""
    return run_real_study(tmp_path_factory.mktemp("real-study"))


from tests.services import services  # noqa: E402, F401  (a session fixture for any test file)
