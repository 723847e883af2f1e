"""Result figures: the AUC-vs-cost Pareto front of all trials, the sparsity-band analysis, and
the cost-axis toggle (per-domain figures: report.domain_figures). Polars tables in (columns as
named in results.collect), Plotly figures out; nothing here reads storage."""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
import polars as pl

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
from adasparse_lab.results.fronts import front_points
from adasparse_lab.results.tables import completed

COST_AXES = {
    "flops_ratio": "FLOPs ratio (effective / dense)",
    "latency_ratio": "measured latency ratio (served net / dense, largest batch)",
}
BUTTON_LABELS = {"flops_ratio": "analytic FLOPs", "latency_ratio": "measured latency"}
Y_TITLE = "mean per-domain AUC (validation)"
STUDY_SYMBOLS = ["circle", "square", "triangle-up", "diamond", "cross", "x"]


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


def front_line(
    frame: pl.DataFrame, x: str, y: str, study: str, colour: str | None = None, **kw
) -> go.Scatter:
    """The staircase of a study's Pareto front (``colour``: the study's, when several are
    compared)."""
    fx, fy = (rounded(v) for v in front_points(frame, x, y))
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


# One chart, several cost axes: the same figure drawn once per x column (analytic FLOPs ratio,
# measured latency ratio), merged into one figure whose buttons switch which drawing is visible
# and relabel the x axes. Each drawing keeps its own front (a front on FLOPs is not the front
# on latency), so nothing is recomputed in the browser.


def cost_axes(frame: pl.DataFrame) -> list[str]:
    """The cost columns ``frame`` has values for: FLOPs always, latency where measured."""
    has = "latency_ratio" in frame.columns and frame["latency_ratio"].null_count() < frame.height
    return ["flops_ratio", "latency_ratio"] if has else ["flops_ratio"]


def cost_toggle(frame: pl.DataFrame, draw: Callable[..., go.Figure]) -> go.Figure:
    """``draw(x=<cost column>)`` for every cost column ``frame`` has, in one toggled figure."""
    return axis_toggle({BUTTON_LABELS[x]: draw(x=x) for x in cost_axes(frame)})


def _x_titles(fig: go.Figure) -> dict[str, object]:
    """relayout keys: the title of every titled x axis of ``fig``, and its autorange."""
    titled = [key for key in fig.layout if key.startswith("xaxis") and fig.layout[key].title.text]
    out = {f"{key}.title.text": fig.layout[key].title.text for key in titled}
    return out | {f"{key}.autorange": True for key in titled}


def axis_toggle(views: dict[str, go.Figure]) -> go.Figure:
    """Merge ``views`` (button label -> figure with the same layout, first one shown) into one
    figure; with a single view the figure is returned as it is."""
    figs = list(views.values())
    if len(figs) == 1:
        return figs[0]
    merged = go.Figure(figs[0])
    merged.add_traces([t.update(visible=False) for fig in figs[1:] for t in fig.data])
    owner = [i for i, fig in enumerate(figs) for _ in fig.data]  # the view of each trace
    buttons = [
        {
            "label": label,
            "method": "update",
            "args": [{"visible": [o == i for o in owner]}, _x_titles(fig)],
        }
        for i, (label, fig) in enumerate(views.items())
    ]
    # Buttons in the top-right corner of the top margin, beside the title, above any legend
    # placed over the plot.
    layout, margin = merged.layout, merged.layout.template.layout.margin
    top, bottom = layout.margin.t or margin.t or 80, layout.margin.b or margin.b or 80
    y = 1 + (top - 4) / max((layout.height or 450) - top - bottom, 1)
    menu = {"type": "buttons", "direction": "right", "buttons": buttons, "showactive": True}
    menu |= {"x": 1.0, "xanchor": "right", "y": y, "yanchor": "top"}
    return merged.update_layout(updatemenus=[menu])
