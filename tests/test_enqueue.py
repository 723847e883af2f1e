"""study.enqueue: warm-start points that a new study tries first, validated against the space."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from adasparse_lab.errors import ConfigError
from adasparse_lab.study.space import check_enqueue, parse_space
from adasparse_lab.sweep import run_study
from tests.conftest import CONF

SPACE = parse_space(
    {
        "lr": {"path": "train.lr", "type": "float", "low": 0.001, "high": 0.01},
        "inputs": {"path": "pruner.inputs", "type": "categorical", "choices": ["domain"]},
        "band": {"type": "band", "centre": [0.1, 0.5], "width": [0.05, 0.1]},
    }
)


@pytest.mark.parametrize(
    "point, match",
    [
        ({"learning_rate": 0.002}, r"enqueue\[0\]\.learning_rate: not a parameter"),
        ({"lr": 0.5}, r"enqueue\[0\]\.lr=0.5 is outside \[0.001, 0.01\]"),
        ({"inputs": "hidden"}, r"enqueue\[0\]\.inputs='hidden': not one of \['domain'\]"),
        ({"band.centre": 0.9}, r"enqueue\[0\]\.band.centre=0.9 is outside"),
        ({"band": 0.2}, r"enqueue\[0\]\.band: not a parameter"),
    ],
)
def test_bad_enqueue_points_name_the_key(point, match):
    with pytest.raises(ConfigError, match=match):
        check_enqueue(SPACE, (point,))


def test_good_enqueue_point_passes():
    check_enqueue(SPACE, ({"lr": 0.002, "inputs": "domain", "band.centre": 0.3},))


def test_every_shipped_enqueue_point_is_valid():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+study=sparsity"])
    assert len(cfg.study.enqueue) == 3
    check_enqueue(parse_space(cfg.study.space), tuple(cfg.study.enqueue))


@pytest.mark.slow
def test_a_new_study_tries_the_enqueued_point_first(tmp_path):
    overrides = [
        "+study=quick",
        "study.n_trials=1",
        "study.reference=false",
        "study.reeval.max_trials=0",
        "+study.enqueue=[{lr: 0.0042, band.centre: 0.2}]",
        f"paths.studies={tmp_path}/studies",
        f"paths.reports={tmp_path}/reports",
        f"paths.cache={tmp_path}/cache",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        outcome = run_study(compose("config", overrides=overrides), overrides)
    first = outcome.study.trials[0]
    assert first.params["lr"] == 0.0042 and first.params["band.centre"] == 0.2
    assert "band.width" in first.params  # the sampler filled in what the point left open
