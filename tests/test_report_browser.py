"""The built report opened in headless Chromium (Debian's `chromium`, as CI installs it): no
JavaScript error, and every figure rendered; the trial selector and the table sorting work."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import optuna
import pytest

from adasparse_lab.report.build import build

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
