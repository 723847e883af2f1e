"""What a study measures besides its trials. Selection on validation, claims on test: the
Pareto front of the COMPLETE feasible trials, its trials re-trained with several seeds and
evaluated on test (re-evaluation), the dense reference model under the same seeds, and the
hypervolume per trial logged to the parent run. Each extra run is claimed by (kind, trial,
seed) tags, so that several workers never train the same one twice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.trial import FixedTrial, TrialState

from adasparse_lab.results.front import feasible, hypervolume_history, pareto_mask
from adasparse_lab.run.naming import method_name
from adasparse_lab.store.tracking import Tracker
from adasparse_lab.study.session import StudyContext
from adasparse_lab.study.settings import StudySettings
from adasparse_lab.study.trials import TrialRunner

log = logging.getLogger(__name__)


class StudyClosing:
    """The front, re-evaluation, reference runs and hypervolume of the study in ``ctx``;
    ``trials`` trains (TrialRunner.train_run) and composes a trial's config."""

    def __init__(self, ctx: StudyContext, trials: TrialRunner) -> None:
        self.ctx, self.trials = ctx, trials

    def pareto(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The non-dominated COMPLETE feasible trials, in order of cost (last objective)."""
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if feasible(t.constraints)
        ]
        if not done:
            return []
        mask = pareto_mask([t.values for t in done], self.ctx.settings.directions)
        return sorted((t for t, m in zip(done, mask) if m), key=lambda t: t.values[-1])

    def reeval_targets(
        self, front: list[optuna.trial.FrozenTrial], study: optuna.Study
    ) -> list[optuna.trial.FrozenTrial]:
        s = self.ctx.settings
        if not s.reeval_seeds:
            return []
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        per_method = s.reeval_select == "per_method"
        return reeval_targets(front, s.reeval_max_trials, done if per_method else [], s)

    def claim(self, tracker: Tracker, parent: str, tags: dict[str, str]) -> str | None:
        """Create a run for a (kind, trial, seed) unless a live or finished one exists."""
        query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        for run in tracker.client.search_runs([tracker.experiment_id], query, max_results=50):
            if run.info.status in ("FINISHED", "RUNNING"):
                return None
        name = "-".join(v for v in tags.values())
        return tracker.start_run(name, parent, tags={**tags, "worker": self.ctx.worker})

    def _train_claimed(
        self, cfg: DictConfig, tracker: Tracker, run_id: str, out_dir: Path, what: str
    ) -> bool:
        """Train ``cfg`` into the claimed run; a failure ends it FAILED and is logged, never
        raised (the study's trials are done). True when it finished."""
        tracker.set_tags(run_id, {"method": method_name(cfg.pruner, cfg.model)})
        try:
            self.trials.train_run(cfg, tracker, run_id, out_dir)
            tracker.end_run(run_id)
            return True
        except Exception as err:
            tracker.set_tags(run_id, {"fail_reason": f"{type(err).__name__}: {err}"[:2000]})
            tracker.end_run(run_id, "FAILED")
            log.warning("%s failed: %s", what, err)
            return False

    def reference(self, tracker: Tracker, parent: str, study: optuna.Study) -> None:
        """The dense shared model (pruner=none) of the study's base config, trained with the
        study's seed and each re-evaluation seed, so that it is compared like for like."""
        study_seed = int(self.ctx.base.seed)
        for seed in dict.fromkeys([study_seed, *self.ctx.settings.reeval_seeds]):
            run_id = self.claim(tracker, parent, {"kind": "reference", "seed": str(seed)})
            if run_id is None:
                continue
            cfg = self.ctx.compose(["pruner=none"])
            cfg.seed = seed
            out_dir = self.ctx.folder / "reference" / f"seed{seed}"
            what = f"the dense reference run (seed {seed})"
            if self._train_claimed(cfg, tracker, run_id, out_dir, what) and seed == study_seed:
                study.set_user_attr("reference_run_id", run_id)

    def reevaluate(
        self,
        front: list[optuna.trial.FrozenTrial],
        study: optuna.Study,
        tracker: Tracker,
        parent: str,
    ) -> None:
        """Each target trial (``reeval_targets``) re-trained with each ``study.reeval.seeds``."""
        for t in self.reeval_targets(front, study):
            for seed in self.ctx.settings.reeval_seeds:
                tags = {"kind": "reeval", "trial_number": str(t.number), "seed": str(seed)}
                run_id = self.claim(tracker, parent, tags)
                if run_id is None:
                    continue
                cfg, _ = self.trials.trial_config(FixedTrial(t.params, t.number))
                cfg.seed = seed
                out_dir = self.ctx.folder / "reeval" / f"{t.number}-seed{seed}"
                what = f"re-evaluation of trial {t.number}, seed {seed}"
                self._train_claimed(cfg, tracker, run_id, out_dir, what)

    def log_study_metrics(self, study: optuna.Study, tracker: Tracker, parent: str) -> None:
        """``study/hypervolume`` per COMPLETE trial (step = trial number; pareto.hypervolume_history,
        the report's definition) against the configured reference point, which is stored with
        the study (user attr ``hypervolume_reference``) so that the report reads the same one."""
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
