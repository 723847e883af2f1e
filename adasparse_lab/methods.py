"""The names of the methods runs compare, from strings: what a pruner is ('none', a gate's form
such as 'fusion', or a pruning rival's own method) and what it reads ('domain' alone, or more).
run.naming reads these strings off a run's configs; store.reader off the trial attrs of a study
stored before trials recorded their method."""

from __future__ import annotations

RIVALS = ("magnitude", "domain_magnitude", "random")  # the pruning rivals' methods


def method_of(form: str, inputs: str | None = None, rank: int | None = None) -> str:
    """'dense' for no pruner, a rival's own name, else 'adasparse-<form>' with '-domain' for
    the domain-only pruner input and '-r<rank>' for a low-rank pruner."""
    if form == "none":
        return "dense"
    if form in RIVALS:
        return form
    name = f"adasparse-{form}"
    if inputs == "domain":
        name += "-domain"
    if rank:
        name += f"-r{rank}"
    return name
