"""One self-contained HTML page: plotly.js inlined once in <head> (viewers may be offline, and
MLflow's artifact viewer loads nothing else), sections with a one-line "how to read" each, a
<select> that switches the learned-structure figures between front trials, and a sortable
table in a few lines of inline JS.

The page records its own health for tests and viewers: ``data-js-errors`` on <html> counts
uncaught errors (messages in ``data-js-error-messages``), ``data-figures-expected`` is the
number of figures written, ``data-figures-rendered`` the number Plotly drew.
"""

from __future__ import annotations

import html
import string
from dataclasses import dataclass, field

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from adasparse_lab.report.style import fmt

PLOT_CONFIG = {
    "responsive": True,
    "displaylogo": False,
    "toImageButtonOptions": {"format": "svg", "scale": 1},
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:18px 32px}
header h1{margin:0 0 6px 0;font-size:24px} header p{margin:2px 0;color:#d5dde6}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 32px;z-index:10;font-size:14px}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
main{max-width:1400px;margin:0 auto;padding:8px 32px 60px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:18px 0;padding:12px 20px}
section h2{margin:6px 0 2px 0;font-size:20px} .explain{color:#555;margin:2px 0 10px 0}
.note{color:#8a5a00;font-style:italic} .figure{margin:8px 0 14px 0} h3{font-size:15px;margin:14px 0 2px}
.headline li{margin:3px 0} table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e6e6e6;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f0f3f7;position:sticky;top:0;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
td.text,th.text{text-align:left} tr.front td{background:#f3f8ee} tr.failed td{color:#a33}
.table-wrap{max-height:640px;overflow:auto;border:1px solid #eee}
pre{background:#f6f8fa;padding:10px;overflow:auto;max-height:480px;font-size:12px}
select{font-size:14px;padding:3px 6px} .kv td{text-align:left}
"""

HEAD_JS = """
window.__reportErrors=[];
function __reportError(msg){window.__reportErrors.push(String(msg));
 var h=document.documentElement;h.setAttribute('data-js-errors',String(window.__reportErrors.length));
 h.setAttribute('data-js-error-messages',window.__reportErrors.join(' | ').slice(0,2000));}
window.addEventListener('error',function(e){__reportError(e.message||e);});
window.addEventListener('unhandledrejection',function(e){__reportError('unhandled rejection: '+(e.reason&&e.reason.message||e.reason));});
"""

TAIL_JS = """
function showStructure(key){
 document.querySelectorAll('.structure-view').forEach(function(v){
  var on=v.getAttribute('data-key')===key; v.hidden=!on;
  if(on){v.querySelectorAll('.js-plotly-plot').forEach(function(g){Plotly.Plots.resize(g);});}
 });
}
function sortTable(th){
 var table=th.closest('table'),body=table.tBodies[0],idx=Array.prototype.indexOf.call(th.parentNode.children,th);
 var asc=!th.classList.contains('sorted-asc'),num=th.getAttribute('data-type')==='num';
 table.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
 th.classList.add(asc?'sorted-asc':'sorted-desc');
 var rows=Array.prototype.slice.call(body.rows);
 rows.sort(function(a,b){
  var x=a.cells[idx].getAttribute('data-v'),y=b.cells[idx].getAttribute('data-v');
  if(num){x=x===''?NaN:parseFloat(x);y=y===''?NaN:parseFloat(y);
   if(isNaN(x))return 1;if(isNaN(y))return -1;return asc?x-y:y-x;}
  return asc?x.localeCompare(y):y.localeCompare(x);});
 rows.forEach(function(r){body.appendChild(r);});
}
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){sortTable(th);});});
window.addEventListener('load',function(){
 var n=0;document.querySelectorAll('.js-plotly-plot').forEach(function(g){if(g.querySelector('.main-svg'))n++;});
 document.documentElement.setAttribute('data-figures-rendered',String(n));
});
"""


@dataclass
class StructureView:
    """The learned-structure figures of one trial, shown when picked in the selector."""

    key: str
    label: str
    figures: list[go.Figure]
    caption: str = ""


@dataclass
class Block:
    """A figure, raw HTML, or a trial selector with its views; ``title`` is a small heading."""

    figure: go.Figure | None = None
    html: str = ""
    title: str = ""
    views: list[StructureView] = field(default_factory=list)


@dataclass
class Section:
    id: str
    title: str
    explain: str
    blocks: list[Block]


class _Figures:
    """Numbers the figure divs and renders each without plotly.js (it is in <head>)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: go.Figure) -> str:
        self.count += 1
        height = fig.layout.height or 450
        return pio.to_html(
            fig,
            include_plotlyjs=False,
            full_html=False,
            config=PLOT_CONFIG,
            div_id=f"fig-{self.count}",
            default_height=f"{height}px",
            default_width="100%",
        )


def _selector(block: Block, render: _Figures) -> str:
    options = "".join(
        f'<option value="{html.escape(v.key)}">{html.escape(v.label)}</option>' for v in block.views
    )
    parts = [
        f'<p><label>Front trial: <select id="trial-select" onchange="showStructure(this.value)">'
        f'{options}</select></label> <span class="explain">({len(block.views)} trials; '
        "ordered by FLOPs ratio)</span></p>"
    ]
    for i, view in enumerate(block.views):
        hidden = "" if i == 0 else " hidden"
        figs = "".join(f'<div class="figure">{render(f)}</div>' for f in view.figures)
        caption = f'<p class="explain">{view.caption}</p>' if view.caption else ""
        parts.append(
            f'<div class="structure-view" data-key="{html.escape(view.key)}"{hidden}>{caption}{figs}</div>'
        )
    return "".join(parts)


def _block(block: Block, render: _Figures) -> str:
    head = f"<h3>{html.escape(block.title)}</h3>" if block.title else ""
    if block.views:
        return head + _selector(block, render)
    if block.figure is not None:
        return f'{head}<div class="figure">{render(block.figure)}</div>'
    return head + block.html


PAGE = string.Template(
    """<!DOCTYPE html><html lang="en" data-js-errors="0" data-figures-expected="$n_figures">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title><style>$css</style><script>$head_js</script>
<script type="text/javascript">$plotlyjs</script></head>
<body><header><h1>$title</h1>$subtitle</header><nav>$nav</nav><main>
<section id="summary"><h2>At a glance</h2><ul class="headline">$headline</ul></section>
$sections</main><script>$tail_js</script></body></html>"""
)
SECTION = string.Template(
    '<section id="$id"><h2>$title</h2><p class="explain">$explain</p>$blocks</section>'
)


def render_page(
    title: str, subtitle: list[str], headline: list[str], sections: list[Section]
) -> tuple[str, int]:
    """The whole page and the number of figures in it."""
    render = _Figures()
    body = "".join(
        SECTION.substitute(
            id=s.id,
            title=html.escape(s.title),
            explain=s.explain,
            blocks="".join(_block(b, render) for b in s.blocks),
        )
        for s in sections
    )
    page = PAGE.substitute(
        n_figures=render.count,
        title=html.escape(title),
        css=CSS,
        head_js=HEAD_JS,
        plotlyjs=get_plotlyjs(),
        subtitle="".join(f"<p>{line}</p>" for line in subtitle),
        nav="".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections),
        headline="".join(f"<li>{line}</li>" for line in headline),
        sections=body,
        tail_js=TAIL_JS,
    )
    return page, render.count


def cell(value, spec: str = ".4f") -> tuple[str, object]:
    """(shown text, sort value) of one table cell."""
    if value is None:
        return "", ""
    return (fmt(value, spec), value) if isinstance(value, float) else (str(value), value)


def table_html(columns: list[tuple], rows: list[dict], row_classes: list[str] | None = None) -> str:
    """A sortable table. ``columns``: (key, header, 'num'|'text'[, format spec]); ``rows``: per
    row, key -> a value (shown with the column's spec, ``.4f`` by default) or a ready (shown
    text, sort value) pair. Text is escaped here."""
    head = "".join(
        f'<th class="{c[2]}" data-type="{c[2]}">{html.escape(c[1])}</th>' for c in columns
    )
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = ""
        for key, _, kind, *spec in columns:
            value = row.get(key)
            shown, v = value if isinstance(value, tuple) else cell(value, *spec)
            v = html.escape("" if v is None else str(v))
            cells += f'<td class="{kind}" data-v="{v}">{html.escape(str(shown))}</td>'
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
