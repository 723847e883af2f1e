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
