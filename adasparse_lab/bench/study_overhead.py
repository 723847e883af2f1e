"""Per-trial overhead of the study driver: everything in a trial except fit and evaluate
(compose, sampling, Optuna storage, MLflow runs and metrics, writing and logging outputs), as a
share of the trial's time, on trials the size of a shipped study's (default: ``sparsity``).

Runs a real study in a temporary folder (no reference run, no re-evaluation) and reads the
``duration_s`` and ``fit_s`` that the driver records on every trial.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.study.driver import StudyRunner

CONF = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class StudyBenchResult:
    study: str
    trials: int
    storage: str
    mean_trial_s: float
    mean_fit_s: float

    @property
    def overhead_s(self) -> float:
        return self.mean_trial_s - self.mean_fit_s

    @property
    def overhead_share(self) -> float:
        return self.overhead_s / self.mean_trial_s

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "overhead_s": self.overhead_s,
            "overhead_share": self.overhead_share,
        }


def run_study_bench(study: str = "sparsity", n_trials: int = 4) -> StudyBenchResult:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"+study={study}", f"study.n_trials={n_trials}", "study.reference=false",
            "study.early_stop.kind=none",  # every trial to its end: the overhead of full trials
            "study.reeval.max_trials=0", f"paths.studies={tmp}/studies",
            f"paths.reports={tmp}/reports", f"paths.cache={tmp}/cache",
        ]  # fmt: skip
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            base = compose("config", overrides=overrides)
            runner = StudyRunner(
                base, lambda extra: compose("config", overrides=[*overrides, *extra])
            )
            outcome = runner.run()
        done = [t for t in outcome.study.get_trials() if t.state == TrialState.COMPLETE]
        storage = outcome.storage_desc.split(":", 1)[0]
    return StudyBenchResult(
        study=study,
        trials=len(done),
        storage=storage,
        mean_trial_s=sum(t.user_attrs["duration_s"] for t in done) / len(done),
        mean_fit_s=sum(t.user_attrs["fit_s"] for t in done) / len(done),
    )


def format_study(r: StudyBenchResult) -> str:
    verdict = "ok" if r.overhead_share < 0.05 else "ABOVE TARGET"
    return "\n".join(
        [
            f"[4] study driver overhead  +study={r.study}, {r.trials} trials ({r.storage} storage, MLflow tracking)",
            f"    mean trial {r.mean_trial_s:.2f} s = fit+evaluate {r.mean_fit_s:.2f} s"
            f" + overhead {r.overhead_s:.3f} s (compose, sampling, storage, tracking, outputs)",
            f"    overhead share {100 * r.overhead_share:.1f}%   target < 5%: {verdict}",
        ]
    )
