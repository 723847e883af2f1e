"""What `make study` shows at the terminal: one progress line per trial, no epoch lines, and
after the Pareto table nothing from the libraries (MLflow's advice while it logs the front
models, its artifacts progress bar, our own non-writable-array warning): our own summary."""

import os
import re
import subprocess
import sys

import pytest

from adasparse_lab.study.progress import duration
from tests.conftest import ROOT, TINY

NOISE = re.compile(
    r"warn|Downloading artifacts|\d+%\||it/s\]|cloudpickle|type hints|integer column",
    re.IGNORECASE,
)


@pytest.mark.slow
def test_a_study_shows_one_line_per_trial_and_a_quiet_end(tmp_path):
    command = [sys.executable, "-m", "adasparse_lab.sweep", "+study=quick", *TINY]
    command += ["study.reeval.max_trials=1", "study.log_models=front", "study.poll_s=0.2"]
    command += [f"paths.studies={tmp_path}/studies", f"paths.reports={tmp_path}/reports"]
    command += [f"paths.cache={tmp_path}/cache"]
    proc = subprocess.run(  # stdout and stderr as a terminal interleaves them
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    console = proc.stdout
    assert proc.returncode == 0, console[-3000:]
    progress = re.findall(r"trial \d+ (\w+) · (\d+)/4 complete · .* elapsed", console)
    assert [state for state, _ in progress] == ["COMPLETE"] * 4
    assert [int(done) for _, done in progress] == [1, 2, 3, 4]
    assert re.search(r"hypervolume \d\.\d{4}", console)
    assert re.search(r"the dense reference run \(seed \d+\) done in \d", console)
    assert re.search(r"re-evaluation of trial \d+, seed 1 done in \d", console)
    assert "epoch 1:" not in console  # every epoch stays in the log file
    (log_file,) = (tmp_path / "studies" / "quick" / "hydra").glob("*/sweep.log")
    assert log_file.read_text().count("epoch 1:") >= 4
    end = console.split("Pareto front (selected on validation", 1)[1]
    assert "front model    : trial" in end  # the front models were logged
    assert [line for line in end.splitlines() if NOISE.search(line)] == []


@pytest.mark.parametrize(
    ("seconds", "text"), [(5.2, "5 s"), (100, "1 min 40 s"), (3 * 3600 + 420, "3 h 07 min")]
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert duration(seconds) == text


def test_the_progress_line_counts_and_measures_the_study():
    import optuna

    from adasparse_lab.results.front import hypervolume_history
    from adasparse_lab.study.progress import Progress

    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([0.70, 0.5], [0.75, 0.9], [0.72, 0.2]):
        trial = study.ask()
        study.tell(trial, values)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    reference = [0.5, 3.0]
    progress = Progress(n_trials=5, directions=["maximize", "minimize"], reference=reference)
    line = progress.line(study.trials, failed.number)
    expected = hypervolume_history(study.trials, ["maximize", "minimize"], reference)[-1][1]
    assert line.startswith("trial 3 FAIL · 3/5 complete · ")
    assert "about " in line and f"hypervolume {expected:.4f}" in line
