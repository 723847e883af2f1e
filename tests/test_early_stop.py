"""Early stopping of multi-objective studies (study/early_stop.py, MO-ASHA): the ranking, the
rungs of the fit loop, and real studies that stop trials, on one storage and resumed."""

from __future__ import annotations

import random
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.errors import ConfigError
from adasparse_lab.run.fit import Rung, TrainSettings, fit
from adasparse_lab.sparsity import LinearBand, SparsityRegularizer
from adasparse_lab.study import early_stop
from adasparse_lab.study.early_stop import (
    EarlyStop,
    RungJudge,
    crowding,
    decide,
    front_ranks,
    parse_early_stop,
)
from adasparse_lab.study.settings import parse_settings
from tests.conftest import CONF, TINY_RUN

AUC_FLOPS = ["maximize", "minimize"]


# -- the ranking -----------------------------------------------------------------------------
def test_front_ranks_and_crowding_of_known_points():
    points = np.array([[1, 4], [2, 2], [4, 1], [3, 3], [5, 5]], float)  # minimised
    assert front_ranks(points).tolist() == [0, 0, 0, 1, 2]
    dist = crowding(points[:3])
    assert np.isinf(dist[0]) and np.isinf(dist[2]) and dist[1] == pytest.approx(2.0)


def test_a_trial_dominated_at_a_rung_stops():
    # trial 1 has a lower AUC and a higher cost than trial 0: dominated, one of two goes on
    decision = decide({0: [0.70, 0.5], 1: [0.68, 0.6]}, 1, AUC_FLOPS, eta=3)
    assert not decision.go_on and decision.position == 1 and decision.n == 2
    assert decide({0: [0.70, 0.5], 1: [0.68, 0.6]}, 0, AUC_FLOPS, eta=3).go_on


def test_the_top_fraction_goes_on_and_the_rest_stops():
    # nine trials on one line of decreasing quality: the top 9 // 3 = 3 go on
    records = {k: [0.80 - 0.01 * k, 0.2 + 0.05 * k] for k in range(9)}
    go_on = [decide(records, k, AUC_FLOPS, eta=3).go_on for k in range(9)]
    assert go_on == [True, True, True] + [False] * 6


def test_a_tie_on_an_objective_exempts_one_trial_not_all():
    """Every trial at one cost (the masks not yet moved): the cost does not keep them all."""
    records = {k: [0.80 - 0.01 * k, 0.3] for k in range(6)}
    go_on = [decide(records, k, AUC_FLOPS, eta=3).go_on for k in range(6)]
    assert go_on == [True, True, False, False, False, False]


def test_the_best_trial_at_a_rung_is_never_stopped():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        records = {k: [rng.uniform(0.5, 0.8), rng.uniform(0.1, 1.0)] for k in range(n)}
        best_auc = max(records, key=lambda k: records[k][0])
        cheapest = min(records, key=lambda k: records[k][1])
        for k in (best_auc, cheapest):
            assert decide(records, k, AUC_FLOPS, eta=rng.choice([2, 3, 4])).go_on


def test_the_decision_depends_on_the_records_only_not_their_order():
    """Any worker that reads the same records decides the same (the records come from storage
    in any order)."""
    rng = random.Random(1)
    records = {k: [rng.uniform(0.5, 0.8), rng.uniform(0.1, 1.0)] for k in range(12)}
    shuffled = dict(rng.sample(sorted(records.items()), len(records)))
    for k in records:
        assert decide(records, k, AUC_FLOPS, 3) == decide(shuffled, k, AUC_FLOPS, 3)


def test_rungs_and_bad_settings_name_the_key():
    assert EarlyStop("moasha", 3, 1 / 9).fractions == (0.1111, 0.3333)
    assert EarlyStop("moasha", 2, 0.25).fractions == (0.25, 0.5)
    assert EarlyStop("none").fractions == ()
    for raw, key in [
        ({"kind": "asha"}, "study.early_stop.kind"),
        ({"kind": "moasha", "eta": 1}, "study.early_stop.eta"),
        ({"kind": "moasha", "min_fraction": 1.5}, "study.early_stop.min_fraction"),
        ({"kind": "moasha", "rungs": 3}, "study.early_stop: unknown key"),
        ({"kind": "moasha", "budget": "epochs"}, "study.early_stop.budget"),
    ]:
        with pytest.raises(ConfigError, match=key):
            parse_early_stop(raw)


def _told(study, values=None, pruned_at=None):
    trial = study.ask()
    if pruned_at is None:
        study.tell(trial, values)
    else:
        trial.set_user_attr("pruned_at", pruned_at)
        study.tell(trial, state=TrialState.PRUNED)


def test_a_budget_in_rows_counts_a_stopped_trial_by_the_share_it_trained():
    study = optuna.create_study(directions=AUC_FLOPS)
    _told(study, [0.7, 0.5])
    _told(study, pruned_at=0.037)
    _told(study, pruned_at=0.3333)
    _told(study, [0.72, 0.4])
    failed = study.ask()
    study.tell(failed, state=TrialState.FAIL)  # a failed trial spends nothing
    running = study.ask()  # nor one still running
    trials = study.get_trials()
    rows = EarlyStop("moasha", budget="rows")
    assert rows.spent(trials) == pytest.approx(2 + 1 / 27 + 1 / 3)  # the rungs' exact shares
    assert EarlyStop("moasha").spent(trials) == 2  # budget=complete: COMPLETE trials only
    assert EarlyStop("none", budget="rows").spent(trials) == 2  # no early stopping, no rungs
    # below a trial number: what the trials before it spent (the surplus check of workers)
    assert rows.spent(trials, below=3) == pytest.approx(1 + 1 / 27 + 1 / 3)
    assert running.number == 5 and rows.spent(trials, below=running.number) == rows.spent(trials)


def test_stopped_trials_that_trained_a_whole_trials_rows_spend_a_whole_trial():
    """The stored rung (0.3333, 0.037) is rounded; three trials stopped at 1/3 spend one trial,
    not 0.9999 (a main study ran one trial past its budget: 20 shown, 19.99 counted)."""
    rows = EarlyStop("moasha", budget="rows")
    study = optuna.create_study(directions=AUC_FLOPS)
    for _ in range(3):
        _told(study, pruned_at=0.3333)
    for _ in range(27):
        _told(study, pruned_at=0.037)
    assert rows.spent(study.get_trials(), below=3) >= 1
    assert rows.spent(study.get_trials()) >= 2
    # as conf/study/base.yaml writes 1/27 (0.037037): still whole trials (the main study ran
    # trial 54 at "20/20 spent" with the shares of 0.037037 x 3^k)
    shipped = EarlyStop("moasha", eta=3, min_fraction=0.037037, budget="rows")
    for _ in range(9):
        _told(study, pruned_at=0.1111)
    assert shipped.spent(study.get_trials()) >= 3
    assert shipped.spent(study.get_trials(), below=3) >= 1
    # a rung of other settings (changed on resume) counts as the fraction it stands for
    other = EarlyStop("moasha", eta=2, min_fraction=0.25, budget="rows")
    assert other.spent(study.get_trials(), below=3) == 1.0  # 3 x 0.3333, i.e. 3 x 1/3


def test_the_progress_line_of_a_budget_in_rows_shows_what_is_spent():
    from adasparse_lab.study.progress import Progress

    study = optuna.create_study(directions=AUC_FLOPS)
    _told(study, [0.7, 0.5])
    _told(study, pruned_at=0.5)
    progress = Progress(4, AUC_FLOPS, [0.5, 3.0], EarlyStop("moasha", budget="rows"))
    line = progress.line(study.get_trials(), 1)
    assert line.startswith("trial 1 PRUNED at 0.5 of its rows · 1 complete, 1 stopped · ")
    assert "budget 1.5/4 trials' rows" in line and "about " in line


def test_the_shipped_studies_parse_their_early_stop_setting():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+study=sparsity"])
    assert parse_settings(cfg.study).early_stop.kind in early_stop.KINDS


# -- the fit loop's rungs ----------------------------------------------------------------------
def _model(data):
    """The paper-form AdaSparse of conf/ (fusion gate) on the tiny tower [32, 16]."""
    import torch

    from adasparse_lab.run.build import build_components, build_model
    from tests.conftest import compose_config

    cfg = compose_config(["tracking=none", "pruner=fusion"], Path("/nonexistent"))
    torch.manual_seed(0)
    return build_model(cfg.model, data, build_components(cfg).pruner, cfg.flops_reference)


def _fit(data, rungs=(), on_rung=None, schedule=None):
    model = _model(data)
    settings = TrainSettings(epochs=2, batch_size=512, seed=0, progress=False)
    schedule = schedule or LinearBand(r_min=0.4, r_max=0.5)
    fitted = fit(
        model, data, settings, SparsityRegularizer(), schedule, rungs=rungs, on_rung=on_rung
    )
    return model, fitted


def test_rungs_see_the_rows_they_promise_and_change_nothing(tiny_data):
    seen: list[Rung] = []
    model, fitted = _fit(tiny_data, rungs=(1 / 9, 1 / 3), on_rung=seen.append)
    plain_model, plain = _fit(tiny_data)
    total = 2 * len(tiny_data.splits["train"])
    assert [r.index for r in seen] == [0, 1]
    for r in seen:  # the first step at or past the fraction of the budget
        assert r.fraction * total <= r.rows < r.fraction * total + 512
        assert 0.5 < r.val["val/mean_domain_auc"] < 1.0
    # validating at a rung moves neither the weights nor the batch order
    assert [h.val for h in fitted.history] == [h.val for h in plain.history]
    for (k, a), b in zip(model.state_dict().items(), plain_model.state_dict().values()):
        assert (a == b).all(), k


def test_the_projected_cost_is_the_final_bands_not_the_dense_start(tiny_data):
    seen: list[Rung] = []
    _fit(tiny_data, rungs=(0.1, 0.9), on_rung=seen.append)
    early, late = seen
    # early the masks keep nearly everything: the measured cost overstates the final one
    assert early.projected_flops_ratio < early.val["val/flops/ratio"] - 0.01
    # the projection is never above what the trial measures
    assert late.projected_flops_ratio <= late.val["val/flops/ratio"]


def test_the_projection_counts_the_final_bands_share_of_each_layer(tiny_data):
    """An independent count (ADASPARSE.md's rules for the paper form: every output of a masked
    layer is computed, the next layer reads only the kept ones; each pruner costs
    2 (H + d_e) H + H) with 1 - r_min = 60% of each hidden layer kept."""
    from adasparse_lab.run.evaluation import evaluate
    from adasparse_lab.run.fit import _start, projected_flops_ratio

    model = _model(tiny_data)
    settings = TrainSettings(epochs=1, batch_size=512, seed=0, progress=False)
    loop = _start(model, tiny_data, settings, SparsityRegularizer(), LinearBand(0.4, 0.5))
    val = evaluate(model, tiny_data, "val")
    shape = model.tower_shape()
    h0, h1, h2 = shape.widths
    assert shape.masked == [1, 2] and shape.sample_dependent
    k1, k2 = round(h1 * 0.6), round(h2 * 0.6)
    matmul = 2 * h0 * h1 + 2 * k1 * h2 + 2 * k2 * 1
    bias = h1 + h2 + 1
    d_e = shape.pruner_in_domain_dim
    pruners = sum(2 * (h + d_e) * h + h for h in (h1, h2))
    expected = (matmul + bias + pruners) / val.flops.dense
    assert expected < val.flops.ratio  # a fresh model keeps every neuron: measured is dense
    assert projected_flops_ratio(loop, val) == pytest.approx(expected, rel=1e-9)


# -- the study's side ----------------------------------------------------------------------------
class _Rung:
    def __init__(self, fraction, auc, flops):
        self.fraction, self.rows = fraction, 100
        self.val = {"val/mean_domain_auc": auc, "val/flops/ratio": 9.0}
        self.projected_flops_ratio = flops
        self.index = 0


def test_a_judge_ranks_on_the_projected_cost_and_two_handles_decide_alike(tmp_path):
    """Two workers (two study handles on one storage file) read the same records and make the
    same decision; the cost a rung ranks on is the projected one, not the measured 9.0."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    a = optuna.create_study(storage=url, study_name="s", directions=AUC_FLOPS)
    b = optuna.load_study(storage=url, study_name="s")
    metrics = ["val/mean_domain_auc", "val/flops/ratio"]
    t0, t1 = a.ask(), a.ask()
    RungJudge(a, t0, metrics, AUC_FLOPS, 3)(_Rung(0.25, 0.70, 0.5))
    with pytest.raises(early_stop.TrialStopped, match=r"ranked 2 of 2"):
        RungJudge(a, t1, metrics, AUC_FLOPS, 3)(_Rung(0.25, 0.69, 0.6))
    stored = {t.number: t.user_attrs for t in b.get_trials()}
    assert stored[0]["rung@0.25"]["values"] == [0.70, 0.5]
    assert stored[1]["rung@0.25/decision"] == {"go_on": False, "position": 1, "n": 2}
    records = early_stop.records_at(b.get_trials(), 0.25)
    assert decide(records, 1, AUC_FLOPS, 3).go_on is False


def _run_study(tmp_path, name, extra=()):
    """Run a tiny study with early stopping (rung at half the rows, eta 2) to its end."""
    overrides = [
        "+study=quick", f"study.name={name}", "study.n_trials=2", "study.reference=false",
        "study.reeval.max_trials=0", "study.poll_s=0.1", "study.early_stop.kind=moasha",
        "study.early_stop.eta=2", "study.early_stop.min_fraction=0.5", "synthetic.n_rows=6000",
        *TINY_RUN, "train.epochs=2",
        f"paths.studies={tmp_path}/studies", f"paths.reports={tmp_path}/reports",
        f"paths.cache={tmp_path}/cache", *extra,
    ]  # fmt: skip
    from adasparse_lab.study.driver import StudyRunner

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        runner = StudyRunner(base, lambda more: compose("config", overrides=[*overrides, *more]))
        return runner.run()


@pytest.mark.slow
def test_a_study_stops_a_dominated_trial_at_its_rung_and_resumes_with_its_records(
    tmp_path, monkeypatch
):
    """A record that dominates every real trial (AUC 0.99 at no cost) is planted at the rung:
    the first trial ranks second of two and stops there, PRUNED in Optuna and KILLED in MLflow
    with its rung; the study still ends with its budget of COMPLETE trials; a resumed study
    ranks its new trials against every stored record."""
    real = early_stop.records_at

    def planted(trials, fraction):
        return real(trials, fraction) | {-1: [0.99, 0.0]}

    monkeypatch.setattr(early_stop, "records_at", planted)
    outcome = _run_study(tmp_path, "es")
    trials = outcome.study.get_trials()
    first = trials[0]
    assert first.state == TrialState.PRUNED
    assert first.user_attrs["pruned_at"] == 0.5
    assert first.user_attrs["rung@0.5/decision"] == {"go_on": False, "position": 1, "n": 2}
    assert "stopped at 0.5 of its rows" in first.user_attrs["pruned_reason"]
    assert first.user_attrs["cpu_s"] > 0
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    run = mlflow.MlflowClient(outcome.tracker.uri).get_run(first.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["pruned_at"] == "0.5"
    assert run.data.metrics["rung/val/mean_domain_auc"] == first.user_attrs["rung@0.5"]["values"][0]
    # the report and the stored study say why it stopped
    from adasparse_lab.store.reader import trials_table

    table = trials_table("es", outcome.study)
    assert "ranked 2 of 2" in table.filter(table["number"] == 0)["fail_reason"][0]
    # resume with a larger budget: the new trials see the earlier records at the rung
    before = len(early_stop.records_at(trials, 0.5))
    resumed = _run_study(tmp_path, "es", ["study.n_trials=3"]).study.get_trials()
    later = [t for t in resumed if t.number >= len(trials) and "rung@0.5/decision" in t.user_attrs]
    assert later and later[0].user_attrs["rung@0.5/decision"]["n"] == before + 1  # + its own


@pytest.mark.slow
def test_a_study_with_a_budget_in_rows_ends_when_its_trials_rows_reach_it(tmp_path, monkeypatch):
    """study.early_stop.budget=rows: a trial stopped at half its rows spends half a trial, so
    the study samples on until COMPLETE trials plus stopped shares reach study.n_trials, and
    not one trial past it."""
    real = early_stop.records_at
    monkeypatch.setattr(
        early_stop, "records_at", lambda trials, f: real(trials, f) | {-1: [0.99, 0.0]}
    )
    outcome = _run_study(tmp_path, "es_rows", ["study.early_stop.budget=rows"])
    trials = outcome.study.get_trials()
    states = [t.state for t in trials]
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert TrialState.PRUNED in states  # the planted record stops the first trial
    spent = [1.0 if t.state == TrialState.COMPLETE else t.user_attrs["pruned_at"] for t in trials]
    assert sum(spent) >= 2 and sum(spent[:-1]) < 2  # it stopped as soon as the budget was spent
    assert states.count(TrialState.COMPLETE) < 2  # fewer COMPLETE trials than budget=complete
    assert outcome.done
