"""Every shipped study composes with every kind of data config, not only the synthetic one:
its first trial runs on the real Douban sample and on a user's own CSV (data=tabular)."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.study.driver import StudyRunner
from tests.conftest import CONF, FIXTURES, compose_config

STUDIES = sorted(p.stem for p in (CONF / "study").glob("*.yaml") if p.stem != "base")


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One MLflow store for the module: its schema is created once, not once per study."""
    return tmp_path_factory.mktemp("study-data")


def tabular_csv(folder: Path) -> Path:
    """The Douban sample under the column names a user might have (click, scenario, ...)."""
    path = folder / "my_log.csv"
    if not path.exists():
        frame = pl.read_csv(FIXTURES / "douban" / "douban.csv")
        frame.rename({"rating": "click", "domain": "scenario", "user_id": "user"}).write_csv(path)
    return path


def data_overrides(data: str, folder: Path) -> list[str]:
    if data == "douban":
        return ["data=douban", f"paths.data={FIXTURES}"]
    return [
        "data=tabular",
        f"data.source.path={tabular_csv(folder)}",
        "data.schema.label=click",
        "data.schema.domain=scenario",
        "data.schema.categorical=[user,item_id,scenario,time_bin]",
        "data.schema.user=user",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["douban", "tabular"])
@pytest.mark.parametrize("study", STUDIES)
def test_first_trial_of_every_study_runs_on_real_data(shared, study, data):
    name = f"{study}-{data}"
    overrides = [
        f"+study={study}",
        *data_overrides(data, shared),
        f"study.name={name}",
        "study.n_trials=1",
        "++study.trials_per_method=null",  # the comparison study as a plain one: one trial
        "study.reference=false",
        "study.reeval.max_trials=0",
        "train.epochs=1",
        f"paths.studies={shared}/studies",
        f"paths.cache={shared}/cache",
        f"paths.reports={shared}/reports",
        f"tracking.uri=sqlite:///{shared}/mlflow.db",
        f"tracking.artifact_root={shared}/mlartifacts",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        runner = StudyRunner(base, lambda extra: compose("config", overrides=[*overrides, *extra]))
        runner.validate()
        outcome = runner.run()
    trials = outcome.study.get_trials(deepcopy=False)
    # the first trial completes; a study's enqueued warm-start points may still wait
    assert trials[0].state == TrialState.COMPLETE
    assert all(t.state == TrialState.WAITING for t in trials[1:])
    auc, flops_ratio = trials[0].values  # 1 epoch on 2,100 rows: any finite AUC will do
    assert math.isfinite(auc) and 0.0 < auc < 1.0
    assert math.isfinite(flops_ratio) and flops_ratio > 0.0
    domains = [d["domain"] for d in outcome.study.user_attrs["domains"]]
    assert domains == ["book", "movie", "music"]


def test_study_sizes_reach_the_synthetic_source_and_the_command_line_wins(tmp_path):
    quick = compose_config(["+study=quick"], tmp_path, tiny=False).data.source
    assert (quick.n_rows, quick.n_users, quick.n_items) == (20_000, 500, 300)
    sparsity = compose_config(["+study=sparsity"], tmp_path, tiny=False).data.source
    assert (sparsity.n_rows, sparsity.n_users) == (200_000, 5_000)  # base.yaml; default users
    cli = compose_config(["+study=quick", "data.source.n_rows=3000"], tmp_path, tiny=False)
    assert cli.data.source.n_rows == 3000
    douban = compose_config(["+study=quick", "data=douban"], tmp_path, tiny=False)
    assert "n_rows" not in douban.data.source and douban.synthetic.n_rows == 20_000
