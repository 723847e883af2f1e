"""Reading a study back (results.collect) from what the driver really stored: the tiny study of
conftest.real_study, run by ``adasparse_lab.sweep.run_study``. Every expectation is read
independently from Optuna (``study.best_trials``, trial attrs) and MLflow (``get_run``)."""

from __future__ import annotations

import numpy as np
import optuna
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from optuna._hypervolume import compute_hypervolume

from adasparse_lab.metrics import safe_name
from adasparse_lab.report.diagnostics import diagnostics
from adasparse_lab.report.figures import pareto_figure
from adasparse_lab.results.collect import collect
from adasparse_lab.store.reader import objectives
from tests.conftest import FAILING_METHOD


@pytest.fixture(scope="module")
def stored(real_study):
    """The report's tables, the Optuna study and an MLflow client, each opened on its own."""
    data = collect([real_study.name], [real_study.storage])
    study = optuna.load_study(study_name=real_study.name, storage=real_study.storage)
    return data, study, MlflowClient(real_study.mlflow_uri)


def _runs(client: MlflowClient, real_study, kind: str) -> list:
    exp = client.get_experiment_by_name(real_study.name)
    return client.search_runs([exp.experiment_id], f"tags.kind = '{kind}'", max_results=100)


def test_front_is_the_studys_feasible_front(stored):
    """The report's front: Optuna's own Pareto front (non-dominated COMPLETE trials that meet
    study.flops_budget); the fixture's fusion trial is over the budget, so it is left out."""
    data, study, _ = stored
    front = sorted(data.trials.filter(pl.col("on_front"))["number"].to_list())
    assert front == sorted(t.number for t in study.best_trials)
    over = [t.number for t in study.trials if t.constraints.get("flops_budget", 0) > 0]
    assert over and not set(over) & set(front)  # the fixture has an infeasible trial


def test_driver_pareto_table_is_the_front(stored, real_study):
    """The table the sweep prints and logs (pareto.csv) lists the same front as the report."""
    data, study, _ = stored
    table = pl.read_csv(real_study.root / real_study.name / "pareto.csv")
    assert sorted(table["trial"]) == sorted(t.number for t in study.best_trials)
    assert sorted(table["trial"]) == sorted(data.trials.filter(pl.col("on_front"))["number"])


def test_trials_carry_optuna_values_and_states(stored):
    data, study, _ = stored
    t = data.trials.sort("number")
    assert t["number"].to_list() == [x.number for x in study.trials]
    assert t["state"].to_list() == [x.state.name for x in study.trials]
    counts = dict(zip(*np.unique(t["state"].to_numpy(), return_counts=True)))
    assert counts == {"COMPLETE": 4, "FAIL": 1, "RUNNING": 1}
    for x in study.trials:
        row = t.row(x.number, named=True)
        if x.state.name == "COMPLETE":
            assert (row["auc"], row["flops_ratio"]) == pytest.approx(tuple(x.values))
            assert row["run_id"] == x.user_attrs["mlflow_run_id"]
            assert row["duration_s"] == pytest.approx(x.user_attrs["duration_s"])
    failed = t.filter(pl.col("state") == "FAIL").row(0, named=True)
    assert failed["fail_reason"] == "RuntimeError: injected failure"
    assert {"param:method", "param:target", "obj:val/flops/ratio"} <= set(t.columns)


def test_methods_are_named_from_the_runs(stored, real_study):
    """Each trial's method is the one its MLflow run is tagged with; the reference is 'dense'."""
    data, study, client = stored
    tags = {
        int(r.data.tags["trial_number"]): r.data.tags["method"]
        for r in _runs(client, real_study, "trial")
    }
    methods = dict(zip(data.trials["number"], data.trials["method"]))
    assert {n: methods[n] for n in tags} == tags
    assert set(tags.values()) == {
        "adasparse-fusion",
        "adasparse-fusion-domain",
        "magnitude",
        FAILING_METHOD,
    }
    assert all(r.data.tags["method"] == "dense" for r in _runs(client, real_study, "reference"))


def test_per_domain_values_are_the_runs_metrics(stored, real_study):
    """Every per-domain number (trials, re-evaluations, reference) equals the MLflow metric
    of that name of its run, for every domain of the study, and every finished run is there."""
    data, study, client = stored
    domains = [d["domain"] for d in study.user_attrs["domains"]]
    assert data.domains["domain"].to_list() == domains
    finished = {
        r.info.run_id: r.data.metrics
        for kind in ("trial", "reeval", "reference")
        for r in _runs(client, real_study, kind)
        if r.info.status == "FINISHED"
    }
    rows = data.domain_metrics.filter(pl.col("run_id").is_in(list(finished)))
    assert rows.group_by("run_id").len().height == len(finished)
    for r in rows.iter_rows(named=True):
        m, d = finished[r["run_id"]], safe_name(r["domain"])
        assert r["val_auc"] == pytest.approx(m[f"val/auc/{d}"])
        assert r["test_auc"] == pytest.approx(m[f"test/auc/{d}"])
        assert r["flops_ratio"] == pytest.approx(m[f"val/flops_ratio/{d}"])
        sparsity = m.get(f"val/sparsity/{d}/overall")  # the dense reference logs none
        assert r["sparsity"] == (None if sparsity is None else pytest.approx(sparsity))
    assert rows.height == len(finished) * len(domains)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    for t in complete:
        m = finished[t.user_attrs["mlflow_run_id"]]
        layers = data.layer_sparsity.filter(pl.col("number") == t.number)
        assert layers.height == len(domains) * 2  # one per domain and hidden layer
        for r in layers.iter_rows(named=True):
            key = f"val/sparsity/{safe_name(r['domain'])}/l{r['position']}"
            assert r["sparsity"] == pytest.approx(m[key])


def test_reference_and_reevaluations_are_the_stored_runs(stored, real_study):
    """The dense reference is the mean of its runs (study seed and re-evaluation seed); the
    re-evaluated trials are those the driver re-ran, with their test AUC."""
    data, study, client = stored
    refs = [r for r in _runs(client, real_study, "reference") if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["seed"] for r in refs) == ["0", "1"]
    ref = data.reference.row(0, named=True)
    for col, key in [("auc", "val/mean_domain_auc"), ("test_auc", "test/mean_domain_auc")]:
        assert ref[col] == pytest.approx(np.mean([r.data.metrics[key] for r in refs]))
    assert ref["flops_ratio"] == pytest.approx(1.0) and ref["n_seeds"] == 2
    reevals = _runs(client, real_study, "reeval")
    by_trial = {
        int(r.data.tags["trial_number"]): r.data.metrics["test/mean_domain_auc"] for r in reevals
    }
    assert sorted(by_trial) == sorted(
        t.number for t in study.best_trials
    )  # the front, <= max_trials
    got = dict(zip(data.reeval["number"], data.reeval["test_auc_mean"]))
    assert got == pytest.approx(by_trial) and (data.reeval["n_seeds"] == 1).all()


def test_pareto_figure_draws_the_front_and_the_reference_star(stored):
    data, study, _ = stored
    fig = pareto_figure(data.trials, data.reference, data.reeval)
    star = next(tr for tr in fig.data if tr.marker.symbol == "star")
    ref = data.reference.row(0, named=True)
    assert star.x[0] == pytest.approx(ref["flops_ratio"], abs=5e-5)
    assert star.y[0] == pytest.approx(ref["auc"], abs=5e-5)
    line = next(tr for tr in fig.data if tr.name == "front")
    front = sorted((t.values[1], t.values[0]) for t in study.best_trials)
    assert list(line.x) == pytest.approx([x for x, _ in front], abs=5e-5)
    assert list(line.y) == pytest.approx([y for _, y in front], abs=5e-5)


def test_structure_is_read_for_front_trials(stored):
    data, study, _ = stored
    assert sorted(data.keep["number"].unique()) == sorted(t.number for t in study.best_trials)
    k = len(study.user_attrs["domains"])
    assert (
        data.keep.group_by("number").len()["len"].to_list()
        == [k * (16 + 8)] * data.keep["number"].n_unique()
    )


def test_report_hypervolume_is_the_logged_one(stored, real_study):
    """One hypervolume: the report's history ends at the value the driver logged to MLflow
    (``study/hypervolume``), and both equal Optuna's own computation over the feasible
    COMPLETE trials against the configured reference point (conf/study/base.yaml)."""
    _, study, client = stored
    configured = [0.5, 3.0]
    assert study.user_attrs.get("hypervolume_reference") == configured, sorted(study.user_attrs)
    parent = client.get_run(real_study.parent_run_id).data
    assert parent.params["hypervolume_reference"] == str(configured)
    logged = client.get_metric_history(real_study.parent_run_id, "study/hypervolume")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert [m.step for m in logged] == [t.number for t in complete]
    drawn = next(d for d in diagnostics(study, objectives(study)) if "hypervolume" in d.title)
    assert "[0.5, 3.0]" in drawn.title and "configured" in drawn.title
    assert list(drawn.figure.data[0].x) == [m.step for m in logged]
    assert list(drawn.figure.data[0].y) == pytest.approx([m.value for m in logged])
    ok = [t.values for t in complete if all(c <= 0 for c in t.constraints.values())]
    assert len(ok) < len(complete)  # the infeasible trial must not count
    expected = compute_hypervolume(np.array(ok) * [-1, 1], np.array([-0.5, 3.0]))
    assert logged[-1].value == pytest.approx(expected) and expected > 0


def test_domains_of_a_study_without_the_domains_attr(real_study, tmp_path):
    """Older studies stored no domain table: it is read from a run's domains.csv, whose
    train positive rate is ``train_pos_rate`` (the run table names each rate by its split)."""
    copy = f"sqlite:///{tmp_path}/copy.db"
    optuna.copy_study(
        from_study_name=real_study.name,
        from_storage=real_study.storage,
        to_storage=copy,
        to_study_name=real_study.name,
    )
    study = optuna.load_study(study_name=real_study.name, storage=copy)
    expected = pl.DataFrame(study.user_attrs["domains"]).select("domain", "train_rows", "pos_rate")
    study.set_user_attr("domains", None)
    got = collect([real_study.name], [copy]).domains
    assert got["domain"].to_list() == expected["domain"].to_list()
    assert got["train_rows"].to_list() == expected["train_rows"].to_list()
    assert got["pos_rate"].null_count() == 0
    assert got["pos_rate"].to_list() == pytest.approx(expected["pos_rate"].to_list(), abs=1e-6)


def test_legacy_study_without_method_names():
    """Hand-written storage, because the driver no longer writes this case: a study from before
    trials recorded their ``method`` (user attr and MLflow tag). Methods then come from the
    pruner form and inputs the trials did record."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        study_name="legacy", storage=storage, directions=["maximize", "minimize"]
    )
    for form, inputs, values in [
        ("fusion", "hidden+domain", [0.7, 0.9]),
        ("scaling", "domain", [0.69, 0.5]),
        ("none", None, [0.68, 1.0]),
    ]:
        study.add_trial(
            optuna.trial.create_trial(
                values=values, user_attrs={"pruner_form": form, "pruner_inputs": inputs}
            )
        )
    data = collect(["legacy"], [storage])
    assert data.trials["method"].to_list() == [
        "adasparse-fusion",
        "adasparse-scaling-domain",
        "dense",
    ]
