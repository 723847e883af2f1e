"""train.compile: the training forward through torch.compile gives the eager run's numbers
within float tolerance, a bad value fails naming the key, a study may change it on resume, and
the compile benchmark's choice follows its own arithmetic (bench/compile.py)."""

from __future__ import annotations

import pytest

from adasparse_lab.bench.compile import CompileBenchResult, main_study_trial_rows
from adasparse_lab.bench.step import StepBenchConfig
from adasparse_lab.bench.throughput import Timing, TrainBenchResult
from adasparse_lab.errors import ConfigError
from adasparse_lab.run.build import build_components
from adasparse_lab.run.fit import TrainSettings
from adasparse_lab.run.pipeline import train_and_evaluate
from adasparse_lab.study.fingerprint import fingerprint

SHOWN = ("val/mean_domain_auc", "test/mean_domain_auc", "val/flops/ratio", "val/sparsity/overall")


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_compile_setting_that_is_not_a_boolean_fails_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"train\.compile=.* must be true or false"):
        TrainSettings(compile=value)


def test_a_bad_compile_setting_in_the_config_fails_before_training(make_cfg):
    with pytest.raises(ConfigError, match=r"train\.compile='maybe'"):
        build_components(make_cfg("tracking=none", "train.compile=maybe"))


def test_a_study_may_change_compile_on_resume(make_cfg):
    """How the step runs, not what it computes: not part of the study's fingerprint."""
    eager = fingerprint(make_cfg("+study=quick", "train.compile=false"))
    compiled = fingerprint(make_cfg("+study=quick", "train.compile=true"))
    assert eager == compiled and not any(k.startswith("train.compile") for k in eager)
    assert "train.lr" in eager  # while the training settings that change values do count


@pytest.mark.slow
def test_compiled_training_matches_eager_within_float_tolerance(make_cfg, tiny_data):
    """The paper-form pruner, 2 epochs on the tiny data: the same metrics to 1e-6 and weights
    within 1e-5 (measured: 6e-8)."""
    runs = {}
    for compiled in (False, True):
        flag = str(compiled).lower()
        cfg = make_cfg(
            "tracking=none", "pruner=fusion", "train.device=cpu", f"train.compile={flag}"
        )
        runs[compiled] = train_and_evaluate(cfg, data=tiny_data)
    eager, compiled = runs[False], runs[True]
    for key in SHOWN:
        assert compiled.metrics[key] == pytest.approx(eager.metrics[key], abs=1e-6), key
    a, b = eager.model.state_dict(), compiled.model.state_dict()
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5
    assert eager.metrics["val/mean_domain_auc"] > 0.55  # it learned: not two equal failures


def bench_result(eager: float, compiled: float, first: float, new: float) -> CompileBenchResult:
    """A result with these rows/s (steady) and compiled first / new-structure passes (s)."""
    cfg = StepBenchConfig().as_train()
    timings = TrainBenchResult(
        cfg,
        {
            "eager": [Timing(1000, 1000 / eager)],
            "compiled": [Timing(1000, 1000 / compiled)],
        },
    )
    return CompileBenchResult(
        timings, {"eager": 1.0, "compiled": 1.0 + first}, {"eager": 1.0, "compiled": 1.0 + new}
    )


def test_the_compile_benchmark_charges_each_new_structure_its_recompile():
    r = bench_result(eager=50_000, compiled=100_000, first=60.0, new=30.0)
    assert r.steady_ratio == pytest.approx(2.0)
    assert r.compile_s == pytest.approx(60.0) and r.recompile_s == pytest.approx(30.0)
    assert r.trial_seconds("eager") == pytest.approx(640_000 / 50_000)
    assert r.trial_seconds("compiled") == pytest.approx(30.0 + 640_000 / 100_000)
    assert not r.choice  # twice the rate does not pay back a 30 s recompile on 640k rows
    assert bench_result(eager=50_000, compiled=100_000, first=60.0, new=2.0).choice
    assert not bench_result(eager=50_000, compiled=40_000, first=0.0, new=0.0).choice


def test_a_compiled_pass_faster_than_the_eager_one_costs_no_negative_compile():
    r = bench_result(eager=50_000, compiled=60_000, first=-0.5, new=-0.2)
    assert r.compile_s == 0.0 and r.recompile_s == 0.0


def test_the_compile_benchmark_json_holds_both_sides_and_the_choice():
    r = bench_result(eager=50_000, compiled=100_000, first=60.0, new=30.0)
    out = r.as_json()
    assert out["rows_per_s"] == {"eager": [50_000.0], "compiled": [100_000.0]}
    assert out["compile_s"] == pytest.approx(60.0) and out["recompile_s"] == pytest.approx(30.0)
    assert out["new_structure_s"] == {"eager": 1.0, "compiled": 31.0}
    assert out["steady_ratio"] == pytest.approx(2.0) and out["choice"] is False


def test_a_main_study_trial_is_its_epochs_over_the_train_split():
    """4 epochs x 80% of the 200,000 synthetic rows (conf/study/sparsity.yaml)."""
    assert main_study_trial_rows() == 640_000 == bench_result(1, 1, 0, 0).trial_rows
