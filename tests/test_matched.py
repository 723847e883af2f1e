"""Methods at matched cost, read back from a small rivals study that the driver really ran."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from adasparse_lab.results.collect import collect
from adasparse_lab.study.matched import collect_cells, format_matched, main, nearest
from adasparse_lab.sweep import run_study
from tests.conftest import CONF


@pytest.fixture(scope="module")
def rivals_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rivals")
    overrides = [
        "+study=rivals",
        "study.space.method.choices=[dense,random]",
        "study.space.target.choices=[t40]",
        "study.space.seed.choices=[0,1]",
        "study.n_trials=4",
        "synthetic.n_rows=20000",
        "model.hidden_dims=[32,16]",
        "flops_reference=[32,16]",
        "model.embedding_dim=8",
        "train.epochs=2",
        f"paths.studies={tmp}/studies",
        f"paths.reports={tmp}/reports",
        f"paths.cache={tmp}/cache",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        outcome = run_study(compose("config", overrides=overrides), overrides)
    return tmp, outcome


@pytest.mark.slow
def test_cells_pool_the_seeds_of_each_method(rivals_study):
    tmp, outcome = rivals_study
    info = collect(["rivals"], [outcome.storage_desc]).studies[0]
    cells = collect_cells(info, "val/flops/ratio")
    by_method = {c.method: c for c in cells}
    assert set(by_method) == {"dense", "random"}
    for cell in by_method.values():
        assert len(cell.auc) == 2  # both grid seeds
    # the values are the runs' own metrics, not recomputed ones
    client = MlflowClient(tracking_uri=outcome.study.user_attrs["mlflow_uri"])
    runs = [
        client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        for t in outcome.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs["method"] == "random"
    ]
    assert sorted(by_method["random"].auc) == sorted(m["test/mean_domain_auc"] for m in runs)
    assert by_method["dense"].cost_mean == 1.0
    assert 0.3 < by_method["random"].cost_mean < 0.6  # 40% of the neurons of each layer pruned
    assert nearest(cells, 0.5, 0.15) == {"random": by_method["random"]}
    text = format_matched(cells, (0.5, 0.8), "val/flops/ratio")
    assert f"{np.mean(by_method['random'].auc):.4f}" in text
    assert "(no method ran near this cost)" in text  # nothing near 0.8
    # random against dense, paired by the grid's seeds 0 and 1 (results/verdicts.py)
    assert by_method["random"].by_seed().keys() == by_method["dense"].by_seed().keys() == {0, 1}
    from adasparse_lab.results.verdicts import paired

    c = paired("random", by_method["random"].by_seed(), "dense", by_method["dense"].by_seed())
    assert f"random vs dense: {c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}]" in text
    assert "(2 paired seeds)" in text


@pytest.mark.slow
def test_matched_command_reads_storage(rivals_study, capsys):
    tmp, _ = rivals_study
    assert main(["study=rivals", f"studies={tmp}/studies", "at=0.5"]) == 0
    out = capsys.readouterr().out
    assert "1. random" in out and "dense model:" in out
    assert main(["study=rivals", "colour=red"]) == 2
