"""One chart, several cost axes: the same figure drawn once per x column (analytic FLOPs
ratio, measured latency ratio), merged into one Plotly figure whose buttons switch which
drawing is visible and relabel the x axes. Each drawing keeps its own front (a front on FLOPs
is not the front on latency), so nothing is recomputed in the browser."""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
import polars as pl

COST_AXES = {
    "flops_ratio": "FLOPs ratio (effective / dense)",
    "latency_ratio": "measured latency ratio (served net / dense, largest batch)",
}
BUTTON_LABELS = {"flops_ratio": "analytic FLOPs", "latency_ratio": "measured latency"}


def cost_axes(frame: pl.DataFrame) -> list[str]:
    """The cost columns ``frame`` has values for: FLOPs always, latency where measured."""
    has = "latency_ratio" in frame.columns and frame["latency_ratio"].null_count() < frame.height
    return ["flops_ratio", "latency_ratio"] if has else ["flops_ratio"]


def cost_toggle(frame: pl.DataFrame, draw: Callable[..., go.Figure]) -> go.Figure:
    """``draw(x=<cost column>)`` for every cost column ``frame`` has, in one toggled figure."""
    return axis_toggle({BUTTON_LABELS[x]: draw(x=x) for x in cost_axes(frame)})


def _x_titles(fig: go.Figure) -> dict[str, str]:
    """relayout keys: the title and autorange of every titled x axis of ``fig``."""
    out: dict[str, object] = {}
    for key in fig.layout:
        axis = fig.layout[key]
        if key.startswith("xaxis") and axis.title.text:
            out[f"{key}.title.text"] = axis.title.text
            out[f"{key}.autorange"] = True
    return out


def axis_toggle(views: dict[str, go.Figure]) -> go.Figure:
    """Merge ``views`` (button label -> figure with the same layout, first one shown) into one
    figure; with a single view the figure is returned as it is."""
    figs = list(views.values())
    if len(figs) == 1:
        return figs[0]
    merged = go.Figure(figs[0])
    spans, start = [], len(figs[0].data)
    spans.append(range(0, start))
    for fig in figs[1:]:
        for trace in fig.data:
            trace.visible = False
        merged.add_traces(list(fig.data))
        spans.append(range(start, start + len(fig.data)))
        start += len(fig.data)
    buttons = [
        {
            "label": label,
            "method": "update",
            "args": [{"visible": [j in span for j in range(start)]}, _x_titles(fig)],
        }
        for (label, fig), span in zip(views.items(), spans)
    ]
    menu = {"type": "buttons", "direction": "right", "buttons": buttons, "showactive": True}
    menu |= {"x": 1.0, "xanchor": "right", "y": _top_of_margin(merged), "yanchor": "top"}
    return merged.update_layout(updatemenus=[menu])


def _top_of_margin(fig: go.Figure) -> float:
    """The top edge of the figure in paper coordinates (buttons sit in the top-right corner,
    beside the title, above any legend placed over the plot)."""
    layout, template = fig.layout, fig.layout.template.layout
    top = layout.margin.t if layout.margin.t is not None else template.margin.t or 80
    bottom = layout.margin.b if layout.margin.b is not None else template.margin.b or 80
    plot_height = (layout.height or 450) - top - bottom
    return 1 + (top - 4) / max(plot_height, 1)
