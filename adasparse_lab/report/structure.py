"""Learned-structure figures of one trial: a domain x layer sparsity heatmap, per-layer
domain x neuron keep maps, and the domain x domain overlap (Jaccard of kept neurons).

Inputs (one trial, polars): ``keep`` (domain, position, neuron, keep_prob), ``layers``
(domain, position, sparsity), ``domains`` (domain, group, train_rows), and one domain order
for all three (results.keep.structure_order: domains that learned alike sit together); true
groups (synthetic data) colour the labels and mark the overlap map.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from adasparse_lab.report.style import SEQUENTIAL, domain_label, finish, rounded
from adasparse_lab.results.keep import jaccard, keep_matrices, kept_neurons, neuron_order

KEEP_SCALE = [[0.0, "#f7f7f7"], [0.5, "#9ecae1"], [1.0, "#08306b"]]


def position_name(position: int) -> str:
    return "input" if position == 0 else f"layer {position}"


def _labels(order: list[str], domains: pl.DataFrame) -> list[str]:
    groups = dict(zip(domains["domain"].to_list(), domains["group"].to_list()))
    return [domain_label(d, groups.get(d)) for d in order]


def _heatmap(z, x, y, value: str, hover: str, **kw) -> go.Heatmap:
    """A 0-1 heatmap on the sequential scale; ``value`` names the colour bar and the hover."""
    hover += f"<br>{value} %{{z:.3f}}<extra></extra>"
    kw = {"texttemplate": "%{z:.2f}", "colorbar_title_text": value, "hovertemplate": hover} | kw
    return go.Heatmap(z=z, x=x, y=y, zmin=0, zmax=1, colorscale=SEQUENTIAL, **kw)


def sparsity_heatmap(
    layers: pl.DataFrame, order: list[str], domains: pl.DataFrame, title: str
) -> go.Figure:
    """Rows: domains (``order``); columns: masked positions; cell: fraction of pruned neurons."""
    positions = sorted(layers["position"].unique().to_list())
    lookup = {(r["domain"], r["position"]): r["sparsity"] for r in layers.iter_rows(named=True)}
    z = [rounded([lookup.get((d, p)) for p in positions], 3) for d in order]
    x = [position_name(p) for p in positions]
    fig = go.Figure(_heatmap(z, x, _labels(order, domains), "sparsity", "%{y} · %{x}"))
    fig.update_yaxes(autorange="reversed", title_text="domain (ordered by similarity)")
    fig.update_xaxes(title_text="masked position", side="top")
    return finish(fig, title, 140 + 26 * len(order))


def keep_map_figure(
    keep: pl.DataFrame, order: list[str], domains: pl.DataFrame, title: str
) -> go.Figure:
    """One panel per masked position: domains x neurons keep probability (in %, stored as
    bytes), neurons ordered shared-first and grouped by which domains keep them."""
    mats = keep_matrices(keep, order)
    fig = make_subplots(
        rows=1,
        cols=max(1, len(mats)),
        column_widths=[m.shape[1] for m in mats.values()] or [1],
        horizontal_spacing=0.015,
        subplot_titles=[f"{position_name(p)} ({m.shape[1]} neurons)" for p, m in mats.items()],
    )
    labels = _labels(order, domains)
    for j, (p, mat) in enumerate(mats.items()):
        z = np.rint(np.nan_to_num(mat[:, neuron_order(mat)], nan=0.0) * 100).astype(np.uint8)
        hover = f"%{{y}}<br>neuron rank %{{x}}<br>keep %{{z}}%<extra>{position_name(p)}</extra>"
        heat = go.Heatmap(z=z, y=labels, coloraxis="coloraxis", xgap=0, ygap=1, hovertemplate=hover)
        fig.add_trace(heat, row=1, col=j + 1)
        fig.update_xaxes(showticklabels=False, title_text="neurons: shared → specific", col=j + 1)
        fig.update_yaxes(autorange="reversed", showticklabels=j == 0, row=1, col=j + 1)
    fig.update_coloraxes(colorscale=KEEP_SCALE, cmin=0, cmax=100, colorbar_title_text="keep %")
    return finish(fig, title, 150 + 26 * len(order))


def overlap_figure(
    keep: pl.DataFrame, order: list[str], domains: pl.DataFrame, title: str
) -> go.Figure:
    """Jaccard index of the kept-neuron sets of every pair of domains (all masked positions
    together), domains in similarity order; a dot marks pairs in the same true group."""
    sim = jaccard(kept_neurons(keep, order))  # all 1 without keep probabilities
    names = [[f"{a} × {b}" for b in order] for a in order]
    # Numeric axes (labels as tick text) so that group marks can sit in a cell's corner,
    # clear of the value written in its centre.
    idx = list(range(len(order)))
    text = "%{z:.2f}" if len(order) <= 14 else None
    heat = _heatmap([rounded(r, 3) for r in sim], idx, idx, "Jaccard", "%{customdata}")
    fig = go.Figure(heat.update(customdata=names, texttemplate=text))
    _mark_same_group(fig, order, domains)
    ticks = {"tickvals": idx, "ticktext": _labels(order, domains), "showgrid": False}
    fig.update_yaxes(autorange="reversed", **ticks).update_xaxes(tickangle=-45, **ticks)
    size = 240 + 30 * len(order)
    return finish(fig, title, size).update_layout(width=size + 180)


def _mark_same_group(fig: go.Figure, order: list[str], domains: pl.DataFrame) -> None:
    """A dot in the corner of each cell whose two domains share a true group (synthetic data)."""
    groups = dict(zip(domains["domain"].to_list(), domains["group"].to_list()))
    if not any(groups.get(d) is not None for d in order):
        return
    same = [
        (j + 0.3, i - 0.3)
        for i, a in enumerate(order)
        for j, b in enumerate(order)
        if i != j and groups.get(a) is not None and groups.get(a) == groups.get(b)
    ]
    dot = {"size": 7, "color": "#e6194b", "line": {"width": 1, "color": "white"}}
    fig.add_scatter(x=[p[0] for p in same], y=[p[1] for p in same], mode="markers", marker=dot)
    fig.data[-1].update(name="same true group", hoverinfo="skip", showlegend=True)
    legend = {"orientation": "h", "x": 0, "y": 1.01, "yanchor": "bottom"}
    fig.update_layout(margin={"t": 90}, legend=legend)
