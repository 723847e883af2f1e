"""A study's trials: ask -> compose -> fit/evaluate -> tell, until the budget of COMPLETE
trials is reached. A failing trial is told FAIL with its reason and never stops the study;
a proposal that repeats an earlier trial is skipped; a trial whose heartbeat gave up stops.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FixedTrial, FrozenTrial, TrialState

from adasparse_lab.data import PreparedData
from adasparse_lab.data.build import build_data
from adasparse_lab.errors import StoreError
from adasparse_lab.run.build import build_components
from adasparse_lab.run.checkpoint import FILE as CHECKPOINT_FILE
from adasparse_lab.run.fit import RungCallback
from adasparse_lab.run.naming import method_name, pruner_form
from adasparse_lab.run.outputs import RunResult, epoch_logger, write_outputs
from adasparse_lab.run.pipeline import train_and_evaluate
from adasparse_lab.store.study_storage import Heartbeat, recover_stale
from adasparse_lab.store.tracking import Tracker
from adasparse_lab.study import space as space_mod
from adasparse_lab.study.early_stop import EarlyStop, RungJudge, TrialStopped
from adasparse_lab.study.enqueued import REQUEUE_OF, requeue_lost
from adasparse_lab.study.progress import Progress
from adasparse_lab.study.proposals import MAX_DUPLICATES, duplicate_of
from adasparse_lab.study.session import StudyContext, fail_trial_run
from adasparse_lab.study.tell import tell_complete, tell_fail, tell_once

log = logging.getLogger(__name__)
Sampler = Callable[[int], optuna.samplers.BaseSampler]


class StudyFailedError(RuntimeError):
    """Too many trials failed: the study stops with the reasons."""


class HeartbeatLostError(StoreError):
    """The heartbeat of this worker's trial gave up (the database was unreachable for
    study.storage_retry_s): the trial is stopped and failed, and so is the worker."""


class TrialRunner:
    """Runs the trials of the study in ``ctx``; ``sampler(n)`` gives the sampler of an ask
    when ``n`` trials are in storage (StudySession.sampler)."""

    def __init__(self, ctx: StudyContext, sampler: Sampler) -> None:
        self.ctx, self.sampler = ctx, sampler
        self._data: dict[str, PreparedData] = {}
        self._started = time.monotonic()
        self._heartbeat: Heartbeat | None = None
        self.last_fit_s = 0.0
        self.last_log_s = 0.0  # of last_fit_s: logging the epochs' metrics to MLflow
        self._duplicates = 0  # proposals in a row that repeated an earlier trial

    def data_for(self, cfg: DictConfig) -> PreparedData:
        key = OmegaConf.to_yaml(cfg.data, resolve=True)
        if key not in self._data:
            self._data[key] = build_data(cfg.data, cfg.paths.cache)
        return self._data[key]

    def train_run(
        self,
        cfg: DictConfig,
        tracker: Tracker,
        run_id: str,
        out_dir: Path,
        on_rung: RungCallback | None = None,
    ) -> RunResult:
        """Fit and evaluate ``cfg`` into the MLflow run ``run_id`` (metrics, outputs); with
        ``on_rung``, at each of the study's rungs too (study/early_stop.py)."""
        components = build_components(cfg)
        data = self.data_for(cfg)  # prepared once per process, then shared by every trial
        log_epoch = epoch_logger(tracker, run_id, tracker.domains_as_metrics(data.n_domains))

        def on_epoch(record) -> None:
            self.check_heartbeat()  # a trial whose heartbeat gave up stops at the next epoch
            t = time.perf_counter()
            log_epoch(record)  # the epoch's metrics (outputs.epoch_logger): a few MLflow batches
            self.last_log_s += time.perf_counter() - t

        self.last_log_s = 0.0
        t0 = time.perf_counter()
        rungs = self.ctx.settings.early_stop.fractions if on_rung is not None else ()
        result = train_and_evaluate(
            cfg,
            data,
            on_epoch=on_epoch,
            components=components,
            rungs=rungs,
            on_rung=on_rung,
            checkpoint=out_dir / CHECKPOINT_FILE,  # a killed run goes on from here
        )
        self.last_fit_s = time.perf_counter() - t0  # fit + evaluate, per-epoch logging included
        files = write_outputs(out_dir, cfg, result)
        tracker.log_run_metrics(run_id, result.metrics, data.domain_names, out_dir)
        tracker.set_tags(run_id, {"data_key": result.data.key})  # the prepared store used
        tracker.log_artifacts(run_id, files)
        return result

    def trial_config(self, trial: optuna.Trial | FixedTrial) -> tuple[DictConfig, list[str]]:
        overrides = space_mod.compose_overrides(self.ctx.params, trial)
        cfg = self.ctx.compose(overrides)
        space_mod.apply_values(self.ctx.params, trial, cfg)
        return cfg, overrides

    # -- one trial ------------------------------------------------------------------------
    def run_trial(
        self, study: optuna.Study, trial: optuna.Trial, tracker: Tracker, parent: str
    ) -> None:
        t0, cpu0 = time.perf_counter(), time.process_time()
        run_id = None
        try:
            cfg, overrides = self.trial_config(trial)
            if self.skip_duplicate(study, trial):
                return
            run_id = self._start_run(trial, cfg, overrides, tracker, parent)
            values = self._fit(study, trial, cfg, tracker, run_id)
            tracker.end_run(run_id)
            # Overhead = duration - fit_s: compose, sampling, storage, tracking, outputs (all but
            # the final tell, a single storage write).
            trial.set_user_attr("duration_s", round(time.perf_counter() - t0, 3))
            trial.set_user_attr("cpu_s", round(time.process_time() - cpu0, 3))
            trial.set_user_attr("fit_s", round(self.last_fit_s, 3))
            trial.set_user_attr("epoch_log_s", round(self.last_log_s, 3))  # part of fit_s
        except TrialStopped as stop:  # early stopping: PRUNED, with its rung and values
            self.prune(study, trial, tracker, run_id, stop)
            trial.set_user_attr("duration_s", round(time.perf_counter() - t0, 3))
            trial.set_user_attr("cpu_s", round(time.process_time() - cpu0, 3))
            tell_once(study, trial, state=TrialState.PRUNED)
            return
        except Exception as err:  # a failing trial never kills the study
            with contextlib.suppress(Exception):  # what it cost (the search curve counts it)
                trial.set_user_attr("cpu_s", round(time.process_time() - cpu0, 3))
            self.fail(study, trial, tracker, run_id, err, time.perf_counter() - t0)
            if isinstance(err, HeartbeatLostError):  # the database failed this worker: it stops
                raise
            return
        except BaseException:  # Ctrl-C: leave nothing RUNNING
            tell_fail(study, trial)
            if run_id is not None:
                tracker.end_run(run_id, "KILLED")
            raise
        # Outside the try: an error raised by tell (a sampler's after_trial) is no trial failure.
        tell_complete(study, trial, values)
        log.info("trial %d: %s (%.1fs)", trial.number, values, time.perf_counter() - t0)

    def _start_run(
        self,
        trial: optuna.Trial,
        cfg: DictConfig,
        overrides: list[str],
        tracker: Tracker,
        parent: str,
    ) -> str:
        """The trial's attributes and its MLflow run under ``parent``."""
        method = method_name(cfg.pruner, cfg.model)
        trial.set_user_attr("pruner_form", pruner_form(cfg.pruner))
        trial.set_user_attr("method", method)
        trial.set_user_attr("pruner_inputs", cfg.pruner.get("inputs", "none"))
        trial.set_user_attr("band", [cfg.schedule.r_min, cfg.schedule.r_max])
        tags = {
            "kind": "trial",
            "method": method,
            "trial_number": str(trial.number),
            "worker": self.ctx.worker,
            "torch_threads": str(torch.get_num_threads()),  # 1 and 2 threads train differently
            "overrides": " ".join(overrides),
        }
        run_id = tracker.start_run(f"trial-{trial.number}", parent, tags=tags)
        trial.set_user_attr("mlflow_run_id", run_id)
        tracker.log_params(run_id, trial.params)
        return run_id

    def _fit(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        cfg: DictConfig,
        tracker: Tracker,
        run_id: str,
    ) -> list[float]:
        """Train the trial; its objective values (finite, or ValueError) and FLOPs constraint.
        With early stopping on, it may raise TrialStopped at a rung."""
        s = self.ctx.settings
        judge = None
        if s.early_stop.fractions:
            judge = RungJudge(study, trial, s.metrics, s.directions, s.early_stop.eta)
        out_dir = self.trial_folder(trial.number)
        self.take_checkpoint(trial, out_dir)
        result = self.train_run(cfg, tracker, run_id, out_dir, judge)
        trial.set_user_attr("data_key", result.data.key)  # export checks it is unchanged
        values = [result.metrics.get(m, math.nan) for m in s.metrics]
        bad = [f"{m}={v}" for m, v in zip(s.metrics, values) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"non-finite objective(s): {', '.join(bad)}")
        self.check_heartbeat()
        if s.flops_budget is not None:
            trial.set_constraint("flops_budget", result.metrics["val/flops/ratio"] - s.flops_budget)
        return values

    def trial_folder(self, number: int) -> Path:
        return self.ctx.folder / "trials" / str(number)

    def resumable(self, trial: FrozenTrial) -> bool:
        """Whether a trial left a checkpoint here (run/checkpoint.py): its copy goes on from it."""
        return (self.trial_folder(trial.number) / CHECKPOINT_FILE).is_file()

    def take_checkpoint(self, trial: optuna.Trial, out_dir: Path) -> None:
        """A trial that re-runs a killed one (``requeue_of``, study/enqueued.py) takes over its
        checkpoint, so that its fit goes on from there instead of from zero."""
        previous = trial.user_attrs.get(REQUEUE_OF)
        if previous is None:
            return
        source = self.trial_folder(previous) / CHECKPOINT_FILE
        if source.is_file():
            out_dir.mkdir(parents=True, exist_ok=True)
            os.replace(source, out_dir / CHECKPOINT_FILE)
            trial.set_user_attr("resumed_from", previous)
            log.info("trial %d goes on from trial %d's checkpoint", trial.number, previous)

    def fail(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        tracker: Tracker,
        run_id: str | None,
        err: Exception,
        duration_s: float,
    ) -> None:
        """Tell ``trial`` FAIL with the reason; its MLflow run (if any) FAILED."""
        reason = f"{type(err).__name__}: {err}"[:2000]
        log.warning("trial %d failed: %s", trial.number, reason)
        trial.set_user_attr("fail_reason", reason)
        lost = isinstance(err, HeartbeatLostError)
        trial.set_user_attr("failure_kind", "heartbeat" if lost else "error")
        trial.set_user_attr("duration_s", round(duration_s, 3))
        tell_fail(study, trial)
        if run_id is not None:  # the tracking server may be what failed: best effort
            _best_effort(tracker.set_tags, run_id, {"fail_reason": reason})
            _best_effort(tracker.end_run, run_id, "FAILED")

    def prune(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        tracker: Tracker,
        run_id: str | None,
        stop: TrialStopped,
    ) -> None:
        """Record why ``trial`` stopped at a rung (Optuna attributes, MLflow tags and the rung's
        values as metrics; the run ends KILLED, MLflow's state for a run stopped on purpose)."""
        log.info("trial %d pruned: %s", trial.number, stop)
        trial.set_user_attr("pruned_reason", str(stop))
        trial.set_user_attr("pruned_at", stop.fraction)
        if run_id is None:
            return
        s = self.ctx.settings
        _best_effort(
            tracker.set_tags,
            run_id,
            {"pruned_at": f"{stop.fraction:.4g}", "pruned_reason": str(stop)},
        )
        rung = {f"rung/{m}": v for m, v in zip(s.metrics, stop.values)}
        _best_effort(tracker.log_metrics, run_id, rung | {"rung/rows": float(stop.rows)})
        _best_effort(tracker.end_run, run_id, "KILLED")

    def skip_duplicate(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """Tell ``trial`` FAIL when it repeats a COMPLETE or RUNNING trial (study/proposals.py)."""
        twin = duplicate_of(trial, study.get_trials(deepcopy=False))
        if twin is None:
            self._duplicates = 0
            return False
        self._duplicates += 1
        reason = f"same parameters as trial {twin.number} ({twin.state.name})"
        log.info("trial %d skipped: %s", trial.number, reason)
        trial.set_user_attr("failure_kind", "duplicate")
        trial.set_user_attr("fail_reason", reason)
        tell_fail(study, trial)
        return True

    # -- asking and the heartbeat ---------------------------------------------------------
    def ask(self, study: optuna.Study) -> optuna.Trial:
        """A new trial of this worker, from a sampler seeded for this ask (its parameters are
        sampled later, when composed)."""
        trials = study.get_trials(deepcopy=False)
        if self.ctx.settings.trials_per_method:  # every point is queued at the start: count
            trials = [t for t in trials if t.state != TrialState.WAITING]  # asks, not the queue
        study.sampler = self.sampler(len(trials))
        trial = study.ask()
        self.stop_heartbeat()
        # Optuna's heartbeat (RDB storage only): beats until the trial is told; a worker that
        # dies anywhere goes silent and its trial is failed by the others (recover_stale).
        self._heartbeat = Heartbeat(trial._trial_id, study._storage)
        self._heartbeat.start()
        trial.set_user_attr("worker", self.ctx.worker)
        return trial

    def check_heartbeat(self) -> None:
        """Raise HeartbeatLostError when the running trial's heartbeat gave up: the other
        workers will fail the trial as stale, so training it on is wasted (or worse, told
        COMPLETE after they failed it)."""
        beat = self._heartbeat
        if beat is not None and beat.lost is not None:
            raise HeartbeatLostError(
                f"the trial's heartbeat stopped, so the other workers fail it as stale: {beat.lost}"
            )

    def stop_heartbeat(self) -> None:
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None:
            beat.join()

    # -- the loop -------------------------------------------------------------------------
    def optimise(self, study: optuna.Study, tracker: Tracker, parent: str) -> bool:
        """Run trials until the budget of COMPLETE trials is reached; True when it is, False
        when ``study.timeout_s`` ran out first."""
        s = self.ctx.settings
        progress = Progress(s.n_trials, s.directions, self.ctx.hv_reference(), s.early_stop)
        while True:
            if failed := recover_stale(study, lambda t: fail_trial_run(tracker, t)):
                requeue_lost(study, failed, self.resumable)  # only this worker failed them
            spent, running, errors = _counts(study, s.early_stop)
            if spent >= s.n_trials:
                return True
            if s.timeout_s is not None and time.monotonic() - self._started > s.timeout_s:
                log.info(
                    "study.timeout_s=%s reached with %.4g/%d trials spent",
                    s.timeout_s,
                    spent,
                    s.n_trials,
                )
                return False
            self._raise_when_stuck(errors)
            if spent + running >= s.n_trials:  # the rest is running in other workers
                time.sleep(s.poll_s)
                continue
            if s.trials_per_method and not study.get_trials(False, states=(TrialState.WAITING,)):
                if running:  # each method's points are taken: one may yet be queued again
                    time.sleep(s.poll_s)
                    continue
                return True  # every point ran: a failed one is its method's flag, not resampled
            trial = self.ask(study)
            if self._surplus(study, trial):
                continue
            log.info("trial %d (%.4g/%d spent)", trial.number, spent, s.n_trials)
            try:
                self.run_trial(study, trial, tracker, parent)
            finally:
                self.stop_heartbeat()
            progress.report(study, trial.number)

    def _raise_when_stuck(self, errors: list[optuna.trial.FrozenTrial]) -> None:
        """StudyFailedError after study.max_failures errors or MAX_DUPLICATES repeats in a row."""
        s = self.ctx.settings
        if len(errors) >= s.max_failures:
            reasons = "; ".join(
                f"#{t.number}: {t.user_attrs.get('fail_reason')}" for t in errors[-3:]
            )
            raise StudyFailedError(
                f"{len(errors)} trials failed (study.max_failures={s.max_failures}); last: {reasons}"
            )
        if self._duplicates >= MAX_DUPLICATES:
            raise StudyFailedError(
                f"the sampler proposed {self._duplicates} parameter sets in a row that were "
                "already tried: the search space looks exhausted (lower study.n_trials)"
            )

    def _surplus(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """Tell ``trial`` FAIL when another worker took the last slot of the budget at once."""
        trials = study.get_trials(deepcopy=False)
        s = self.ctx.settings
        before = s.early_stop.spent(trials, below=trial.number)  # COMPLETE (+ stopped shares)
        live = (TrialState.RUNNING, TrialState.WAITING)
        before += sum(t.number < trial.number and t.state in live for t in trials)
        if before < s.n_trials:
            return False
        trial.set_user_attr("failure_kind", "surplus")
        trial.set_user_attr("fail_reason", "budget already taken by other workers")
        tell_fail(study, trial)
        self.stop_heartbeat()
        return True


def _counts(
    study: optuna.Study, early: EarlyStop
) -> tuple[float, int, list[optuna.trial.FrozenTrial]]:
    """The budget spent (COMPLETE trials, and under ``study.early_stop.budget=rows`` the shares
    of stopped ones), RUNNING trials (WAITING: enqueued, not counted), and those failed by
    error."""
    trials = study.get_trials(deepcopy=False)
    spent = early.spent(trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    errors = [
        t
        for t in trials
        if t.state == TrialState.FAIL and t.user_attrs.get("failure_kind") == "error"
    ]
    return spent, running, errors


def _best_effort(call: Callable, *args) -> None:
    """A tracking call on a failure path: its own failure is logged, never raised (the trial's
    failure is already told to Optuna)."""
    try:
        call(*args)
    except Exception as err:
        log.warning("tracking: %s failed: %s", call.__name__, f"{err}"[:300])
