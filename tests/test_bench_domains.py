"""The many-domains benchmark section: the study it runs is the main study's trial on many
domains (composed from the real configs), and its overhead arithmetic and verdict."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from adasparse_lab.bench.domains import (
    ALL_AS_METRICS,
    DomainsBenchResult,
    format_domains,
    study_overrides,
)
from adasparse_lab.config import domain_metrics_max
from tests.conftest import CONF


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_the_main_trial_is_the_main_studys_on_many_domains(tmp_path):
    main = _compose(["+study=sparsity"])
    cfg = _compose(study_overrides(1000, str(tmp_path)))
    assert cfg.model.hidden_dims == main.model.hidden_dims == [256, 128, 64]
    assert cfg.model.embedding_dim == main.model.embedding_dim
    assert cfg.train.epochs == main.train.epochs == 4
    assert cfg.study.space == main.study.space and cfg.study.n_trials == 3
    assert cfg.data.source.n_domains == 1000 and cfg.synthetic.n_rows == 300_000  # 300 a domain
    assert _compose(study_overrides(100, str(tmp_path))).synthetic.n_rows == 200_000  # the main's
    tiny = _compose(study_overrides(30, str(tmp_path), trial="tiny"))
    assert tiny.model.hidden_dims == [16, 8] and tiny.synthetic.n_rows == 30_000
    baseline = _compose([*study_overrides(1000, str(tmp_path)), ALL_AS_METRICS])
    assert domain_metrics_max(cfg.tracking) == 50 < 1000 <= domain_metrics_max(baseline.tracking)


def _result(trial_s, fit_s, log_s, shares):
    return DomainsBenchResult(
        domains=1000, trial="main", trials=3, rows=300_000, report_mb=5.5, build_s=1.0,
        load_s=3.0, browser_s=4.0, figures_rendered="14/14", js_errors="0", picker_options=1000,
        mean_trial_s=trial_s, mean_fit_s=fit_s, mean_epoch_log_s=log_s, trial_shares=shares,
        domain_metrics="one artifact a run",
    )  # fmt: skip


def test_the_overhead_is_the_trial_outside_fit_with_the_epochs_logging():
    r = _result(trial_s=20.0, fit_s=19.5, log_s=0.1, shares=[0.03, 0.02, 0.04])
    assert r.overhead_s == pytest.approx(0.6) and r.overhead_share == pytest.approx(0.03)
    assert r.as_dict()["overhead_s"] == pytest.approx(0.6)
    line = format_domains([r])
    assert "driver overhead 0.60 s = 3.0% of 20.00 s/trial" in line and line.endswith(": ok")
    slow = _result(trial_s=20.0, fit_s=16.0, log_s=1.0, shares=[0.25, 0.25, 0.25])
    assert format_domains([slow]).endswith("ABOVE TARGET")
