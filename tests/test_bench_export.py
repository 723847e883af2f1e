"""The export section of the benchmark: the bundle's per-domain programs predict what the
in-process model predicts, on the kept widths the model's masks give."""

from __future__ import annotations

import pytest

from adasparse_lab.bench.export import ExportBenchConfig, format_export, run_export_bench


@pytest.mark.slow
def test_export_bench_times_every_domain_with_equal_predictions():
    cfg = ExportBenchConfig(batch_size=32, seconds=0.0, min_repeats=2, rows=3_000)
    result = run_export_bench(cfg)
    assert len(result.domains) >= 2
    first = result.domains[0]
    hidden = result.widths_dense[1:]
    # the first domain prunes exactly the configured fraction of every hidden layer
    assert first.kept == [w - round(cfg.prune_fraction * w) for w in hidden]
    for d in result.domains:
        assert d.max_abs_diff < 1e-5, d.domain
        assert all(0 < k <= w for k, w in zip(d.kept, hidden))
        assert d.repeats == cfg.min_repeats
        assert min(d.model_ms, d.bundle_ms, d.predict_ms) > 0
    table = format_export(result)
    assert f"{result.threads} torch thread(s)" in table
    assert all(d.domain in table for d in result.domains)
