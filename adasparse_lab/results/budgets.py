"""Each method's search budget in a study, and the methods whose budget differs from the
others': fair means equal budget (DESIGN.md, Verdicts), so a method whose search failed or was
cut short is flagged, not compared as if it had had the same chance.

A method's budget is counted from the study's trials by their ``method`` user attr: ``asked``,
the trials that ended (COMPLETE, FAIL or PRUNED), and ``complete``, those that COMPLETEd.
Trials still running count for nothing yet (a running study's methods may differ for now);
a proposal the driver skipped as a duplicate of another trial (``failure_kind`` duplicate)
never trained and counts for nothing either, nor does a trial killed with its worker and queued
again (its copy, user attr ``requeue_of``, is the method's trial: one kill flags no method). The others' budget is the most common budget
among the methods (ties: the largest), so in a grid whose every point ran, no method is
flagged, and one method short of it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from adasparse_lab.store.reader import trial_method

ENDED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
REQUEUE_OF = "requeue_of"  # user attr of a trial queued again for a killed one (study/enqueued.py)


@dataclass(frozen=True, order=True)
class Budget:
    asked: int  # the method's trials that ended: COMPLETE, FAIL or PRUNED
    complete: int  # of them, COMPLETE

    def text(self) -> str:
        """'5' when every trial completed, else '3/5 complete'."""
        return (
            str(self.asked)
            if self.complete == self.asked
            else f"{self.complete}/{self.asked} complete"
        )


def method_budgets(trials: Iterable[FrozenTrial]) -> dict[str, Budget]:
    """{method: its budget} over ``trials`` (a study's), in the order methods first appear. A
    trial that ended before its method was known (its config did not compose) has no method
    and is not counted."""
    asked: Counter[str] = Counter()
    complete: Counter[str] = Counter()
    trials = list(trials)
    replaced = {t.user_attrs.get(REQUEUE_OF) for t in trials} - {None}
    for t in trials:
        method = trial_method(t)
        if (
            t.state not in ENDED
            or method is None
            or t.user_attrs.get("failure_kind") == "duplicate"
            or (t.state == TrialState.FAIL and t.number in replaced)
        ):
            continue
        asked[method] += 1
        complete[method] += t.state == TrialState.COMPLETE
    return {m: Budget(n, complete[m]) for m, n in asked.items()}


def budget_flags(budgets: dict[str, Budget]) -> dict[str, str]:
    """{method: flag} for the methods whose budget differs from the others' (the most common
    one; ties: the largest), e.g. 'budget 3/5 complete (others 5)'; the others get ''."""
    if not budgets:
        return {}
    counts = Counter(budgets.values())
    others = max(counts, key=lambda b: (counts[b], b))
    return {
        m: "" if b == others else f"budget {b.complete}/{b.asked} complete (others {others.text()})"
        for m, b in budgets.items()
    }
