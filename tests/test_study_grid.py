"""Issue 8 item 17: a grid study ends cleanly when its grid is exhausted (no second tell)."""

from __future__ import annotations

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.sweep import run_study
from tests.conftest import CONF, TINY


@pytest.mark.slow
def test_grid_study_runs_to_exhaustion_without_a_second_tell(tmp_path):
    tiny = [o for o in TINY if not o.startswith("train.epochs")]
    overrides = [
        "+study=bands",
        f"paths.studies={tmp_path}/studies",
        f"paths.reports={tmp_path}/reports",
        f"paths.cache={tmp_path}/cache",
        *tiny,
        "train.epochs=1",
        "study.n_trials=4",
        "study.space.band.choices=[b15_25,b35_45]",
        "study.space.seed.choices=[0,1]",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        run_study(compose("config", overrides=overrides), overrides)
    storage = f"sqlite:///{tmp_path / 'studies' / 'bands' / 'optuna.db'}"
    study = optuna.load_study(study_name="bands", storage=storage)
    states = [t.state for t in study.get_trials()]
    # every grid point once: no point proposed twice (and skipped as a duplicate)
    assert states == [TrialState.COMPLETE] * 4
    points = sorted((t.params["band"], t.params["seed"]) for t in study.get_trials())
    assert points == [(b, s) for b in ("b15_25", "b35_45") for s in (0, 1)]
