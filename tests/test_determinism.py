"""Two runs with the same seed on CPU write the same numbers (README: what breaks it)."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

# Wall-clock measurements: the only numbers a run may not repeat.
from adasparse_lab.run.outputs import write_outputs
from adasparse_lab.run.pipeline import train_and_evaluate

TIMINGS = {"fit_seconds", "samples_per_s"}


def is_timing(key: str) -> bool:
    return key in TIMINGS or key.startswith("val/latency/")


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not is_timing(k)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def run_once(cfg, data, out):
    write_outputs(out, cfg, train_and_evaluate(cfg, data=data))
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["fusion", "random"])
def test_same_seed_on_cpu_gives_identical_outputs(make_cfg, tiny_data, tmp_path, pruner):
    cfg = make_cfg("tracking=none", f"pruner={pruner}", "train.device=cpu", "seed=3")
    first = run_once(cfg, tiny_data, tmp_path / "a")
    second = run_once(cfg, tiny_data, tmp_path / "b")
    assert first["metrics"]["fit_seconds"] > 0  # the timings exist, and only they may differ
    assert without_timings(first) == without_timings(second)  # every other number, bit for bit
    assert len(first["history"]) == 2 and first["metrics"]["val/mean_domain_auc"] > 0.55
    weights = [torch.load(tmp_path / d / "model_state.pt") for d in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    keep = [pl.read_parquet(tmp_path / d / "keep_prob.parquet") for d in ("a", "b")]
    assert keep[0].equals(keep[1])
    other = run_once(
        make_cfg("tracking=none", f"pruner={pruner}", "seed=4"), tiny_data, tmp_path / "c"
    )
    assert other["metrics"]["val/auc"] != first["metrics"]["val/auc"]  # the seed matters
