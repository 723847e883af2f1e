"""Per-domain figures: small multiples of each domain's AUC-vs-cost front, and the gain over
the dense reference by domain size. Polars tables in, Plotly figures out."""

from __future__ import annotations

import math

import plotly.express as px
import plotly.graph_objects as go
import polars as pl

from adasparse_lab.report.figures import COST_AXES, front_line, markers, reference_line
from adasparse_lab.report.style import PALETTE, REFERENCE_COLOR, colors_for, finish
from adasparse_lab.results.tables import domains_by_size

STAR = {"symbol": "star", "size": 12, "color": REFERENCE_COLOR}


def domain_fronts_figure(
    points: pl.DataFrame,
    domains: pl.DataFrame,
    reference: pl.DataFrame | None = None,
    cols: int = 4,
    x: str = "flops_ratio",
) -> go.Figure:
    """Small multiples (Plotly Express facets), one panel per domain ordered by training size:
    that domain's val AUC against its cost ``x`` (flops_ratio or latency_ratio) for every trial
    (``points``: study, number, domain, val_auc, x, optionally method), its front as a line,
    and the dense reference (``reference``: study, domain, val_auc, x) as a star. One study:
    points coloured by method (same colours as the main front); several: by study."""
    order = domains_by_size(domains)
    names = [d for d, _ in order]
    cols = max(1, min(cols, len(order)))
    rows = max(1, math.ceil(len(order) / cols))
    pts = points.filter(
        pl.col("val_auc").is_not_null() & pl.col(x).is_not_null() & pl.col("domain").is_in(names)
    ).with_columns(pl.col("val_auc", x).round(4), trials=pl.lit("trials"))
    studies = points["study"].unique(maintain_order=True).to_list()
    by_method = len(studies) == 1 and "method" in pts.columns and pts["method"].null_count() == 0
    fig = px.scatter(
        pts,
        x=x,
        y="val_auc",
        color="method" if by_method else "study" if len(studies) > 1 else "trials",
        facet_col="domain",
        facet_col_wrap=cols,
        category_orders={"domain": names},
        color_discrete_map=colors_for(pts["method"].unique()) if by_method else None,
        color_discrete_sequence=PALETTE,
        custom_data=["number"],
        labels={x: COST_AXES.get(x, x).split(" (")[0], "val_auc": "val AUC"},
        facet_col_spacing=0.06,
        facet_row_spacing=min(0.12, 0.5 / rows),
    )
    cost = "FLOPs" if x == "flops_ratio" else "latency"
    hover = f"trial %{{customdata[0]}}<br>AUC %{{y:.4f}} · {cost} %{{x:.3f}}<extra>%{{fullData.name}}</extra>"
    fig.update_traces(marker={"size": 6, "opacity": 0.55}, hovertemplate=hover)
    # Panels named by domain and training rows (Plotly Express writes "domain=<name>").
    titles = {d: f"{d} · {n:,} rows" if n is not None else d for d, n in order}
    fig.for_each_annotation(lambda a: a.update(text=titles[a.text.split("=", 1)[-1]]))
    _add_fronts(fig, pts, reference, studies, names, x, cols)
    finish(fig, "Per-domain fronts (largest domain first)", 260 * rows + 110)
    # The legend to the right of the panels: a study may name many methods, and a horizontal
    # legend that wraps would run into the title.
    legend = {"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1, "yanchor": "top"}
    return fig.update_layout(margin={"t": 100}, legend=legend, legend_title_text="")


def _add_fronts(fig, pts, reference, studies: list, names: list, x: str, cols: int) -> None:
    """Each study's front line and dense reference star in every domain's panel (the legend
    names the line once per study, the star once)."""
    rows = max(1, math.ceil(len(names) / cols))
    for k, domain in enumerate(names):  # Plotly Express counts facet rows from the bottom
        for s_i, study in enumerate(studies):
            colour = PALETTE[s_i % len(PALETTE)] if len(studies) > 1 else None
            traces = _front_and_reference(pts, reference, study, domain, x, colour)
            for trace, legend in zip(traces, [k == 0, k == 0 and s_i == 0]):
                trace.showlegend = legend
                fig.add_trace(trace, row=rows - k // cols, col=k % cols + 1)


def _front_and_reference(pts, reference, study: str, domain: str, x: str, colour) -> list:
    """One study's front line in one domain's panel, and its dense reference star if any."""
    here = (pl.col("domain") == domain) & (pl.col("study") == study)
    line = front_line(pts.filter(here), x, "val_auc", study, colour, legendgroup=f"{study}: front")
    has_ref = reference is not None and x in reference.columns
    ref = reference.filter(here & pl.col(x).is_not_null()) if has_ref else pl.DataFrame()
    if not ref.height:
        return [line]
    star = markers(ref[x], ref["val_auc"], "dense reference", legendgroup="reference", marker=STAR)
    return [line, star.update(hovertemplate="dense reference<br>AUC %{y:.4f}<extra></extra>")]


def gain_figure(gains: pl.DataFrame) -> go.Figure:
    """AUC difference to the dense reference per domain against the domain's training rows
    (log x, 1-2-5 ticks in SI units); one line per front trial (``gains``: label, domain,
    train_rows, gain, gain_sd), error bars where the trial was re-evaluated over seeds."""
    order = gains["label"].unique(maintain_order=True).to_list()
    frame = gains.with_columns(pl.col("gain").round(4), pl.col("gain_sd").fill_null(0.0).round(4))
    fig = px.line(
        frame.sort("train_rows", maintain_order=True),
        x="train_rows",
        y="gain",
        color="label",
        category_orders={"label": order},  # the order of the front trials in ``gains``
        error_y="gain_sd",
        markers=True,
        log_x=True,
        custom_data=["domain"],
        color_discrete_sequence=PALETTE,
    )
    hover = "%{customdata[0]}: %{x:,} rows<br>ΔAUC %{y:+.4f}"
    fig.update_traces(line_width=1.5, error_y_thickness=1, hovertemplate=hover)
    reference_line(fig, 0, width=1)
    fig.update_xaxes(
        dtick="D2", tickformat="~s", title_text="training rows of the domain (log scale)"
    )
    fig.update_yaxes(title_text="test AUC − dense reference AUC", zeroline=False)
    return finish(fig, "Gain by domain size (front trials, test split)", 460).update_layout(
        legend_title_text=""
    )
