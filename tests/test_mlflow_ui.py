"""The MLflow UI as users meet it: every study prints the runs-table URL of its experiment (the
experiment link of MLflow 3.x lands on the GenAI overview page), tags the experiment's kind, and
logs its front figures to the parent run; headless Chromium finds the runs table at that URL
on a real study served by `mlflow ui` (started as the Makefile's mlflow-ui target does)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from adasparse_lab.store.tracking import EXPERIMENT_KIND, UI_ADDRESS, runs_url
from tests.test_report_browser import CHROMIUM, FLAGS

pytestmark = pytest.mark.slow
PRINTED_URL = re.compile(r"runs table\s*: (\S+)")


def experiment_id(real_study) -> str:
    return MlflowClient(real_study.mlflow_uri).get_experiment_by_name(real_study.name).experiment_id


def test_study_prints_its_runs_table_url_and_tags_the_experiment(real_study):
    printed = PRINTED_URL.findall(real_study.printed)
    assert printed == [f"{UI_ADDRESS}/#/experiments/{experiment_id(real_study)}/runs"]
    tags = MlflowClient(real_study.mlflow_uri).get_experiment(experiment_id(real_study)).tags
    assert EXPERIMENT_KIND.items() <= tags.items()


def test_front_figures_are_logged_to_the_parent_run(real_study, tmp_path):
    client = MlflowClient(real_study.mlflow_uri)
    listed = {a.path for a in client.list_artifacts(real_study.parent_run_id, "figures")}
    assert listed == {"figures/pareto_front.html", "figures/domain_fronts.html"}
    page = Path(
        client.download_artifacts(real_study.parent_run_id, "figures/pareto_front.html", tmp_path)
    ).read_text()
    # plotly.js inlined (no <script src=...> to a CDN): the figure renders offline
    assert "<script src=" not in page and "Plotly.newPlot" in page and len(page) > 3_000_000
    for trial in (0, 2, 3, 4):  # every COMPLETE trial is a point, its number in the hover
        assert f"\\u003cb\\u003etrial {trial}\\u003c" in page  # JSON-escaped <b>trial n<


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui(real_study, tmp_path):
    """`mlflow ui` on the real study's store (lean: 1 worker, no job runner), its address."""
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [str(mlflow), "ui", "--backend-store-uri", real_study.mlflow_uri]
        + ["--workers", "1", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the uvicorn child stops with it
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{address}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow ui did not start: {(tmp_path / 'server.log').read_text()}")
                time.sleep(0.5)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_printed_url_opens_the_runs_table(real_study, mlflow_ui, tmp_path):
    printed = PRINTED_URL.findall(real_study.printed)[0]
    url = printed.replace(UI_ADDRESS, mlflow_ui)  # the same page on this test's server port
    assert url == runs_url(experiment_id(real_study), mlflow_ui)
    proc = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'fresh'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'role="grid"' in dom and "ag-root" in dom, dom[-2000:]  # the runs table (AG Grid)
    assert 'data-testid="runs-search-autocomplete"' in dom  # its run search box
    assert "Run Name" in dom and f"study-{real_study.name}" in dom  # the parent run's row
