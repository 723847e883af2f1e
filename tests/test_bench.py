"""The benchmark measures what it claims: same rows, same work, equal predictions, sane JSON."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch.utils.data import DataLoader

from adasparse_lab.bench.__main__ import main
from adasparse_lab.bench.methods import (
    METHODS,
    MethodsBenchConfig,
    chosen_methods,
    format_methods,
    run_methods_bench,
)
from adasparse_lab.bench.serving import (
    ServeBenchConfig,
    analytic_flops_ratio,
    domain_pruner,
    domain_rows,
    sparsify_for_domain,
)
from adasparse_lab.bench.step import LABELS as STEP_LABELS
from adasparse_lab.bench.step import StepBenchConfig, step_runners
from adasparse_lab.bench.throughput import (
    RowDataset,
    Timing,
    TrainBenchConfig,
    TrainBenchResult,
    variant_runners,
)
from adasparse_lab.bench.workload import build_model, synthetic_data, with_train_rows
from adasparse_lab.models.compact import compact_model
from adasparse_lab.run.evaluation import evaluate

TRAIN_ROWS = 2_500  # two full batches of 1024 and a partial one of 452


@pytest.fixture(scope="module")
def data():
    return synthetic_data(TRAIN_ROWS, seed=0)


class TestRowDataset:
    def test_item_is_the_split_row(self, data):
        split = data.splits["train"]
        ds = RowDataset(split)
        assert len(ds) == len(split)
        cat, dense, label = ds[17]
        assert torch.equal(cat, split.cat[17]) and cat.shape == (8,)
        assert torch.equal(dense, split.dense[17]) and torch.equal(label, split.label[17])

    def test_loader_batches_equal_the_tensors(self, data):
        split = data.splits["train"]
        batches = list(DataLoader(RowDataset(split), batch_size=1024, shuffle=False))
        assert [len(b[2]) for b in batches] == [1024] * (len(split) // 1024) + [len(split) % 1024]
        assert torch.equal(torch.cat([b[0] for b in batches]), split.cat)
        assert torch.equal(torch.cat([b[1] for b in batches]), split.dense)
        assert torch.equal(torch.cat([b[2] for b in batches]), split.label)

    def test_shuffled_loader_is_a_permutation(self, data):
        split = data.splits["train"]
        gen = torch.Generator().manual_seed(0)
        batches = list(DataLoader(RowDataset(split), batch_size=1024, shuffle=True, generator=gen))
        cat = torch.cat([b[0] for b in batches])
        assert not torch.equal(cat, split.cat)
        key = lambda c: (c * torch.arange(1, 9)).sum(1).sort().values  # noqa: E731
        assert torch.equal(key(cat), key(split.cat))
        assert torch.cat([b[2] for b in batches]).sum() == split.label.sum()


def counting_factory(seen: dict[str, int]):
    """build_model plus a hook that counts the rows each model trains on (train mode only)."""

    def make(d, pruner):
        model = build_model(d, pruner)
        key = "dense" if pruner is None else "adasparse"

        def count(module, args):
            if module.training:
                seen[key] = seen.get(key, 0) + args[0].shape[0]

        model.register_forward_pre_hook(count)
        return model

    return make


class TestThroughputVariants:
    @pytest.mark.slow
    def test_fit_bare_and_loader_train_on_the_same_rows(self, data):
        timed = with_train_rows(data, TRAIN_ROWS)
        cfg = TrainBenchConfig(rows=TRAIN_ROWS, loader_rows=1_500, repeats=1)
        seen: dict[str, int] = {}
        runners = variant_runners(cfg, counting_factory(seen))
        rows = {}
        for name in ("fit_adasparse", "bare_adasparse", "loader_adasparse", "fit_dense"):
            seen.clear()
            timing = runners[name](timed)
            rows[name] = (timing.rows, sum(seen.values()))
            assert timing.seconds > 0
        assert rows["fit_adasparse"] == (TRAIN_ROWS, TRAIN_ROWS)
        assert rows["bare_adasparse"] == (TRAIN_ROWS, TRAIN_ROWS)
        assert rows["fit_dense"] == (TRAIN_ROWS, TRAIN_ROWS)
        assert rows["loader_adasparse"] == (1_500, 1_500)

    def test_bare_step_trains_the_same_model_as_fit(self, data):
        timed = with_train_rows(data, TRAIN_ROWS)
        built = []

        def keep(d, pruner):
            model = build_model(d, pruner)
            built.append((model, copy.deepcopy(model.state_dict())))
            return model

        runners = variant_runners(TrainBenchConfig(), keep)
        runners["bare_adasparse"](timed)
        runners["fit_adasparse"](timed)
        (bare, bare_init), (fitted, fit_init) = built
        assert bare.spec is not None and bare.spec.inputs == "hidden+domain"
        assert fitted.spec is not None and fitted.spec.inputs == "hidden+domain"
        # The same seeded initial weights (alpha aside: a schedule value), then both trained.
        for key, value in bare_init.items():
            if key != "alpha":
                assert torch.equal(value, fit_init[key]), key
        for model, init in ((bare, bare_init), (fitted, fit_init)):
            assert not torch.equal(model.layers[0].weight, init["layers.0.weight"])
            assert not torch.equal(model.pruners["1"].weight, init["pruners.1.weight"])

    def test_ratios_are_best_over_best_and_median_of_pairs(self):
        result = TrainBenchResult(
            TrainBenchConfig(),
            {
                "a": [Timing(100, 1.0), Timing(100, 0.5), Timing(100, 2.0)],  # 100, 200, 50 /s
                "b": [Timing(100, 0.5), Timing(100, 1.0), Timing(100, 1.0)],  # 200, 100, 100 /s
            },
        )
        assert result.best("a") == 200 and result.median("a") == 100
        assert result.ratio("a", "b") == 1.0
        assert result.paired_ratio("a", "b") == 0.5  # median of 0.5, 2.0, 0.5


class TestServing:
    @pytest.mark.parametrize("fraction", [0.2, 0.35, 0.5])
    def test_compact_equals_masked_on_the_benchmarked_rows(self, data, fraction):
        torch.manual_seed(0)
        model = build_model(data, domain_pruner()).eval()
        sparsify_for_domain(model, domain_code=1, fraction=fraction)
        compact = compact_model(model, 1)
        widths = compact.tower.widths()
        assert widths == [160, *(h - round(fraction * h) for h in (256, 128, 64)), 1]
        cat, dense = domain_rows(data, domain=0, n=4096)
        assert (cat[:, data.domain_feature_index()[0]] == 1).all()
        with torch.no_grad():
            masked = model(cat, dense)
            assert all(
                (k == 0).float().mean().item() == pytest.approx(fraction, abs=0.01)
                for k in masked.keep
            )
            torch.testing.assert_close(compact(cat, dense), masked.logits, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("reference", [None, (32, 16)])
    def test_flops_ratio_has_the_evaluations_denominator(self, data, reference):
        """The compacted domain's FLOPs over the study's reference MLP (models/base.py), the
        denominator of val/flops/ratio, not over the model's own tower."""
        torch.manual_seed(0)
        model = build_model(data, domain_pruner()).eval()
        model.flops_reference = reference  # a study's reference may differ from the tower
        sparsify_for_domain(model, domain_code=1, fraction=0.35)
        flops = evaluate(model, data, "test").flops  # static masks: one count per domain
        expected = flops.per_domain[0] / flops.dense
        assert analytic_flops_ratio(model, compact_model(model, 1)) == pytest.approx(expected)

    def test_invalid_fraction_is_refused(self):
        with pytest.raises(ValueError, match="prune_fraction"):
            ServeBenchConfig(prune_fraction=1.0)


TINY = [
    "--step-rows",
    "2048",
    "--study",
    "quick",
    "--study-trials",
    "2",
    "--rows",
    "2048",
    "--loader-rows",
    "1024",
    "--warmup-rows",
    "1024",
    "--repeats",
    "2",
    "--serve-batch-sizes",
    "1",
    "64",
    "--serve-seconds",
    "0.05",
    "--prep-rows",
    "5000",
    "--prep-train-rows",
    "2000",
    "--prep-workers",
    "2",
    "--method-rows",
    "2048",
    "--method-repeats",
    "1",
    "--method",
    "magnitude",
    "--method-batch-sizes",
    "64",
    "1",
]


@pytest.mark.slow
def test_prep_peak_is_the_childs_own(tmp_path):
    """ru_maxrss of a spawned child starts at the parent's RSS; the benchmark must not."""
    from adasparse_lab.bench.preparation import peak_rss_bytes, run_prep_bench

    ballast = torch.ones(96 * 2**20)  # 384 MB resident in this (parent) process
    parent = peak_rss_bytes()
    prep = run_prep_bench(rows=3_000)
    assert ballast.sum() > 0
    assert 0 < prep.import_rss_bytes <= prep.peak_rss_bytes < parent - 256 * 2**20


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_cli_json_has_positive_finite_ratios(tmp_path, capsys, restore_threads):
    out = tmp_path / "bench.json"
    payload = main([*TINY, "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    ratios = payload["ratios"]
    expected = {
        "fit_over_bare",
        "fit_over_bare_paired_median",
        "fit_over_loader",
        "fit_over_loader_paired_median",
        "dense_over_adasparse_fit",
        "compact_speedup_b1",
        "compact_speedup_b64",
        "compact_flops_ratio",
    }
    assert expected <= set(ratios)
    assert all(math.isfinite(v) and v > 0 for v in ratios.values())
    assert 0 < ratios["compact_flops_ratio"] < 1
    assert payload["machine"]["torch_threads"] == 1
    study = payload["study"]  # per-trial overhead of the study driver
    assert study["trials"] == 2 and study["study"] == "quick"
    assert 0 < study["mean_fit_s"] < study["mean_trial_s"]
    assert study["overhead_s"] == pytest.approx(study["mean_trial_s"] - study["mean_fit_s"])
    assert 0 < study["overhead_share"] < 1
    assert set(payload["load_average"]) == {"start", "end"}
    assert all(lat["max_abs_diff"] < 1e-4 for lat in payload["serve"]["latencies"])
    prep = payload["prep"]
    assert prep["rows"] == 5000 and 0.7 * 5000 < prep["train_rows"] < 0.9 * 5000
    assert prep["peak_rss_bytes"] >= prep["import_rss_bytes"] > 0
    printed = capsys.readouterr().out
    assert f"torch {torch.__version__}" in printed and "torch.get_num_threads() = 1" in printed
    assert "fit / bare loop" in printed and "compact ms" in printed and "peak RSS" in printed
    assert set(payload["methods"]["ratios"]) == {"dense", "magnitude"}  # dense always runs
    assert "[5] methods" in printed and "speedup /" in printed
    assert "paper form  fast / reference" in printed
    assert set(payload["step"]["rows_per_s"]) == set(STEP_LABELS)


@pytest.mark.slow
def test_step_section_times_both_kernels_and_reports_their_ratio(capsys, restore_threads):
    payload = main(["--only", "step", "--threads", "1", "--step-rows", "2048",
                    "--warmup-rows", "1024", "--repeats", "2"])  # fmt: skip
    assert set(payload) >= {"step", "machine"} and "train" not in payload
    step = payload["step"]
    rates = step["rows_per_s"]
    assert set(rates) == set(STEP_LABELS) and all(len(r) == 2 for r in rates.values())
    assert all(math.isfinite(v) and v > 0 for r in rates.values() for v in r)
    ratios = step["ratios"]
    assert ratios["paper_fast_over_reference"] == pytest.approx(
        max(rates["paper_fast"]) / max(rates["paper_reference"])
    )
    pairs = sorted(f / r for f, r in zip(rates["domain_fast"], rates["domain_reference"]))
    assert ratios["domain_fast_over_reference_paired_median"] == pytest.approx(sum(pairs) / 2)
    printed = capsys.readouterr().out
    assert "kernel=reference" in printed and "kernel=fast" in printed and "target >= 1.3" in printed


def test_step_runners_use_the_kernel_they_name(monkeypatch, data):
    """Each step variant trains the model form and kernel its label says."""
    import adasparse_lab.bench.step as step_mod

    seen = {}
    monkeypatch.setattr(step_mod, "fit_epoch", lambda m, d, c: seen.setdefault("m", m) and None)
    for name, run in step_runners(StepBenchConfig()).items():
        seen.clear()
        run(data)
        model = seen["m"]
        form = None if model.spec is None else model.spec.inputs
        expected_form = {"paper": "hidden+domain", "domain": "domain", "dense": None}
        assert form == expected_form[name.split("_")[0]], name
        if model.spec is not None:
            assert model.kernel == name.split("_")[1], name


def test_only_runs_the_chosen_section(capsys):
    payload = main(["--only", "serve", "--serve-batch-sizes", "4", "--serve-seconds", "0.01"])
    assert "serve" in payload and "train" not in payload and "prep" not in payload
    assert set(payload["ratios"]) == {"compact_speedup_b4", "compact_flops_ratio"}
    assert "[1] training" not in capsys.readouterr().out


@pytest.mark.slow
def test_methods_section_times_every_method_against_dense(capsys):
    """Training and serving of each chosen method beside the dense model of the same run: the
    static structure served compacted, the paper form by the masked model."""
    chosen = ("adasparse-fusion", "adasparse-fusion-domain", "random")
    cfg = MethodsBenchConfig(
        rows=2048, repeats=2, serve_repeats=1, serve_batch_sizes=(256, 1), only=chosen
    )
    res = run_methods_bench(cfg)
    assert [m.name for m in res.methods] == ["dense", *chosen]  # in METHODS order, dense first
    by_name = {m.name: m for m in res.methods}
    assert all(len(m.samples_per_s) == 2 and min(m.samples_per_s) > 0 for m in res.methods)
    assert res.train_ratio(by_name["dense"]) == 1.0
    assert by_name["dense"].served == "masked" and by_name["adasparse-fusion"].served == "masked"
    assert by_name["adasparse-fusion-domain"].served == by_name["random"].served == "compact"
    # a ratio of two timings: its value is the benchmark's to print, not a test's to bound
    assert all(0 < m.latency["val/latency/ratio"] < math.inf for m in res.methods)
    assert (
        by_name["adasparse-fusion"].flops_ratio > 1.5
    )  # paper-form pruners cost as much as the tower
    random = by_name["random"]
    assert 0 < random.flops_ratio < 1 and random.tower is not None
    assert random.tower[0] == pytest.approx(random.flops_ratio, abs=0.05)  # same structure
    assert math.isfinite(random.efficiency) and math.isfinite(random.tower_efficiency)
    assert by_name["adasparse-fusion"].tower is None
    summary = res.summary()
    assert summary["dense"]["tower_speedup_over_flops_promise"] is None
    assert all(summary[n]["ratio_b1"] > 0 and summary[n]["ratio_b256"] > 0 for n in summary)
    assert by_name["random"].latency.keys() >= {"val/latency/b256/d00", "val/latency/b1/d00"}
    text = format_methods(res, threads=torch.get_num_threads())
    assert all(name in text for name in ["dense", *chosen])
    assert f"({torch.get_num_threads()} torch threads)" in text


def test_methods_are_name_and_overrides_lines():
    assert METHODS[0][0] == "dense" and all(isinstance(o, list) for _, o in METHODS)
    assert {"adasparse-fusion", "adasparse-fusion-domain", "adasparse-fusion-r16"} <= {
        n for n, _ in METHODS
    }
    with pytest.raises(ValueError, match="nope"):
        chosen_methods(("nope",))


def test_scale_projection_by_hand():
    from adasparse_lab.bench.scale import ScalePoint, projection

    # 10 s trials of which 0.5 s is storage and tracking: the database is busy all the time
    # at 10 / 0.5 = 20 workers; past that, 3600 / 0.5 = 7200 trials/h whatever the workers.
    point = ScalePoint("postgres+server", 1, 4, 360.0, 10.0, 0.5)
    assert projection(point, 100) == pytest.approx((7200.0, 20.0))
    assert projection(point, 10) == pytest.approx((3600.0, 20.0))  # 10 x 360/h, unsaturated


@pytest.mark.slow
def test_a_failing_store_reader_raises_with_its_stderr(tmp_path, monkeypatch):
    """A reader that dies is an error naming its exit status and its traceback (it was an
    IndexError on the empty output), and the other readers are not left running."""
    import subprocess
    import sys

    from adasparse_lab.bench import preparation

    started, real = [], subprocess.Popen

    def popen(cmd, **kwargs):  # the second reader never ends on its own
        if started:
            cmd = [sys.executable, "-c", "import time; time.sleep(120)"]
        started.append(real(cmd, **kwargs))
        return started[-1]

    monkeypatch.setattr(preparation.subprocess, "Popen", popen)
    with pytest.raises(RuntimeError, match=r"(?s)store reader failed \(exit 1\).*Traceback"):
        preparation.measure_workers(tmp_path / "no-store", workers=2, batch_size=64)
    assert [p.returncode for p in started] == [1, -9]  # the sleeper was killed and reaped


@pytest.mark.parametrize("flag", ["--rows", "--method-repeats", "--prep-rows", "--model-rows"])
def test_a_count_below_one_is_refused_naming_its_flag(flag, capsys):
    with pytest.raises(SystemExit):
        main([flag, "0"])
    assert f"argument {flag}: must be >= 1, got 0" in capsys.readouterr().err
