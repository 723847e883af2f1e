"""One self-contained HTML page from the Jinja2 template ``page.html.j2`` beside this file:
plotly.js inlined once in <head> (viewers may be offline, and MLflow's artifact viewer loads
nothing else), sections with a one-line "how to read" each, a <select> that switches the
learned-structure figures between front trials, and sortable tables (``parts.html.j2``).

The page records its own health for tests and viewers: ``data-js-errors`` on <html> counts
uncaught errors (messages in ``data-js-error-messages``), ``data-figures-expected`` is the
number of figures written, ``data-figures-rendered`` the number Plotly drew.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import jinja2
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from adasparse_lab.report.style import fmt

# Templates beside this file: autoescaped, block tags leave no blank lines.
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("adasparse_lab.report", "."),
    undefined=jinja2.StrictUndefined,
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
PLOT_CONFIG = {"responsive": True, "displaylogo": False, "toImageButtonOptions": {"format": "svg"}}
# One figure's <div> and script, without plotly.js (the page has it once, in <head>).
PLOT_HTML = dict(include_plotlyjs=False, full_html=False, config=PLOT_CONFIG, default_width="100%")


@dataclass
class StructureView:
    """The learned-structure figures of one trial, shown when picked in the selector."""

    key: str
    label: str
    figures: list[go.Figure]
    caption: str = ""  # HTML


@dataclass
class DomainPicker:
    """The per-domain picker above its figure: ``options`` as (optgroup label, [(value,
    label)]) and the compact table (results.tables.domain_picker_table) the page's script
    redraws the figure from, as JSON."""

    options: list[tuple[str, list[tuple[str, str]]]]
    table_json: str


@dataclass
class Block:
    """A figure, a trial selector with its views, a note (text) or ready HTML, under an
    optional small heading ``title``."""

    figure: go.Figure | None = None
    html: str = ""
    title: str = ""
    views: list[StructureView] = field(default_factory=list)
    note: str = ""
    picker: DomainPicker | None = None  # with ``figure``: the figure the picker redraws


@dataclass
class Section:
    id: str
    title: str
    explain: str  # HTML
    blocks: list[Block]


def parts():
    """The macros of ``parts.html.j2`` (table, kv, details), each returning escaped HTML."""
    return TEMPLATES.get_template("parts.html.j2").module


def section_figures(section: Section) -> list[tuple[go.Figure, str]]:
    """The section's figures in page order, each with its structure view's key ('' if none)."""
    out = []
    for b in section.blocks:
        if b.views:
            out += [(f, v.key) for v in b.views for f in v.figures]
        elif b.figure is not None:
            out.append((b.figure, ""))
    return out


def render_page(
    title: str, subtitle: list[str], headline: list[str], sections: list[Section]
) -> tuple[str, int]:
    """The whole page and the number of figures in it. ``subtitle`` and ``headline``: lines of
    HTML; the figures are numbered ``fig-1``, ``fig-2``, ... in page order."""
    ids = itertools.count(1)

    def plot(fig: go.Figure) -> str:
        height = f"{fig.layout.height or 450}px"
        return fig.to_html(**PLOT_HTML, div_id=f"fig-{next(ids)}", default_height=height)

    n_figures = sum(len(section_figures(s)) for s in sections)
    page = TEMPLATES.get_template("page.html.j2").render(
        title=title,
        subtitle=subtitle,
        headline=headline,
        sections=sections,
        n_figures=n_figures,
        plotlyjs=get_plotlyjs(),
        plot=plot,
    )
    return page, n_figures


def table_html(columns: list[tuple], rows: list[dict], row_classes: list[str] | None = None) -> str:
    """A sortable table. ``columns``: (key, header, 'num'|'text'[, format spec]); ``rows``: per
    row, key -> a value (shown with the column's spec, ``.4f`` by default; None shown empty) or
    a ready (shown text, sort value) pair (a sort value None or NaN: empty, sorted last). Text
    is escaped by the template."""

    def cell(value, kind: str, spec: str = ".4f") -> tuple[str, object, object]:
        if isinstance(value, tuple):
            shown, v = value
        elif value is None:
            shown, v = "", ""
        else:
            shown, v = (fmt(value, spec) if isinstance(value, float) else value), value
        return kind, "" if v is None or v != v else v, shown  # None, NaN: sorted last

    classes = row_classes or [""] * len(rows)
    body = [(cls, [cell(r.get(c[0]), *c[2:]) for c in columns]) for cls, r in zip(classes, rows)]
    return str(parts().table(columns, body))
