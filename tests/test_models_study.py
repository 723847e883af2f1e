"""+study=models with ``reeval.select=per_method``: every model's best trial is re-trained on
test over seeds (not only the front), and ``matched per_method=true`` reads them back."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from adasparse_lab.errors import ConfigError
from adasparse_lab.results.collect import collect
from adasparse_lab.study.matched import collect_cells, format_per_method, per_method
from adasparse_lab.study.settings import parse_settings
from adasparse_lab.sweep import run_study
from tests.conftest import CONF

CHOICES = ["mlp_narrow", "shared_bottom_narrow", "apg_r4"]


@pytest.fixture(scope="module")
def models_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    overrides = [
        "+study=models",
        f"study.space.method.choices=[{','.join(CHOICES)}]",
        "study.n_trials=3",
        "study.reeval.seeds=[1]",
        "study.reeval.max_trials=1",  # the front alone would leave models without a second seed
        "synthetic.n_rows=8000",
        "model.embedding_dim=4",
        "train.epochs=1",
        "latency.enabled=false",
        f"paths.studies={tmp}/studies",
        f"paths.reports={tmp}/reports",
        f"paths.cache={tmp}/cache",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        outcome = run_study(compose("config", overrides=overrides), overrides)
    return outcome


@pytest.mark.slow
def test_every_model_is_reevaluated_and_its_table_pools_the_seeds(models_study):
    study, tracker = models_study.study, models_study.tracker
    client = MlflowClient(tracker.uri)
    runs = client.search_runs([tracker.experiment_id], "tags.kind = 'reeval'")
    reevaluated = {int(r.data.tags["trial_number"]) for r in runs}
    trials = study.get_trials()
    assert reevaluated == {t.number for t in trials}  # one trial per model: each one's best
    info = collect([study.study_name], [models_study.storage_desc]).studies[0]
    cells = collect_cells(info, "val/flops/ratio")
    chosen = per_method(cells)
    assert sorted(c.method for c in chosen) == sorted({t.user_attrs["method"] for t in trials})
    for cell in chosen:
        (trial,) = [t for t in trials if t.user_attrs["method"] == cell.method]
        seed_runs = [client.get_run(trial.user_attrs["mlflow_run_id"])] + [
            r for r in runs if int(r.data.tags["trial_number"]) == trial.number
        ]
        expected = [r.data.metrics["test/mean_domain_auc"] for r in seed_runs]
        assert sorted(cell.auc) == pytest.approx(sorted(expected))
        d00 = [r.data.metrics["test/auc/d00"] for r in seed_runs]
        assert sorted(cell.domains["d00"]) == pytest.approx(sorted(d00))
    table = format_per_method(cells, "val/flops/ratio")
    first = chosen[0]
    sd = np.std(first.auc, ddof=1)
    assert (
        f"| {first.method} | {first.cost_mean:.3f} | {np.mean(first.auc):.4f} ± {sd:.4f} | 2 |"
        in table
    )


def test_reeval_select_is_checked():
    node = OmegaConf.create(
        {
            "name": "x",
            "n_trials": 1,
            "objectives": [{"metric": "val/mean_domain_auc", "direction": "maximize"}],
            "space": {},
            "reeval": {"select": "everything"},
        }
    )
    with pytest.raises(ConfigError, match="study.reeval.select"):
        parse_settings(node)
