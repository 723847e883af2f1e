"""A study's storage and resume: the checks before the first trial, the Optuna study opened
(created, or loaded with its fixed settings compared), the MLflow experiment and the one
parent run the workers elect, and the runs dead workers left RUNNING.

``StudyContext`` is what every part of a study shares (study/trials.py, study/finish.py,
study/reevaluation.py): the base config, ``compose(overrides) -> DictConfig``, the parsed
settings and search space, the study folder and this worker's identity.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf

from adasparse_lab import machine
from adasparse_lab.config import domain_metrics_max, redacted
from adasparse_lab.data import PreparedData
from adasparse_lab.errors import ConfigError
from adasparse_lab.run.build import build_components
from adasparse_lab.store.study_storage import open_storage, worker_alive, worker_id
from adasparse_lab.store.tracking import Tracker, tag_experiment_kind
from adasparse_lab.study import space as space_mod
from adasparse_lab.study.enqueued import ENQUEUED
from adasparse_lab.study.fingerprint import changes, fingerprint
from adasparse_lab.study.proposals import proposal_seed
from adasparse_lab.study.settings import StudySettings, parse_settings
from adasparse_lab.study.space import Param

CREATED = "created"  # user attr written last when a study is created (_finish_creation)
log = logging.getLogger(__name__)
Compose = Callable[[list[str]], DictConfig]


@dataclass
class StudyContext:
    """What the parts of one study share; ``worker`` identifies this process (host:pid:start)."""

    base: DictConfig
    compose: Compose
    settings: StudySettings
    params: list[Param]
    folder: Path
    worker: str

    @classmethod
    def from_config(cls, base: DictConfig, compose: Compose) -> StudyContext:
        settings = parse_settings(base.study)
        params = space_mod.parse_space(base.study.space)
        folder = Path(base.paths.studies) / settings.name
        return cls(base, memoised(compose), settings, params, folder, worker_id())

    def hv_reference(self) -> list[float] | None:
        ref = self.settings.hypervolume_reference
        return None if ref is None else [float(v) for v in ref]


def memoised(compose: Compose) -> Compose:
    """``compose`` run once per list of overrides, each caller handed its own copy (it writes
    its sampled values into it). Hydra re-reads every YAML file on each call, 0.2-0.6 s: the
    largest fixed cost of a trial stopped at its first rung, which trains for about as long.
    The files are read when first needed, as before; a later run of the study reads them anew."""
    seen: dict[tuple[str, ...], DictConfig] = {}

    def run(overrides: list[str]) -> DictConfig:
        key = tuple(overrides)
        if key not in seen:
            seen[key] = compose(list(overrides))
        return copy.deepcopy(seen[key])

    return run


def machine_info() -> dict[str, str]:
    """The study's ``machine`` attribute: the machine (adasparse_lab.machine), torch's threads
    and the versions of the libraries that shape the numbers."""
    import torch

    return {
        **machine.describe(),
        "threads": str(torch.get_num_threads()),
        **machine.versions("torch", "optuna", "mlflow", "polars", "plotly"),
    }


class StudySession:
    """Storage and resume of the study in ``ctx``; testable without training anything."""

    def __init__(self, ctx: StudyContext) -> None:
        self.ctx = ctx
        self._validated = False

    def validate(self) -> None:
        """Everything that can be checked before the first trial."""
        if self._validated:
            return
        s, params = self.ctx.settings, self.ctx.params
        self.method_points()  # study.trials_per_method: the space and budget allow it
        space_mod.validate(params, self.ctx.compose, lambda cfg: build_components(cfg))
        space_mod.check_enqueue(params, s.enqueue)
        if s.grid:
            points = math.prod(len(v) for v in space_mod.grid(params).values())
            if s.n_trials > points:
                raise ConfigError(
                    f"study.n_trials={s.n_trials} exceeds the grid's {points} points "
                    "(study.grid=true runs each point once): lower study.n_trials"
                )
        if s.workers > 1 and s.storage == "sqlite":
            raise ConfigError("study.workers>1 needs study.storage=journal or a database URL")
        self._validated = True

    def method_points(self) -> list[dict]:
        """The partial points ``{method: m}`` of ``study.trials_per_method`` (space.method_points:
        each method's trials, round-robin, after ``study.enqueue``'s); none when it is off."""
        s = self.ctx.settings
        if s.trials_per_method is None:
            return []
        extra = []
        if s.grid:
            extra.append("study.grid=true (the grid fixes every trial)")
        if s.early_stop.kind != "none":
            extra.append(
                f"study.early_stop.kind={s.early_stop.kind} (a stopped trial cuts its method's share)"
            )
        return space_mod.method_points(
            self.ctx.params, s.trials_per_method, s.n_trials, s.enqueue, "; ".join(extra)
        )

    def sampler(self, n_trials: int) -> optuna.samplers.BaseSampler:
        """The sampler for an ask when ``n_trials`` trials are in storage (study/proposals.py)."""
        node = self.ctx.base.study.sampler
        study_seed = node.get("seed") if node.get("seed") is not None else self.ctx.base.seed
        if self.ctx.settings.grid:
            # GridSampler shuffles its grid with its seed and maps trial k to grid point k: one
            # seed for every ask, or a re-seeded grid proposes points already run.
            grid = space_mod.grid(self.ctx.params)
            return optuna.samplers.GridSampler(grid, seed=int(study_seed))
        seed = proposal_seed(int(study_seed), self.ctx.settings.worker_index, n_trials)
        from hydra.utils import instantiate

        return instantiate(node, seed=seed)

    def open(self) -> tuple[optuna.Study, str]:
        """The study, created (with its fingerprint and warm-start points) or resumed."""
        s = self.ctx.settings
        storage, desc = open_storage(
            s.storage,
            s.name,
            Path(self.ctx.base.paths.studies),
            s.workers,
            s.heartbeat_s,
            s.grace_s,
            s.storage_retry_s,
        )
        kwargs = dict(storage=storage, study_name=s.name, sampler=self.sampler(0))
        if len(s.objectives) > 1:
            kwargs["directions"] = s.directions
        else:
            kwargs["direction"] = s.directions[0]
        try:
            study = optuna.create_study(**kwargs)
        except optuna.exceptions.DuplicatedStudyError:
            study = self._resume(storage, kwargs["sampler"])
            if not study.user_attrs.get(CREATED):  # its creator was killed part-way
                self._finish_creation(study)
            return study, desc
        study.set_user_attr("fingerprint", fingerprint(self.ctx.base))
        study.set_user_attr("creator", self.ctx.worker)
        self._finish_creation(study)
        return study, desc

    def _finish_creation(self, study: optuna.Study) -> None:
        """The warm-start points and the metric names of a new study, then its CREATED mark,
        written last: a study without it was left part-made by a creator killed after
        create_study (the kill storm hit it: no point was ever enqueued), and the next worker
        to open it finishes the job. Points already in the study are not enqueued again; two
        workers finishing at once may both enqueue one, and the second copy is skipped when
        it is run (study/enqueued.py, earlier_copy).

        Warm start: known settings first, then (study.trials_per_method) each method's share
        as partial points {method: m}, the sampler filling in the rest. Each point has its own
        index, so a killed one is queued again once (study/enqueued.py) and two points of one
        method are two points, not copies of one."""
        s = self.ctx.settings
        present = {t.user_attrs.get(ENQUEUED) for t in study.get_trials(deepcopy=False)}
        for index, point in enumerate([*s.enqueue, *self.method_points()]):
            if index not in present:
                study.enqueue_trial(point, user_attrs={ENQUEUED: index})  # study/enqueued.py
        with warnings.catch_warnings():  # experimental since optuna 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(s.metrics)
        study.set_user_attr(CREATED, True)

    def _resume(self, storage, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        s = self.ctx.settings
        study = optuna.load_study(storage=storage, study_name=s.name, sampler=sampler)
        stored = [d.name.lower() for d in study.directions]
        if stored != s.directions:
            raise ConfigError(
                f"study.objectives: the stored study {s.name!r} has directions "
                f"{stored}; use another study.name"
            )
        self.check_fingerprint(study)
        return study

    def check_fingerprint(self, study: optuna.Study) -> None:
        """Stop a resume whose fixed settings differ from the study's (study/fingerprint.py)."""
        name = self.ctx.settings.name
        current = fingerprint(self.ctx.base)
        stored = study.user_attrs.get("fingerprint")
        changed = changes(stored, current) if stored is not None else []
        if changed and not self.ctx.settings.allow_changed_config:
            lines = "\n  ".join(changed)
            raise ConfigError(
                f"study {name!r} was created with other fixed settings; resuming "
                f"would mix trials of both. Changed:\n  {lines}\nRun it under a new "
                "study.name=..., or pass study.allow_changed_config=true to resume anyway."
            )
        if changed:
            log.warning("study %r resumed with changed settings: %s", name, changed)
            history = study.user_attrs.get("config_changes", [])
            study.set_user_attr("config_changes", [*history, *changed])
        if changed or stored is None:  # a study made before fingerprints, or by a racing worker
            study.set_user_attr("fingerprint", current)

    def tracker_and_parent(self, study: optuna.Study) -> tuple[Tracker, str]:
        """The study's MLflow experiment and parent run. The worker that created the Optuna
        study creates the parent run; others wait for it (or take over from a dead creator)."""
        tracking = self.ctx.base.tracking
        if not tracking.enabled:
            raise ConfigError("a study needs tracking=mlflow (every trial is an MLflow run)")
        tracker = Tracker(
            tracking.uri,
            tracking.artifact_root,
            self.ctx.settings.name,
            domain_metrics_max(tracking),
        )
        tag_experiment_kind(tracker)
        parent = self.wait_for_parent(study)
        if parent is None:  # elected: this worker makes (or takes over) the parent run
            study.set_user_attr("creator", self.ctx.worker)
            parent = self.orphan_parent(tracker) or tracker.start_run(
                f"study-{self.ctx.settings.name}",
                tags={"kind": "study", "worker": self.ctx.worker},
            )
            self._record_parent(study, tracker, parent)
        return tracker, parent

    def wait_for_parent(self, study: optuna.Study) -> str | None:
        """The parent run id once the study records one; None when this worker is to make it:
        it created the study, or the creator is dead, or silent for ``study.grace_s``."""
        since = time.monotonic()
        while True:
            attrs = study.user_attrs
            if attrs.get("parent_run_id"):
                return attrs["parent_run_id"]
            creator = attrs.get("creator")
            if creator in (None, self.ctx.worker) or worker_alive(creator) is False:
                return None
            if time.monotonic() - since > self.ctx.settings.grace_s:  # on another machine
                log.warning(
                    "study creator %s made no parent run in study.grace_s: taking over", creator
                )
                return None
            time.sleep(0.5)

    def _record_parent(self, study: optuna.Study, tracker: Tracker, parent: str) -> None:
        s = self.ctx.settings
        for key, value in {
            "objectives": [o.__dict__ for o in s.objectives],
            "mlflow_uri": tracker.uri,  # absolute: read back from any folder
            "mlflow_experiment": s.name,
            "config": OmegaConf.to_yaml(redacted(self.ctx.base)),  # resolved, no password
            "machine": machine_info(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hypervolume_reference": self.ctx.hv_reference(),  # what the report measures against
            "parent_run_id": parent,  # last: its presence means the rest is there
        }.items():
            study.set_user_attr(key, value)
        params = {
            "study": s.name,
            "n_trials": s.n_trials,
            "objectives": ",".join(s.metrics),
            "hypervolume_reference": str(self.ctx.hv_reference()),
        }
        tracker.log_params(parent, params)

    def orphan_parent(self, tracker: Tracker) -> str | None:
        """A parent run a killed creator started but never recorded on the study: taken over,
        so that a study keeps one parent run however often its creator is killed."""
        found = tracker.client.search_runs(
            [tracker.experiment_id], "tags.kind = 'study'", order_by=["attributes.start_time ASC"]
        )
        if not found:
            return None
        run_id = found[0].info.run_id
        tracker.client.update_run(run_id, status="RUNNING")  # a resume may have failed it
        tracker.set_tags(run_id, {"worker": self.ctx.worker})
        return run_id

    def fail_stale_runs(self, tracker: Tracker, parent: str) -> None:
        """MLflow runs left RUNNING by dead workers (trials, re-evaluations, the reference)."""
        runs = tracker.client.search_runs(
            [tracker.experiment_id], "attributes.status = 'RUNNING'", max_results=1000
        )
        for run in runs:
            ident = run.data.tags.get("worker")
            if run.info.run_id != parent and ident and worker_alive(ident) is False:
                tracker.set_tags(run.info.run_id, {"fail_reason": f"worker {ident} died"})
                tracker.end_run(run.info.run_id, "FAILED")


def fail_trial_run(tracker: Tracker, trial: optuna.trial.FrozenTrial) -> None:
    """The MLflow run of a trial failed for a dead or silent worker: FAILED too."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id is None:
        return
    reason = trial.user_attrs.get("fail_reason") or f"worker {trial.user_attrs.get('worker')} died"
    tracker.set_tags(run_id, {"fail_reason": reason})
    tracker.end_run(run_id, "FAILED")


def domain_summary(data: PreparedData) -> list[dict]:
    """Per domain: train rows, train positive rate, and the oracle AUC on test (synthetic)."""
    rows = data.rows_per_domain("train")
    pos = data.pos_rate_per_domain("train")
    oracle = data.oracle_auc_per_domain("test")
    return [
        {
            "domain": name,
            "group": None if data.domain_groups is None else data.domain_groups.get(name),
            "train_rows": int(rows[k]),
            "pos_rate": None if math.isnan(pos[k]) else float(pos[k]),
            "oracle_auc": oracle[k],
        }
        for k, name in enumerate(data.domain_names)
    ]
