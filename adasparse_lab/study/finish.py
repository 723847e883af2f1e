"""What a study leaves behind: the Pareto table, the report, the parent run's artifacts, and
a printed summary of where everything is."""

from __future__ import annotations

import time
from pathlib import Path

from adasparse_lab.export.build import log_front_models
from adasparse_lab.report.build import build
from adasparse_lab.report.claims_section import claims_text
from adasparse_lab.report.collect import collect
from adasparse_lab.study.driver import StudyOutcome, StudyRunner
from adasparse_lab.study.matched import collect_cells, format_matched
from adasparse_lab.study.summary import (
    format_pareto,
    pareto_table,
    reeval_table,
    reference_metrics,
    write_pareto,
)
from adasparse_lab.tracking import runs_url

MATCHED_AT = (0.5, 0.8)  # FLOPs (or latency) ratios at which methods are ranked


def finish(outcome: StudyOutcome, runner: StudyRunner) -> None:
    s, tracker = outcome.settings, outcome.tracker
    domains = [d["domain"] for d in outcome.study.user_attrs.get("domains", [])]
    table = pareto_table(outcome.pareto, s.metrics, domains, reeval_table(tracker))
    csv = write_pareto(table, outcome.folder)
    print(format_pareto(table, s.metrics, domains, reference_metrics(tracker)))
    cells = collect_cells(outcome.study, tracker.client, tracker.experiment_id, s.metrics[-1])
    if len({c.method for c in cells}) > 1:  # several methods: compare them at equal cost
        print("\n" + format_matched(cells, MATCHED_AT, s.metrics[-1]))
    if runner.base.study.get("claims"):  # the paper's claims against this run (report/claims.py)
        data = collect([s.name], [outcome.storage_desc], max_structure_trials=0)
        print("\n" + claims_text(data))
    t0 = time.perf_counter()
    info = build([s.name], [outcome.storage_desc], Path(runner.base.paths.reports))
    report = info.path
    tracker.log_artifacts(outcome.parent_run_id, [csv, report])
    for name, fig in info.front_figures.items():  # one click from the run list; works offline
        tracker.client.log_figure(
            outcome.parent_run_id, fig, f"figures/{name}", save_kwargs={"include_plotlyjs": True}
        )
    complete = sum(t.state.name == "COMPLETE" for t in outcome.study.get_trials(deepcopy=False))
    tracker.log_metrics(
        outcome.parent_run_id,
        {"study/complete_trials": complete, "study/front_size": len(outcome.pareto)},
    )
    if outcome.done:
        tracker.end_run(outcome.parent_run_id)
    models = (
        log_front_models(s.name, outcome.folder.parent, outcome.storage_desc)
        if outcome.done and s.log_models == "front"
        else {}
    )
    uri = tracker.uri
    timed = [
        t
        for t in outcome.study.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE" and "fit_s" in t.user_attrs
    ]
    if timed:
        total = sum(t.user_attrs["duration_s"] for t in timed)
        overhead = total - sum(t.user_attrs["fit_s"] for t in timed)
        print(
            f"\nper-trial overhead (compose, storage, tracking, outputs): {overhead / len(timed):.2f}s "
            f"= {100 * overhead / total:.1f}% of {total / len(timed):.1f}s per trial"
        )
    print(
        f"\nstudy {s.name!r}: {complete}/{s.n_trials} trials complete"
        + ("" if outcome.done else " (budget not reached: run the same command again to continue)")
    )
    print(f"  optuna storage : {outcome.storage_desc}")
    print(f"  pareto table   : {csv}")
    print(
        f"  report         : {report} ({report.stat().st_size / 1e6:.1f} MB, built in {time.perf_counter() - t0:.1f}s)"
    )
    print(f"  mlflow         : experiment {s.name!r}, parent run {outcome.parent_run_id} in {uri}")
    print(
        f"  browse         : MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {uri} --workers 1"
    )
    print(
        f"  runs table     : {runs_url(tracker.experiment_id)} (the experiment link opens GenAI traces)"
    )
    for number, model_uri in models.items():
        print(
            f"  front model    : trial {number} -> {model_uri} (serving bundle: python -m "
            f"adasparse_lab.export study={s.name} trial={number}; register=<name> to register)"
        )
