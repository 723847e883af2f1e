"""The report's content, read back from its HTML page (tests/report_facts.py), against the
storage it was built from: the section list (pinned in tests/fixtures/report_golden/), the
trials table, the front, the per-domain AUCs, the reference and re-evaluation means and the
hypervolume, each recomputed here from Optuna and MLflow directly. A refactor of the report
must keep every one of these facts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from adasparse_lab.metrics import safe_name
from adasparse_lab.report.build import build
from tests.report_facts import report_facts

GOLDEN = Path(__file__).parent / "fixtures" / "report_golden" / "sections.json"


@pytest.fixture(scope="module")
def facts(real_study, tmp_path_factory):
    info = build([real_study.name], [real_study.storage], tmp_path_factory.mktemp("golden"))
    return report_facts(info.path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stored(real_study):
    study = optuna.load_study(study_name=real_study.name, storage=real_study.storage)
    client = MlflowClient(real_study.mlflow_uri)
    exp = client.get_experiment_by_name(real_study.name)

    def runs(kind: str) -> list:
        found = client.search_runs([exp.experiment_id], f"tags.kind = '{kind}'", max_results=100)
        return [r for r in found if r.info.status == "FINISHED"]

    return study, client, runs


def _has(values: list[float], expected: float) -> bool:
    return any(abs(v - round(expected, 4)) <= 1.5e-4 for v in values)


@pytest.mark.slow
def test_sections_are_the_pinned_list(facts):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert facts["sections"] == golden["sections"]
    counts = {sid: len(titles) for sid, titles in facts["figure_titles"].items()}
    assert counts == golden["figures_per_section"]


@pytest.mark.slow
def test_trials_table_is_the_studys_trials(facts, stored):
    study = stored[0]
    rows = facts["trials"]
    assert [r["number"] for r in rows] == [t.number for t in study.trials]
    assert [r["state"] for r in rows] == [t.state.name for t in study.trials]
    front = sorted(r["number"] for r in rows if r["front"] == "✓")
    assert front == sorted(t.number for t in study.best_trials)
    over = sorted(r["number"] for r in rows if r["front"] == "infeasible")
    assert over == sorted(
        t.number
        for t in study.trials
        if t.state.name == "COMPLETE" and any(c > 0 for c in t.constraints.values())
    )


@pytest.mark.slow
def test_front_and_reference_in_the_pareto_figure(facts, stored):
    study, _, runs = stored
    ys = facts["figure_ys"]["pareto"]
    for t in study.best_trials:
        assert _has(ys, t.values[0]), (t.number, t.values)
    ref = np.mean([r.data.metrics["val/mean_domain_auc"] for r in runs("reference")])
    assert _has(ys, ref)
    assert any(f"{ref:.4f}" in line for line in facts["headline"]), facts["headline"]


@pytest.mark.slow
def test_per_domain_aucs_are_the_runs_metrics(facts, stored):
    study, client, runs = stored
    ys = facts["figure_ys"]["domains"]
    domains = [safe_name(d["domain"]) for d in study.user_attrs["domains"]]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    for t in complete:
        m = client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        for d in domains:
            assert _has(ys, m[f"val/auc/{d}"]), (t.number, d)
    refs = runs("reference")
    for d in domains:
        assert _has(ys, np.mean([r.data.metrics[f"val/auc/{d}"] for r in refs])), d


@pytest.mark.slow
def test_reevaluation_means_and_hypervolume(facts, stored, real_study):
    study, client, runs = stored
    by_trial: dict[int, list[float]] = {}
    for r in runs("reeval"):
        by_trial.setdefault(int(r.data.tags["trial_number"]), []).append(
            r.data.metrics["test/mean_domain_auc"]
        )
    assert by_trial and facts["headline"][-1].startswith(f"{len(by_trial)} front trial(s)")
    gain_ys = facts["figure_ys"]["gain"]
    assert gain_ys  # test AUC gains over the dense reference, per domain
    logged = client.get_metric_history(real_study.parent_run_id, "study/hypervolume")
    assert _has(facts["figure_ys"]["search"], logged[-1].value)
    titles = " ".join(facts["headings"]["search"])
    assert "hypervolume history" in titles
