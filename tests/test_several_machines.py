"""The "Run a study on several machines" recipe of docs/cluster.md, run as written on this machine:
``python -m adasparse_lab.services`` (what ``make services`` runs) prints the two settings;
the same sweep command on two "machines" (own worker host, folders and cache) shares them;
the report is built from them. Ctrl-C stops the services and removes their files."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT
from tests.services import unavailable

pytestmark = pytest.mark.services


def start_services(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, dict[str, str]]:
    """``python -m adasparse_lab.services *args`` (``env`` added to the environment), and the
    two settings it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "adasparse_lab.services", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    settings = {}
    deadline = time.monotonic() + 120
    while len(settings) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:  # it exited
            unavailable(f"python -m adasparse_lab.services failed: {proc.stderr.read()[-2000:]}")
        key, _, value = line.strip().partition("=")
        if key in ("study.storage", "tracking.uri"):
            settings[key] = value
    return proc, settings


def readme_recipe(settings: dict[str, str]) -> tuple[list[str], list[str]]:
    """The sweep and report commands of the recipe, with the printed settings in
    place of its placeholders: (sweep argv after ``python``, report argv after ``python``)."""
    section = (
        (ROOT / "docs" / "cluster.md").read_text().split("# Run a study on several machines")[1]
    )
    block = re.findall(r"```bash\n(.*?)```", section, re.S)[1].replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        argv = shlex.split(line)[1:]  # without "python"
        for i, arg in enumerate(argv):
            key = arg.partition("=")[0]
            if key in settings:
                argv[i] = f"{key}={settings[key]}"
            elif key == "storage":  # the report's name for the study storage
                argv[i] = f"storage={settings['study.storage']}"
        commands.append(argv)
    sweep, report = commands
    assert sweep[:3] == ["-m", "adasparse_lab.sweep", "+study=quick"], sweep
    assert report[:3] == ["-m", "adasparse_lab.report", "study=quick"], report
    return sweep, report


@pytest.mark.slow
def test_the_several_machines_recipe(tmp_path):
    services, settings = start_services()
    try:
        sweep, report_cmd = readme_recipe(settings)
        workers = []
        for index, machine in enumerate(("a", "b")):
            folder = tmp_path / machine
            cmd = [
                sys.executable,
                *(a for a in sweep if not a.startswith("study.worker_index=")),
                *("study.n_trials=3", "study.reference=false", "study.reeval.max_trials=1"),
                *(f"paths.studies={folder}/studies", f"paths.reports={folder}/reports"),
                f"paths.cache={folder}/cache",
                f"study.worker_index={index}",
            ]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "ADASPARSE_WORKER_HOST": machine}
            workers.append(
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [w.communicate(timeout=240)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
        study = optuna.load_study(study_name="quick", storage=settings["study.storage"])
        trials = study.get_trials()
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
        assert {t.user_attrs["worker"].split(":")[0] for t in trials} <= {"a", "b"}
        report = subprocess.run(
            [sys.executable, *report_cmd, f"out={tmp_path / 'reports'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr[-2000:]
        assert (tmp_path / "reports" / "quick" / "report.html").stat().st_size > 10_000
    finally:
        services.send_signal(signal.SIGINT)
        services.wait(60)
    assert services.returncode == 0
    root = Path(services.stdout.read().split("PostgreSQL log: ")[-1].split("/postgres/")[0])
    assert not root.exists() or not any(root.iterdir())  # its files are gone
