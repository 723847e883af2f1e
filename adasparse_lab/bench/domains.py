"""Many domains: a real study on synthetic data with ``n`` domains (100 and 1,000 by default),
its report built from storage and opened in headless Chromium. Prints per domain count the
report's size (MB), the browser's load time (s), the per-domain picker's options and the trial
driver's overhead (share of a trial's time outside fit and evaluate, MLflow logging included).

Each study runs the main study's trial (TRIALS["main"]): the overhead share is about trials of
the size users run, not about a toy fit that a fixed ~0.4 s of compose and outputs outweighs.

``python -m adasparse_lab.bench --only domains`` (about 5-8 min on 2 cores).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.config import domain_metrics_max
from adasparse_lab.report.build import build
from adasparse_lab.study.driver import StudyRunner

CONF = Path(__file__).resolve().parents[2] / "conf"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-unsafe-swiftshader",
]  # fmt: skip
LIMITS = {"report_mb": 10.0, "load_s": 5.0, "overhead": 0.10}


@dataclass
class DomainsBenchResult:
    domains: int
    trial: str  # TRIALS: main or tiny
    trials: int
    rows: int
    report_mb: float
    build_s: float
    load_s: (
        float  # the page's load in Chromium (navigation start to load, figures drawn), best of 3
    )
    browser_s: float  # the whole headless Chromium run (start, load, DOM dump)
    figures_rendered: str
    js_errors: str
    picker_options: int
    mean_trial_s: float
    mean_fit_s: float
    mean_epoch_log_s: float  # of mean_fit_s: the epochs' metrics logged to MLflow
    domain_metrics: str  # where the per-domain values went: MLflow metrics, or one artifact
    # Each trial's overhead share (the first trial's includes preparing the data, once a study).
    trial_shares: list[float]

    @property
    def overhead_share(self) -> float:
        """Outside fit and evaluate, MLflow logging of the epochs' metrics counted in."""
        return (self.mean_trial_s - self.mean_fit_s + self.mean_epoch_log_s) / self.mean_trial_s

    @property
    def overhead_s(self) -> float:
        return self.overhead_share * self.mean_trial_s

    @property
    def median_share(self) -> float:
        return float(np.median(self.trial_shares))

    def as_dict(self) -> dict:
        return asdict(self) | {
            "overhead_s": self.overhead_s,
            "overhead_share": self.overhead_share,
            "median_share": self.median_share,
        }


# The trial a study runs. "main": the main study's (+study=sparsity: its model, 4 epochs, at
# least its 200,000 rows; every trial run to its end), the size the overhead target is about;
# "tiny": a 16-8 tower trained 2 epochs on at least 30,000 rows, for tests of the report (its
# overhead share is far larger: the driver's fixed ~0.4 s a trial against a fit under a second).
TRIALS = {
    "main": (200_000, ["+study=sparsity", "study.log_models=none", "study.early_stop.kind=none"]),
    "tiny": (30_000, [
        "+study=quick", "model.hidden_dims=[16,8]", "flops_reference=[16,8]",
        "model.embedding_dim=4", "train.epochs=2",
    ]),
}  # fmt: skip


def study_overrides(n_domains: int, tmp: str, n_trials: int = 3, trial: str = "main") -> list[str]:
    """A small real study on ``n_domains`` synthetic domains (at least 300 rows per domain)."""
    min_rows, trial_overrides = TRIALS[trial]
    rows = max(min_rows, 300 * n_domains)
    return [
        *trial_overrides, f"study.name=domains{n_domains}", f"study.n_trials={n_trials}",
        "study.reeval.seeds=[1,2]", "study.reeval.max_trials=1", "study.poll_s=0.1",
        f"synthetic.n_rows={rows}", f"data.source.n_domains={n_domains}",
        f"data.source.n_groups={max(2, n_domains // 10)}", "data.source.size_ratio=20.0",
        "train.batch_size=1024", "train.device=cpu", "train.progress=false",
        "latency.enabled=false",
        f"paths.studies={tmp}/studies", f"paths.reports={tmp}/reports", f"paths.cache={tmp}/cache",
    ]  # fmt: skip


def open_in_browser(page: Path, profile: Path) -> tuple[dict[str, str], float]:
    """The <html> attributes headless Chromium leaves on the page after load, and its wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(CHROMIUM), *BROWSER_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - t0
    tag = re.search(r"<html[^>]*>", proc.stdout)
    attrs = dict(re.findall(r'([a-z-]+)="([^"]*)"', tag.group(0))) if tag else {}
    return attrs, wall


def run_domains_study(
    n_domains: int, tmp: str, n_trials: int = 3, trial: str = "main", extra: Sequence[str] = ()
):
    """The study's config and outcome (study.driver.StudyRunner), stored under ``tmp``;
    ``extra``: more overrides (last)."""
    overrides = [*study_overrides(n_domains, tmp, n_trials, trial), *extra]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        runner = StudyRunner(base, lambda extra: compose("config", overrides=[*overrides, *extra]))
        return base, runner.run()


def run_domains_bench(
    n_domains: int, n_trials: int = 3, trial: str = "main", extra: Sequence[str] = ()
) -> DomainsBenchResult:
    with tempfile.TemporaryDirectory() as tmp:
        base, outcome = run_domains_study(n_domains, tmp, n_trials, trial, extra)
        done = [t for t in outcome.study.get_trials() if t.state == TrialState.COMPLETE]
        info = build([base.study.name], [outcome.storage_desc], Path(tmp) / "reports")
        page = info.path.read_text(encoding="utf-8")
        loads = [open_in_browser(info.path, Path(tmp) / f"profile{i}") for i in range(3)]
        attrs, wall = min(loads, key=lambda a: float(a[0].get("data-load-ms", "inf")))
    return DomainsBenchResult(
        domains=n_domains,
        trial=trial,
        trials=len(done),
        rows=int(base.synthetic.n_rows),
        report_mb=info.bytes / 1e6,
        build_s=info.seconds,
        load_s=float(attrs.get("data-load-ms", "nan")) / 1000,
        browser_s=wall,
        figures_rendered=f"{attrs.get('data-figures-rendered')}/{attrs.get('data-figures-expected')}",
        js_errors=attrs.get("data-js-errors", "?"),
        picker_options=page.count('<option value="domain:'),
        mean_trial_s=sum(t.user_attrs["duration_s"] for t in done) / max(len(done), 1),
        mean_fit_s=sum(t.user_attrs["fit_s"] for t in done) / max(len(done), 1),
        mean_epoch_log_s=sum(t.user_attrs["epoch_log_s"] for t in done) / max(len(done), 1),
        trial_shares=[_share(t.user_attrs) for t in done],
        domain_metrics=_where_domains_go(n_domains, domain_metrics_max(base.tracking)),
    )


def _where_domains_go(n_domains: int, limit: int) -> str:
    if n_domains <= limit:
        return "MLflow metrics"
    return f"one artifact a run (tracking.domain_metrics_max={limit})"


def _share(a: dict) -> float:
    """One trial's driver overhead: outside fit and evaluate, or logging the epochs' metrics."""
    return (a["duration_s"] - a["fit_s"] + a["epoch_log_s"]) / a["duration_s"]


# The baseline of --domains-baseline: every per-domain value an MLflow metric, whatever the count.
ALL_AS_METRICS = "tracking.domain_metrics_max=1000000000"


def format_domains(results: list[DomainsBenchResult]) -> str:
    lines = [
        "[10] many domains  real study on synthetic data, report from storage, headless Chromium"
    ]
    for r in results:
        ok = (
            r.report_mb <= LIMITS["report_mb"]
            and r.load_s < LIMITS["load_s"]
            and r.median_share < LIMITS["overhead"]
        )
        lines.append(
            f"    {r.domains:>5} domains, {r.trials} {r.trial} trials, {r.rows:,} rows: report {r.report_mb:.2f} MB"
            f" (built in {r.build_s:.1f} s), loads in {r.load_s:.2f} s (Chromium run {r.browser_s:.1f} s,"
            f" figures {r.figures_rendered}, JS errors {r.js_errors}, picker {r.picker_options} domains),"
            f" driver overhead {r.overhead_s:.2f} s = {100 * r.overhead_share:.1f}% of"
            f" {r.mean_trial_s:.2f} s/trial (median"
            f" trial {100 * r.median_share:.1f}%; trials {' '.join(f'{100 * x:.0f}%' for x in r.trial_shares)})"
            f" (epoch metrics to MLflow {r.mean_epoch_log_s:.3f} s; per-domain values:"
            f" {r.domain_metrics})"
            f"   targets <=10 MB, <5 s, <10%: {'ok' if ok else 'ABOVE TARGET'}"
        )
    return "\n".join(lines)
