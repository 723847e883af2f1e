"""Per-domain figures: small multiples of each domain's AUC-vs-FLOPs front, and the gain
over the dense reference by domain size. Plain polars tables in, Plotly figures out."""

from __future__ import annotations

import math

import plotly.express as px
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from adasparse_lab.report.figures import front_line
from adasparse_lab.report.style import PALETTE, REFERENCE_COLOR, colors_for, finish, rounded
from adasparse_lab.report.toggle import COST_AXES


def domain_order(domains: pl.DataFrame) -> list[tuple[str, int | None]]:
    """(domain, train rows) by decreasing training size (largest rows over studies)."""
    sizes = domains.group_by("domain", maintain_order=True).agg(pl.col("train_rows").max())
    ordered = sizes.sort(["train_rows", "domain"], descending=[True, False], nulls_last=True)
    return list(zip(ordered["domain"].to_list(), ordered["train_rows"].to_list()))


def _points_traces(frame: pl.DataFrame, by_method: bool, color: str, x: str, domain: str):
    """The panel's trial points: one trace per method (coloured by method), or one trace."""
    if by_method:
        groups = [(m, frame.filter(pl.col("method") == m)) for m in frame["method"].unique()]
    else:
        groups = [(None, frame)]
    for method, part in groups:
        yield (
            method,
            go.Scatter(
                x=rounded(part[x]),
                y=rounded(part["val_auc"]),
                mode="markers",
                marker={"size": 6, "color": color, "opacity": 0.55},
                customdata=part["number"].to_list(),
                hovertemplate="trial %{customdata}"
                + (f" · {method}" if method else "")
                + "<br>AUC %{y:.4f} · "
                + ("FLOPs" if x == "flops_ratio" else "latency")
                + " %{x:.3f}<extra>"
                + domain
                + "</extra>",
            ),
        )


def domain_fronts_figure(
    points: pl.DataFrame,
    domains: pl.DataFrame,
    reference: pl.DataFrame | None = None,
    cols: int = 4,
    x: str = "flops_ratio",
) -> go.Figure:
    """Small multiples, one panel per domain ordered by training size: that domain's val AUC
    against its cost ``x`` (flops_ratio or latency_ratio) for every trial (``points``: study,
    number, domain, val_auc, x, optionally method), its front as a line, and the dense
    reference (``reference``: study, domain, val_auc, x) as a star. One study: points coloured
    by method (same colours as the main front); several studies: coloured by study."""
    order = domain_order(domains)
    cols = max(1, min(cols, len(order)))
    rows = max(1, math.ceil(len(order) / cols))
    titles = [f"{d} · {n:,} rows" if n is not None else d for d, n in order]
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.06,
        vertical_spacing=min(0.12, 0.5 / rows),
    )
    pts = points.filter(pl.col("val_auc").is_not_null() & pl.col(x).is_not_null())
    studies = points["study"].unique(maintain_order=True).to_list()
    by_method = len(studies) == 1 and "method" in pts.columns and pts["method"].null_count() == 0
    colours = colors_for(pts["method"].unique().to_list()) if by_method else {}
    shown: set[str] = set()
    for k, (domain, _) in enumerate(order):
        r, c = k // cols + 1, k % cols + 1
        for s_i, study in enumerate(studies):
            color = PALETTE[s_i % len(PALETTE)]
            frame = pts.filter((pl.col("domain") == domain) & (pl.col("study") == study))
            for method, trace in _points_traces(frame, by_method, color, x, domain):
                label = method or (study if len(studies) > 1 else "trials")
                if method:
                    trace.marker.color = colours[method]
                trace.update(name=label, legendgroup=label, showlegend=label not in shown)
                shown.add(label)
                fig.add_trace(trace, row=r, col=c)
            _add_front_and_reference(fig, frame, reference, study, domain, studies, (r, c, k), x)
    for c in range(1, cols + 1):
        fig.update_xaxes(title_text=COST_AXES.get(x, x).split(" (")[0], row=rows, col=c)
    for r in range(1, rows + 1):
        fig.update_yaxes(title_text="val AUC", row=r, col=1)
    height = 260 * rows + 110
    finish(fig, "Per-domain fronts (largest domain first)", height)
    # The legend to the right of the panels: a study may name many methods, and a horizontal
    # legend that wraps would run into the title.
    return fig.update_layout(
        margin={"t": 100},
        legend={"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1, "yanchor": "top"},
    )


def _add_front_and_reference(
    fig: go.Figure, frame, reference, study: str, domain: str, studies: list, where: tuple, x: str
) -> None:
    """One study's front line in a panel, and its dense reference star."""
    r, c, k = where
    s_i = studies.index(study)
    multi = len(studies) > 1
    line = front_line(
        frame, x, "val_auc", study, s_i, multi, legendgroup=f"{study}: front", showlegend=k == 0
    )
    fig.add_trace(
        line,
        row=r,
        col=c,
    )
    if reference is None or x not in reference.columns:
        return
    ref = reference.filter(
        (pl.col("domain") == domain) & (pl.col("study") == study) & pl.col(x).is_not_null()
    )
    if ref.height:
        fig.add_trace(
            go.Scatter(
                x=rounded(ref[x]),
                y=rounded(ref["val_auc"]),
                mode="markers",
                marker={"symbol": "star", "size": 12, "color": REFERENCE_COLOR},
                name="dense reference",
                legendgroup="reference",
                showlegend=k == 0 and s_i == 0,
                hovertemplate="dense reference<br>AUC %{y:.4f}<extra></extra>",
            ),
            row=r,
            col=c,
        )


def gain_figure(gains: pl.DataFrame) -> go.Figure:
    """AUC difference to the dense reference per domain against the domain's training rows
    (log x, 1-2-5 ticks in SI units); one line per front trial (``gains``: label, domain,
    train_rows, gain, gain_sd), error bars where the trial was re-evaluated over seeds."""
    order = gains["label"].unique(maintain_order=True).to_list()
    frame = gains.with_columns(
        gain=pl.col("gain").round(4),
        gain_sd=pl.col("gain_sd").fill_null(0.0).round(4),
        first=pl.col("label").replace_strict(order, list(range(len(order))), return_dtype=pl.Int64),
    ).sort("first", "train_rows")
    fig = px.line(
        frame,
        x="train_rows",
        y="gain",
        color="label",
        error_y="gain_sd",
        markers=True,
        log_x=True,
        custom_data=["domain"],
        color_discrete_sequence=PALETTE,
    )
    fig.update_traces(
        line_width=1.5,
        error_y_thickness=1,
        hovertemplate="%{customdata[0]}: %{x:,} rows<br>ΔAUC %{y:+.4f}",
    )
    fig.add_hline(
        y=0,
        line={"color": REFERENCE_COLOR, "dash": "dash", "width": 1},
        annotation_text="dense reference",
        annotation_position="top left",
    )
    fig.update_xaxes(
        dtick="D2", tickformat="~s", title_text="training rows of the domain (log scale)"
    )
    fig.update_yaxes(title_text="test AUC − dense reference AUC", zeroline=False)
    return finish(fig, "Gain by domain size (front trials, test split)", 460).update_layout(
        legend_title_text=""
    )
