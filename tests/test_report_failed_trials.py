"""Failed and pruned trials in the report: their state and reason beside each other in the
trials table, and no per-domain rows (all nulls) for a trial that measured nothing."""

from __future__ import annotations

import html
import re

import optuna
import polars as pl
import pytest

from adasparse_lab.report.build import build
from adasparse_lab.results.collect import collect
from adasparse_lab.store.reader import trials_table
from tests.conftest import REAL_TRIALS

FAILED = 1  # REAL_TRIALS[1] is the injected failure (conftest.FAILING_METHOD)
REASON = "RuntimeError: injected failure"
ROW = re.compile(r"<tr( class=\"[a-z ]*\")?>(.*?)</tr>", re.S)
CELL = re.compile(r'<td class="[a-z]+" data-v="[^"]*">(.*?)</td>', re.S)
HEADER = re.compile(r"<th[^>]*>(.*?)</th>", re.S)
METRICS = ["val_auc", "test_auc", "flops_ratio", "sparsity", "latency_ratio"]


@pytest.fixture(scope="module")
def trials_part(real_study, tmp_path_factory) -> str:
    info = build([real_study.name], [real_study.storage], tmp_path_factory.mktemp("failed"))
    page = info.path.read_text(encoding="utf-8")
    return page[page.index('<section id="trials"') : page.index('<section id="context"')]


@pytest.mark.slow
def test_a_failed_trial_shows_its_state_and_reason_beside_each_other(trials_part):
    headers = [
        html.unescape(re.sub(r"<[^>]+>", "", h)).strip() for h in HEADER.findall(trials_part)
    ]
    assert headers[:4] == ["trial", "state", "front", "reason"], headers[:6]
    rows = {}
    for m in ROW.finditer(trials_part):
        cells = [html.unescape(c) for c in CELL.findall(m.group(2))]
        if cells:
            rows[int(cells[0])] = (m.group(1) or "", cells)
    cls, cells = rows[FAILED]
    assert 'class="failed"' in cls and cells[1:4] == ["FAIL", "", REASON]
    assert REAL_TRIALS[FAILED]["method"] in cells
    assert all(c[3] == "" for n, (_, c) in rows.items() if n != FAILED)


def test_no_per_domain_rows_of_nulls_for_a_failed_trial(real_study):
    data = collect([real_study.name], [real_study.storage])
    failed = data.trials.filter(pl.col("state") == "FAIL")
    assert failed["number"].to_list() == [FAILED] and failed["fail_reason"][0] == REASON
    per_trial = data.domain_metrics.filter(pl.col("kind") == "trial")
    assert FAILED not in per_trial["number"].to_list()
    all_null = data.domain_metrics.filter(pl.all_horizontal(pl.col(METRICS).is_null()))
    assert all_null.height == 0, all_null
    complete = data.trials.filter(pl.col("state") == "COMPLETE")["number"].to_list()
    assert sorted(per_trial["number"].unique().to_list()) == sorted(complete)


def test_a_pruned_trial_has_a_reason():
    """Optuna's pruner records no reason: the trials table says where it stopped the trial
    (its last reported step); a reason stored as the fail_reason attribute wins."""
    study = optuna.create_study(study_name="pruned", direction="maximize")
    t0 = study.ask()
    for step in range(3):
        t0.report(0.6, step)
    study.tell(t0, state=optuna.trial.TrialState.PRUNED)
    t1 = study.ask()
    t1.set_user_attr("fail_reason", "band not reached by epoch 2")
    study.tell(t1, state=optuna.trial.TrialState.PRUNED)
    t2 = study.ask()
    study.tell(t2, state=optuna.trial.TrialState.PRUNED)
    table = trials_table("pruned", study)
    assert table["state"].to_list() == ["PRUNED"] * 3
    assert table["fail_reason"].to_list() == [
        "pruned by Optuna after step 2",
        "band not reached by epoch 2",
        "pruned by Optuna",
    ]
