"""Search diagnostics from Optuna's own plots: optimisation history per objective, hypervolume
history, parameter importances, parallel coordinates and slices. A plot that cannot be drawn
(too few trials, no parameters) becomes a note saying why, never a failed report."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from adasparse_lab.report.style import finish
from adasparse_lab.results.front import search_curve
from adasparse_lab.results.fronts import study_reference_point

log = logging.getLogger(__name__)


@dataclass
class Diagnostic:
    title: str
    figure: go.Figure | None
    note: str = ""


def _evaluator():
    # fANOVA (Optuna's default) needs scikit-learn, which this project does not depend on.
    if importlib.util.find_spec("sklearn") is not None:
        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.importance.PedAnovaImportanceEvaluator()


def _attempt(
    title: str, height: int, plot: Callable[..., go.Figure], *args, **kwargs
) -> Diagnostic:
    """``plot(*args, **kwargs)`` as a diagnostic, or a note saying why Optuna refused it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = plot(*args, **kwargs)
    except Exception as err:  # an Optuna plot refusing this study: say why in the report
        log.info("%s: not drawn (%s)", title, err)
        return Diagnostic(title, None, f"not available: {err}")
    fig.update_layout(title_text=None)
    return Diagnostic(title, finish(fig, None, height))


def _hypervolume(study: optuna.Study, objectives: list[dict], prefix: str) -> Diagnostic:
    """Optuna's hypervolume history of the feasible COMPLETE trials against the reference point
    stored with the study: the numbers the driver logged to MLflow as ``study/hypervolume``."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = np.array([t.values for t in done], dtype=np.float64).reshape(len(done), -1)
    directions = [o["direction"] for o in objectives]
    ref, source = study_reference_point(study.user_attrs, values, directions)
    title = f"{prefix}hypervolume history (reference point {ref}, {source}"
    diag = _attempt(title + ")", 380, optuna.visualization.plot_hypervolume_history, study, ref)
    if diag.figure is not None:
        hover = "trial %{x}<br>hypervolume %{y:.4f}<extra></extra>"
        diag.figure.update_traces(line_shape="hv", name="hypervolume", hovertemplate=hover)
        axes = diag.figure.update_xaxes(title_text="trial")
        axes.update_yaxes(title_text="hypervolume (feasible trials)")
        diag.title = f"{title}; final {diag.figure.data[0].y[-1]:.4f})"
    return diag


def _search_efficiency(study: optuna.Study, objectives: list[dict], prefix: str) -> Diagnostic:
    """Hypervolume against the CPU-seconds the search paid (results.front.search_curve), each
    ended trial a point, stopped trials marked at their rung: what early stopping saves."""
    trials = study.get_trials(deepcopy=False)
    title = f"{prefix}search efficiency: hypervolume against cumulative trial CPU-seconds"
    if not any("cpu_s" in t.user_attrs for t in trials):
        return Diagnostic(title, None, "not available: the trials carry no CPU-seconds")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    values = np.array([t.values for t in done], dtype=np.float64).reshape(len(done), -1)
    directions = [o["direction"] for o in objectives]
    ref, _ = study_reference_point(study.user_attrs, values, directions)
    steps = search_curve(trials, directions, ref)
    fig = go.Figure(
        go.Scatter(
            x=[c for *_, c, _ in steps],
            y=[h for *_, h in steps],
            mode="lines",
            line_shape="hv",
            name="hypervolume",
            hoverinfo="skip",
        )
    )
    by_number = {t.number: t for t in trials}
    for state, symbol in (("COMPLETE", "circle"), ("PRUNED", "x"), ("FAIL", "triangle-down")):
        picked = [s for s in steps if s[1] == state]
        if not picked:
            continue
        text = [
            f"trial {n}"
            + (f" stopped at {by_number[n].user_attrs['pruned_at']:.3g} of its rows"
               if "pruned_at" in by_number[n].user_attrs else "")
            for n, *_ in picked
        ]  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=[c for *_, c, _ in picked],
                y=[h for *_, h in picked],
                mode="markers",
                marker_symbol=symbol,
                name=state.lower(),
                text=text,
                hovertemplate="%{text}<br>%{x:.0f} CPU-s, hypervolume %{y:.4f}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="cumulative CPU-seconds of the trials (fit, evaluation, outputs)")
    fig.update_yaxes(title_text="hypervolume (feasible COMPLETE trials)")
    pruned = sum(s[1] == "PRUNED" for s in steps)
    return Diagnostic(
        f"{title} ({pruned} of {len(steps)} ended trials stopped early)", finish(fig, None, 380)
    )


def diagnostics(
    study: optuna.Study, objectives: list[dict[str, str]], prefix: str = ""
) -> list[Diagnostic]:
    """Optuna's plots for ``study``; ``objectives`` as in results.storage.objectives."""
    vis = optuna.visualization
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return [Diagnostic(f"{prefix}search diagnostics", None, "no completed trial yet")]
    multi, names = len(study.directions) > 1, [o["name"] for o in objectives]

    def target(i: int) -> dict:  # objective i as the plot's target (needed when multi-objective)
        return {"target": (lambda t: t.values[i]) if multi else None, "target_name": names[i]}

    history = vis.plot_optimization_history
    out = [
        _attempt(f"{prefix}optimisation history: {name}", 380, history, study, **target(i))
        for i, name in enumerate(names)
    ]
    if len(study.directions) == 2:
        out.append(_hypervolume(study, objectives, prefix))
        out.append(_search_efficiency(study, objectives, prefix))
    if not any(t.params for t in done):
        return out + [Diagnostic(f"{prefix}parameters", None, "the study samples no parameters")]
    # The AUC objective (the first maximised one) drives the single-target plots.
    main = next((i for i, o in enumerate(objectives) if o["direction"] == "maximize"), 0)
    plots = {
        "parameter importances": (420, partial(vis.plot_param_importances, evaluator=_evaluator())),
        f"parallel coordinates ({names[main]})": (460, vis.plot_parallel_coordinate),
        f"slices ({names[main]})": (400, vis.plot_slice),
    }
    return out + [_attempt(prefix + t, h, p, study, **target(main)) for t, (h, p) in plots.items()]
