"""Result figures: the AUC-vs-cost Pareto front of all trials and the sparsity-band analysis
(per-domain figures: report.domain_figures). Polars tables with the columns named in
results.collect in, Plotly figures out; nothing here reads storage."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from adasparse_lab.pareto import pareto_mask
from adasparse_lab.report.analysis import front_order
from adasparse_lab.report.style import (
    PALETTE,
    REFERENCE_COLOR,
    SEQUENTIAL,
    TEXT_HOVER,
    colors_for,
    finish,
    fmt,
    rounded,
)
from adasparse_lab.report.toggle import COST_AXES
from adasparse_lab.results.fronts import FRONT_DIRECTIONS

Y_TITLE = "mean per-domain AUC (validation)"
STUDY_SYMBOLS = ["circle", "square", "triangle-up", "diamond", "cross", "x"]


def completed(trials: pl.DataFrame, x: str = "flops_ratio", y: str = "auc") -> pl.DataFrame:
    """COMPLETE trials with both plotted values (failed, running, pruned ones left out)."""
    return trials.filter(
        (pl.col("state") == "COMPLETE") & pl.col(x).is_not_null() & pl.col(y).is_not_null()
    )


def hover_text(row: dict, x: str = "flops_ratio", y: str = "auc") -> str:
    """Trial number, method, objectives, the sampled parameters and the MLflow run id of one
    trial (``x`` is the plotted cost; FLOPs and measured latency are both shown when known)."""
    head = f"<b>trial {row['number']}</b>" + (f" · {row['study']}" if "study" in row else "")
    head += f" · {row['method']}" if row.get("method") else ""
    cost = f"FLOPs {fmt(row.get('flops_ratio', row[x]), '.3f')}"
    if row.get("latency_ratio") is not None:
        cost += f" · latency {fmt(row['latency_ratio'], '.3f')}"
    params = [
        f"{k.removeprefix('param:')} = {fmt(v, '.4g')}"
        for k, v in row.items()
        if k.startswith("param:") and v is not None
    ]
    run = [f"run {row['run_id']}"] if row.get("run_id") else []
    return "<br>".join([head, f"AUC {fmt(row[y])} · {cost}", *params, *run])


def markers(x, y, name: str, **kw) -> go.Scatter:
    """A marker trace at ``x``, ``y`` (rounded), its ``text`` as hover unless ``kw`` says."""
    kw = {"hovertemplate": TEXT_HOVER} | kw
    return go.Scatter(x=rounded(x), y=rounded(y), name=name, mode="markers", **kw)


def front_xy(frame: pl.DataFrame, x: str, y: str) -> tuple[list, list]:
    """Front points of one study, sorted along x, for a staircase line. Recomputed per cost
    axis (the measured-latency view has its own front); infeasible trials (over
    study.flops_budget) are never on it, as in ``analysis.mark_front``."""
    if "feasible" in frame.columns:
        frame = frame.filter(pl.col("feasible").fill_null(True))
    pts = np.column_stack([frame[y].to_numpy(), frame[x].to_numpy()]).astype(np.float64)
    on = pareto_mask(pts, FRONT_DIRECTIONS) if len(pts) else np.zeros(0, dtype=bool)
    fx, fy = pts[on, 1], pts[on, 0]
    order = front_order(fx, fy)
    return rounded(fx[order]), rounded(fy[order])


def front_line(
    frame: pl.DataFrame, x: str, y: str, study: str, colour: str | None = None, **kw
) -> go.Scatter:
    """The staircase of a study's Pareto front (``colour``: the study's, when several are
    compared)."""
    fx, fy = front_xy(frame, x, y)
    name = f"{study}: front" if colour else "front"
    line = {"color": colour or "#333", "width": 2, "shape": "hv"}
    return go.Scatter(x=fx, y=fy, mode="lines", line=line, name=name, hoverinfo="skip", **kw)


def _point_traces(
    frame: pl.DataFrame, color_by: str | None, x: str, y: str, symbol: str
) -> list[go.Scatter]:
    """The trials of one study: one trace per value of ``color_by``, or one trace on a colour
    scale when that column is numeric, or one trace when there is nothing to colour by."""

    def trace(rows: pl.DataFrame, name: str, **marker) -> go.Scatter:
        text = [hover_text(r, x, y) for r in rows.iter_rows(named=True)]
        marker = {"color": PALETTE[0], "symbol": symbol, "size": 9} | marker
        return markers(rows[x], rows[y], name, text=text, marker=marker)

    col = frame[color_by] if color_by in frame.columns else None
    if col is None or col.null_count() == frame.height:
        return [trace(frame, "trials")]
    if col.dtype.is_numeric():  # a colour scale
        scale = {"color": rounded(col, 6), "colorscale": SEQUENTIAL, "showscale": True}
        scale["colorbar_title_text"] = color_by.removeprefix("param:")
        return [trace(frame, "trials", **scale)]
    parts = frame.drop_nulls(color_by).partition_by(color_by, as_dict=True)
    colours = colors_for(v for (v,) in parts)
    return [trace(rows, str(v), color=colours[str(v)]) for (v,), rows in sorted(parts.items())]


def pareto_figure(
    trials: pl.DataFrame,
    reference: pl.DataFrame | None = None,
    reeval: pl.DataFrame | None = None,
    color_by: str | None = "method",
    x: str = "flops_ratio",
    y: str = "auc",
) -> go.Figure:
    """Every completed trial (val AUC vs the cost ``x``: flops_ratio or latency_ratio),
    coloured by ``color_by`` (one trace per value, e.g. per method; a colour scale for a
    numeric column; by study when several studies are shown); the front of each study as a
    staircase line; the dense reference as a star; test re-evaluations of front trials as
    diamonds with +-1 sd error bars over seeds."""
    fig = go.Figure()
    done = completed(trials, x, y)
    studies = done["study"].unique(maintain_order=True).to_list()
    multi = len(studies) > 1
    colours = [PALETTE[i % len(PALETTE)] if multi else None for i in range(len(studies))]
    for s_i, (study, colour) in enumerate(zip(studies, colours)):
        frame = done.filter(pl.col("study") == study)
        symbol = STUDY_SYMBOLS[s_i % len(STUDY_SYMBOLS)]
        points = _point_traces(frame, None if multi else color_by, x, y, symbol)
        if multi:  # one trace of points per study
            points[0].update(name=f"{study}: trials", marker_color=colour, legendgroup=study)
        fig.add_traces([*points, front_line(frame, x, y, study, colour, legendgroup=study)])
    for study, colour in zip(studies, colours):
        fig.add_traces(_reference(reference, study, x, colour))
        fig.add_traces(_reeval(reeval, trials, study, x, colour))
    fig.update_xaxes(title_text=COST_AXES.get(x, x)).update_yaxes(title_text=Y_TITLE)
    return finish(fig, "AUC against compute: every trial and the Pareto front", 520)


def _reference(reference, study: str, x: str, colour: str | None) -> list[go.Scatter]:
    """The study's dense reference as a star (none when it lacks the cost ``x``)."""
    ref = reference.filter(pl.col("study") == study) if reference is not None else pl.DataFrame()
    if not (
        ref.height and x in ref.columns and ref["auc"][0] is not None and ref[x][0] is not None
    ):
        return []
    hover = f"<b>dense reference</b><br>val AUC %{{y:.4f}}<br>test AUC {fmt(ref['test_auc'][0])}"
    hover += f"<br>run {ref['run_id'][0]}<extra></extra>"
    star = {"symbol": "star", "size": 18, "line": {"color": "white", "width": 1}}
    star["color"] = colour or REFERENCE_COLOR
    name = f"{study}: dense" if colour else "dense reference"
    return [markers(ref[x], ref["auc"], name, marker=star, hovertemplate=hover)]


def _reeval(reeval, trials: pl.DataFrame, study: str, x: str, colour: str | None) -> list:
    """Test re-evaluations of the study's front trials (mean ± sd over seeds) at their cost."""
    if reeval is None or x not in trials.columns:
        return []
    rv = reeval.filter((pl.col("study") == study) & pl.col("test_auc_mean").is_not_null())
    if not rv.height:
        return []
    rv = rv.join(trials.select("study", "number", x), on=["study", "number"], how="left")
    xs = rv[f"{x}_mean"].fill_null(rv[x]) if f"{x}_mean" in rv.columns else rv[x]
    text = [
        f"<b>trial {r['number']}</b>: test re-evaluation<br>AUC {fmt(r['test_auc_mean'])} ± "
        f"{fmt(r['test_auc_sd'])} over {r['n_seeds']} seeds"
        for r in rv.iter_rows(named=True)
    ]
    name = f"{study}: test re-eval" if colour else "test re-evaluation (mean ± sd over seeds)"
    marker = {"symbol": "diamond-open", "size": 11, "color": colour or "#c0392b", "line_width": 2}
    error = {"type": "data", "array": rounded(rv["test_auc_sd"]), "visible": True, "thickness": 1.5}
    return [markers(xs, rv["test_auc_mean"], name, text=text, marker=marker, error_y=error)]


def reference_line(fig: go.Figure, y: float, **line) -> None:
    """The dense reference as a dashed horizontal line at ``y``, labelled top left."""
    line = {"color": REFERENCE_COLOR, "dash": "dash"} | line
    fig.add_hline(y, line=line, annotation_text="dense reference", annotation_position="top left")


def band_varies(trials: pl.DataFrame) -> bool:
    """Whether the completed trials were given more than one target sparsity band."""
    bands = completed(trials).select("band_lo", "band_hi").drop_nulls()
    return bands.unique().height > 1


def band_figure(trials: pl.DataFrame, reference: pl.DataFrame | None = None) -> go.Figure:
    """AUC against achieved mean sparsity for every completed trial, coloured by the centre of
    its target band; the dense reference AUC as a horizontal line."""
    done = completed(trials, "sparsity", "auc").filter(pl.col("band_lo").is_not_null())
    text = [
        f"trial {r['number']}<br>band [{fmt(r['band_lo'], '.2f')}, {fmt(r['band_hi'], '.2f')}]"
        f"<br>sparsity {fmt(r['sparsity'], '.3f')} · AUC {fmt(r['auc'])}"
        for r in done.iter_rows(named=True)
    ]
    centre = rounded((done["band_lo"] + done["band_hi"]) / 2)
    marker = {"color": centre, "colorscale": SEQUENTIAL, "size": 10, "showscale": True}
    marker["colorbar_title_text"] = "band centre"
    fig = go.Figure(markers(done["sparsity"], done["auc"], "trials", text=text, marker=marker))
    if reference is not None and reference.height and reference["auc"][0] is not None:
        reference_line(fig, round(float(reference["auc"][0]), 5))
    fig.update_xaxes(
        title_text="achieved sparsity (mean over domains and layers)", range=[-0.02, 1.02]
    )
    fig.update_yaxes(title_text=Y_TITLE)
    return finish(fig, "Sparsity band: AUC against achieved sparsity", 460)
