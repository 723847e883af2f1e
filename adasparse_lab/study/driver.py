"""The ask-and-tell study driver: ask -> compose -> fit/evaluate -> tell, resumable and
shareable by several workers. Selection on validation, claims on test: once the budget is
spent, the Pareto trials are re-trained with several seeds and evaluated on test.

The driver needs two callables from its caller, so it stays usable without ``@hydra.main``:
``compose(overrides) -> DictConfig`` (the study's base overrides plus ``overrides``) and the
base config itself.
"""

from __future__ import annotations

import logging
import math
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FixedTrial, TrialState

from adasparse_lab.data import PreparedData
from adasparse_lab.errors import ConfigError, StoreError
from adasparse_lab.experiment import (
    RunResult,
    build_components,
    build_data,
    epoch_logger,
    method_name,
    pruner_form,
    train_and_evaluate,
    write_outputs,
)
from adasparse_lab.machine import cpu_model
from adasparse_lab.metrics import auc
from adasparse_lab.pareto import feasible, hypervolume_history, pareto_mask
from adasparse_lab.study import space as space_mod
from adasparse_lab.study.fingerprint import changes, fingerprint
from adasparse_lab.study.proposals import MAX_DUPLICATES, duplicate_of, proposal_seed
from adasparse_lab.study.settings import StudySettings, parse_settings
from adasparse_lab.study.storage import (
    Heartbeat,
    open_storage,
    recover_stale,
    worker_alive,
    worker_id,
)
from adasparse_lab.study.tell import tell_complete, tell_fail
from adasparse_lab.tracking import Tracker, tag_experiment_kind

log = logging.getLogger(__name__)
Compose = Callable[[list[str]], DictConfig]


class StudyFailedError(RuntimeError):
    """Too many trials failed: the study stops with the reasons."""


class HeartbeatLostError(StoreError):
    """The heartbeat of this worker's trial gave up (the database was unreachable for
    study.storage_retry_s): the trial is stopped and failed, and so is the worker."""


@dataclass
class StudyOutcome:
    study: optuna.Study
    settings: StudySettings
    pareto: list[optuna.trial.FrozenTrial]
    folder: Path
    storage_desc: str
    tracker: Tracker
    parent_run_id: str
    done: bool


def machine_info() -> dict[str, str]:
    import mlflow
    import plotly
    import polars
    import torch

    return {
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "mlflow": mlflow.__version__,
        "polars": polars.__version__,
        "plotly": plotly.__version__,
    }


class StudyRunner:
    def __init__(self, base: DictConfig, compose: Compose) -> None:
        self.base, self.compose = base, compose
        self.settings = parse_settings(base.study)
        self.params = space_mod.parse_space(base.study.space)
        self.folder = Path(base.paths.studies) / self.settings.name
        self.worker = worker_id()
        self._data: dict[str, PreparedData] = {}
        self._started = time.monotonic()
        self._validated = False
        self.last_fit_s = 0.0
        self._duplicates = 0  # proposals in a row that repeated an earlier trial

    # -- set-up -------------------------------------------------------------------------
    def validate(self) -> None:
        """Everything that can be checked before the first trial."""
        if self._validated:
            return
        space_mod.validate(self.params, self.compose, lambda cfg: build_components(cfg))
        space_mod.check_enqueue(self.params, self.settings.enqueue)
        if self.settings.grid:
            points = math.prod(len(v) for v in space_mod.grid(self.params).values())
            if self.settings.n_trials > points:
                raise ConfigError(
                    f"study.n_trials={self.settings.n_trials} exceeds the grid's {points} points "
                    "(study.grid=true runs each point once): lower study.n_trials"
                )
        if self.settings.workers > 1 and self.settings.storage == "sqlite":
            raise ConfigError("study.workers>1 needs study.storage=journal or a database URL")
        self._validated = True

    def _sampler(self, n_trials: int) -> optuna.samplers.BaseSampler:
        """The sampler for an ask when ``n_trials`` trials are in storage (study/proposals.py)."""
        node = self.base.study.sampler
        study_seed = node.get("seed") if node.get("seed") is not None else self.base.seed
        if self.settings.grid:
            # GridSampler shuffles its grid with its seed and maps trial k to grid point k: one
            # seed for every ask, or a re-seeded grid proposes points already run.
            return optuna.samplers.GridSampler(space_mod.grid(self.params), seed=int(study_seed))
        seed = proposal_seed(int(study_seed), self.settings.worker_index, n_trials)
        from hydra.utils import instantiate

        return instantiate(node, seed=seed)

    def open(self) -> tuple[optuna.Study, str]:
        storage, desc = open_storage(
            self.settings.storage,
            self.settings.name,
            Path(self.base.paths.studies),
            self.settings.workers,
            self.settings.heartbeat_s,
            self.settings.grace_s,
            self.settings.storage_retry_s,
        )
        kwargs = dict(storage=storage, study_name=self.settings.name, sampler=self._sampler(0))
        if len(self.settings.objectives) > 1:
            kwargs["directions"] = self.settings.directions
        else:
            kwargs["direction"] = self.settings.directions[0]
        try:
            study = optuna.create_study(**kwargs)
            study.set_user_attr("fingerprint", fingerprint(self.base))
            study.set_user_attr("creator", self.worker)
            for point in self.settings.enqueue:  # warm start: known settings first
                study.enqueue_trial(point)
            with warnings.catch_warnings():  # experimental since optuna 3.2, stable in use
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self.settings.metrics)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(
                storage=storage, study_name=self.settings.name, sampler=kwargs["sampler"]
            )
            if [d.name.lower() for d in study.directions] != self.settings.directions:
                raise ConfigError(
                    f"study.objectives: the stored study {self.settings.name!r} has directions "
                    f"{[d.name.lower() for d in study.directions]}; use another study.name"
                ) from None
            self._check_fingerprint(study)
        return study, desc

    def _check_fingerprint(self, study: optuna.Study) -> None:
        """Stop a resume whose fixed settings differ from the study's (study/fingerprint.py)."""
        current = fingerprint(self.base)
        stored = study.user_attrs.get("fingerprint")
        changed = changes(stored, current) if stored is not None else []
        if changed and not self.settings.allow_changed_config:
            lines = "\n  ".join(changed)
            raise ConfigError(
                f"study {self.settings.name!r} was created with other fixed settings; resuming "
                f"would mix trials of both. Changed:\n  {lines}\nRun it under a new "
                "study.name=..., or pass study.allow_changed_config=true to resume anyway."
            )
        if changed:
            log.warning("study %r resumed with changed settings: %s", self.settings.name, changed)
            history = study.user_attrs.get("config_changes", [])
            study.set_user_attr("config_changes", [*history, *changed])
        if changed or stored is None:  # a study made before fingerprints, or by a racing worker
            study.set_user_attr("fingerprint", current)

    def _tracker_and_parent(self, study: optuna.Study) -> tuple[Tracker, str]:
        """The study's MLflow experiment and parent run. The worker that created the Optuna
        study creates the parent run; others wait for it (or take over from a dead creator)."""
        tracking = self.base.tracking
        if not tracking.enabled:
            raise ConfigError("a study needs tracking=mlflow (every trial is an MLflow run)")
        tracker = Tracker(tracking.uri, tracking.artifact_root, self.settings.name)
        since = time.monotonic()
        tag_experiment_kind(tracker)
        while True:
            attrs = study.user_attrs
            if attrs.get("parent_run_id"):
                return tracker, attrs["parent_run_id"]
            creator = attrs.get("creator")
            if creator in (None, self.worker) or worker_alive(creator) is False:
                break
            if time.monotonic() - since > self.settings.grace_s:  # on another machine: silent
                log.warning(
                    "study creator %s made no parent run in study.grace_s: taking over", creator
                )
                break
            time.sleep(0.5)
        study.set_user_attr("creator", self.worker)
        parent = self._orphan_parent(tracker) or tracker.start_run(
            f"study-{self.settings.name}", tags={"kind": "study", "worker": self.worker}
        )
        for key, value in {
            "objectives": [o.__dict__ for o in self.settings.objectives],
            "mlflow_uri": tracking.uri,
            "mlflow_experiment": self.settings.name,
            "config": OmegaConf.to_yaml(self.base, resolve=True),
            "machine": machine_info(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hypervolume_reference": self._hv_reference(),  # what the report measures against
            "parent_run_id": parent,  # last: its presence means the rest is there
        }.items():
            study.set_user_attr(key, value)
        tracker.log_params(
            parent,
            {
                "study": self.settings.name,
                "n_trials": self.settings.n_trials,
                "objectives": ",".join(self.settings.metrics),
                "hypervolume_reference": str(self._hv_reference()),
            },
        )
        return tracker, parent

    def _hv_reference(self) -> list[float] | None:
        ref = self.settings.hypervolume_reference
        return None if ref is None else [float(v) for v in ref]

    def _orphan_parent(self, tracker: Tracker) -> str | None:
        """A parent run a killed creator started but never recorded on the study: taken over,
        so that a study keeps one parent run however often its creator is killed."""
        found = tracker.client.search_runs(
            [tracker.experiment_id], "tags.kind = 'study'", order_by=["attributes.start_time ASC"]
        )
        if not found:
            return None
        run_id = found[0].info.run_id
        tracker.client.update_run(run_id, status="RUNNING")  # a resume may have failed it
        tracker.set_tags(run_id, {"worker": self.worker})
        return run_id

    def data_for(self, cfg: DictConfig) -> PreparedData:
        key = OmegaConf.to_yaml(cfg.data, resolve=True)
        if key not in self._data:
            self._data[key] = build_data(cfg.data, cfg.paths.cache)
        return self._data[key]

    # -- one run --------------------------------------------------------------------------
    def _train_run(
        self, cfg: DictConfig, tracker: Tracker, run_id: str, out_dir: Path
    ) -> RunResult:
        components = build_components(cfg)
        data = self.data_for(cfg)  # prepared once per process, then shared by every trial
        log_epoch = epoch_logger(tracker, run_id)

        def on_epoch(record) -> None:
            self._check_heartbeat()  # a trial whose heartbeat gave up stops at the next epoch
            log_epoch(record)

        t0 = time.perf_counter()
        result = train_and_evaluate(cfg, data, on_epoch=on_epoch, components=components)
        self.last_fit_s = time.perf_counter() - t0  # fit + evaluate, per-epoch logging included
        files = write_outputs(out_dir, cfg, result)
        tracker.log_metrics(run_id, result.metrics)
        tracker.set_tags(run_id, {"data_key": result.data.key})  # the prepared store used
        tracker.log_artifacts(run_id, files)
        return result

    def trial_config(self, trial: optuna.Trial | FixedTrial) -> tuple[DictConfig, list[str]]:
        overrides = space_mod.compose_overrides(self.params, trial)
        cfg = self.compose(overrides)
        space_mod.apply_values(self.params, trial, cfg)
        return cfg, overrides

    def run_trial(
        self, study: optuna.Study, trial: optuna.Trial, tracker: Tracker, parent: str
    ) -> None:
        t0 = time.perf_counter()
        run_id = None
        try:
            cfg, overrides = self.trial_config(trial)
            if self._skip_duplicate(study, trial):
                return
            trial.set_user_attr("pruner_form", pruner_form(cfg.pruner))
            trial.set_user_attr("method", method_name(cfg.pruner, cfg.model))
            trial.set_user_attr("pruner_inputs", cfg.pruner.get("inputs", "none"))
            trial.set_user_attr("band", [cfg.schedule.r_min, cfg.schedule.r_max])
            run_id = tracker.start_run(
                f"trial-{trial.number}",
                parent,
                tags={
                    "kind": "trial",
                    "method": method_name(cfg.pruner, cfg.model),
                    "trial_number": str(trial.number),
                    "worker": self.worker,
                    "overrides": " ".join(overrides),
                },
            )
            trial.set_user_attr("mlflow_run_id", run_id)
            tracker.log_params(run_id, trial.params)
            result = self._train_run(
                cfg, tracker, run_id, self.folder / "trials" / str(trial.number)
            )
            trial.set_user_attr("data_key", result.data.key)  # export checks it is unchanged
            values = [result.metrics.get(m, math.nan) for m in self.settings.metrics]
            bad = [
                f"{m}={v}" for m, v in zip(self.settings.metrics, values) if not math.isfinite(v)
            ]
            if bad:
                raise ValueError(f"non-finite objective(s): {', '.join(bad)}")
            self._check_heartbeat()
            if self.settings.flops_budget is not None:
                trial.set_constraint(
                    "flops_budget", result.metrics["val/flops/ratio"] - self.settings.flops_budget
                )
            tracker.end_run(run_id)
            # Overhead = duration - fit_s: compose, sampling, storage, tracking, outputs (all but
            # the final tell, a single storage write).
            trial.set_user_attr("duration_s", round(time.perf_counter() - t0, 3))
            trial.set_user_attr("fit_s", round(self.last_fit_s, 3))
        except Exception as err:  # a failing trial never kills the study
            self._fail(study, trial, tracker, run_id, err, time.perf_counter() - t0)
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

    def _fail(
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

    def _skip_duplicate(self, study: optuna.Study, trial: optuna.Trial) -> bool:
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

    # -- the loop -------------------------------------------------------------------------
    def ask(self, study: optuna.Study) -> optuna.Trial:
        """A new trial of this worker, from a sampler seeded for this ask (its parameters are
        sampled later, when composed)."""
        study.sampler = self._sampler(len(study.get_trials(deepcopy=False)))
        trial = study.ask()
        self._stop_heartbeat()
        # Optuna's heartbeat (RDB storage only): beats until the trial is told; a worker that
        # dies anywhere goes silent and its trial is failed by the others (recover_stale).
        self._heartbeat = Heartbeat(trial._trial_id, study._storage)
        self._heartbeat.start()
        trial.set_user_attr("worker", self.worker)
        return trial

    def _check_heartbeat(self) -> None:
        """Raise HeartbeatLostError when the running trial's heartbeat gave up: the other
        workers will fail the trial as stale, so training it on is wasted (or worse, told
        COMPLETE after they failed it)."""
        beat = getattr(self, "_heartbeat", None)
        if beat is not None and beat.lost is not None:
            raise HeartbeatLostError(
                f"the trial's heartbeat stopped, so the other workers fail it as stale: {beat.lost}"
            )

    def _stop_heartbeat(self) -> None:
        beat, self._heartbeat = getattr(self, "_heartbeat", None), None
        if beat is not None:
            beat.join()

    def _counts(self, study: optuna.Study) -> tuple[int, int, list[optuna.trial.FrozenTrial]]:
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)  # WAITING: enqueued
        errors = [
            t
            for t in trials
            if t.state == TrialState.FAIL and t.user_attrs.get("failure_kind") == "error"
        ]
        return complete, running, errors

    def _fail_stale_runs(self, tracker: Tracker, parent: str) -> None:
        """MLflow runs left RUNNING by dead workers (trials, re-evaluations, the reference)."""
        runs = tracker.client.search_runs(
            [tracker.experiment_id], "attributes.status = 'RUNNING'", max_results=1000
        )
        for run in runs:
            ident = run.data.tags.get("worker")
            if run.info.run_id != parent and ident and worker_alive(ident) is False:
                tracker.set_tags(run.info.run_id, {"fail_reason": f"worker {ident} died"})
                tracker.end_run(run.info.run_id, "FAILED")

    def _fail_trial_run(self, tracker: Tracker, trial: optuna.trial.FrozenTrial) -> None:
        """The MLflow run of a trial failed for a dead or silent worker: FAILED too."""
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is None:
            return
        reason = (
            trial.user_attrs.get("fail_reason") or f"worker {trial.user_attrs.get('worker')} died"
        )
        tracker.set_tags(run_id, {"fail_reason": reason})
        tracker.end_run(run_id, "FAILED")

    def optimise(self, study: optuna.Study, tracker: Tracker, parent: str) -> bool:
        """Run trials until the budget of COMPLETE trials is reached; True when it is."""
        s = self.settings
        while True:
            recover_stale(study, lambda t: self._fail_trial_run(tracker, t))
            complete, running, errors = self._counts(study)
            if complete >= s.n_trials:
                return True
            if s.timeout_s is not None and time.monotonic() - self._started > s.timeout_s:
                log.info(
                    "study.timeout_s=%s reached with %d/%d trials complete",
                    s.timeout_s,
                    complete,
                    s.n_trials,
                )
                return False
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
            if complete + running >= s.n_trials:  # the rest is running in other workers
                time.sleep(s.poll_s)
                continue
            trial = self.ask(study)
            live = [
                t
                for t in study.get_trials(
                    deepcopy=False,
                    states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING),
                )
                if t.number < trial.number
            ]
            if len(live) >= s.n_trials:  # another worker took the last slot at the same time
                trial.set_user_attr("failure_kind", "surplus")
                trial.set_user_attr("fail_reason", "budget already taken by other workers")
                tell_fail(study, trial)
                self._stop_heartbeat()
                continue
            log.info("trial %d (%d/%d complete)", trial.number, complete, s.n_trials)
            try:
                self.run_trial(study, trial, tracker, parent)
            finally:
                self._stop_heartbeat()

    def pareto(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if feasible(t.constraints)
        ]
        if not done:
            return []
        mask = pareto_mask([t.values for t in done], self.settings.directions)
        front = sorted((t for t, m in zip(done, mask) if m), key=lambda t: t.values[-1])
        return front

    def _reeval_targets(
        self, front: list[optuna.trial.FrozenTrial], study: optuna.Study
    ) -> list[optuna.trial.FrozenTrial]:
        if not self.settings.reeval_seeds:
            return []
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        per_method = self.settings.reeval_select == "per_method"
        return reeval_targets(
            front, self.settings.reeval_max_trials, done if per_method else [], self.settings
        )

    def _claim(self, tracker: Tracker, parent: str, tags: dict[str, str]) -> str | None:
        """Create a run for a (kind, trial, seed) unless a live or finished one exists."""
        query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        for run in tracker.client.search_runs([tracker.experiment_id], query, max_results=50):
            if run.info.status in ("FINISHED", "RUNNING"):
                return None
        name = "-".join(v for v in tags.values())
        return tracker.start_run(name, parent, tags={**tags, "worker": self.worker})

    def reference(self, tracker: Tracker, parent: str, study: optuna.Study) -> None:
        """The dense shared model (pruner=none) of the study's base config, trained with the
        study's seed and each re-evaluation seed, so that it is compared like for like."""
        seeds = dict.fromkeys([int(self.base.seed), *self.settings.reeval_seeds])
        for seed in seeds:
            run_id = self._claim(tracker, parent, {"kind": "reference", "seed": str(seed)})
            if run_id is None:
                continue
            cfg = self.compose(["pruner=none"])
            cfg.seed = seed
            tracker.set_tags(run_id, {"method": method_name(cfg.pruner, cfg.model)})
            try:
                self._train_run(cfg, tracker, run_id, self.folder / "reference" / f"seed{seed}")
                tracker.end_run(run_id)
                if seed == int(self.base.seed):
                    study.set_user_attr("reference_run_id", run_id)
            except Exception as err:
                tracker.set_tags(run_id, {"fail_reason": f"{type(err).__name__}: {err}"[:2000]})
                tracker.end_run(run_id, "FAILED")
                log.warning("the dense reference run (seed %d) failed: %s", seed, err)

    def reevaluate(
        self,
        front: list[optuna.trial.FrozenTrial],
        study: optuna.Study,
        tracker: Tracker,
        parent: str,
    ) -> None:
        for t in self._reeval_targets(front, study):
            for seed in self.settings.reeval_seeds:
                run_id = self._claim(
                    tracker,
                    parent,
                    {"kind": "reeval", "trial_number": str(t.number), "seed": str(seed)},
                )
                if run_id is None:
                    continue
                cfg, _ = self.trial_config(FixedTrial(t.params, t.number))
                cfg.seed = seed
                tracker.set_tags(run_id, {"method": method_name(cfg.pruner, cfg.model)})
                try:
                    self._train_run(
                        cfg, tracker, run_id, self.folder / "reeval" / f"{t.number}-seed{seed}"
                    )
                    tracker.end_run(run_id)
                except Exception as err:
                    tracker.set_tags(run_id, {"fail_reason": f"{type(err).__name__}: {err}"[:2000]})
                    tracker.end_run(run_id, "FAILED")
                    log.warning(
                        "re-evaluation of trial %d, seed %d failed: %s", t.number, seed, err
                    )

    def log_study_metrics(self, study: optuna.Study, tracker: Tracker, parent: str) -> None:
        """``study/hypervolume`` per COMPLETE trial (step = trial number; pareto.hypervolume_history,
        the report's definition) against the configured reference point, which is stored with
        the study (user attr ``hypervolume_reference``) so that the report reads the same one."""
        ref = self._hv_reference()
        if ref is None or len(self.settings.objectives) != 2:
            return
        study.set_user_attr("hypervolume_reference", ref)  # also for studies begun before it
        history = hypervolume_history(
            study.get_trials(deepcopy=False), self.settings.directions, ref
        )
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric("study/hypervolume", v, now, number) for number, v in history]
        for i in range(0, len(metrics), 1000):
            tracker.client.log_batch(parent, metrics=metrics[i : i + 1000])

    def run(self) -> StudyOutcome:
        self.validate()
        study, desc = self.open()
        tracker, parent = self._tracker_and_parent(study)
        recover_stale(study, lambda t: self._fail_trial_run(tracker, t))
        self._fail_stale_runs(tracker, parent)
        base_data = self.data_for(self.compose([]))
        if "domains" not in study.user_attrs:
            study.set_user_attr("domains", _domain_summary(base_data))
        if self.settings.reference:
            self.reference(tracker, parent, study)
        done = self.optimise(study, tracker, parent)
        front = self.pareto(study)
        if done:
            self.reevaluate(front, study, tracker, parent)
            self.log_study_metrics(study, tracker, parent)
        return StudyOutcome(study, self.settings, front, self.folder, desc, tracker, parent, done)


def reeval_targets(
    front: list[optuna.trial.FrozenTrial],
    k: int,
    done: list[optuna.trial.FrozenTrial],
    settings: StudySettings,
) -> list[optuna.trial.FrozenTrial]:
    """The trials a study re-trains on test over seeds: up to ``k`` front trials spread along
    the front, then the best feasible trial (first objective) of each method among ``done``
    that is not already chosen (``reeval.select=per_method``), in order of cost."""
    if k <= 0:
        targets = []
    elif len(front) <= k:
        targets = list(front)
    else:
        idx = sorted({round(i * (len(front) - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
        targets = [front[i] for i in idx]
    sign = 1.0 if settings.directions[0] == "maximize" else -1.0
    best: dict[str, optuna.trial.FrozenTrial] = {}
    for t in done:
        method = t.user_attrs.get("method", "?")
        if feasible(t.constraints) and (
            method not in best or sign * t.values[0] > sign * best[method].values[0]
        ):
            best[method] = t
    chosen = {t.number for t in targets}
    return targets + sorted(
        (t for t in best.values() if t.number not in chosen), key=lambda t: t.values[-1]
    )


def _best_effort(call: Callable, *args) -> None:
    """A tracking call on a failure path: its own failure is logged, never raised (the trial's
    failure is already told to Optuna)."""
    try:
        call(*args)
    except Exception as err:
        log.warning("tracking: %s failed: %s", call.__name__, f"{err}"[:300])


def _domain_summary(data: PreparedData) -> list[dict]:
    """Per domain: train rows, train positive rate, and the oracle AUC on test (synthetic)."""
    rows = data.rows_per_domain("train")
    train, test = data.splits["train"], data.splits["test"]
    out = []
    for k, name in enumerate(data.domain_names):
        pos = float(train.label[train.domain == k].float().mean()) if rows[k] else None
        oracle = None
        sel = test.domain == k
        if test.p_true is not None and int(sel.sum()):
            oracle = auc(test.label[sel].numpy(), test.p_true[sel].numpy())
            oracle = None if math.isnan(oracle) else oracle
        out.append(
            {
                "domain": name,
                "group": None if data.domain_groups is None else data.domain_groups.get(name),
                "train_rows": int(rows[k]),
                "pos_rate": pos,
                "oracle_auc": oracle,
            }
        )
    return out
