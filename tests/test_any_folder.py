"""A study run with relative paths (the defaults: ``studies/``) reads back from any folder: the
report, the matched-cost table, the claims and the export started elsewhere with
``studies=<absolute path>`` give what they give in the study's own folder."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from adasparse_lab.export.__main__ import main as export_main
from adasparse_lab.report.__main__ import main as report_main
from adasparse_lab.study.claims import main as claims_main
from adasparse_lab.study.matched import main as matched_main
from adasparse_lab.sweep import run_study
from tests.conftest import CONF

pytestmark = pytest.mark.slow

RELATIVE = [
    "+study=quick",
    "study.reeval.max_trials=1",
    "study.log_models=none",
    "paths.studies=studies",
    "paths.reports=reports",
    "paths.cache=cache",
]


def _page_text(path: Path, *folders: Path) -> str:
    """The report's page without what names where it was built (folders, build time)."""
    text = path.read_text()
    for folder in folders:
        text = text.replace(f"{folder.resolve()}/", "")
    return re.sub(r"built in [0-9.]+ s|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d", "", text)


def test_the_commands_read_a_relative_study_from_another_folder(tmp_path, monkeypatch, capsys):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        run_study(compose("config", overrides=RELATIVE), RELATIVE)
    studies = here / "studies"
    capsys.readouterr()

    def outputs(folder: Path, where: str) -> dict[str, str]:
        monkeypatch.chdir(folder)
        out = {}
        for name, command in (("matched", matched_main), ("claims", claims_main)):
            assert command(["study=quick", f"studies={where}"]) == 0, name
            out[name] = capsys.readouterr().out
        assert report_main(["study=quick", f"studies={where}", f"out={folder}/report"]) == 0
        capsys.readouterr()
        out["report"] = _page_text(folder / "report" / "quick" / "report.html", here)
        export_main(["study=quick", "trial=best", f"studies={where}", f"out={folder}/bundle"])
        printed = re.sub(str(folder), "<out>", capsys.readouterr().out)
        out["export"] = re.sub(r"models:/m-[0-9a-f]+", "models:/<new id>", printed)
        return out

    own = outputs(here, "studies")
    other = outputs(elsewhere, str(studies))
    assert "MLflow experiment" not in own["report"]  # the runs were found from the study folder
    for name in own:
        assert other[name] == own[name], name
    assert (
        "mlflow:" in own["export"].lower()
        or "models:/" in own["export"]
        or "runs:/" in own["export"]
    )
