"""One line per finished trial for the person at the terminal, and a console that shows it
without every epoch of every trial.

    trial 12 COMPLETE · 12/20 complete · 1 min 40 s elapsed · about 2 min left · hypervolume 0.2310

and one line per reference or re-evaluation run (``the dense reference run (seed 1) done in
9 s``), so that no phase of a study is silent.

The ETA is this worker's pace (its own finished trials over its own elapsed time) times the
COMPLETE trials still missing; the hypervolume is the study's (results.front, against the
reference point stored with the study), so other workers' trials count in it. Per-epoch lines
stay in the run's log file (Hydra's file handler); ``study.verbose=true`` shows them on the
console too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

from adasparse_lab.results.front import hypervolume_2d, pareto_front
from adasparse_lab.study.early_stop import EarlyStop

log = logging.getLogger(__name__)

# Loggers whose INFO lines are the per-epoch and per-trial detail (warnings always show).
DETAIL = ("adasparse_lab.run.fit", "adasparse_lab.study.trials")


def duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '2 h 07 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """The progress line of one worker."""

    def __init__(
        self,
        n_trials: int,
        directions: Sequence[str],
        reference: Sequence[float] | None,
        early: EarlyStop | None = None,
    ) -> None:
        self.n_trials, self.directions, self.reference = n_trials, list(directions), reference
        self.early = early or EarlyStop()
        self.started, self.finished = time.monotonic(), 0
        self.spent_at_start: float | None = None

    def line(self, trials: Sequence[optuna.trial.FrozenTrial], number: int) -> str:
        """The line after trial ``number`` ended; ``trials``: the study's, read once."""
        self.finished += 1
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        spent = self.early.spent(trials)
        if self.spent_at_start is None:  # a resumed study: its pace is this run's trials'
            self.spent_at_start = self.early.spent(trials, below=number)
        elapsed = time.monotonic() - self.started
        state = trials[number].state.name
        if "pruned_at" in trials[number].user_attrs:  # early stopping (study/early_stop.py)
            state += f" at {trials[number].user_attrs['pruned_at']:.3g} of its rows"
        parts = [f"trial {number} {state}"]
        if self.early.counts_rows:
            stopped = sum(t.state == TrialState.PRUNED for t in trials)
            parts.append(f"{complete} complete, {stopped} stopped")
            parts.append(f"budget {spent:.4g}/{self.n_trials} trials' rows")  # 19.96, not 20
            pace = elapsed / max(spent - self.spent_at_start, 1e-9)  # seconds per trial's rows
        else:
            parts.append(f"{complete}/{self.n_trials} complete")
            pace = elapsed / self.finished
        parts.append(f"{duration(elapsed)} elapsed")
        missing = max(self.n_trials - spent, 0)
        if missing:
            parts.append(f"about {duration(pace * missing)} left")
        if self.reference is not None and len(self.directions) == 2:
            # The front's hypervolume: the last point of the study's history (results.front).
            front = [t.values for t in pareto_front(trials, self.directions)]
            hv = hypervolume_2d(front, self.directions, self.reference)
            parts.append(f"hypervolume {hv:.4f}")
        return " · ".join(parts)

    def report(self, study: optuna.Study, number: int) -> None:
        log.info("%s", self.line(study.get_trials(deepcopy=False), number))


def extra_run_done(what: str, seconds: float) -> None:
    """The line of a reference or re-evaluation run (before and after the trials)."""
    log.info("%s done in %s", what, duration(seconds))


class _HideDetail(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(DETAIL)


def quiet_console(root: logging.Logger | None = None) -> None:
    """Hide the per-epoch and per-trial INFO lines on the console handlers of ``root`` (a file
    handler keeps everything)."""
    for handler in (root or logging.getLogger()).handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.addFilter(_HideDetail())
