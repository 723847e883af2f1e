"""The search and layout benchmark sections' arithmetic (the studies they run are real studies
of the driver, tested elsewhere): where an early-stopped run reaches the plain run's final
hypervolume, the median over seeds, and the layout's ratio."""

from __future__ import annotations

import pytest

from adasparse_lab.bench.scale import ScalePoint, format_layout
from adasparse_lab.bench.search import SearchRun, format_search, sign_test, summary


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


def test_over_many_seeds_it_gives_quartiles_and_a_sign_test_at_equal_rows():
    """Eight seeds: shares 10%..80% of the plain CPU by seed, the early-stopped run ending at
    equal rows higher on six seeds, lower on one and level on one."""
    runs, diffs = [], [0.01, 0.02, -0.01, 0.0, 0.03, 0.01, 0.02, 0.01]
    for seed, diff in enumerate(diffs):
        runs.append(SearchRun("none", seed, 2, 0, 0, [10, 20], [0.3, 0.5], [1, 2], 2))
        reach = 2 * (seed + 1)  # the plain final 0.5 at (seed + 1) x 10% of its 20 CPU-s
        runs.append(
            SearchRun(
                "moasha", seed, 2, 1, 0, [1, reach, 22], [0.3, 0.5, 0.5 + diff], [1, 1.5, 2], 2
            )
        )
    s = summary(runs)
    assert s["median_share"] == pytest.approx(0.45)
    assert s["share_quartiles"] == pytest.approx([0.3, 0.6])  # nearest ranks of 0.1 .. 0.8
    eq = s["equal_rows"]
    assert (eq["seeds"], eq["higher"], eq["lower"]) == (8, 6, 1)
    assert eq["sign_test_p"] == pytest.approx(2 * (1 + 7) / 2**7)  # ties left out: 6 against 1
    assert eq["median_difference"] == pytest.approx(0.01)
    assert eq["median_cpu_share"] == pytest.approx(22 / 20)
    text = format_search(runs, "sparsity", "synthetic")
    assert "median: 45% (quartiles 30% and 60%) of the plain run's CPU-seconds" in text
    assert "higher on 6 of 8 seeds, lower on 1 (two-sided sign test p = 0.125)" in text
    assert "median difference +0.0100 for 110% of the plain CPU-s" in text


@pytest.mark.parametrize(
    "wins, losses, p", [(10, 2, 2 * (1 + 12 + 66) / 4096), (3, 0, 0.25), (2, 2, 1.0), (0, 0, 1.0)]
)
def test_the_sign_test_is_the_exact_binomial_tail(wins, losses, p):
    assert sign_test(wins, losses) == pytest.approx(p)
    assert sign_test(losses, wins) == pytest.approx(p)


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


@pytest.mark.slow
def test_seeds_in_processes_of_their_own_run_the_same_trials(capsys):
    """``--search-jobs 2`` runs each seed in a spawned process of its own: the same trials with
    the same values as one after another in this process, returned in the order of the seeds
    whichever ends first, with the layout printed."""
    import torch

    from adasparse_lab.bench.search import run_search_bench

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the spawned processes: 1 and 2 threads sum in other orders
    try:
        alone = run_search_bench("quick", (1, 0), 3, jobs=1)
    finally:
        torch.set_num_threads(before)
    shared = run_search_bench("quick", (1, 0), 3, jobs=2, threads=1)
    assert [(r.seed, r.mode) for r in shared] == [(1, "none"), (1, "moasha"), (0, "none"),
                                                  (0, "moasha")]  # fmt: skip
    for a, b in zip(alone, shared):
        assert (a.complete, a.pruned, a.failed) == (b.complete, b.pruned, b.failed)
        assert b.hypervolume == a.hypervolume  # same trials, same floats
        assert b.rows == a.rows
    assert sum(r.pruned for r in shared) > 0  # early stopping acted in the spawned processes
    assert "2 seeds at a time, one process each, 1 torch thread(s) each" in capsys.readouterr().out
