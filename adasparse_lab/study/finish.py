"""The end of a study, in the order it happens.

- Each worker, once its trials are done, closes the study (``StudyClosing``): its front
  (results.front.study_front, the one definition the report and the export share), the
  re-evaluation and reference runs (study.reevaluation), the hypervolume per trial logged
  to the parent run. Its result is a ``StudyOutcome``.
- The process that started the study then finishes it (``finish``): the Pareto table printed
  and written (pareto.csv, results.pareto_table), methods at matched cost and the claims, the
  report, the parent run's artifacts and totals, the front's models, and where everything is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import polars as pl
from omegaconf import DictConfig
from optuna.trial import TrialState

from adasparse_lab.config import redact_url
from adasparse_lab.export.build import log_front_models
from adasparse_lab.report.build import BuildInfo, build
from adasparse_lab.results.collect import ReportData, collect
from adasparse_lab.results.front import hypervolume_history, study_front
from adasparse_lab.results.matched import MATCHED_AT, collect_cells, format_matched
from adasparse_lab.results.pareto_table import format_pareto, pareto_table, reference_metrics
from adasparse_lab.store.claims import Claims
from adasparse_lab.store.tracking import Tracker, runs_url
from adasparse_lab.study.claims import claims_text
from adasparse_lab.study.reevaluation import ExtraRuns, reeval_targets
from adasparse_lab.study.session import StudyContext
from adasparse_lab.study.settings import StudySettings
from adasparse_lab.study.trials import TrialRunner


@dataclass
class StudyOutcome:
    study: optuna.Study
    settings: StudySettings
    pareto: list[optuna.trial.FrozenTrial]  # the front, in order of cost (last objective)
    folder: Path
    storage_desc: str
    tracker: Tracker
    parent_run_id: str
    done: bool
    worker: str = ""  # the process that ran it (store/study_storage.worker_id)


class StudyClosing:
    """A worker's end of the study in ``ctx``: the front, the re-evaluation and reference runs
    (``ExtraRuns``; ``trials`` trains them), and the hypervolume logged to the parent run."""

    def __init__(self, ctx: StudyContext, trials: TrialRunner) -> None:
        self.ctx = ctx
        self.runs = ExtraRuns(ctx, trials)

    def pareto(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The study's front (results.front.study_front), in order of cost (last objective)."""
        return sorted(study_front(study), key=lambda t: t.values[-1])

    def reeval_targets(
        self, front: list[optuna.trial.FrozenTrial], study: optuna.Study
    ) -> list[optuna.trial.FrozenTrial]:
        """The trials to re-evaluate under ``study.reeval`` (reevaluation.reeval_targets)."""
        s = self.ctx.settings
        if not s.reeval_seeds:
            return []
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        per_method = s.reeval_select == "per_method"
        return reeval_targets(front, s.reeval_max_trials, done if per_method else [], s)

    def reference(self, tracker: Tracker, parent: str, study: optuna.Study) -> None:
        """The dense reference runs (ExtraRuns.reference)."""
        self.runs.reference(tracker, parent, study)

    def reevaluate(
        self,
        front: list[optuna.trial.FrozenTrial],
        study: optuna.Study,
        tracker: Tracker,
        parent: str,
    ) -> None:
        """The re-evaluation runs of the ``reeval_targets`` of ``front`` (ExtraRuns)."""
        self.runs.reevaluate(self.reeval_targets(front, study), study, tracker, parent)

    def log_study_metrics(self, study: optuna.Study, tracker: Tracker, parent: str) -> None:
        """``study/hypervolume`` per COMPLETE trial (step = trial number; results.front's
        hypervolume_history, the report's definition) against the configured reference point,
        stored with the study (user attr ``hypervolume_reference``) for the report to read."""
        ref = self.ctx.hv_reference()
        if ref is None or len(self.ctx.settings.objectives) != 2:
            return
        study.set_user_attr("hypervolume_reference", ref)  # also for studies begun before it
        history = hypervolume_history(
            study.get_trials(deepcopy=False), self.ctx.settings.directions, ref
        )
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric("study/hypervolume", v, now, number) for number, v in history]
        for i in range(0, len(metrics), 1000):
            tracker.client.log_batch(parent, metrics=metrics[i : i + 1000])

    def close(
        self, study: optuna.Study, tracker: Tracker, parent: str, done: bool
    ) -> list[optuna.trial.FrozenTrial]:
        """Once the worker's trials are done: the front; when the study's budget is reached,
        its re-evaluation and the hypervolume. Returns the front."""
        front = self.pareto(study)
        if done:
            self.reevaluate(front, study, tracker, parent)
            complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            claim = Claims.of(study, self.ctx.worker).take(f"hypervolume:{complete}")
            if claim is not None:  # once per state of the study, whatever the workers
                self.log_study_metrics(study, tracker, parent)
                claim.finish()
        return front


def write_pareto(table: pl.DataFrame, folder: Path) -> Path:
    """The Pareto table as ``<folder>/pareto.csv``, logged to the parent run."""
    path = folder / "pareto.csv"
    folder.mkdir(parents=True, exist_ok=True)
    table.write_csv(path)
    return path


def finish(outcome: StudyOutcome, base: DictConfig) -> None:
    """Print the front (and methods at matched cost, and the claims), build the report, log
    both and the study's totals to the parent run, then print where everything is. One worker
    at a time ends a study (a claim in its storage, store/claims.py): of workers started by
    hand that end it together, the others say who does; a later run of the command ends it
    anew."""
    end = Claims.of(outcome.study, outcome.worker).take("end", again_when_done=True)
    if end is None:
        models = _log_front_models(outcome)  # those trained here, if the ending worker can't
        logged = f"; front models logged from here: {sorted(models)}" if models else ""
        print(
            f"\nstudy {outcome.settings.name!r}: another worker is ending it (front, "
            f"report){logged}"
        )
        return
    try:
        _finish(outcome, base)
    except BaseException:
        end.finish(ok=False)
        raise
    end.finish()


def _finish(outcome: StudyOutcome, base: DictConfig) -> None:
    t0 = time.perf_counter()  # the report's time: reading the study back, then the page
    data = collect([outcome.settings.name], [outcome.storage_desc])  # once: summary and report
    csv = _print_results(outcome, base, data)
    reports = Path(base.paths.reports)
    info = build([outcome.settings.name], [outcome.storage_desc], reports, data=data)
    build_s = time.perf_counter() - t0  # not the front models' logging below (~10 s each)
    complete = _log_to_parent(outcome, csv, info)
    models = _log_front_models(outcome)
    _print_overhead(outcome.study)
    _print_locations(outcome, complete, csv, info.path, build_s, models)


def _log_front_models(outcome: StudyOutcome) -> dict[int, str]:
    """The front's models, once the budget is reached and ``study.log_models=front``."""
    s = outcome.settings
    if not (outcome.done and s.log_models == "front"):
        return {}
    return log_front_models(s.name, outcome.folder.parent, outcome.storage_desc)


def _print_results(outcome: StudyOutcome, base: DictConfig, data: ReportData) -> Path:
    """The Pareto table (written to CSV, whose path is returned), methods at matched cost when
    several compete, and the paper's claims when ``study.claims`` names them."""
    s = outcome.settings
    domains = [d["domain"] for d in outcome.study.user_attrs.get("domains", [])]
    table = pareto_table(outcome.pareto, s.metrics, domains, data)
    csv = write_pareto(table, outcome.folder)
    print(format_pareto(table, s.metrics, domains, reference_metrics(data, domains)))
    cells = collect_cells(data.studies[0], s.metrics[-1])
    if len({c.method for c in cells}) > 1:  # several methods: compare them at equal cost
        print("\n" + format_matched(cells, MATCHED_AT, s.metrics[-1]))
    if base.study.get("claims"):  # the paper's claims against this run (results/claims.py)
        print("\n" + claims_text(data))
    return csv


def _log_to_parent(outcome: StudyOutcome, csv: Path, info: BuildInfo) -> int:
    """Table, report and front figures as artifacts of the parent run, with the study's
    totals; the parent run ends once the budget is reached. Returns the COMPLETE trials."""
    tracker, parent = outcome.tracker, outcome.parent_run_id
    tracker.log_artifacts(parent, [csv, info.path])
    for name, fig in info.front_figures.items():  # one click from the run list; works offline
        tracker.client.log_figure(
            parent, fig, f"figures/{name}", save_kwargs={"include_plotlyjs": True}
        )
    complete = sum(t.state.name == "COMPLETE" for t in outcome.study.get_trials(deepcopy=False))
    tracker.log_metrics(
        parent, {"study/complete_trials": complete, "study/front_size": len(outcome.pareto)}
    )
    if outcome.done:
        tracker.end_run(parent)
    return complete


def _print_overhead(study: optuna.Study) -> None:
    """Mean per-trial time outside fit and evaluate (the trials' ``duration_s - fit_s``)."""
    timed = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE" and "fit_s" in t.user_attrs
    ]
    if timed:
        total = sum(t.user_attrs["duration_s"] for t in timed)
        overhead = total - sum(t.user_attrs["fit_s"] for t in timed)
        print(
            f"\nper-trial overhead (compose, storage, tracking, outputs): {overhead / len(timed):.2f}s "
            f"= {100 * overhead / total:.1f}% of {total / len(timed):.1f}s per trial"
        )


def _print_locations(
    outcome: StudyOutcome,
    complete: int,
    csv: Path,
    report: Path,
    build_s: float,
    models: dict,
) -> None:
    s, tracker = outcome.settings, outcome.tracker
    uri = tracker.uri
    trials = outcome.study.get_trials(deepcopy=False)
    if s.early_stop.counts_rows:
        stopped = sum(t.state == TrialState.PRUNED for t in trials)
        spent = f"{s.early_stop.spent(trials):.4g}/{s.n_trials} trials' rows spent"
        done = f"{complete} trials complete, {stopped} stopped early ({spent})"
    else:
        done = f"{complete}/{s.n_trials} trials complete"
    print(
        f"\nstudy {s.name!r}: {done}"
        + ("" if outcome.done else " (budget not reached: run the same command again to continue)")
    )
    print(f"  optuna storage : {redact_url(outcome.storage_desc)}")
    print(f"  pareto table   : {csv}")
    print(
        f"  report         : {report} ({report.stat().st_size / 1e6:.1f} MB, built in {build_s:.1f}s)"
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
