"""Multi-objective asynchronous successive halving (MO-ASHA, after Schmucker et al., 2021):
stop a trial part-way when it ranks poorly among the trials that reached the same point.

Optuna's pruners are single-objective (``trial.report`` raises in a multi-objective study), so
the rule lives here, with its records in the study's own storage:

- **Rungs** are fractions of a trial's training budget counted in rows seen (epochs x train
  rows): ``min_fraction``, ``min_fraction * eta``, ... below 1: 1/27, 1/9 and 1/3 by default.
  A one-epoch study on a big table still stops early, mid-epoch.
- At a rung the trial validates once (run/fit.py) and stores its objective values as the user
  attribute ``rung@<fraction>``. The cost objective is the trial's **projected final cost**
  (fit.projected_flops_ratio: the smaller of its measured FLOPs ratio and the one its final
  band's lower edge allows through the analytic FLOPs), so a trial is not stopped for the dense
  early epochs every schedule starts with. A latency objective is ranked on the same projection.
- The trial then reads every record at that rung (every worker's, every earlier run's: a
  resumed study keeps them) and ranks them: non-dominated sorting, then crowding distance
  within a front (the extremes first), then trial number. It goes on if it is among the top
  ``max(1, n // eta)`` of the ``n`` records, or the best of the rung on any objective (on a
  tie, the lowest trial number); else it
  stops: PRUNED in Optuna and KILLED in MLflow, with the rung and the values that stopped it.
- Asynchronous: nothing waits for a rung to fill; the decision is a pure function of the stored
  records, so any worker holding the same records makes the same one.
- **The budget** (``budget``): ``complete`` (default) runs until ``study.n_trials`` trials are
  COMPLETE, however many were stopped on the way, so a study spends more than without early
  stopping and ends with a better front. ``rows`` counts each trial by the share of its rows it
  trained (COMPLETE 1, stopped at a rung that rung's fraction), so ``study.n_trials`` is the
  training a plain study of that many trials does, and early stopping spends it on more
  parameter sets instead of finishing hopeless ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import optuna

from adasparse_lab.errors import ConfigError
from adasparse_lab.run.fit import Rung

KINDS = ("none", "moasha")
BUDGETS = ("complete", "rows")
# Objectives that a rung ranks on the projected FLOPs ratio (a cost the trial will have).
PROJECTED = ("val/flops/ratio", "val/latency/ratio")
RECORD = "rung@"  # user attribute prefix of a rung record: rung@0.1111


@dataclass(frozen=True)
class EarlyStop:
    """``study.early_stop``: ``kind`` none | moasha, the reduction factor ``eta``, the first
    rung's fraction of the budget ``min_fraction``, and what ``study.n_trials`` counts
    (``budget``: complete | rows)."""

    kind: str = "none"
    eta: int = 3
    min_fraction: float = 1 / 27
    budget: str = "complete"

    @property
    def counts_rows(self) -> bool:
        """Whether ``study.n_trials`` counts trials' rows (early stopping on, ``budget=rows``)."""
        return self.kind != "none" and self.budget == "rows"

    def spent(self, trials: Sequence[optuna.trial.FrozenTrial], below: int | None = None) -> float:
        """The part of ``study.n_trials`` that ``trials`` (those numbered below ``below``, if
        given) used: each COMPLETE trial 1, and under ``budget=rows`` each stopped one the
        fraction of its rows it trained (its rung)."""
        rows = self.counts_rows
        total = Fraction(0)
        for t in trials:
            if below is not None and t.number >= below:
                continue
            if t.state == optuna.trial.TrialState.COMPLETE:
                total += 1
            elif rows and t.state == optuna.trial.TrialState.PRUNED:
                total += self.share(t.user_attrs.get("pruned_at", 0.0))
        return float(total)  # summed exactly: 27 x 1/27 is a whole trial

    @property
    def fractions(self) -> tuple[float, ...]:
        """The rungs, as fractions of the budget (none for ``kind=none``), rounded to 4 digits:
        the names of their records (``rung@0.1111``) and ``pruned_at``."""
        return tuple(round(f, 4) for f in self._exact())

    def _exact(self) -> list[float]:
        if self.kind == "none":
            return []
        out, f = [], self.min_fraction
        while f < 1.0 - 1e-3:  # 1/9 * 9 rounds to 0.9999: the end, not a rung
            out.append(f)
            f *= self.eta
        return out

    def share(self, pruned_at: float) -> Fraction:
        """The share of its rows a trial stopped at the rung ``pruned_at`` trained, as the
        simple fraction the rung stands for: ``min_fraction`` (0.037037 in the shipped config)
        is 1/27, the rungs 1/27 x eta^k, so that three trials stopped at 1/3 spend one trial,
        not 0.9999 (a stored value of other settings, changed on a resume: its own fraction)."""
        first = Fraction(self.min_fraction).limit_denominator(1000)
        rungs = {round(f, 4): first * self.eta**k for k, f in enumerate(self._exact())}
        stored = round(float(pruned_at), 4)
        return rungs.get(stored, Fraction(stored).limit_denominator(1000))


def parse_early_stop(raw: Mapping | None) -> EarlyStop:
    """``study.early_stop`` (absent: none); every error names its key."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - {"kind", "eta", "min_fraction", "budget"})
    if unknown:
        raise ConfigError(
            f"study.early_stop: unknown key(s) {unknown}; known: kind, eta, min_fraction, budget"
        )
    kind = raw.get("kind", "none")
    if kind not in KINDS:
        raise ConfigError(f"study.early_stop.kind={kind!r}; choose one of {list(KINDS)}")
    eta = raw.get("eta", 3)
    if not isinstance(eta, int) or eta < 2:
        raise ConfigError(f"study.early_stop.eta={eta!r} must be an integer >= 2")
    fraction = raw.get("min_fraction", 1 / 27)
    if not 0 < fraction < 1:
        raise ConfigError(f"study.early_stop.min_fraction={fraction!r} must be in (0, 1)")
    budget = raw.get("budget", "complete")
    if budget not in BUDGETS:
        raise ConfigError(f"study.early_stop.budget={budget!r}; choose one of {list(BUDGETS)}")
    return EarlyStop(str(kind), eta, float(fraction), str(budget))


# -- the ranking -------------------------------------------------------------------------------
def front_ranks(points: np.ndarray) -> np.ndarray:
    """Non-dominated sorting of ``points`` [n, m], every column minimised: 0 for the first front,
    1 for the front once that one is removed, ..."""
    n = len(points)
    ranks = np.full(n, -1)
    left = np.arange(n)
    rank = 0
    while left.size:
        sub = points[left]
        dominated = np.array(
            [np.any(np.all(sub <= p, 1) & np.any(sub < p, 1)) for p in sub], dtype=bool
        )
        ranks[left[~dominated]] = rank
        left = left[dominated]
        rank += 1
    return ranks


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of the points of one front (the extremes: infinite)."""
    n, m = points.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, math.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        span = points[order[-1], j] - points[order[0], j]
        dist[order[0]] = dist[order[-1]] = math.inf
        if span > 0:
            dist[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / span
    return dist


def ranking(points: np.ndarray, numbers: Sequence[int]) -> list[int]:
    """Indices of ``points`` best first: front, then larger crowding distance, then number."""
    ranks = front_ranks(points)
    spread = np.zeros(len(points))
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        spread[members] = crowding(points[members])
    return sorted(range(len(points)), key=lambda i: (ranks[i], -spread[i], numbers[i]))


@dataclass(frozen=True)
class Decision:
    go_on: bool
    position: int  # 0-based place in the rung's ranking
    n: int  # records at the rung
    keep: int  # how many go on by rank: max(1, n // eta)
    best_on: tuple[int, ...]  # objectives on which the trial is the rung's best

    @property
    def reason(self) -> str:
        return f"ranked {self.position + 1} of {self.n} at its rung (the top {self.keep} go on)"


def decide(
    records: Mapping[int, Sequence[float]], number: int, directions: Sequence[str], eta: int
) -> Decision:
    """Whether trial ``number`` goes on, given every record ``{trial number: values}`` at a
    rung (its own included): top ``max(1, n // eta)`` of the ranking, or best on an objective."""
    numbers = sorted(records)
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    points = np.array([records[k] for k in numbers], dtype=float) * sign
    me = numbers.index(number)
    position = ranking(points, numbers).index(me)
    keep = max(1, len(numbers) // eta)
    # the best on an objective: the lowest trial number among those sharing the best value
    # (a tie, e.g. one cost for every trial, exempts one trial, not all of them)
    best_on = tuple(
        j
        for j in range(points.shape[1])
        if int(np.flatnonzero(points[:, j] == points[:, j].min())[0]) == me
    )
    return Decision(position < keep or bool(best_on), position, len(numbers), keep, best_on)


# -- the study's side --------------------------------------------------------------------------
class TrialStopped(Exception):
    """A trial stopped at a rung (told PRUNED)."""

    def __init__(self, fraction: float, rows: int, values: list[float], decision: Decision):
        self.fraction, self.rows, self.values, self.decision = fraction, rows, values, decision
        super().__init__(
            f"stopped at {fraction:.3g} of its rows ({rows} rows): {decision.reason}, "
            f"values {[round(v, 4) for v in values]}"
        )


def rung_values(rung: Rung, metrics: Sequence[str]) -> list[float]:
    """The objective values a rung ranks on (cost objectives: the projected FLOPs ratio)."""
    values = []
    for metric in metrics:
        if metric in PROJECTED:
            values.append(rung.projected_flops_ratio)
        elif metric in rung.val:
            values.append(rung.val[metric])
        else:
            raise ConfigError(
                f"study.early_stop: the objective {metric!r} is not measured part-way through "
                f"training (a rung has {sorted(k for k in rung.val if '/' not in k[4:])[:8]}...); "
                "use study.early_stop.kind=none for this study"
            )
    return values


def records_at(trials: Sequence[optuna.trial.FrozenTrial], fraction: float) -> dict[int, list]:
    key = f"{RECORD}{fraction}"
    return {t.number: t.user_attrs[key]["values"] for t in trials if key in t.user_attrs}


class RungJudge:
    """``on_rung`` of a study's trial: store the trial's record at the rung, rank it against
    every stored record there, store the decision, and raise TrialStopped to stop it."""

    def __init__(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        metrics: Sequence[str],
        directions: Sequence[str],
        eta: int,
    ) -> None:
        self.study, self.trial = study, trial
        self.metrics, self.directions, self.eta = list(metrics), list(directions), eta

    def __call__(self, rung: Rung) -> None:
        values = rung_values(rung, self.metrics)
        if not all(math.isfinite(v) for v in values):
            return  # the trial's end will fail it with the reason (non-finite objectives)
        key = f"{RECORD}{rung.fraction}"
        self.trial.set_user_attr(key, {"rows": rung.rows, "values": values})
        records = records_at(self.study.get_trials(deepcopy=False), rung.fraction)
        records[self.trial.number] = values
        decision = decide(records, self.trial.number, self.directions, self.eta)
        self.trial.set_user_attr(
            f"{key}/decision",
            {"go_on": decision.go_on, "position": decision.position, "n": decision.n},
        )
        if not decision.go_on:
            raise TrialStopped(rung.fraction, rung.rows, values, decision)
