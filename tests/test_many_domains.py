"""Many domains: per-domain metrics reach MLflow in batches, and the report's domain picker
table (results.tables) holds every domain, its sets and the means the page's script redraws."""

from __future__ import annotations

import math

import polars as pl

from adasparse_lab.report.sections import picker_options
from adasparse_lab.results.tables import domain_picker_table, picker_means
from adasparse_lab.run.fit import EpochRecord
from adasparse_lab.run.outputs import epoch_logger
from adasparse_lab.store.tracking import MAX_METRICS_PER_BATCH, Tracker


class CountingClient:
    def __init__(self) -> None:
        self.batches: list[int] = []

    def log_batch(self, run_id, metrics=(), params=()):
        self.batches.append(len(metrics))


def test_an_epochs_per_domain_metrics_are_logged_in_batches():
    tracker = Tracker.__new__(Tracker)  # no MLflow store: count what would be sent
    tracker.client = CountingClient()
    n_domains = 1000
    val = {f"val/{m}/d{k:04d}": 0.5 for k in range(n_domains) for m in ("auc", "logloss")}
    val |= {"val/auc": 0.5, "val/sparsity/l1": 0.2, "val/flops/ratio": 0.5, "val/flops/mean": 9}
    # Per domain and epoch, only AUC and log loss: the rest stays in metrics.json's history.
    oracle = {f"val/oracle_auc/d{k:04d}": 0.7 for k in range(n_domains)}
    oracle |= {f"val/sparsity/d{k:04d}/l{i}": 0.1 for k in range(n_domains) for i in (1, 2)}
    oracle |= {f"val/flops{r}/d{k:04d}": 0.1 for k in range(n_domains) for r in ("", "_ratio")}
    record = EpochRecord(1, 10, 0.5, 0.0, 1e4, 0.1, 1.0, (0.1, 0.2), True, val | oracle)
    epoch_logger(tracker, "run")(record)
    total = len(val) + 7  # the train metrics beside the per-domain ones
    assert sum(tracker.client.batches) == total
    assert len(tracker.client.batches) == math.ceil(total / MAX_METRICS_PER_BATCH) == 3


def _tables(n: int = 30):
    domains = pl.DataFrame(
        {
            "study": ["s"] * n,
            "domain": [f"d{k:02d}" for k in range(n)],
            "group": [k % 3 for k in range(n)],
            "train_rows": [1000 - 10 * k for k in range(n)],
        }
    )
    rows = [
        {"study": "s", "number": t, "method": "m" if t else "dense-ish", "domain": f"d{k:02d}",
         "val_auc": 0.6 + 0.01 * t + 0.001 * k, "flops_ratio": 1.0 - 0.1 * t}
        for t in range(3)
        for k in range(n)
    ]  # fmt: skip
    ref = pl.DataFrame(
        {"study": "s", "domain": [f"d{k:02d}" for k in range(n)], "val_auc": 0.65,
         "flops_ratio": 1.0}
    )  # fmt: skip
    return pl.DataFrame(rows), domains, ref


def test_picker_table_holds_every_domain_by_size_and_its_sets():
    points, domains, ref = _tables(30)
    table = domain_picker_table(points.sample(fraction=1.0, seed=1), domains, ref)
    assert table["domains"] == [f"d{k:02d}" for k in range(30)]  # largest first
    assert table["number"] == [0, 1, 2] and table["k"] == [5, 10, 25]
    assert table["groups"] == {str(g): list(range(g, 30, 3)) for g in range(3)}
    assert table["y"][7][2] == round(0.6 + 0.02 + 0.007, 4)
    means = picker_means(table, [0, 1, 2, 3])  # the 4 largest
    assert means["y"] == [round(0.6 + 0.01 * t + 0.0015, 4) for t in range(3)]
    assert means["ref_y"] == [0.65] and means["x"] == [1.0, 0.9, 0.8]
    options = dict(picker_options(table))
    assert len(options["each domain (30, largest first)"]) == 30
    assert ("smallest:5", "5 smallest domains") in options["largest / smallest"]
    assert [v for v, _ in options["true groups (synthetic data)"]] == [
        "group:0",
        "group:1",
        "group:2",
    ]
