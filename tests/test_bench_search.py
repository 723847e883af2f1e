"""The search and layout benchmark sections' arithmetic (the studies they run are real studies
of the driver, tested elsewhere): where an early-stopped run reaches the plain run's final
hypervolume, the median over seeds, and the layout's ratio."""

from __future__ import annotations

import pytest

from adasparse_lab.bench.scale import ScalePoint, format_layout
from adasparse_lab.bench.search import SearchRun, format_search, summary


def _run(mode, seed, cpu, hv):
    return SearchRun(mode, seed, complete=3, pruned=0, failed=0, cpu_s=cpu, hypervolume=hv)


def test_the_share_is_the_cpu_at_which_the_plain_final_hypervolume_is_reached():
    runs = [
        _run("none", 0, [10, 20, 30, 40], [0.1, 0.2, 0.3, 0.4]),
        _run("moasha", 0, [5, 8, 12, 30, 50], [0.1, 0.25, 0.4, 0.45, 0.5]),  # 0.4 at 12 s
        _run("none", 1, [10, 20], [0.1, 0.5]),
        _run("moasha", 1, [4, 9], [0.2, 0.3]),  # never reaches 0.5
        _run("none", 2, [10, 20], [0.1, 0.2]),
        _run("moasha", 2, [2, 3], [0.2, 0.3]),  # 0.2 at 2 s of 20
    ]
    s = summary(runs)
    assert s["share_by_seed"] == {0: pytest.approx(12 / 40), 1: None, 2: pytest.approx(2 / 20)}
    assert s["median_share"] == pytest.approx(0.3)  # median of 0.1, 0.3 and never (infinite)
    text = format_search(runs, "sparsity", "synthetic")
    assert "seed 1: early stopping reached the plain final hypervolume never" in text
    assert "median: 30% of the plain run's CPU-seconds" in text


def test_equal_rows_is_where_a_budget_in_rows_would_have_ended_the_run():
    """The early-stopped run counts COMPLETE trials; a budget=rows study of the same seed asks
    the same trials and ends where their rows first reach n_trials (here 2: after the third
    trial, 1 + 1/3 + 1)."""
    plain = SearchRun("none", 0, 2, 0, 0, [10, 20], [0.3, 0.4], rows=[1, 2], n_trials=2)
    early = SearchRun(
        "moasha", 0, 3, 1, 0, [10, 13, 24, 34], [0.3, 0.3, 0.45, 0.5],
        rows=[1, 1 + 1 / 3, 2 + 1 / 3, 3 + 1 / 3], n_trials=2,
    )  # fmt: skip
    assert early.at_equal_rows() == (24, 0.45)
    at = summary([plain, early])["equal_rows_by_seed"][0]
    assert at == {"cpu_share": 24 / 20, "hypervolume": 0.45, "plain_hypervolume": 0.4}
    text = format_search([plain, early], "sparsity", "synthetic")
    assert "spent 120% of the plain CPU-s for hypervolume 0.4500 against 0.4000 (+0.0500)" in text
    short = SearchRun("moasha", 0, 1, 0, 0, [10], [0.3], rows=[1], n_trials=2)
    assert short.at_equal_rows() is None  # stopped (a timeout) before its rows reached it


def test_a_median_of_mostly_never_says_never():
    runs = [
        _run("none", 0, [10], [0.5]),
        _run("moasha", 0, [5], [0.1]),
        _run("none", 1, [10], [0.5]),
        _run("moasha", 1, [5], [0.1]),
        _run("none", 2, [10], [0.5]),
        _run("moasha", 2, [5], [0.5]),
    ]
    assert "median: never" in format_search(runs, "sparsity", "synthetic")


def test_layout_compares_the_best_of_each_layout():
    def point(rate):
        return ScalePoint("journal+sqlite", 1, 8, rate, 9.0, 0.3)

    points = [
        ("1 worker x 2 threads", point(400.0)),
        ("2 workers x 1 thread", point(500.0)),
        ("1 worker x 2 threads", point(420.0)),
        ("2 workers x 1 thread", point(480.0)),
    ]
    assert "2 workers x 1 thread / 1 worker x 2 threads = 1.19x" in format_layout(points)


def test_the_search_overrides_reach_both_runs_and_the_header(tmp_path):
    """``--search-overrides`` go last, so they win over the bench's own settings, and the
    composed study has them (the 1/9 comparison of docs/benchmarks.md)."""
    from hydra import compose, initialize_config_dir

    from adasparse_lab.bench.search import overrides
    from adasparse_lab.bench.workload import CONF

    extra = ("study.early_stop.min_fraction=0.1111",)
    for mode in ("none", "moasha"):
        args = overrides("sparsity", mode, 0, 20, "synthetic", str(tmp_path), extra)
        assert args[-1] == extra[0]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=args)
        assert cfg.study.early_stop.min_fraction == 0.1111
        assert cfg.study.early_stop.kind == mode
        assert cfg.study.early_stop.budget == "complete"  # the curve runs past equal rows
    runs = [_run("none", 0, [10], [0.5]), _run("moasha", 0, [5], [0.5])]
    assert "+study=sparsity on synthetic with study.early_stop.min_fraction=0.1111:" in (
        format_search(runs, "sparsity", "synthetic", extra)
    )
