"""``python -m adasparse_lab.bench --only gpu``: without CUDA it stops at once; its parts run
on the CPU through the same code path (device='cpu') on a few rows."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import adasparse_lab.bench.__main__ as bench_main
import adasparse_lab.bench.gpu as gpu
import adasparse_lab.bench.workload as workload
from adasparse_lab.bench.__main__ import main
from adasparse_lab.bench.gpu import GpuBenchConfig, auc_run, format_gpu, run_gpu_bench
from adasparse_lab.bench.serving import ServeBenchConfig
from adasparse_lab.bench.workload import synthetic_data, with_train_rows

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
TINY = GpuBenchConfig(
    rows=2_048, warmup_rows=1_024, repeats=2, batch_size=512, auc_epochs=2,
    serve=ServeBenchConfig(batch_sizes=(4,), seconds=0.01, min_repeats=2, data_rows=2_000),
)  # fmt: skip


def _no_data(*args, **kwargs):
    raise AssertionError("data was prepared before the CUDA check")


@no_cuda
def test_without_cuda_it_says_so_and_exits_before_any_data(monkeypatch, capsys):
    monkeypatch.setattr(workload, "prepare", _no_data)
    monkeypatch.setattr(gpu, "synthetic_data", _no_data)
    monkeypatch.setattr(bench_main, "run_gpu_bench", _no_data)
    monkeypatch.setattr(bench_main, "describe_machine", _no_data)
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "gpu", "--only", "train"])
    assert exit_info.value.code not in (0, None)
    captured = capsys.readouterr()
    assert captured.err.startswith("no CUDA device: ")
    assert captured.out == ""  # not even the machine line: nothing else ran


@no_cuda
@pytest.mark.slow
def test_the_command_exits_non_zero_at_once():
    cmd = [sys.executable, "-m", "adasparse_lab.bench", "--only", "gpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done
    assert "no CUDA device: " in done.stderr and done.stdout == ""


@pytest.mark.slow
def test_the_gpu_path_runs_on_the_cpu(capsys):
    """run_gpu_bench with device='cpu': both throughput sides (the same device twice), fp32 and
    bf16 autocast, serving on that device; then its table and summary."""
    result = run_gpu_bench(TINY, device="cpu", baseline="cpu")
    assert set(result.samples_per_s) == {"cpu"} and len(result.samples_per_s["cpu"]) == 2
    assert set(result.auc) == {"fp32", "bf16"} and result.bf16_note == ""
    for run in result.auc.values():
        assert 0.4 < run.test_auc < 1.0 and 1 <= run.best_epoch <= TINY.auc_epochs
    summary = result.summary()
    assert math.isfinite(summary["bf16_minus_fp32_test_auc"])
    assert summary["gpu_compact_speedup_b4"] > 0
    table = format_gpu(result)
    assert "bf16 - fp32: AUC" in table and "masked vs compacted" in table


@pytest.mark.slow
def test_fp32_runs_of_the_same_seed_agree_and_bf16_is_a_different_run():
    data = with_train_rows(synthetic_data(TINY.rows), TINY.rows)
    a, b = (auc_run(TINY, data, "cpu", None) for _ in range(2))
    assert a.test_auc == b.test_auc and a.autocast == "fp32"
    bf16 = auc_run(TINY, data, "cpu", "bf16")
    assert bf16.autocast == "bf16" and abs(bf16.test_auc - a.test_auc) < 0.05


def test_summary_has_the_cuda_over_cpu_ratio():
    result = gpu.GpuBenchResult(TINY, "fake", {"cpu": [10.0, 20.0], "cuda": [50.0, 80.0]})
    assert result.summary() == {"cuda_over_cpu_train": 4.0}
    assert "cuda / cpu 4.00x" in format_gpu(result)


@pytest.mark.slow
def test_a_failing_part_is_reported_and_the_others_still_run(monkeypatch, capsys):
    real = gpu.auc_run

    def bf16_breaks(cfg, data, device, autocast):
        if autocast == "bf16":
            raise RuntimeError("no bf16 kernel")
        return real(cfg, data, device, autocast)

    monkeypatch.setattr(gpu, "auc_run", bf16_breaks)
    result = run_gpu_bench(replace(TINY, repeats=1), device="cpu")
    assert result.errors == {"bf16": "RuntimeError: no bf16 kernel"}
    assert set(result.auc) == {"fp32"} and result.serve is not None and result.samples_per_s
    assert "FAILED bf16: RuntimeError: no bf16 kernel" in format_gpu(result)
    assert "gpu: bf16 FAILED" in capsys.readouterr().out


def test_main_writes_the_gpu_json_and_exits_non_zero_on_a_failed_part(monkeypatch, tmp_path):
    """With a (pretended) CUDA device, main runs the gpu section alone and writes its JSON;
    a failed part makes the command exit non-zero after the JSON is written."""
    fake = gpu.GpuBenchResult(TINY, "fake", {"cpu": [1.0], "cuda": [3.0]}, errors={"serving": "E"})
    monkeypatch.setattr(bench_main, "require_cuda", lambda: "fake")
    monkeypatch.setattr(bench_main, "run_gpu_bench", lambda cfg: fake)
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "gpu", "--json", str(out)])
    assert "1 part(s) failed" in str(exit_info.value.code)
    payload = json.loads(out.read_text())
    assert payload["gpu"]["ratios"] == {"cuda_over_cpu_train": 3.0}
    assert "train" not in payload and "serve" not in payload
