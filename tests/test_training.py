"""End-to-end training: sparsity reaches the band, real samples run, outputs and MLflow logs."""

import json

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from adasparse_lab.experiment import build_components, build_model, train_and_evaluate
from adasparse_lab.train import run
from adasparse_lab.trainer import NonFiniteLossError, fit


@pytest.mark.parametrize("pruner", ["fusion", "binarization"])
def test_sparsity_reaches_the_band_on_the_synthetic_default(make_cfg, pruner):
    cfg = make_cfg(f"pruner={pruner}", "tracking=none", "train.progress=false", tiny=False)
    result = train_and_evaluate(cfg)
    lo, hi = cfg.schedule.r_min, cfg.schedule.r_max
    layers = [k for k in result.metrics if k.startswith("sparsity/l")]
    assert layers == ["sparsity/l1", "sparsity/l2", "sparsity/l3"]
    for key in layers:
        assert lo - 0.03 <= result.metrics[key] <= hi + 0.03, (key, result.metrics[key])
    # the model learned: every domain well above chance, and below its oracle on average
    table = result.domains
    assert table["test_auc"].min() > 0.65
    gap = (table["oracle_auc"] - table["test_auc"]).to_numpy()
    assert 0.0 < gap.mean() < 0.08
    # paper-form pruners are computed online: the honest FLOPs ratio exceeds 1
    assert result.metrics["flops/ratio"] > 1.0


@pytest.mark.parametrize("dataset", ["douban", "taobao"])
def test_real_samples_end_to_end_with_tracking(make_cfg, tmp_path, dataset):
    cfg = make_cfg(f"data={dataset}", "train.epochs=2", "train.progress=false")
    out = tmp_path / "run"
    metrics = run(cfg, out)
    payload = json.loads((out / "metrics.json").read_text())
    assert set(payload) >= {"metrics", "domains", "history", "best_epoch"}
    n_domains = {"douban": 3, "taobao": 2}[dataset]
    assert len(payload["domains"]) == n_domains
    assert 0.0 <= metrics["test/auc"] <= 1.0 and np.isfinite(metrics["test/logloss"])
    assert (out / "keep_prob.parquet").exists() and (out / "model_state.pt").exists()
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["data.name"] == dataset
    history = client.get_metric_history(mlrun.info.run_id, "epoch/val/mean_domain_auc")
    assert [m.step for m in history] == [1, 2]  # one point per epoch
    (final,) = client.get_metric_history(mlrun.info.run_id, "val/mean_domain_auc")
    assert final.value == pytest.approx(metrics["val/mean_domain_auc"])  # the selected model
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"metrics.json", "keep_prob.parquet", "config.yaml"} <= artifacts


def test_non_finite_loss_raises(make_cfg, tiny_data):
    cfg = make_cfg("tracking=none")
    parts = build_components(cfg)
    model = build_model(cfg.model, tiny_data, parts.pruner)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite training loss"):
        fit(model, tiny_data, parts.settings, parts.regularizer, parts.schedule)


def test_best_epoch_waits_for_the_final_band(make_cfg, tiny_data):
    cfg = make_cfg("tracking=none", "train.epochs=4", "schedule.end=0.5", "train.patience=0")
    parts = build_components(cfg)
    model = build_model(cfg.model, tiny_data, parts.pruner)
    result = fit(model, tiny_data, parts.settings, parts.regularizer, parts.schedule)
    assert [r.eligible for r in result.history][:2] == [False, True]
    assert result.best_epoch >= 2


def test_same_seed_same_result_other_seed_other_init(make_cfg, tiny_data):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        result = train_and_evaluate(make_cfg("tracking=none", f"seed={seed}"), data=tiny_data)
        runs[name] = result.metrics["val/mean_domain_auc"]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]
