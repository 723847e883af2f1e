"""Per-domain figures: small multiples of each domain's AUC-vs-cost front, and the gain over
the dense reference by domain size. Polars tables in, Plotly figures out."""

from __future__ import annotations

import math

import plotly.express as px
import plotly.graph_objects as go
import polars as pl

from adasparse_lab.report.figures import COST_AXES, front_line, markers, reference_line
from adasparse_lab.report.style import PALETTE, REFERENCE_COLOR, colors_for, finish
from adasparse_lab.results.tables import domains_by_size, picker_means

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


def domain_picker_figure(table: dict, x: str = "flops_ratio") -> go.Figure:
    """The picker's one figure (``table``: results.tables.domain_picker_table), drawn for the
    largest domain: each trial's val AUC against its cost, one trace per method (or study),
    each study's front and dense reference. The page's script redraws it for the domain, group
    or k largest/smallest picked (the mean over the picked domains, trial by trial)."""
    means = picker_means(table, [0])
    keys = list(dict.fromkeys(table["key"]))
    colours = colors_for(keys) if len(table["studies"]) == 1 else dict(zip(keys, PALETTE))
    cost = "FLOPs" if x == "flops_ratio" else "latency"
    hover = f"trial %{{customdata}}<br>AUC %{{y:.4f}} · {cost} %{{x:.3f}}<extra>%{{fullData.name}}</extra>"
    fig = go.Figure()
    for key in keys:
        cols = [j for j, k in enumerate(table["key"]) if k == key]
        fig.add_scatter(
            x=[means["x"][j] for j in cols],
            y=[means["y"][j] for j in cols],
            customdata=[table["number"][j] for j in cols],
            mode="markers",
            name=key,
            marker={"size": 8, "opacity": 0.7, "color": colours.get(key)},
            hovertemplate=hover,
        )
    for s_i, study in enumerate(table["studies"]):
        colour = PALETTE[s_i % len(PALETTE)] if len(table["studies"]) > 1 else None
        pts = [(a, b) for a, b, s in zip(means["x"], means["y"], table["study"]) if s == s_i]
        frame = pl.DataFrame(pts, schema=["x", "y"], orient="row").drop_nulls()
        fig.add_trace(front_line(frame, "x", "y", study, colour))
    ref_x, ref_y = means["ref_x"], means["ref_y"]
    star = markers(ref_x, ref_y, "dense reference", marker=STAR, text=table["studies"])
    fig.add_trace(
        star.update(hovertemplate="dense reference %{text}<br>AUC %{y:.4f}<extra></extra>")
    )
    fig.update_xaxes(title_text=COST_AXES.get(x, x))
    fig.update_yaxes(title_text="val AUC (mean over the picked domains)")
    title = f"Per-domain front: {table['domains'][0]} (the largest domain)"
    return finish(fig, title, 480).update_layout(legend_title_text="")


def domain_summary_figure(gains: pl.DataFrame) -> go.Figure:
    """All domains at once: test AUC gain over the dense reference against the domain's
    training rows (log x), one point per domain for one front trial at a time (the menu picks
    it; a re-evaluated trial first), bars of ±1 sd over seeds where re-evaluated (``gains``:
    results.tables.domain_gains)."""
    labels = gains["label"].unique(maintain_order=True).to_list()
    sd = gains.group_by("label").agg(pl.col("gain_sd").is_not_null().any().alias("reeval"))
    reevaluated = set(sd.filter(pl.col("reeval"))["label"].to_list())
    labels.sort(key=lambda label: label not in reevaluated)  # stable: re-evaluated ones first
    fig = go.Figure()
    hover = "%{customdata}: %{x:,} rows<br>ΔAUC %{y:+.4f}<extra></extra>"
    for i, label in enumerate(labels):
        part = gains.filter(pl.col("label") == label).sort("train_rows")
        has_sd = label in reevaluated
        bars = {"type": "data", "array": part["gain_sd"].fill_null(0.0).round(4).to_list()}
        fig.add_scatter(
            x=part["train_rows"].to_list(),
            y=part["gain"].round(4).to_list(),
            customdata=part["domain"].to_list(),
            mode="markers",
            name=label + (" (re-evaluated: ±1 sd)" if has_sd else ""),
            marker={"size": 6, "opacity": 0.7, "color": PALETTE[i % len(PALETTE)]},
            error_y=bars | {"thickness": 1, "width": 0, "visible": has_sd},
            hovertemplate=hover,
            visible=i == 0,
        )
    reference_line(fig, 0, width=1)
    fig.update_xaxes(
        type="log",
        dtick="D2",
        tickformat="~s",
        title_text="training rows of the domain (log scale)",
    )
    fig.update_yaxes(title_text="test AUC − dense reference AUC", zeroline=False)
    buttons = [
        {
            "label": fig.data[i].name,
            "method": "update",
            "args": [{"visible": [j == i for j in range(len(labels))]}],
        }
        for i in range(len(labels))
    ]
    menu = {
        "buttons": buttons,
        "x": 0,
        "xanchor": "left",
        "y": 1.02,
        "yanchor": "bottom",
        "direction": "down",
    }
    finish(fig, f"All {gains['domain'].n_unique():,} domains: gain against domain size", 480)
    return fig.update_layout(updatemenus=[menu], showlegend=False, margin={"t": 110})
