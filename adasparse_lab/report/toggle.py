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


def _x_titles(fig: go.Figure) -> dict[str, object]:
    """relayout keys: the title of every titled x axis of ``fig``, and its autorange."""
    out: dict[str, object] = {}
    for key in fig.layout:
        if key.startswith("xaxis") and fig.layout[key].title.text:
            out |= {f"{key}.title.text": fig.layout[key].title.text, f"{key}.autorange": True}
    return out


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
