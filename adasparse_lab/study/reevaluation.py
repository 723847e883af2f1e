"""The runs a study adds to its trials. Selection on validation, claims on test: chosen front
trials re-trained with each ``study.reeval.seeds`` and evaluated on test (re-evaluation), and
the dense reference model under the study's seed and the same seeds. Each run is claimed
through the study's storage (store/claims.py: exactly one worker wins a claim) under its
(kind, trial, seed), so that several workers never train the same one twice; a run that fails
ends FAILED and is logged, never raised (the study's trials are done), and a later worker or
resume runs it again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
from omegaconf import DictConfig
from optuna.trial import FixedTrial

from adasparse_lab.results.front import feasible, spread_pick
from adasparse_lab.run.naming import method_name
from adasparse_lab.store.claims import Claim, Claims
from adasparse_lab.store.tracking import Tracker
from adasparse_lab.study.progress import extra_run_done
from adasparse_lab.study.session import StudyContext
from adasparse_lab.study.settings import StudySettings
from adasparse_lab.study.trials import TrialRunner

log = logging.getLogger(__name__)


def reeval_targets(
    front: list[optuna.trial.FrozenTrial],
    k: int,
    done: list[optuna.trial.FrozenTrial],
    settings: StudySettings,
) -> list[optuna.trial.FrozenTrial]:
    """The trials a study re-trains on test over seeds: up to ``k`` front trials spread along
    the front by cost (results.front.spread_pick, as the report picks the front trials it
    details), then the best feasible trial (first objective) of each method among ``done``
    that is not already chosen (``reeval.select=per_method``), in order of cost."""
    targets = [front[i] for i in spread_pick([t.values[-1] for t in front], k)]
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


class ExtraRuns:
    """The re-evaluation and reference runs of the study in ``ctx``; ``trials`` trains
    (TrialRunner.train_run) and composes a trial's config."""

    def __init__(self, ctx: StudyContext, trials: TrialRunner) -> None:
        self.ctx, self.trials = ctx, trials

    def claim(
        self, study: optuna.Study, tracker: Tracker, parent: str, tags: dict[str, str]
    ) -> tuple[Claim, str] | None:
        """Own the run (kind, trial, seed) of ``tags`` and start it, unless another worker owns
        it or it finished (also by a worker killed before it recorded so on its claim)."""
        claim = Claims.of(study, self.ctx.worker).take(":".join(tags.values()))
        if claim is None:
            return None
        query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        for run in tracker.client.search_runs([tracker.experiment_id], query, max_results=50):
            if run.info.status == "FINISHED":
                claim.finish()
                return None
        name = "-".join(v for v in tags.values())
        return claim, tracker.start_run(name, parent, tags={**tags, "worker": self.ctx.worker})

    def _train_claimed(
        self,
        cfg: DictConfig,
        tracker: Tracker,
        claimed: tuple[Claim, str],
        out_dir: Path,
        what: str,
    ) -> bool:
        """Train ``cfg`` into the claimed run; a failure ends it FAILED and is logged, never
        raised (the study's trials are done). True when it finished."""
        claim, run_id = claimed
        tracker.set_tags(run_id, {"method": method_name(cfg.pruner, cfg.model)})
        started = time.perf_counter()
        try:
            self.trials.train_run(cfg, tracker, run_id, out_dir)
            tracker.end_run(run_id)
        except Exception as err:
            tracker.set_tags(run_id, {"fail_reason": f"{type(err).__name__}: {err}"[:2000]})
            tracker.end_run(run_id, "FAILED")
            claim.finish(ok=False)
            log.warning("%s failed: %s", what, err)
            return False
        claim.finish()
        extra_run_done(what, time.perf_counter() - started)
        return True

    def reference(self, tracker: Tracker, parent: str, study: optuna.Study) -> None:
        """The dense shared model (pruner=none) of the study's base config, trained with the
        study's seed and each re-evaluation seed, so that it is compared like for like."""
        study_seed = int(self.ctx.base.seed)
        for seed in dict.fromkeys([study_seed, *self.ctx.settings.reeval_seeds]):
            claimed = self.claim(study, tracker, parent, {"kind": "reference", "seed": str(seed)})
            if claimed is None:
                continue
            cfg = self.ctx.compose(["pruner=none"])
            cfg.seed = seed
            out_dir = self.ctx.folder / "reference" / f"seed{seed}"
            what = f"the dense reference run (seed {seed})"
            if self._train_claimed(cfg, tracker, claimed, out_dir, what) and seed == study_seed:
                study.set_user_attr("reference_run_id", claimed[1])

    def reevaluate(
        self,
        targets: list[optuna.trial.FrozenTrial],
        study: optuna.Study,
        tracker: Tracker,
        parent: str,
    ) -> None:
        """Each of ``targets`` (``reeval_targets``) re-trained with each re-evaluation seed."""
        for t in targets:
            for seed in self.ctx.settings.reeval_seeds:
                tags = {"kind": "reeval", "trial_number": str(t.number), "seed": str(seed)}
                claimed = self.claim(study, tracker, parent, tags)
                if claimed is None:
                    continue
                cfg, _ = self.trials.trial_config(FixedTrial(t.params, t.number))
                cfg.seed = seed
                out_dir = self.ctx.folder / "reeval" / f"{t.number}-seed{seed}"
                what = f"re-evaluation of trial {t.number}, seed {seed}"
                self._train_claimed(cfg, tracker, claimed, out_dir, what)
