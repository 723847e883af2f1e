"""Shared look of the report's figures: Plotly's ``simple_white`` template with a few
overrides, fixed colours per pruner form and method, and compact numbers."""

from __future__ import annotations

import math
from collections.abc import Iterable

import plotly.graph_objects as go
import plotly.io as pio

# Pruner forms and methods (run.naming.method_name): one hue per AdaSparse family, lighter for
# the domain input; rivals and the dense model in colours no form uses. Other names (low-rank
# variants) take the palette (colors_for).
# fmt: off
FIXED_COLORS = {
    "none": "#555555",                 "dense": "#555555",
    "fusion": "#7b3294",               "adasparse-fusion": "#7b3294",
    "binarization": "#1b9e77",         "adasparse-binarization": "#1b9e77",
    "scaling": "#d95f02",              "adasparse-scaling": "#d95f02",
    "adasparse-fusion-domain": "#c2a5cf",
    "adasparse-binarization-domain": "#7fcdbb",
    "adasparse-scaling-domain": "#fdb863",
    "magnitude": "#2166ac",            "domain_magnitude": "#67a9cf",
    "random": "#b2182b",
}
PALETTE = ["#4363d8", "#e6194b", "#3cb44b", "#f58231", "#42d4f4", "#f032e6",
           "#9a6324", "#469990", "#808000", "#000075", "#a9a9a9"]
GROUP_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
# fmt: on
REFERENCE_COLOR = "#111111"
SEQUENTIAL = "Viridis"
TEXT_HOVER = "%{text}<extra></extra>"  # the trace's ``text`` is the whole hover label
SIMPLE_WHITE_KEYS = ("xaxis", "yaxis", "paper_bgcolor", "plot_bgcolor", "hovermode")
GRID = {"showgrid": True, "gridcolor": "#e6e6e6", "automargin": True}
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
OVERRIDES = {
    "font": {"family": FONT, "size": 12, "color": "#222"},
    "colorway": PALETTE,
    "hoverlabel": {"align": "left"},
    "xaxis": GRID,
    "yaxis": GRID,
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "legend": {"bgcolor": "rgba(255,255,255,0.7)"},
    "title": {"x": 0.01, "font": {"size": 15}},
}


def template() -> go.layout.Template:
    """``simple_white``'s 2-D layout keys (the whole template, trace defaults and colour scales
    included, would be copied into every figure of the page) and the report's OVERRIDES."""
    simple = pio.templates["simple_white"].layout.to_plotly_json()
    base = go.layout.Template(layout={k: simple[k] for k in SIMPLE_WHITE_KEYS})
    return base.update(layout=OVERRIDES)


def finish(fig: go.Figure, title: str | None = None, height: int | None = None) -> go.Figure:
    """The house template and an explicit height (the HTML container takes it from here)."""
    fig.update_layout(template=template(), height=height)
    return fig if title is None else fig.update_layout(title_text=title)


def colors_for(values: Iterable) -> dict[str, str]:
    """Colour of each distinct value: the fixed colour of a form or method; anything else
    (low-rank variants such as 'adasparse-fusion-domain-r8', of which a study may hold several)
    the palette in turn, in sorted order, so that no two of up to len(PALETTE) others share one."""
    names = {str(v) for v in values}
    free = sorted(names - FIXED_COLORS.keys())
    fixed = {n: FIXED_COLORS[n] for n in sorted(names & FIXED_COLORS.keys())}
    return fixed | {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(free)}


def rounded(values: Iterable, digits: int = 4) -> list:
    """Plain JSON numbers with ``digits`` decimals (None for missing): much smaller than
    Plotly's base64 float64 arrays for short columns."""
    return [None if _missing(v) else round(float(v), digits) for v in values]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: object, spec: str = ".4f") -> str:
    """``value`` for a table or hover label: '-' when missing, tiny floats to 3 digits."""
    if _missing(value):
        return "-"
    if isinstance(value, float):
        return format(value, spec) if abs(value) >= 1e-3 or value == 0 else format(value, ".3g")
    return str(value)


def domain_label(domain: str, group: int | None) -> str:
    """Axis label of a domain; its true group (synthetic data) shown and coloured."""
    if group is None:
        return domain
    colour = GROUP_COLORS[int(group) % len(GROUP_COLORS)]
    return f'<span style="color:{colour}">{domain} · g{group}</span>'
