"""Every option of every config group composes and instantiates; bad configs fail early."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from adasparse_lab.data.build import build_data
from adasparse_lab.errors import ConfigError, DataError
from adasparse_lab.models.gates import BinarizationGate, FusionGate, ScalingGate
from adasparse_lab.run.build import build_components, build_model
from adasparse_lab.sparsity import AGPBand, ConstantBand, CosineBand, LinearBand, StepBand
from tests.conftest import CONF, ROOT


def options(group: str) -> list[str]:
    """A group's choices; files starting with '_' hold keys shared by choices, not choices."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("pruner", options("pruner"))
def test_every_pruner_builds_a_model(make_cfg, tiny_data, pruner):
    cfg = make_cfg(f"pruner={pruner}", "tracking=none")
    parts = build_components(cfg)
    model = build_model(cfg.model, tiny_data, parts.pruner)
    expected = {
        "fusion": FusionGate,
        "binarization": BinarizationGate,
        "scaling": ScalingGate,
        "none": None,
        "magnitude": "magnitude",
        "domain_magnitude": "domain_magnitude",
        "random": "random",
    }[pruner]
    if expected is None:
        assert parts.pruner is None and model.positions == []
    elif isinstance(expected, str):  # a pruning rival: static masks, no learned pruner
        assert parts.pruner.method == expected and model.positions == [1, 2]
        assert model.static is not None and len(model.pruners) == 0
    else:
        assert isinstance(parts.pruner.gate, expected) and model.positions == [1, 2]
    assert model.widths[1:] == [32, 16]


@pytest.mark.parametrize("schedule", options("schedule"))
def test_every_schedule(make_cfg, schedule):
    parts = build_components(make_cfg(f"schedule={schedule}", "tracking=none"))
    cls = {
        "constant": ConstantBand,
        "linear": LinearBand,
        "agp": AGPBand,
        "cosine": CosineBand,
        "step": StepBand,
    }
    assert type(parts.schedule) is cls[schedule]
    assert parts.schedule.band(1.0) == pytest.approx((0.15, 0.25))


@pytest.mark.parametrize(
    "data,domains",
    [("synthetic", 12), ("douban", 3), ("taobao_fuxictr", 2), ("aliccp_processed", 3)],
)
def test_every_dataset_prepares(make_cfg, data, domains):
    cfg = make_cfg(f"data={data}", "tracking=none")
    prepared = build_data(cfg.data, cfg.paths.cache)
    assert prepared.n_domains == domains
    assert all(len(s) > 0 for s in prepared.splits.values())


def test_tabular_config_on_a_real_file(make_cfg):
    douban = ROOT / "tests/fixtures/douban/douban.csv"
    cfg = make_cfg(
        "data=tabular",
        "tracking=none",
        f"data.source.path={douban}",
        "data.schema.label=rating",
        "data.schema.domain=domain",
        "data.schema.categorical=[user_id,item_id]",
    )
    prepared = build_data(cfg.data, cfg.paths.cache)
    assert sorted(prepared.domain_names) == ["book", "movie", "music"]
    assert sum(len(s) for s in prepared.splits.values()) == 3000


def test_tracking_options_compose(make_cfg):
    assert make_cfg("tracking=none").tracking.enabled is False
    assert make_cfg("tracking=mlflow").tracking.uri.startswith("sqlite:///")


@pytest.mark.parametrize(
    "override,match",
    [
        (["schedule.r_min=0.3", "schedule.r_max=0.2"], "schedule.r_min=0.3 and schedule.r_max=0.2"),
        (["pruner.gate.beta=0.5"], "pruner.gate.beta=0.5 must be >= 1"),
        (["pruner.inputs=all"], "pruner.inputs='all'"),
        (["train.lr=-1"], "train.lr=-1"),
        (["+train.epoch=3"], "train: .*epoch"),
        (["regularizer.lambda_end=0.001"], "regularizer.lambda_start"),
    ],
)
def test_bad_values_fail_before_data_is_read(make_cfg, override, match):
    with pytest.raises(ConfigError, match=match):
        build_components(make_cfg(*override, "tracking=none"))


def test_unknown_group_choice_lists_the_choices(make_cfg):
    with pytest.raises(MissingConfigException) as err:
        make_cfg("pruner=magic")
    assert "binarization" in str(err.value) and "fusion" in str(err.value)
    with pytest.raises(MissingConfigException, match="douban"):
        make_cfg("data=criteo")


def test_missing_data_path_names_it(make_cfg, tmp_path):
    cfg = make_cfg(
        "data=tabular",
        f"data.source.path={tmp_path}/none.parquet",
        "data.schema.label=y",
        "data.schema.domain=d",
        "data.schema.categorical=[d]",
    )
    with pytest.raises(DataError, match="none.parquet"):
        build_data(cfg.data, None)


@pytest.mark.slow
def test_cli_bad_config_exits_with_a_named_key(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "adasparse_lab.train",
            "schedule.r_min=0.4",
            "schedule.r_max=0.1",
            "tracking=none",
            f"paths.studies={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "schedule.r_min=0.4 and schedule.r_max=0.1" in proc.stderr
    assert "epoch" not in proc.stderr  # failed before training started
    assert not list(Path(tmp_path).glob("cache/*"))  # and before any data was prepared
