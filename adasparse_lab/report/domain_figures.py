"""Per-domain figures: small multiples of each domain's AUC-vs-FLOPs front, and the gain
over the dense reference by domain size. Plain polars tables in, Plotly figures out."""

from __future__ import annotations

import math

import plotly.express as px
import plotly.graph_objects as go
import polars as pl

from adasparse_lab.report.figures import front_line
from adasparse_lab.report.style import PALETTE, REFERENCE_COLOR, colors_for, finish, rounded
from adasparse_lab.report.toggle import COST_AXES


def domain_order(domains: pl.DataFrame) -> list[tuple[str, int | None]]:
    """(domain, train rows) by decreasing training size (largest rows over studies)."""
    sizes = domains.group_by("domain", maintain_order=True).agg(pl.col("train_rows").max())
    ordered = sizes.sort(["train_rows", "domain"], descending=[True, False], nulls_last=True)
    return list(zip(ordered["domain"].to_list(), ordered["train_rows"].to_list()))


def _facet_titles(fig: go.Figure, order: list[tuple[str, int | None]]) -> None:
    """Plotly Express names each panel ``domain=<name>``: name and training rows instead."""
    titles = {d: f"{d} · {n:,} rows" if n is not None else d for d, n in order}
    fig.for_each_annotation(lambda a: a.update(text=titles[a.text.split("=", 1)[-1]]))


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
    order = domain_order(domains)
    names = [d for d, _ in order]
    cols = max(1, min(cols, len(order)))
    rows = max(1, math.ceil(len(order) / cols))
    pts = points.filter(
        pl.col("val_auc").is_not_null() & pl.col(x).is_not_null() & pl.col("domain").is_in(names)
    ).with_columns(pl.col("val_auc", x).round(4), trials=pl.lit("trials"))
    studies = points["study"].unique(maintain_order=True).to_list()
    by_method = len(studies) == 1 and "method" in pts.columns and pts["method"].null_count() == 0
    color = "method" if by_method else "study" if len(studies) > 1 else "trials"
    fig = px.scatter(
        pts,
        x=x,
        y="val_auc",
        color=color,
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
    fig.update_traces(
        marker={"size": 6, "opacity": 0.55},
        hovertemplate=f"trial %{{customdata[0]}}<br>AUC %{{y:.4f}} · {cost} %{{x:.3f}}"
        "<extra>%{fullData.name}</extra>",
    )
    _facet_titles(fig, order)
    for k, domain in enumerate(names):  # Plotly Express counts facet rows from the bottom
        where = {"row": rows - k // cols, "col": k % cols + 1}
        for s_i, study in enumerate(studies):
            frame = pts.filter((pl.col("domain") == domain) & (pl.col("study") == study))
            colour = PALETTE[s_i % len(PALETTE)] if len(studies) > 1 else None
            who = (study, colour, k == 0, k == 0 and s_i == 0)
            _add_front_and_reference(fig, frame, reference, who, domain, where, x)
    finish(fig, "Per-domain fronts (largest domain first)", 260 * rows + 110)
    # The legend to the right of the panels: a study may name many methods, and a horizontal
    # legend that wraps would run into the title.
    return fig.update_layout(
        margin={"t": 100},
        legend={"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1, "yanchor": "top"},
        legend_title_text="",
    )


def _add_front_and_reference(
    fig: go.Figure, frame, reference, who: tuple, domain: str, where: dict, x: str
) -> None:
    """One study's front line in a panel, and its dense reference star. ``who``: (study, its
    colour when several are compared, whether the line and the star enter the legend)."""
    study, colour, line_legend, star_legend = who
    line = front_line(
        frame, x, "val_auc", study, colour, legendgroup=f"{study}: front", showlegend=line_legend
    )
    fig.add_trace(line, **where)
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
                showlegend=star_legend,
                hovertemplate="dense reference<br>AUC %{y:.4f}<extra></extra>",
            ),
            **where,
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
