"""A study's Pareto front (results.front.pareto_front): one definition, in the study's own
objectives and directions, that the driver's printed table, pareto.csv, the report's trials
table (``on_front``) and the export all show."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import optuna
import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.results.collect import collect
from adasparse_lab.results.front import pareto_front
from adasparse_lab.results.fronts import mark_front
from adasparse_lab.sweep import run_study
from tests.conftest import CONF, TINY_RUN

LATENCY_OBJECTIVES = (
    "study.objectives=[{metric:val/mean_domain_auc,direction:maximize},"
    "{metric:val/latency/ratio,direction:minimize}]"
)


def printed_front(printed: str) -> list[int]:
    """Trial numbers of the driver's printed Pareto table (study.finish)."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Pareto front"))
    numbers = []
    for line in lines[start + 3 :]:  # title, header, rule
        if not line.strip() or not line.split()[0].isdigit():
            break
        numbers.append(int(line.split()[0]))
    return numbers


@pytest.mark.slow
def test_a_latency_study_shows_one_front_in_the_table_the_csv_and_the_report(tmp_path):
    """(max val AUC, min measured latency ratio): the FLOPs ratio is no objective, so a front
    drawn from (AUC, FLOPs) would differ from the study's own."""
    overrides = [
        "+study=quick",
        "study.n_trials=6",
        "study.sampler.n_startup_trials=6",
        "study.reference=false",
        "study.reeval.max_trials=0",
        "study.poll_s=0.1",
        LATENCY_OBJECTIVES,
        "synthetic.n_rows=6000",
        *TINY_RUN,
        f"paths.studies={tmp_path}/studies",
        f"paths.reports={tmp_path}/reports",
        f"paths.cache={tmp_path}/cache",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        with redirect_stdout(io.StringIO()) as printed:
            outcome = run_study(base, overrides)
    study = outcome.study
    optuna_front = sorted(t.number for t in study.best_trials)  # Optuna's own definition
    table = printed_front(printed.getvalue())
    csv = pl.read_csv(tmp_path / "studies" / "quick" / "pareto.csv")["trial"].to_list()
    data = collect(["quick"], [outcome.storage_desc])
    report = data.trials.filter(pl.col("on_front"))["number"].to_list()
    assert sorted(table) == sorted(csv) == sorted(report) == optuna_front
    assert "obj:val/latency/ratio" in data.trials.columns


def _trial(number, values, state=TrialState.COMPLETE, over_budget=None):
    attrs = {} if over_budget is None else {"constraints:flops_budget": over_budget}
    t = optuna.trial.create_trial(state=state, values=values, system_attrs=attrs)
    t.number = number
    return t


def test_pareto_front_keeps_complete_feasible_non_dominated_trials():
    """Three objectives (max, min, min): the failed trial and the infeasible one are never on
    it whatever their values; the dominated one is left out; ties are kept."""
    trials = [
        _trial(0, [0.80, 1.0, 0.5]),
        _trial(1, [0.79, 0.9, 0.6]),
        _trial(2, [0.78, 1.1, 0.7]),  # dominated by 0
        _trial(3, [0.99, 0.1, 0.1], over_budget=0.5),  # infeasible
        _trial(4, None, state=TrialState.FAIL),
        _trial(5, [0.80, 1.0, 0.5]),  # a tie with 0
    ]
    front = pareto_front(trials, ["maximize", "minimize", "minimize"])
    assert [t.number for t in front] == [0, 1, 5]
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.add_trials([t for t in trials if t.number != 3])  # Optuna's front (no constraints)
    assert sorted(t.values for t in study.best_trials) == sorted(t.values for t in front)


def test_mark_front_uses_the_study_objectives():
    """A table with the study's objective columns: the front is drawn in them, not in the
    report's (AUC, FLOPs) axes."""
    table = pl.DataFrame(
        {
            "study": ["s"] * 4,
            "number": [0, 1, 2, 3],
            "state": ["COMPLETE"] * 4,
            "feasible": [True] * 4,
            "auc": [0.80, 0.79, 0.78, 0.70],
            "flops_ratio": [1.0, 0.5, 0.6, 0.9],
            "obj:val/mean_domain_auc": [0.80, 0.79, 0.78, 0.70],
            "obj:val/latency/ratio": [1.0, 1.1, 0.9, 0.5],
        }
    )
    objs = [
        {"name": "val/mean_domain_auc", "direction": "maximize"},
        {"name": "val/latency/ratio", "direction": "minimize"},
    ]
    marked = mark_front(table, objs)
    assert marked.filter(pl.col("on_front"))["number"].to_list() == [0, 2, 3]
    assert mark_front(table)["on_front"].to_list() == [True, True, False, False]
