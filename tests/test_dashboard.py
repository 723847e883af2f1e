"""`make dashboard`: optuna-dashboard serves a real study's storage, and its API gives back the
study's trials as Optuna stored them."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest

from adasparse_lab.store.dashboard import main
from adasparse_lab.store.reader import load_study

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_the_dashboard_serves_the_study_trials(real_study, tmp_path):
    port = _free_port()
    log = (tmp_path / "dashboard.log").open("w")
    command = [sys.executable, "-m", "adasparse_lab.store.dashboard", f"study={real_study.name}"]
    command += [f"studies={real_study.root}", f"port={port}"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"the dashboard did not start: {(tmp_path / 'dashboard.log').read_text()}"
                    )
                time.sleep(0.3)
        (summary,) = [s for s in studies if s["study_name"] == real_study.name]
        served = _get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")["trials"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    study, _ = load_study(real_study.name, None, real_study.root)
    stored = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert sorted(t["number"] for t in served) == sorted(stored)
    for trial in served:
        truth = stored[trial["number"]]
        assert trial["state"].upper() == truth.state.name
        if truth.state == optuna.trial.TrialState.COMPLETE:
            assert trial["values"] == pytest.approx(truth.values)
    printed = (tmp_path / "dashboard.log").read_text()
    assert f"http://127.0.0.1:{port}/dashboard" in printed


def test_an_unknown_study_is_refused_before_serving(real_study, capsys):
    code = main(["study=nope", f"studies={real_study.root}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "study 'nope' not found" in err and real_study.name in err


def test_a_bad_port_names_the_key(real_study, capsys):
    assert main([f"study={real_study.name}", f"studies={real_study.root}", "port=x"]) == 2
    assert "port='x'" in capsys.readouterr().err
