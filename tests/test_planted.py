"""The verdict pipeline end to end, on a small real study with known answers (issue 20): the
sweep's command runs a grid of three methods x 5 seeds, and the matched-cost command reads it
back. The answers are planted: ``dense_long`` is the dense model trained longer (8 epochs of
batch 64 against 1 epoch of batch 256: 75 steps an epoch instead of 19), so it must be found
better than ``dense``; ``dense_twin`` is ``dense`` under another name (``+pruner.label``), so
it must be found indistinguishable from it.

Measured at this size (test mean per-domain AUC, seeds 0..4): dense 0.5991 0.5787 0.5596
0.5613 0.5715; dense_long 0.7008 0.7167 0.6908 0.7066 0.7039; paired difference +0.130 (sd
0.017, smallest +0.102), p = 6e-5 before Holm's correction over the anchor's 3 comparisons."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from adasparse_lab.results.verdicts import BETTER, SAME
from tests.conftest import ROOT, SIX_DOMAINS, TINY_RUN

pytestmark = pytest.mark.slow

METHODS = {
    "dense": ["pruner=none"],
    "dense_twin": ["pruner=none", "+pruner.label=dense_twin"],
    "dense_long": [
        "pruner=none",
        "+pruner.label=dense_long",
        "train.epochs=8",
        "train.batch_size=64",
        "train.patience=3",
    ],
}


def _listed(values: list[str]) -> str:
    return "[" + ",".join(f'"{v}"' for v in values) + "]"


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def planted(planted_study):
    """The matched-cost table of the planted study at the dense model's cost (ratio 1)."""
    return _run(
        "adasparse_lab.study.matched", "study=planted", f"studies={planted_study}/studies", "at=1"
    )


@pytest.fixture(scope="module")
def planted_study(tmp_path_factory):
    """The folder of the planted study (a grid of the three methods x 5 seeds)."""
    tmp = tmp_path_factory.mktemp("planted")
    _run(
        "adasparse_lab.sweep",
        "+study=rivals",  # a test-only space over the rivals study: its grid, no reference
        "study.name=planted",
        f"study.space.method.choices=[{','.join(METHODS)}]",
        *[f"++study.space.method.overrides.{m}={_listed(o)}" for m, o in METHODS.items()],
        "study.space.target.choices=[t15]",
        "study.space.seed.choices=[0,1,2,3,4]",
        "study.n_trials=15",
        "study.poll_s=0.1",
        *SIX_DOMAINS,
        *TINY_RUN,
        f"paths.studies={tmp}/studies",
        f"paths.reports={tmp}/reports",
        f"paths.cache={tmp}/cache",
    )
    return tmp


def _verdict(text: str, method: str, against: str) -> tuple[float, str, int]:
    """(paired difference, verdict, paired seeds) of ``method vs against`` in the table."""
    found = re.search(
        rf"{method} vs {against}: ([+-][0-9.]+) \[.*\], Holm p \S+: ([a-z ]+) \((\d+) paired",
        text,
    )
    assert found, text
    return float(found[1]), found[2], int(found[3])


def test_the_planted_winner_is_found_better(planted):
    diff, verdict, n = _verdict(planted, "dense_long", "dense")
    assert (verdict, n) == (BETTER, 5), planted
    assert diff > 0.05  # measured +0.130
    assert re.search(r"^\s+1\. dense_long ", planted, re.MULTILINE), planted


def test_the_same_method_under_two_names_is_indistinguishable(planted):
    diff, verdict, n = _verdict(planted, "dense_twin", "dense")
    assert (verdict, n) == (SAME, 5), planted
    assert diff == 0.0  # the same training, seed for seed
    assert "budget" not in planted  # every method had its 5 trials: nothing flagged


def test_per_domain_the_planted_winner_gains_and_the_twin_moves_nowhere(planted_study):
    """Which domains gain or lose beyond seed noise (paired by seed, Holm over the domains)."""
    text = _run(
        "adasparse_lab.study.matched",
        "study=planted",
        f"studies={planted_study}/studies",
        "per_method=true",
    )
    twin = re.search(r"^  dense_twin: (.*)$", text, re.MULTILINE)
    long = re.search(r"^  dense_long: (.*)$", text, re.MULTILINE)
    assert twin and long, text
    assert twin[1] == "no domain differs beyond seed noise (6 domains, 5 paired seeds)"
    assert long[1].startswith("gains in d") and "loses in" not in long[1], long[1]


def test_the_report_opens_with_the_verdicts(planted_study, tmp_path):
    """The report's first section is the verdicts: each method's best, the paired verdicts, the
    per-domain gains and the methods at each cost level: the numbers the matched command prints."""
    import html

    from adasparse_lab.report.build import build

    info = build(["planted"], None, tmp_path, studies_dir=planted_study / "studies")
    page = html.unescape(info.path.read_text())
    sections = re.findall(r"<section[^>]* id=['\"]([a-z]+)['\"]", page)
    assert sections[:2] == ["summary", "verdicts"], sections  # (summary: the headline)
    printed = _run(
        "adasparse_lab.study.matched", "study=planted", f"studies={planted_study}/studies",
        "per_method=true",
    )  # fmt: skip
    long_line = re.search(r"^\s+(dense_long vs dense: .*)$", printed, re.MULTILINE)[1]
    assert long_line in page and ": better (5 paired seeds)" in long_line
    assert "dense_twin: no domain differs beyond seed noise" in page
    assert "at ratio ~0.5" in page
