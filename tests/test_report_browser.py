"""The built report opened in headless Chromium (Debian's `chromium`, as CI installs it): no
JavaScript error, and every figure rendered; the trial selector and the table sorting work."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import optuna
import pytest

from adasparse_lab.report.build import build
from tests.report_facts import decode

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install -y chromium)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",  # software WebGL for the parallel-coordinates plot
    "--virtual-time-budget=20000",
]

# Appended to a copy of the report: pick the last trial in the selector, sort the trials table
# by its first column, record both, then raise one deliberate error that the page must count.
INTERACT = """<script>window.addEventListener('load',function(){setTimeout(function(){
 var s=document.getElementById('trial-select'); s.value=s.options[s.options.length-1].value;
 s.dispatchEvent(new Event('change'));
 var shown=document.querySelectorAll('.structure-view:not([hidden])');
 document.documentElement.setAttribute('data-shown',shown.length+':'+shown[0].getAttribute('data-key'));
 var th=document.querySelector('#trials table.sortable th'); th.click(); th.click();
 var first=document.querySelector('#trials tbody tr td').getAttribute('data-v');
 document.documentElement.setAttribute('data-first-row',first);
 throw new Error('deliberate');},50);});</script></body>"""


def dump_dom(page: Path, profile: Path) -> str:
    proc = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def html_attrs(dom: str) -> dict[str, str]:
    tag = re.search(r"<html[^>]*>", dom)
    assert tag, dom[:500]
    return dict(re.findall(r'([a-z-]+)="([^"]*)"', tag.group(0)))


@pytest.fixture(scope="module")
def report(real_study, tmp_path_factory):
    return build([real_study.name], [real_study.storage], tmp_path_factory.mktemp("browser"))


@pytest.mark.slow
def test_every_figure_renders_without_js_errors(report, tmp_path):
    dom = dump_dom(report.path, tmp_path / "profile")
    attrs = html_attrs(dom)
    assert attrs["data-js-errors"] == "0", attrs.get("data-js-error-messages")
    expected = int(attrs["data-figures-expected"])
    assert expected == report.figures > 10
    assert attrs["data-figures-rendered"] == str(expected)
    # Independent of the page's own count: one Plotly container and at least one SVG layer per figure.
    assert dom.count('class="plot-container plotly"') == expected
    assert dom.count('class="main-svg"') >= expected
    for i in range(1, expected + 1):
        assert re.search(rf'id="fig-{i}" class="[^"]*js-plotly-plot', dom), f"figure {i} not drawn"


@pytest.mark.slow
def test_selector_and_sorting_work(report, real_study, tmp_path):
    page = report.path.read_text()
    copy = tmp_path / "interact.html"
    copy.write_text(page.replace("</body>", INTERACT))
    keys = re.findall(r'<option value="([^"]+)"', page)
    attrs = html_attrs(dump_dom(copy, tmp_path / "profile"))
    assert attrs["data-shown"] == f"1:{keys[-1]}"  # exactly the picked trial's figures shown
    last = len(optuna.load_study(study_name=real_study.name, storage=real_study.storage).trials) - 1
    assert attrs["data-first-row"] == str(last)  # trial numbers sorted descending after two clicks
    # The deliberate error is caught and is the only one: the interactions raised none.
    assert attrs["data-js-errors"] == "1" and attrs["data-js-error-messages"].endswith("deliberate")


# Many domains (above the report's grid limit): the picker redraws one figure. Appended to a
# copy of the report: pick each listed choice in turn and record, per choice, the domains it
# picked and every trace's y values as the page's script drew them.
PICK = """<script>window.addEventListener('load',function(){setTimeout(function(){
 var s=document.getElementById('domain-select'),g=document.querySelector('.domain-picker .js-plotly-plot');
 var out={};JSON.parse(document.getElementById('picks').textContent).forEach(function(v){
  s.value=v;s.dispatchEvent(new Event('change'));
  out[v]={picked:g.getAttribute('data-picked'),title:g.layout.title.text,
   ys:g.data.map(function(t){return Array.prototype.slice.call(t.y||[]);})};});
 document.documentElement.setAttribute('data-picks',encodeURIComponent(JSON.stringify(out)));},50);});
</script></body>"""
MANY = 30  # domains: above report.sections.GRID_MAX_DOMAINS


@pytest.fixture(scope="module")
def many_report(tmp_path_factory):
    from adasparse_lab.bench.domains import run_domains_study

    tmp = tmp_path_factory.mktemp("many")
    base, outcome = run_domains_study(MANY, str(tmp), n_trials=2, trial="tiny")
    return build([base.study.name], [outcome.storage_desc], tmp / "reports")


@pytest.mark.slow
def test_domain_picker_redraws_the_figure(many_report, tmp_path):
    from adasparse_lab.report.sections import GRID_MAX_DOMAINS
    from adasparse_lab.results.tables import picker_means

    assert MANY > GRID_MAX_DOMAINS
    page = many_report.path.read_text()
    table = json.loads(re.search(r'id="domain-table">(.*?)</script>', page, re.S).group(1))
    options = re.findall(r'<option value="((?:domain|group|largest|smallest):[^"]+)"', page)
    assert [o for o in options if o.startswith("domain:")] == [
        f"domain:{d}" for d in table["domains"]
    ]
    assert len(table["domains"]) == MANY and len(table["groups"]) == 3
    assert {"largest:10", "smallest:5", "group:1"} <= set(options)
    assert '<section id="gain">' not in page  # the gains are the domains section's summary
    picks = ["group:1", "largest:10", "smallest:5", f"domain:{table['domains'][3]}"]
    copy = tmp_path / "pick.html"
    script = f'<script type="application/json" id="picks">{json.dumps(picks)}</script>'
    copy.write_text(page.replace("</body>", script + PICK))
    attrs = html_attrs(dump_dom(copy, tmp_path / "profile"))
    assert attrs["data-js-errors"] == "0", attrs.get("data-js-error-messages")
    drawn = json.loads(unquote(attrs["data-picks"]))
    sets = {"group:1": table["groups"]["1"], "largest:10": list(range(10))}
    sets |= {"smallest:5": list(range(MANY - 1, MANY - 6, -1)), picks[3]: [3]}
    for value, picked in sets.items():
        assert drawn[value]["picked"] == f"{value}|{len(picked)}"
        assert f"({len(picked)} domain" in drawn[value]["title"]
        means = picker_means(table, picked)
        keys = list(dict.fromkeys(table["key"]))
        for k, key in enumerate(keys):  # the trial traces: each trial's mean over the picked
            want = [
                y
                for y, kk, x in zip(means["y"], table["key"], means["x"])
                if kk == key and x is not None and y is not None
            ]
            assert drawn[value]["ys"][k] == pytest.approx(want, abs=1.5e-4)
        assert drawn[value]["ys"][-1] == pytest.approx(means["ref_y"], abs=1.5e-4)  # reference
        assert drawn[value]["ys"][len(keys)]  # the front line is drawn


@pytest.mark.slow
def test_all_domains_summary_has_one_point_per_domain(many_report):
    from tests.report_facts import figures, sections  # noqa: I001

    inner = dict((sid, part) for sid, _, part in sections(many_report.path.read_text()))
    picker, summary = figures(inner["domains"])
    assert "Per-domain front" in picker["layout"]["title"]["text"]
    traces = summary["data"]
    assert traces and all(len(decode(t["x"])) == MANY for t in traces)  # one point per domain
    assert [t.get("visible", True) for t in traces] == [True] + [False] * (len(traces) - 1)
    assert traces[0]["error_y"]["visible"]  # a re-evaluated front trial first, with its ±1 sd
    buttons = summary["layout"]["updatemenus"][0]["buttons"]
    assert [b["label"] for b in buttons] == [t["name"] for t in traces]
