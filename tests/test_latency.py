"""Measured serving cost (adasparse_lab.run.latency): metrics per domain, the network timed, batch
sizes, the dense-vs-itself ratio, the hook in train_and_evaluate and a study objective.
No timing thresholds: only that the numbers exist, are sane and come from the right network."""

from __future__ import annotations

import math
from collections import Counter
from functools import partial

import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

import adasparse_lab.run.latency as latency
from adasparse_lab.errors import ConfigError
from adasparse_lab.metrics import safe_name
from adasparse_lab.models.compact import CompactModel
from adasparse_lab.run.build import build_components, build_model
from adasparse_lab.run.latency import LatencySettings, measure_latency
from adasparse_lab.run.pipeline import train_and_evaluate
from adasparse_lab.sweep import run_study
from tests.conftest import CONF

FAST = LatencySettings(batch_sizes=(64, 1), repeats=2, warmup=1, min_rows=4)


def _model(make_cfg, data, *overrides: str) -> tuple[nn.Module, partial]:
    cfg = make_cfg("tracking=none", *overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model, data, build_components(cfg).pruner)
    return model, partial(build_model, cfg.model, data, None)


class Spy(nn.Module):
    """Wraps a served network and records the batch size of every call."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.batches = net, []

    def forward(self, cat, dense):
        self.batches.append(len(cat))
        return self.net(cat, dense)


def test_metrics_per_domain_positive_and_dense_against_itself(make_cfg, tiny_data):
    model, dense = _model(make_cfg, tiny_data, "pruner=none")
    result = measure_latency(model, dense, tiny_data, FAST)
    metrics = result.as_dict()
    for b in (64, 1):
        for name in tiny_data.domain_names:
            value = metrics[f"val/latency/b{b}/{safe_name(name)}"]
            assert math.isfinite(value) and value > 0
        assert metrics[f"val/latency/dense_b{b}"] > 0
        weighted = sum(
            result.weights[n] * metrics[f"val/latency/b{b}/{safe_name(n)}"] for n in result.weights
        ) / sum(result.weights.values())
        assert metrics[f"val/latency/ratio_b{b}"] == pytest.approx(
            weighted / metrics[f"val/latency/dense_b{b}"]
        )
    assert (
        metrics["val/latency/ratio"] == metrics["val/latency/ratio_b64"]
    )  # the largest batch size
    assert set(result.served.values()) == {"masked"}  # no static structure: the model serves
    rows = tiny_data.rows_per_domain("val")
    assert result.weights == {n: int(rows[k]) for k, n in enumerate(tiny_data.domain_names)}
    assert metrics["val/latency/measure_s"] > 0


def test_ratio_is_the_sample_weighted_mean_of_domain_ratios():
    result = latency.LatencyResult(
        domains={8: {"a": 2.0, "b": 6.0}}, dense={8: 4.0}, weights={"a": 3, "b": 1}
    )
    assert result.ratio(8) == pytest.approx((3 * 2.0 + 1 * 6.0) / 4 / 4.0)


@pytest.mark.parametrize(
    "overrides", [("pruner.inputs=domain",), ("pruner=random",)], ids=["domain-input", "random"]
)
def test_static_structure_is_served_compacted_at_the_asked_batch_sizes(
    make_cfg, tiny_data, monkeypatch, overrides
):
    model, dense = _model(make_cfg, tiny_data, *overrides)
    spies: dict[int, Spy] = {}
    real = latency.static_network

    def spy(model, k):
        net = real(model, k)
        assert isinstance(net, CompactModel)  # the compacted per-domain network
        spies[k] = Spy(net)
        return spies[k]

    monkeypatch.setattr(latency, "static_network", spy)
    result = measure_latency(model, dense, tiny_data, FAST)
    assert set(result.served.values()) == {"compact"}
    assert sorted(spies) == list(range(tiny_data.n_domains))
    # Per round: one batch of 64 (tiled: small domains have fewer test rows), 4 batches of 1.
    rounds = FAST.warmup + FAST.repeats
    for s in spies.values():
        assert Counter(s.batches) == {64: rounds, 1: 4 * rounds}


def test_a_spent_budget_leaves_one_timed_round(make_cfg, tiny_data, monkeypatch):
    """On a busy machine the rounds stop once ``budget_s`` is spent: warm-up + one timed round."""
    model, dense = _model(make_cfg, tiny_data, "pruner.inputs=domain")
    spies: dict[int, Spy] = {}
    real = latency.static_network
    monkeypatch.setattr(
        latency, "static_network", lambda m, k: spies.setdefault(k, Spy(real(m, k)))
    )
    s = LatencySettings(batch_sizes=(32,), repeats=5, warmup=1, min_rows=1, budget_s=0.0)
    metrics = measure_latency(model, dense, tiny_data, s).as_dict()
    assert all(s.batches == [32, 32] for s in spies.values())
    assert metrics["val/latency/ratio"] > 0


def test_paper_form_is_served_by_the_masked_model(make_cfg, tiny_data):
    model, dense = _model(make_cfg, tiny_data, "pruner=fusion")
    assert latency.static_network(model, 0) is None
    result = measure_latency(model, dense, tiny_data, FAST)
    assert set(result.served.values()) == {"masked"}
    assert model.training  # the model's mode is restored


def test_settings_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"latency\.batch_sizes"):
        LatencySettings(batch_sizes=(0,))
    with pytest.raises(ConfigError, match=r"latency\.repeats"):
        LatencySettings(repeats=0)
    with pytest.raises(ConfigError, match=r"latency\.budget_s"):
        LatencySettings(budget_s=-1)
    with pytest.raises(ConfigError, match=r"latency: .*rounds"):
        LatencySettings.from_config({"rounds": 3})
    assert not LatencySettings.from_config(None).enabled


@pytest.mark.slow
def test_train_and_evaluate_adds_latency_metrics(make_cfg, tiny_data):
    cfg = make_cfg("tracking=none", "train.epochs=1", "latency.batch_sizes=[128,1]")
    metrics = train_and_evaluate(cfg, tiny_data).metrics
    for name in tiny_data.domain_names:
        assert metrics[f"val/latency/b128/{safe_name(name)}"] > 0
        assert metrics[f"val/latency/b1/{safe_name(name)}"] > 0
    assert math.isfinite(metrics["val/latency/ratio"]) and metrics["val/latency/ratio"] > 0
    off = make_cfg("tracking=none", "train.epochs=1", "latency.enabled=false")
    assert not any(k.startswith("val/latency/") for k in train_and_evaluate(off, tiny_data).metrics)


@pytest.mark.slow
def test_a_study_can_minimise_latency_ratio(tmp_path):
    overrides = [
        "+study=quick",
        "study.n_trials=1",
        "study.reference=false",
        "study.reeval.max_trials=0",
        "study.poll_s=0.2",
        "study.objectives=[{metric:val/mean_domain_auc,direction:maximize},"
        "{metric:val/latency/ratio,direction:minimize}]",
        "train.epochs=1",
        "latency.batch_sizes=[256,1]",
        f"paths.studies={tmp_path}/studies",
        f"paths.reports={tmp_path}/reports",
        f"paths.cache={tmp_path}/cache",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        run_study(compose("config", overrides=overrides), overrides)
    study = optuna.load_study(
        study_name="quick", storage=f"sqlite:///{tmp_path}/studies/quick/optuna.db"
    )
    (trial,) = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trial.values) == 2 and math.isfinite(trial.values[1]) and trial.values[1] > 0
