"""Key facts of a built report, read back from its HTML page alone: the section list, the
trials table (number, state, front mark), every figure's data by section, the headline. Used by
tests/test_report_golden.py to check that a report keeps its content across refactors."""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np

SECTION = re.compile(r'<section id="([a-z_-]+)"><h2>(.*?)</h2>', re.S)
NEWPLOT = re.compile(r'Plotly\.newPlot\(\s*"(fig-\d+)",\s*')
ROW = re.compile(r"<tr( class=\"[a-z ]*\")?>(.*?)</tr>", re.S)
CELL = re.compile(r'<td class="[a-z]+" data-v="([^"]*)">(.*?)</td>', re.S)


def decode(value):
    """Plotly's typed arrays ({dtype, bdata}) and lists -> a flat list of floats/strings."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return arr.reshape(-1).tolist()
    if isinstance(value, list):
        return [x for v in value for x in (decode(v) if isinstance(v, (list, dict)) else [v])]
    return [] if value is None else [value]


def sections(page: str) -> list[tuple[str, str, str]]:
    """(id, title, inner html) of every section, in page order."""
    found = list(SECTION.finditer(page))
    ends = [m.start() for m in found[1:]] + [page.index("</main>")]
    return [(m.group(1), html.unescape(m.group(2)), page[m.end() : e]) for m, e in zip(found, ends)]


def figures(part: str) -> list[dict]:
    """The Plotly figures (data traces and layout) in one section's HTML."""
    out = []
    for m in NEWPLOT.finditer(part):
        decoder = json.JSONDecoder()
        data, end = decoder.raw_decode(part, m.end())
        rest = part[end:].lstrip().removeprefix(",").lstrip()
        layout, _ = decoder.raw_decode(rest)
        out.append({"data": data, "layout": layout})
    return out


def ys(fig: dict) -> list[float]:
    """Every numeric y of the figure's traces (category labels left out)."""
    values = [y for tr in fig["data"] for y in decode(tr.get("y"))]
    return [float(y) for y in values if isinstance(y, (int, float)) and not isinstance(y, bool)]


def trials_rows(part: str) -> list[dict]:
    rows = []
    for m in ROW.finditer(part):
        cells = CELL.findall(m.group(2))  # (sort value, shown text)
        if cells:
            number, state, front = (html.unescape(shown) for _, shown in cells[:3])
            rows.append({"number": int(number), "state": state, "front": front})
    return rows


def report_facts(page: str) -> dict:
    """What the report shows, structure-agnostic: section ids and titles, trials table rows,
    the rounded y values of every figure by section, the headline lines (tags stripped)."""
    parts = sections(page)
    by_id = {sid: inner for sid, _, inner in parts}
    headline = re.findall(r"<li>(.*?)</li>", by_id["summary"], re.S)
    return {
        "sections": [[sid, title] for sid, title, _ in parts],
        "trials": trials_rows(by_id.get("trials", "")),
        "figure_ys": {
            sid: sorted({round(y, 4) for f in figures(inner) for y in ys(f)})
            for sid, _, inner in parts
        },
        "figure_titles": {
            sid: [(f["layout"].get("title") or {}).get("text", "") for f in figures(inner)]
            for sid, _, inner in parts
        },
        "headings": {sid: re.findall(r"<h3>(.*?)</h3>", inner, re.S) for sid, _, inner in parts},
        "headline": [re.sub(r"<[^>]+>", "", h) for h in headline],
    }
