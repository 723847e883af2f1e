"""The clone-to-report timer (bench/clone_to_report.py) on a tiny repository whose `make`
stages are stand-ins: stage times reported, a relative --source cloned, failures keep the log."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import adasparse_lab.bench.clone_to_report as c2r
from tests.conftest import ROOT


@pytest.fixture
def tiny_repo(tmp_path):
    repo = tmp_path / "src"
    repo.mkdir()
    (repo / "README.md").write_text("tiny\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "tiny"], check=True)
    return repo


def test_stages_are_timed_from_a_relative_source(tiny_repo, tmp_path, monkeypatch, capsys):
    study = ["sh", "-c", "mkdir -p reports/sparsity && touch reports/sparsity/report.html"]
    monkeypatch.setattr(c2r, "STAGES", (("clone", None), ("setup", ["true"]), ("study", study)))
    monkeypatch.chdir(tmp_path)
    c2r.main(["--source", "src", "--json", str(tmp_path / "t.json")])
    seconds = json.loads((tmp_path / "t.json").read_text())["seconds"]
    assert list(seconds) == ["clone", "setup", "study", "total"]
    assert seconds["total"] == pytest.approx(sum(v for k, v in seconds.items() if k != "total"))
    assert "clone to report of" in capsys.readouterr().out


def test_the_commit_printed_is_the_one_cloned_not_the_sources_later_head(
    tiny_repo, tmp_path, monkeypatch, capsys
):
    """A commit to the source while the study runs (10 minutes) must not relabel the result:
    a measurement of 6216548 was printed as 071ebf6, committed meanwhile."""
    git = ["git", "-C", str(tiny_repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    cloned = subprocess.run(
        [*git[:3], "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    later = [*git, "commit", "-q", "--allow-empty", "-m", "later"]
    study = ["sh", "-c", "mkdir -p reports/sparsity && touch reports/sparsity/report.html"]
    monkeypatch.setattr(c2r, "STAGES", (("clone", None), ("setup", later), ("study", study)))
    c2r.main(["--source", str(tiny_repo), "--json", str(tmp_path / "t.json")])
    assert f"clone to report of {cloned} on " in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["commit"] == cloned


def test_a_failing_stage_names_its_log_and_keeps_it(tiny_repo, monkeypatch):
    monkeypatch.setattr(c2r, "STAGES", (("clone", None), ("setup", ["false"])))
    with pytest.raises(SystemExit, match=r"`false` failed \(1\); its output: (.+\.log)") as err:
        c2r.main(["--source", str(tiny_repo)])
    log = Path(str(err.value).rsplit("its output: ", 1)[1])
    assert log.is_absolute() and log.exists()  # the temporary folder is kept for it
    shutil.rmtree(log.parent)


def test_the_machine_is_described_without_a_venv(tmp_path):
    """clone_to_report runs before any venv exists: on a bare Python it imports only the
    standard library and adasparse_lab.machine, whose CPU description the study and the
    benchmark share."""
    from adasparse_lab import machine

    bare = shutil.which("python3", path="/usr/bin:/bin")
    if bare is None:
        pytest.skip("no system python3")
    code = (
        "import sys, adasparse_lab.bench.clone_to_report as c; print(c.machine());"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'polars')))"
    )
    done = subprocess.run(
        [bare, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    described, heavy = done.stdout.splitlines()
    assert heavy == "[]"
    assert described.startswith(f"{machine.cpu_model()}, {machine.usable_cpus()} usable CPUs, ")
